"""`toonlab report`: one self-contained HTML page (`reports/index.html`) over every run.

Sections: the curation summary (from `reports/curation/summary.json`), a metric table
per run with the best value of each column marked, the ablation comparison (variants
named in `params.yaml`, per family and per set of several families), side-by-side evaluation grids (rows: the same test inputs,
columns: runs), each run's latest training samples and its loss curves (DVCLive TSVs,
drawn as inline SVG). Every image is embedded as a data URI and there is no script or
style from outside, so the page works offline and can be mailed as one file.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from toonlab.eval.params import ReportParams
from toonlab.log import get_logger
from toonlab.util import codec, fileio

log = get_logger(__name__)

# column, label, True when higher is better
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("fid", "FID", False),
    ("kid_x100", "KID x100", False),
    ("landmark_nme", "landmark NME", False),
    ("detection_rate", "detection rate", True),
    ("identity_cosine", "identity cosine", True),
    ("cycle_psnr", "cycle PSNR (dB)", True),
    ("cycle_ssim", "cycle SSIM", True),
)
UNAVAILABLE_KEYS = {"fid": "fid", "kid_x100": "kid", "identity_cosine": "identity", "cycle_psnr": "cycle",
                    "cycle_ssim": "cycle", "landmark_nme": "landmarks"}


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _png_uri(path: Path) -> str:
    return codec.png_uri(path.read_bytes())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return _e(v)


# ----------------------------------------------------------------------------- pieces


def metric_table(rows: dict[str, dict[str, Any]]) -> str:
    """Runs x metrics; the best value per column in bold with a marker; unavailable cells
    say 'n/a' with the reason in a tooltip and a footnote."""
    cols = [c for c in COLUMNS if any(c[0] in r or UNAVAILABLE_KEYS.get(c[0]) in r.get("unavailable", {})
                                      for r in rows.values())]
    best: dict[str, float] = {}
    for key, _, higher in cols:
        vals = [r[key] for r in rows.values() if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if len(vals) > 1 and len(set(vals)) > 1:   # a tie across every run marks nothing
            best[key] = max(vals) if higher else min(vals)
    notes: dict[str, int] = {}
    out = ['<table class="metrics"><thead><tr><th>run</th><th>family</th><th>step</th><th>images</th>']
    out += [f"<th>{_e(label)} {'&uarr;' if higher else '&darr;'}</th>" for _, label, higher in cols]
    out.append("</tr></thead><tbody>")
    for run, r in rows.items():
        out.append(f"<tr><td>{_e(run)}</td><td>{_e(r.get('family', ''))}</td><td>{_e(r.get('step', ''))}</td>"
                   f"<td>{_e(r.get('n_images', ''))}</td>")
        for key, _, _ in cols:
            v = r.get(key)
            if isinstance(v, (int, float)) and v is not None:
                mark = best.get(key) == v
                out.append(f'<td class="best">{_fmt(v)} &#9733;</td>' if mark else f"<td>{_fmt(v)}</td>")
            else:
                reason = r.get("unavailable", {}).get(UNAVAILABLE_KEYS.get(key, key), "not measured")
                n = notes.setdefault(reason, len(notes) + 1)
                out.append(f'<td class="na" title="{_e(reason)}">n/a<sup>{n}</sup></td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    if notes:
        out.append('<ol class="notes">' + "".join(f"<li value=\"{n}\">{_e(reason)}</li>"
                                                   for reason, n in notes.items()) + "</ol>")
    out.append('<p class="small">&#9733; best value of the column (arrows: which way is better).</p>')
    return "".join(out)


def read_curve(tsv: Path, max_points: int) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for line in tsv.read_text().splitlines()[1:]:
        parts = line.split("\t")
        try:
            x, y = float(parts[0]), float(parts[-1])
        except (ValueError, IndexError):
            continue
        if math.isfinite(y):
            xs.append(x)
            ys.append(y)
    if len(xs) > max_points:
        idx = [round(i * (len(xs) - 1) / (max_points - 1)) for i in range(max_points)]
        xs, ys = [xs[i] for i in idx], [ys[i] for i in idx]
    return xs, ys


NOT_LOSSES = {"images_per_s", "step_time_s"}   # logged beside the losses, on other scales
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def svg_curves(curves: dict[str, tuple[list[float], list[float]]], width: int = 520, height: int = 220) -> str:
    """Loss curves of one run as an inline SVG line chart (shared axes, legend)."""
    curves = {k: v for k, v in curves.items() if v[0]}
    if not curves:
        return '<p class="small">no logged losses</p>'
    x0 = min(min(x) for x, _ in curves.values())
    x1 = max(max(x) for x, _ in curves.values())
    y0 = min(min(y) for _, y in curves.values())
    y1 = max(max(y) for _, y in curves.values())
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    left, right, top, bottom = 48, 150, 10, 24
    pw, ph = width - left - right, height - top - bottom

    def px(x: float, y: float) -> str:
        return f"{left + (x - x0) / (x1 - x0) * pw:.1f},{top + (1 - (y - y0) / (y1 - y0)) * ph:.1f}"

    out = [f'<svg width="{width}" height="{height}" class="curve">',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>',
           f'<text x="{left - 4}" y="{top + 10}" text-anchor="end">{_fmt(y1)}</text>',
           f'<text x="{left - 4}" y="{top + ph}" text-anchor="end">{_fmt(y0)}</text>',
           f'<text x="{left}" y="{height - 6}">{_fmt(x0)}</text>',
           f'<text x="{left + pw}" y="{height - 6}" text-anchor="end">step {_fmt(x1)}</text>']
    for i, (name, (xs, ys)) in enumerate(sorted(curves.items())):
        colour = PALETTE[i % len(PALETTE)]
        pts = " ".join(px(x, y) for x, y in zip(xs, ys))
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{pts}"/>')
        ly = top + 12 + 14 * i
        out.append(f'<line x1="{left + pw + 8}" y1="{ly - 4}" x2="{left + pw + 24}" y2="{ly - 4}" '
                   f'stroke="{colour}" stroke-width="2"/><text x="{left + pw + 28}" y="{ly}">{_e(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def run_curves(run_dir: Path, max_points: int) -> str:
    folder = run_dir / "dvclive" / "plots" / "metrics" / "train"
    if not folder.is_dir():
        return '<p class="small">no DVCLive logs</p>'
    losses = {p.stem: read_curve(p, max_points) for p in sorted(folder.glob("*.tsv"))
              if p.stem not in NOT_LOSSES}
    return svg_curves(losses)


def comparison_grid(eval_dir: Path, runs: list[str]) -> str:
    """Rows: the fixed test inputs; columns: input then each run's output. Runs are
    grouped by source domain, so every row shows the same input."""
    groups: dict[str, list[str]] = {}
    for run in runs:
        folder = eval_dir / run
        if not any(folder.glob("output-*.png")):
            continue
        key = "unconditional" if not any(folder.glob("input-*.png")) else _source_key(folder)
        groups.setdefault(key, []).append(run)
    out = []
    for key, members in groups.items():
        rows = max(len(list((eval_dir / r).glob("output-*.png"))) for r in members)
        out.append(f"<h3>{_e(key)}</h3><table class=\"grid\"><thead><tr>")
        if key != "unconditional":
            out.append("<th>input</th>")
        out += [f"<th>{_e(r)}</th>" for r in members]
        out.append("</tr></thead><tbody>")
        for i in range(rows):
            out.append("<tr>")
            if key != "unconditional":
                src = eval_dir / members[0] / f"input-{i:03d}.png"
                out.append(f'<td><img alt="input {i}" src="{_png_uri(src)}"></td>' if src.is_file() else "<td></td>")
            for r in members:
                f = eval_dir / r / f"output-{i:03d}.png"
                out.append(f'<td><img alt="{_e(r)} {i}" src="{_png_uri(f)}"></td>' if f.is_file() else "<td></td>")
            out.append("</tr>")
        out.append("</tbody></table>")
    return "".join(out) or '<p class="small">no evaluated runs yet (`toonlab evaluate RUN`)</p>'


def _source_key(folder: Path) -> str:
    """Inputs identical across runs share a group: key on the first input's bytes."""
    import hashlib

    first = folder / "input-000.png"
    return "inputs " + hashlib.sha256(first.read_bytes()).hexdigest()[:8] if first.is_file() else "inputs"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def curation_summary(summary: dict[str, Any] | None, link: str | None) -> str:
    if not summary:
        return '<p class="small">no curation summary (run `toonlab curate`)</p>'
    out = ['<table class="metrics"><thead><tr><th>domain</th><th>raw files</th><th>ingested</th>'
           '<th>rejected at ingest</th><th>faces kept</th><th>faces rejected</th><th>train</th><th>val</th>'
           '<th>test</th></tr></thead><tbody>']
    for name, d in sorted(summary.get("domains", {}).items()):
        ing, faces, split = d.get("ingest", {}), d.get("faces", {}), d.get("split", {})
        out.append(f"<tr><td>{_e(name)}</td><td>{_e(d.get('raw_files', ''))}</td><td>{_e(ing.get('ok', ''))}</td>"
                   f"<td>{_e(ing.get('rejected', ''))}</td><td>{_e(faces.get('kept', ''))}</td>"
                   f"<td>{_e(faces.get('rejected', ''))}</td>"
                   + "".join(f"<td>{_e(split.get(s, {}).get('faces', 0))}</td>" for s in ("train", "val", "test"))
                   + "</tr>")
    out.append("</tbody></table>")
    if link:
        out.append(f'<p><a href="{_e(link)}">full curation report</a> (contact sheets, rejection reasons)</p>')
    return "".join(out)


CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0} th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left} .best{font-weight:bold;background:#e8f6e8}
.na{color:#999} .small{color:#666;font-size:90%} .grid td{padding:2px} .grid img{width:96px;height:96px;
image-rendering:auto;display:block} .samples img{max-width:100%} .curve text{font-size:10px;fill:#333}
.run{display:inline-block;vertical-align:top;margin:0 24px 24px 0} ol.notes{font-size:90%;color:#666}
"""


# ----------------------------------------------------------------------------- page


def build_report(params) -> Path:
    """Write `params.report.out` from what is on disk; return its path."""
    rp: ReportParams = params.report
    out = Path(rp.out)
    models = Path(params.train.out_dir)
    metrics_dir = Path(params.evaluate.metrics_dir)
    eval_dir = Path(params.evaluate.out_dir)
    runs = list(params.evaluate.runs)
    variants = list(params.ablations.variants) if hasattr(params, "ablations") else []
    ablation_runs = [f"{params.ablations.runs_subdir}/{v}" for v in variants]

    rows = {r: m for r in runs + ablation_runs if (m := _read_json(metrics_dir / f"{r}.json"))}
    parts = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
             "<title>ToonLab report</title>", f"<style>{CSS}</style></head><body>",
             "<h1>ToonLab report</h1>",
             '<p class="small">Every trained run on the same held-out faces. Self-contained: all images are '
             "embedded.</p>"]

    cur_dir = Path(params.curate.report_dir)
    link = None
    if (cur_dir / "index.html").is_file():
        import os

        link = os.path.relpath(cur_dir / "index.html", out.parent)
    parts.append("<h2>Data</h2>" + curation_summary(_read_json(cur_dir / "summary.json"), link))

    parts.append("<h2>Metrics</h2>")
    main_rows = {r: rows[r] for r in runs if r in rows}
    parts.append(metric_table(main_rows) if main_rows else
                 '<p class="small">no evaluated runs yet (`snakemake -c2 evaluate` or `dvc repro`)</p>')

    if variants:
        parts.append("<h2>Ablations</h2>")
        by_family: dict[str, dict[str, dict[str, Any]]] = {}
        for v in variants:
            spec = params.ablations.variants[v]
            key = f"{params.ablations.runs_subdir}/{v}"
            if key in rows:
                by_family.setdefault(spec.family, {})[v] = rows[key]
        if not by_family:
            parts.append('<p class="small">variants are defined in params.yaml (`ablations.variants`) but none is '
                         "evaluated yet: `snakemake -c2 ablations`</p>")
        for fam, vrows in by_family.items():
            if fam in rows:   # the main run of the family, as the baseline row
                vrows = {f"{fam} (main run)": rows[fam], **vrows}
            parts.append(f"<h3>{_e(fam)}</h3>" + metric_table(vrows))
            parts.append("<ul class=\"small\">" + "".join(
                f"<li><b>{_e(v)}</b>: {_e(params.ablations.variants[v].describe())}</li>"
                for v in vrows if v in params.ablations.variants) + "</ul>")
        # Sets across families (e.g. ugatit_vs_cyclegan): their variants side by side.
        for set_name, members in params.ablations.sets.items():
            srows = {v: rows[f"{params.ablations.runs_subdir}/{v}"] for v in members
                     if f"{params.ablations.runs_subdir}/{v}" in rows}
            if len(srows) > 1 and len({params.ablations.variants[v].family for v in srows}) > 1:
                parts.append(f"<h3>set {_e(set_name)}</h3>" + metric_table(srows))

    parts.append("<h2>Evaluation grids</h2>")
    parts.append(comparison_grid(eval_dir, [r for r in runs + ablation_runs if r in rows]))

    parts.append("<h2>Training</h2>")
    for run in runs + ablation_runs:
        run_dir = models / run
        if not (run_dir / "summary.json").is_file():
            continue
        parts.append(f'<div class="run"><h3>{_e(run)}</h3>')
        parts.append(run_curves(run_dir, rp.curve_points))
        latest = run_dir / "samples" / "latest.png"
        if latest.is_file():
            parts.append(f'<div class="samples"><img alt="{_e(run)} samples" src="{_png_uri(latest)}"></div>')
        parts.append("</div>")
    parts.append("</body></html>\n")
    fileio.write_text(out, "".join(parts))
    log.info("report written to %s (%d runs with metrics)", out, len(rows))
    return out
