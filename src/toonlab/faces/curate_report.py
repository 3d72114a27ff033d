"""The curation report: `reports/curation/index.html`, one self-contained page (CSS
inline, every image a base64 data URI, no script, no external reference) with the counts
per stage, contact sheets of kept crops and of rejected images per reason, histograms of
the face measurements, the duplicate groups found by ingest and the backends used.

`toonlab.faces.curate` decides (split, curated manifests, counts); this module only
draws. The output is a pure function of its inputs: sorted iteration, fixed encoders
(baseline JPEG thumbnails, Agg PNG histograms without metadata), no timestamps.
"""

from __future__ import annotations

import html
import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from toonlab.faces.params import CurateParams
from toonlab.log import progress
from toonlab.util import codec

SPLITS = ("train", "val", "test")
FLOODFILL = "floodfill"


# ----------------------------------------------------------------------------- thumbnails


@dataclass
class _Thumb:
    caption: str
    title: str
    box: tuple[float, float, float, float] | None = None
    five: list[float] | None = None
    uri: str = ""
    ok: bool = True


@dataclass
class Thumbs:
    """Thumbnail requests grouped by source file, so each file is decoded once."""

    px: int
    by_source: dict[tuple[str, str], list[_Thumb]] = field(default_factory=lambda: defaultdict(list))

    def raw(self, path: Path, caption: str, title: str, box: Sequence[float] | None = None) -> _Thumb:
        b = tuple(float(v) for v in box) if box is not None and len(box) == 4 else None
        t = _Thumb(caption, title, box=b)
        self.by_source[("raw", str(path))].append(t)
        return t

    def crop(self, path: Path, caption: str, title: str, five: Sequence[float] | None = None) -> _Thumb:
        t = _Thumb(caption, title, five=list(five) if five is not None and len(five) == 10 else None)
        self.by_source[("crop", str(path))].append(t)
        return t

    def render(self) -> None:
        keys = sorted(self.by_source)
        for kind, path in progress(keys, "curate thumbnails", total=len(keys), unit="img"):
            thumbs = self.by_source[(kind, path)]
            base = _load_raw(Path(path)) if kind == "raw" else _load_crop(Path(path))
            for t in thumbs:
                if base is None:
                    t.ok = False
                    t.uri = _thumb_uri(_placeholder(self.px))
                elif kind == "raw":
                    t.uri = _thumb_uri(_raw_thumb(base, self.px, t.box))
                else:
                    t.uri = _thumb_uri(_crop_thumb(base, self.px, t.five))


def _raw_file(raw_root: Path, rel: str) -> Path:
    """The raw file a manifest path (`path_text`, lossless for any name) refers to."""
    from toonlab.data.decode import path_from_text

    return raw_root / path_from_text(rel)


def _load_raw(path: Path):
    """The raw image as ingest decoded it (EXIF orientation applied), or None."""
    from PIL import Image

    from toonlab.data.decode import decode_file
    from toonlab.data.params import DecodeParams

    # Ingest's size and aspect limits are for training data, not for looking at files.
    res = decode_file(path, DecodeParams(min_side=1, max_aspect=1e6))
    if res.status != "ok" or res.image is None:
        return None
    return Image.fromarray(np.ascontiguousarray(res.image[..., :3]))


def _load_crop(path: Path):
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _raw_thumb(im, px: int, box: tuple[float, float, float, float] | None):
    from PIL import Image, ImageDraw

    w, h = im.size
    s = px / max(w, h)
    tw, th = max(1, round(w * s)), max(1, round(h * s))
    small = im.resize((tw, th), Image.Resampling.LANCZOS, reducing_gap=3.0)
    canvas = Image.new("RGB", (px, px), (48, 48, 48))
    ox, oy = (px - tw) // 2, (px - th) // 2
    canvas.paste(small, (ox, oy))
    if box is not None:
        x0, y0, x1, y1 = (ox + box[0] * s, oy + box[1] * s, ox + box[2] * s, oy + box[3] * s)
        if x1 > x0 and y1 > y0:
            ImageDraw.Draw(canvas).rectangle([x0, y0, x1, y1], outline=(255, 48, 48), width=max(1, px // 48))
    return canvas


def _checker(side: int, cell: int = 16):
    from PIL import Image

    yy, xx = np.mgrid[0:side, 0:side]
    light = ((yy // cell + xx // cell) % 2 == 0)
    grey = np.where(light, 204, 153).astype(np.uint8)
    return Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)]))


def _crop_thumb(rgba, px: int, five: list[float] | None):
    """The crop over a checkerboard (so the matte shows), with the five landmarks."""
    from PIL import Image, ImageDraw

    side = rgba.size[0]
    comp = Image.alpha_composite(_checker(side, max(2, side // 16)), rgba).convert("RGB")
    thumb = comp.resize((px, px), Image.Resampling.LANCZOS)
    if five is not None:
        draw = ImageDraw.Draw(thumb)
        s = px / 256.0  # five_256 is in 256 px crop coordinates (pixel centres at integers)
        r = max(1.0, px / 64)
        for x, y in zip(five[0::2], five[1::2]):
            cx, cy = (x + 0.5) * s - 0.5, (y + 0.5) * s - 0.5
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(0, 220, 90))
    return thumb


def _placeholder(px: int):
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (px, px), (96, 96, 96))
    d = ImageDraw.Draw(im)
    d.line([(0, 0), (px - 1, px - 1)], fill=(160, 160, 160), width=max(1, px // 32))
    d.line([(0, px - 1), (px - 1, 0)], fill=(160, 160, 160), width=max(1, px // 32))
    return im


def _thumb_uri(im) -> str:
    # Baseline JPEG, quality 85, 4:2:0: the same pixels give the same bytes.
    return codec.jpeg_uri(im, quality=85, subsampling=2)


def sample_evenly(items: Sequence[Any], k: int) -> list[Any]:
    """At most k items spread evenly over the sequence (all of them when it is short)."""
    n = len(items)
    if n <= k:
        return list(items)
    return [items[i * n // k] for i in range(k)]


# ----------------------------------------------------------------------------- histograms


def _finite(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        if v is None:
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


HIST_METRICS = (
    ("face_px", "face size (box width, raw px)", False),
    ("yaw", "yaw (degrees)", False),
    ("blur", "blur (variance of Laplacian, log scale)", True),
    ("bg_fraction", "background fraction", False),
)


def histogram_png(faces: list[dict], title: str) -> bytes:
    """Kept vs rejected faces: 2x2 histograms, as deterministic PNG bytes (Agg, no metadata)."""
    import matplotlib
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    kept = [r for r in faces if r["status"] == "ok"]
    rejected = [r for r in faces if r["status"] != "ok"]
    with matplotlib.style.context("default"), matplotlib.rc_context({"svg.hashsalt": "toonlab",
                                                                     "font.size": 9}):
        fig = Figure(figsize=(9.0, 6.0), dpi=90)
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, 2)
        for ax, (key, label, logx) in zip(axes.ravel(), HIST_METRICS):
            k = _finite(r.get(key) for r in kept)
            j = _finite(r.get(key) for r in rejected)
            if logx:
                k = [v for v in k if v > 0]
                j = [v for v in j if v > 0]
            both = k + j
            if not both:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            else:
                lo, hi = min(both), max(both)
                if logx:
                    bins = np.geomspace(lo, hi * 1.0001 if hi > lo else lo * 2, 31)
                    ax.set_xscale("log")
                else:
                    bins = np.linspace(lo, hi if hi > lo else lo + 1, 31)
                if k:
                    ax.hist(k, bins=bins, color="#2a9d5c", alpha=0.6, label=f"kept ({len(k)})")
                if j:
                    ax.hist(j, bins=bins, color="#d1495b", alpha=0.6, label=f"rejected ({len(j)})")
                ax.legend(loc="best", frameon=False)
            ax.set_xlabel(label)
            ax.set_ylabel("faces")
        fig.suptitle(title)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


# ----------------------------------------------------------------------------- HTML


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;max-width:1200px;
padding:0 1em;color:#222;background:#fafafa}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#eee}td.n{text-align:right;font-variant-numeric:tabular-nums}
.warning{background:#fff3cd;border:2px solid #e0a800;color:#6b4e00;padding:.8em 1em;margin:1em 0;
font-weight:600;border-radius:4px}
.sheet{display:flex;flex-wrap:wrap;gap:6px;margin:.5em 0 1em}
.sheet figure{margin:0;font-size:11px;text-align:center;overflow:hidden}
.sheet figcaption{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.sheet img{display:block;border:2px solid transparent}
.rep img{border-color:#2a9d5c}.rep figcaption{color:#2a9d5c;font-weight:600}
.group{border:1px solid #ddd;background:#fff;padding:.3em .6em;margin:.4em 0}
.note{color:#666;font-size:90%}
nav a{margin-right:1em}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _sheet(thumbs: list[_Thumb], px: int, rep_flags: list[bool] | None = None) -> str:
    parts = ['<div class="sheet">']
    for i, t in enumerate(thumbs):
        cls = ' class="rep"' if rep_flags and rep_flags[i] else ""
        parts.append(f'<figure{cls} style="width:{px + 4}px" title="{_e(t.title)}">'
                     f'<img src="{t.uri}" width="{px}" height="{px}" alt="{_e(t.caption)}">'
                     f"<figcaption>{_e(t.caption)}</figcaption></figure>")
    parts.append("</div>")
    return "".join(parts)


def _count_table(counts: Mapping[str, int], head: tuple[str, str] = ("reason", "count")) -> str:
    if not counts:
        return '<p class="note">none</p>'
    rows = "".join(f'<tr><td>{_e(k)}</td><td class="n">{v}</td></tr>' for k, v in counts.items())
    return f"<table><tr><th>{_e(head[0])}</th><th>{_e(head[1])}</th></tr>{rows}</table>"


def _shown(n_shown: int, n: int) -> str:
    if n_shown < n:
        return f'<p class="note">showing {n_shown} of {n}, sampled evenly in file-name order</p>'
    return ""


def _file_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


@dataclass
class DomainReport:
    stats: dict
    kept: list[_Thumb]
    n_kept: int
    rejected: dict[str, tuple[list[_Thumb], int]]
    ingest_rejected: list[dict]
    groups: list[tuple[str, list[_Thumb], list[bool]]]
    n_groups: int
    hist_png: bytes
    human: list[_Thumb] = field(default_factory=list)    # faces a human review decided
    n_human: int = 0


def plan_domain(domain: str, stats: dict, ingest_rows: list[dict], processed_rows: list[dict],
                 curated_rows: list[dict], raw_root: Path, proc_root: Path, params: CurateParams,
                 thumbs: Thumbs) -> DomainReport:
    k = params.contact_sheet_max
    key = lambda r: (r["raw_path"], int(r["face_index"]))  # noqa: E731

    kept_rows = sample_evenly(curated_rows, k)
    kept = []
    for r in kept_rows:
        crop = r.get("crop_256") or r.get("crop_128") or ""
        cap = f"{_file_name(r['raw_path'])} #{r['face_index']}"
        kept.append(thumbs.crop(proc_root / crop, cap, f"{r['raw_path']} face {r['face_index']} ({r['split']})",
                                r.get("five_256") if r.get("crop_256") else None))

    rejected: dict[str, tuple[list[_Thumb], int]] = {}
    by_reason: dict[str, list[dict]] = defaultdict(list)
    for r in processed_rows:
        if r["status"] != "ok":
            by_reason[r.get("reason") or "(none)"].append(r)
    for reason in sorted(by_reason):
        rows = sorted(by_reason[reason], key=key)
        sheet = []
        for r in sample_evenly(rows, k):
            fi = int(r["face_index"])
            cap = _file_name(r["raw_path"]) + (f" #{fi}" if fi >= 0 else "")
            title = f"{r['raw_path']}: {r.get('detail') or reason}"
            sheet.append(thumbs.raw(_raw_file(raw_root, r["raw_path"]), cap, title, r.get("box") or None))
        rejected[reason] = (sheet, len(rows))

    groups_rows: dict[str, list[dict]] = defaultdict(list)
    for r in ingest_rows:
        if r.get("dup_group"):
            groups_rows[r["dup_group"]].append(r)
    groups = []
    for gid in sample_evenly(sorted(groups_rows), k):
        members = sorted(groups_rows[gid], key=lambda r: (bool(r.get("duplicate_of")), r["path"]))
        members = members[:k]
        sheet, reps = [], []
        for r in members:
            rep = not r.get("duplicate_of")
            cap = ("\u2605 " if rep else "") + _file_name(r["path"])
            title = f"{r['path']}: " + ("representative" if rep else f"{r.get('reason')} of {r.get('duplicate_of')}")
            sheet.append(thumbs.raw(_raw_file(raw_root, r["path"]), cap, title))
            reps.append(rep)
        groups.append((gid, sheet, reps))

    ingest_rejected = sorted((r for r in ingest_rows if r.get("status") != "ok" and not r.get("dup_group")),
                             key=lambda r: (r.get("reason") or "", r["path"]))
    faces = [r for r in processed_rows if int(r["face_index"]) >= 0]
    report = DomainReport(stats, kept, len(curated_rows), rejected, ingest_rejected, groups, len(groups_rows),
                          histogram_png(faces, f"{domain}: kept vs rejected faces"))
    human_rows = [r for r in processed_rows if r.get("decided_by") == "human"]
    report.n_human = len(human_rows)
    for r in sample_evenly(human_rows, k):
        cap = f"{'kept' if r['status'] == 'ok' else 'rejected'} {_file_name(r['raw_path'])} #{r['face_index']}"
        title = f"{r['raw_path']} face {r['face_index']}: {r.get('detail') or ''} (automatic: {r.get('auto_reason') or 'kept'})"
        if r.get("crop_256") or r.get("crop_128"):
            report.human.append(thumbs.crop(proc_root / (r.get("crop_256") or r.get("crop_128")), cap, title))
        else:
            report.human.append(thumbs.raw(_raw_file(raw_root, r["raw_path"]), cap, title, r.get("box") or None))
    return report


def _summary_table(reports: dict[str, DomainReport]) -> str:
    doms = list(reports)
    lines = [
        ("raw files", lambda s: s["raw_files"]),
        ("ingest: ok", lambda s: s["ingest"]["ok"]),
        ("ingest: rejected", lambda s: s["ingest"]["rejected"]),
        ("ingest: duplicate groups", lambda s: s["ingest"]["duplicate_groups"]),
        ("face stage: images", lambda s: s["faces"]["images"]),
        ("images with faces", lambda s: s["faces"]["images_with_faces"]),
        ("images rejected (image level)", lambda s: s["faces"]["images_rejected"]),
        ("faces detected", lambda s: s["faces"]["detected"]),
        ("faces kept", lambda s: s["faces"]["kept"]),
        ("faces rejected", lambda s: s["faces"]["rejected"]),
        ("images kept", lambda s: s["faces"]["images_kept"]),
    ] + [(f"{sp}: faces (images)", (lambda sp: lambda s: f"{s['split'][sp]['faces']} ({s['split'][sp]['images']})")(sp))
         for sp in SPLITS]
    head = "<tr><th>stage</th>" + "".join(f"<th>{_e(d)}</th>" for d in doms) + "</tr>"
    body = "".join("<tr><td>" + _e(name) + "</td>" + "".join(f'<td class="n">{_e(fn(reports[d].stats))}</td>'
                                                               for d in doms) + "</tr>" for name, fn in lines)
    return f"<table>{head}{body}</table>"


def _backends_table(reports: dict[str, DomainReport]) -> str:
    rows = []
    for d, rep in reports.items():
        for b in rep.stats["backends"]:
            flag = ' <strong>(low-quality fallback)</strong>' if b["stage"] == "matte" and b["name"] == FLOODFILL else ""
            rows.append(f'<tr><td>{_e(d)}</td><td>{_e(b["stage"])}</td><td>{_e(b["name"])}{flag}</td>'
                        f'<td>{_e(b["version"])}</td><td class="n">{b["rows"]}</td></tr>')
    if not rows:
        return '<p class="note">no backend recorded</p>'
    return ("<table><tr><th>domain</th><th>stage</th><th>backend</th><th>version</th><th>rows</th></tr>"
            + "".join(rows) + "</table>")


def _review_section(review: dict | None, rep: DomainReport, px: int) -> str:
    """Human review (toonlab.faces.review): counts per decision and reason, the faces it
    decided, and the decisions that could not be applied."""
    if not review:
        return ""
    out = [f"<h3>Human review ({review['decisions']} decisions in {_e(review['file'])})</h3>\n",
           f'<p class="note">rejected by a human: {review["rejected"]}; kept against the automatic checks: '
           f'{review["rescued"]}; agreeing with them: {review["confirmed"]}; stale: {len(review["stale"])}; '
           f'refused: {len(review["refused"])}</p>\n']
    counts = {f"{dec}: {reason}": n for dec, by in review["by_decision_reason"].items() for reason, n in by.items()}
    out.append(_count_table(counts, ("decision: reason", "faces")))
    if rep.human:
        out.append(f"<h4>Faces decided by a human ({rep.n_human})</h4>\n" + _shown(len(rep.human), rep.n_human)
                   + _sheet(rep.human, px) + "\n")
    bad = [(s, "stale: no such image or face any more") for s in review["stale"]] + [
        (s, "refused: an image-level rejection cannot be kept" if s.get("why") == "image_level"
         else "refused: the face has no aligned crop") for s in review["refused"]]
    if bad:
        out.append("<h4>Decisions not applied</h4>\n<table><tr><th>line</th><th>sha256</th><th>face</th>"
                   "<th>decision</th><th>why</th></tr>"
                   + "".join(f'<tr><td class="n">{s["line"]}</td><td>{_e(s["sha256"][:16])}\u2026</td>'
                             f'<td class="n">{s["face_index"]}</td><td>{_e(s["decision"])}</td><td>{_e(why)}</td></tr>'
                             for s, why in bad) + "</table>\n")
    return "".join(out)


def render_html(reports: dict[str, DomainReport], params: CurateParams) -> str:
    px = params.thumb_px
    out = ['<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
           '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
           "<title>ToonLab curation report</title>\n", f"<style>{CSS}</style>\n</head>\n<body>\n",
           "<h1>ToonLab curation report</h1>\n"]
    r = params.split
    out.append(f'<p class="note">split: train {r.train:g} / val {r.val:g} / test {r.test:g} by hash of the image '
               f"sha256 (salt {_e(params.salt)!s}); contact sheets show at most {params.contact_sheet_max} "
               "thumbnails.</p>\n")
    flood = [d for d, rep in reports.items() if rep.stats["floodfill_matte"]]
    if flood:
        out.append(f'<div class="warning floodfill">Warning: the {_e(", ".join(flood))} mattes were made with the '
                   f'"{FLOODFILL}" matte backend, a lower-quality fallback. '
                   "Check the alpha of the kept crops below before training on them.</div>\n")
    out.append("<nav>" + "".join(f'<a href="#domain-{_e(d)}">{_e(d)}</a>' for d in reports) + "</nav>\n")
    out.append("<h2>Counts per stage</h2>\n" + _summary_table(reports) + "\n")
    out.append("<h2>Backends</h2>\n" + _backends_table(reports) + "\n")

    for d, rep in reports.items():
        s = rep.stats
        out.append(f'<h2 id="domain-{_e(d)}">{_e(d)}</h2>\n')
        out.append("<h3>Ingest rejections by reason</h3>\n" + _count_table(s["ingest"]["rejected_by_reason"]))
        out.append("<h3>Images rejected at image level, by reason</h3>\n"
                   + _count_table(s["faces"]["images_rejected_by_reason"]))
        out.append("<h3>Faces rejected by reason</h3>\n" + _count_table(s["faces"]["rejected_by_reason"]))
        out.append("<h3>Split sizes</h3>\n<table><tr><th>split</th><th>faces</th><th>images</th></tr>"
                   + "".join(f'<tr><td>{sp}</td><td class="n">{s["split"][sp]["faces"]}</td>'
                             f'<td class="n">{s["split"][sp]["images"]}</td></tr>' for sp in SPLITS) + "</table>\n")
        out.append("<h3>Kept faces per license</h3>\n"
                   '<p class="note">the URL list\'s license column, from the crawl log; unknown: not from a crawl '
                   "or no license given</p>\n" + _count_table(s.get("licenses", {}), ("license", "faces")))

        out.append(_review_section(s.get("review"), rep, px))
        out.append(f"<h3>Kept faces ({rep.n_kept})</h3>\n")
        out.append('<p class="note">aligned 256 px crops over a checkerboard (transparent = matte '
                   'background); green dots: the five landmarks</p>\n')
        out.append(_shown(len(rep.kept), rep.n_kept) + (_sheet(rep.kept, px) if rep.kept else
                                                        '<p class="note">none</p>') + "\n")
        for reason, (sheet, n) in rep.rejected.items():
            out.append(f'<h3>Rejected: {_e(reason)} ({n})</h3>\n<p class="note">raw images; red box: the face '
                       "concerned</p>\n" + _shown(len(sheet), n) + _sheet(sheet, px) + "\n")

        out.append(f"<h3>Files rejected by ingest ({len(rep.ingest_rejected)}, duplicates below)</h3>\n")
        if rep.ingest_rejected:
            shown = rep.ingest_rejected[: params.contact_sheet_max * 4]
            out.append("<table><tr><th>file</th><th>reason</th><th>detail</th></tr>"
                       + "".join(f'<tr><td>{_e(r["path"])}</td><td>{_e(r.get("reason"))}</td>'
                                 f'<td>{_e(r.get("detail"))}</td></tr>' for r in shown) + "</table>\n"
                       + _shown(len(shown), len(rep.ingest_rejected)).replace(", sampled evenly in file-name order", ""))
        else:
            out.append('<p class="note">none</p>\n')

        out.append(f"<h3>Duplicate groups ({rep.n_groups})</h3>\n")
        if rep.groups:
            out.append('<p class="note">\u2605 and green frame: the representative kept by ingest; the others '
                       "were rejected as exact or near duplicates</p>\n" + _shown(len(rep.groups), rep.n_groups))
            for gid, sheet, reps in rep.groups:
                out.append(f'<div class="group"><strong>group {_e(gid)}</strong> ({len(sheet)} shown)'
                           + _sheet(sheet, px, reps) + "</div>\n")
        else:
            out.append('<p class="note">none</p>\n')

        out.append("<h3>Face measurements: kept vs rejected</h3>\n"
                   f'<img src="{codec.png_uri(rep.hist_png)}" alt="{_e(d)} histograms" style="max-width:100%">\n')
    out.append("</body>\n</html>\n")
    return "".join(out)
