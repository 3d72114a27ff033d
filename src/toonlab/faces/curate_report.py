"""The curation report: `reports/curation/index.html`, one self-contained page (CSS
inline, every image a base64 data URI, no script, no external reference) with the counts
per stage, contact sheets of kept crops and of rejected images per reason, histograms of
the face measurements, the duplicate groups found by ingest and the backends used.

`toonlab.faces.curate` decides (split, curated manifests, counts); this module only
draws: thumbnails and histograms, and the values of the page, whose markup is
`toonlab/templates/curation.html.j2` (every value it prints escaped). The output is a
pure function of its inputs: sorted iteration, fixed encoders (baseline JPEG thumbnails,
Agg PNG histograms without metadata), no timestamps.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from toonlab.faces.params import CurateParams
from toonlab.log import progress
from toonlab.util import codec
from toonlab.util.templates import render

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
    from toonlab.util.templates import figure, figure_bytes

    kept = [r for r in faces if r["status"] == "ok"]
    rejected = [r for r in faces if r["status"] != "ok"]
    with figure(9.0, 6.0, dpi=90, font_size=9) as fig:
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
        fig.suptitle(title).set_parse_math(False)   # the domain's name is text, not mathtext
        fig.tight_layout()
        return figure_bytes(fig, "png")


# ----------------------------------------------------------------------------- HTML


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


def _summary_table(reports: dict[str, DomainReport]) -> list[dict[str, Any]]:
    """Counts per stage (rows) and domain (columns)."""
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
    return [{"stage": name, "counts": [fn(rep.stats) for rep in reports.values()]} for name, fn in lines]


def _backends(reports: dict[str, DomainReport]) -> list[dict[str, Any]]:
    return [{"domain": d, "stage": b["stage"], "name": b["name"], "version": b["version"], "rows": b["rows"],
             "fallback": b["stage"] == "matte" and b["name"] == FLOODFILL}
            for d, rep in reports.items() for b in rep.stats["backends"]]


def _review(review: dict | None) -> dict[str, Any] | None:
    """Human review (toonlab.faces.review_decisions): counts per decision and reason, and the
    decisions that could not be applied."""
    if not review:
        return None
    counts = [(f"{dec}: {reason}", n) for dec, by in review["by_decision_reason"].items() for reason, n in by.items()]
    bad = [(s, "stale: no such image or face any more") for s in review["stale"]] + [
        (s, "refused: an image-level rejection cannot be kept" if s.get("why") == "image_level"
         else "refused: the face has no aligned crop") for s in review["refused"]]
    return {**review, "counts": counts, "n_stale": len(review["stale"]), "n_refused": len(review["refused"]),
            "not_applied": [{"line": s["line"], "sha256": s["sha256"][:16], "face_index": s["face_index"],
                             "decision": s["decision"], "why": why} for s, why in bad]}


def _domain(name: str, rep: DomainReport, params: CurateParams) -> dict[str, Any]:
    s = rep.stats
    shown = rep.ingest_rejected[: params.contact_sheet_max * 4]
    return {
        "name": name, "review": _review(s.get("review")), "rep": rep,
        "ingest_reasons": list(s["ingest"]["rejected_by_reason"].items()),
        "image_reasons": list(s["faces"]["images_rejected_by_reason"].items()),
        "face_reasons": list(s["faces"]["rejected_by_reason"].items()),
        "splits": [{"name": sp, "faces": s["split"][sp]["faces"], "images": s["split"][sp]["images"]} for sp in SPLITS],
        "licenses": list(s.get("licenses", {}).items()),
        "rejected": [{"reason": reason, "sheet": sheet, "n": n} for reason, (sheet, n) in rep.rejected.items()],
        "ingest_rejected": [{"path": r["path"], "reason": r.get("reason"), "detail": r.get("detail")} for r in shown],
        "groups": [{"id": gid, "sheet": sheet, "reps": reps} for gid, sheet, reps in rep.groups],
        "histograms": codec.png_uri(rep.hist_png),
    }


def render_html(reports: dict[str, DomainReport], params: CurateParams) -> str:
    """The page (`toonlab/templates/curation.html.j2`, which escapes every value it prints)."""
    r = params.split
    return render("curation.html.j2", px=params.thumb_px, split=f"train {r.train:g} / val {r.val:g} / test {r.test:g}",
                  salt=params.salt, sheet_max=params.contact_sheet_max, floodfill=FLOODFILL,
                  flood=[d for d, rep in reports.items() if rep.stats["floodfill_matte"]],
                  domain_names=list(reports), summary=_summary_table(reports), backends=_backends(reports),
                  domains=[_domain(d, rep, params) for d, rep in reports.items()])
