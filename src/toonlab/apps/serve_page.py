"""The page of `toonlab serve` (GET /): templates/serve.html.j2 with the package's
assets/serve.css and serve.js inlined; the runs on offer and the upload limits come from
the Studio (`Studio.describe`), and the template escapes every value it prints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from toonlab.apps.web import asset
from toonlab.util.templates import render

if TYPE_CHECKING:
    from toonlab.apps.serve import Studio

MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp", "GIF": "image/gif",
              "TIFF": "image/tiff"}


def render_page(studio: Studio) -> str:
    """The single page (templates/serve.html.j2 with assets/serve.css and .js): upload
    form, error box, original | cartoon, per-face crops."""
    from markupsafe import Markup

    desc = studio.describe()
    formats = desc["limits"]["formats"]
    return render("serve.html.j2", runs=desc["runs"], mimes=",".join(MIME_TYPES[f] for f in formats),
                  limits_text=(f"{', '.join(formats)}; up to {studio.settings.max_upload_mb:g} MB and "
                               f"{desc['limits']['max_pixels'] / 1e6:g} megapixels"),
                  limits=desc["limits"],
                  # The package's own style sheet and script, inlined as they are: no user data in them.
                  css=Markup(asset("serve.css")), js=Markup(asset("serve.js")))
