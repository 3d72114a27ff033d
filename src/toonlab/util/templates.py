"""The HTML pages' templates and the charts drawn into them.

ToonLab's four pages (the report, the curation report, the `serve` and `review` pages)
are Jinja2 templates in `toonlab/templates/`: the Python side builds plain values (str,
numbers, lists, dicts) and the template holds the markup. The one Environment here
escapes every value a template prints (autoescape on for every template, whatever its
file name), so a file name, run name or reason holding markup shows as text: a new field
cannot forget its escaping. An undefined name is an error (StrictUndefined), not an empty
string, so a typo in a template fails the tests instead of dropping a field.

Charts are matplotlib figures under one setup (`figure`), shared by the curation
report's histograms and the report's loss curves, saved by `figure_bytes` without
timestamps and with a fixed SVG hash salt: the same numbers give the same bytes (both
reports are pipeline outputs, compared by content).
"""

from __future__ import annotations

import contextlib
import functools
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal

if TYPE_CHECKING:
    import jinja2
    from matplotlib.figure import Figure

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"   # toonlab/templates, package data


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The pages' Jinja2 environment (built once per process)."""
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR), autoescape=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              trim_blocks=True, lstrip_blocks=True)


def render(name: str, **context: Any) -> str:
    """The template `toonlab/templates/<name>` rendered with `context` (every value escaped
    unless it is a `markupsafe.Markup` made in Python)."""
    return environment().get_template(name).render(**context)


# ----------------------------------------------------------------------------- charts

SVG_HASH_SALT = "toonlab"   # the ids matplotlib puts in an SVG are hashes salted with this, not random


@contextlib.contextmanager
def figure(width_in: float, height_in: float, dpi: int = 90, font_size: float = 9,
           layout: str | None = None) -> Iterator[Figure]:
    """A matplotlib Figure on its own Agg canvas (no pyplot: no global figure list, no GUI
    backend) under matplotlib's default style, whatever the user's matplotlibrc says, so
    that a chart does not depend on the machine that draws it. Save it with
    `figure_bytes` inside the `with` block (the SVG settings are read at save time)."""
    import matplotlib
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # svg.fonttype "none": text stays <text> (matplotlib escapes it), not glyph outlines.
    with matplotlib.style.context("default"), matplotlib.rc_context({"svg.hashsalt": SVG_HASH_SALT,
                                                                     "svg.fonttype": "none",
                                                                     "font.size": font_size}):
        fig = Figure(figsize=(width_in, height_in), dpi=dpi, layout=layout)
        FigureCanvasAgg(fig)
        yield fig


def figure_bytes(fig: Figure, fmt: Literal["png", "svg"]) -> bytes:
    """The figure as PNG or SVG bytes without the save date or the software version, which
    would make the same chart differ between runs."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, metadata={"Software": None} if fmt == "png" else {"Date": None, "Creator": None})
    return buf.getvalue()
