"""The HTML pages show markup in their data as text: `toonlab report` with markup in every
field it prints (run, domain, loss and set names, families, reasons, counts that are
strings, the ablations folder, a variant's note, the curation report's folder), read back
with the standard library's HTML parser. The curation report, `serve` and `review` pages
have theirs beside their other tests (`shown_as_text` is shared)."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from markupsafe import escape
from PIL import Image


def evil(field: str) -> str:
    """Markup that would run a script if a page printed it as HTML; `field` names where it went."""
    return f"<img src=x onerror=alert('{field}')>\"'&"


class Page(HTMLParser):
    """A page's elements, attribute values and text, as a browser's HTML parser reads them."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.texts: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    def shown(self) -> str:
        return "\n".join(self.texts + [v for _, attrs in self.elements for v in attrs.values()])


def shown_as_text(text: str, fields: list[str], scripts: int = 0) -> Page:
    """Assert that the page shows evil(field) for every field, escaped, and that none of it
    became an element or an event handler; the parsed page."""
    page = Page(text)
    handlers = [(tag, k) for tag, attrs in page.elements for k in attrs if k.startswith("on")]
    assert handlers == [], handlers
    assert [tag for tag, _ in page.elements].count("script") == scripts
    for tag, attrs in page.elements:
        if tag == "img" and "src" in attrs:    # only the page's own images: data URIs
            assert attrs["src"].startswith("data:"), attrs
    missing = [f for f in fields if evil(f) not in page.shown()]
    assert missing == [], f"fields not shown (or not as text): {missing}"
    for f in fields:
        assert evil(f) not in text, f
        assert str(escape(evil(f))) in text, f
    return page


# ----------------------------------------------------------------------------- the report


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def _hostile_project(root: Path):
    """What `toonlab report` reads, with markup in every name and string it prints."""
    from toonlab.params import validate_params

    run, subdir = "run" + evil("run"), "abl" + evil("subdir")
    params = validate_params({
        "train": {"out_dir": str(root / "models")},
        "evaluate": {"metrics_dir": str(root / "metrics"), "out_dir": str(root / "eval"), "runs": [run]},
        "curate": {"report_dir": str(root / ("curation" + evil("link")))},
        "report": {"out": str(root / "reports/index.html")},
        "ablations": {"runs_subdir": subdir, "variants": {"v1": {"family": "cyclegan", "note": evil("note")},
                                                          "v2": {"family": "ugatit"}},
                      "sets": {evil("set"): ["v1", "v2"]}},
    })
    for name, family in ((run, evil("family")), (f"{subdir}/v1", "cyclegan"), (f"{subdir}/v2", "ugatit")):
        metrics = {"family": family, "step": evil("step"), "n_images": evil("images"), "landmark_nme": 0.5,
                   "unavailable": {"fid": evil("reason")}}
        path = root / "metrics" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics))
        _png(root / "eval" / name / "input-000.png", 10)
        _png(root / "eval" / name / "output-000.png", 20)
    logs = root / "models" / run / "dvclive/plots/metrics/train"
    logs.mkdir(parents=True)
    (logs / f"{evil('loss')}.tsv").write_text("step\tloss\n" + "".join(f"{i}\t{1 / (i + 1)}\n" for i in range(30)))
    (root / "models" / run / "summary.json").write_text("{}")
    _png(root / "models" / run / "samples/latest.png", 30)
    cur = Path(params.curate.report_dir)
    cur.mkdir(parents=True)
    (cur / "summary.json").write_text(json.dumps({"domains": {evil("domain"): {
        "raw_files": evil("count"), "ingest": {"ok": 1}, "faces": {}, "split": {}}}}))
    (cur / "index.html").write_text("<html></html>")
    return params


def test_report_shows_markup_as_text(tmp_path):
    from toonlab.eval.report import build_report

    params = _hostile_project(tmp_path)
    out = build_report(params)
    text = out.read_text(encoding="utf-8")
    page = shown_as_text(text, ["run", "subdir", "link", "note", "set", "family", "step", "images", "reason",
                                "domain", "count"])
    assert "http://" not in text and "https://" not in text

    # The loss curves: a matplotlib SVG in an <img> (which runs no script), its legend the
    # loss names as escaped <text>.
    curves = [a["src"] for tag, a in page.elements if tag == "img" and a.get("class") == "curve"]
    assert len(curves) == 1 and curves[0].startswith("data:image/svg+xml;base64,")
    svg = base64.b64decode(curves[0].split(",", 1)[1]).decode("utf-8")
    assert str(escape(evil("loss"))).replace("&#34;", '"').replace("&#39;", "'") in svg   # XML text escaping
    tree = ET.fromstring(svg)
    tags = {el.tag.rsplit("}", 1)[-1] for el in tree.iter()}
    assert "polyline" in tags or "path" in tags
    assert not tags & {"img", "script", "foreignObject"}
    assert evil("loss") in ["".join(el.itertext()) for el in tree.iter() if el.tag.endswith("}text")]
    assert not re.search(r"<dc:date>|Matplotlib v", svg)     # no date, no version: same inputs, same bytes

    # A pipeline output: built again from the same inputs, the same bytes.
    first = out.read_bytes()
    assert build_report(params).read_bytes() == first
