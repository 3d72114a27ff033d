"""`toonlab report`: one self-contained HTML page (`reports/index.html`) over every run.

Sections: the curation summary (from `reports/curation/summary.json`), a metric table
per run with the best value of each column marked, the ablation comparison (variants
named in `params.yaml`, per family and per set of several families), the published
tables of `paper_tables.yaml` (the U-GAT-IT paper's KID x100) beside the measured KID of
the variants that reproduce their rows, with the Kendall tau of the two orderings,
side-by-side evaluation grids (rows: the same test inputs, columns: runs), each run's
latest training samples and its loss curves (DVCLive TSVs, drawn as inline SVG). Every image is embedded as a data URI and there is no script or
style from outside, so the page works offline and can be mailed as one file.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from toonlab.eval.params import ReportParams
from toonlab.log import get_logger
from toonlab.schema import Section, validate
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


def _na_cell(notes: dict[str, int], reason: str) -> str:
    """An "n/a" cell pointing at its reason, numbered once per table in `notes`."""
    n = notes.setdefault(reason, len(notes) + 1)
    return f'<td class="na" title="{_e(reason)}">n/a<sup>{n}</sup></td>'


def _notes_list(notes: dict[str, int]) -> str:
    return ('<ol class="notes">' + "".join(f'<li value="{n}">{_e(reason)}</li>' for reason, n in notes.items())
            + "</ol>") if notes else ""


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
                out.append(_na_cell(notes, reason))
        out.append("</tr>")
    out.append("</tbody></table>")
    out.append(_notes_list(notes))
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


# ----------------------------------------------------------------------------- paper tables

PAPER_TABLES = "paper_tables.yaml"   # beside this module, installed as package data


class PaperSource(Section):
    paper: Annotated[str, Field(min_length=1)]
    table: Annotated[str, Field(min_length=1)]     # e.g. "Table 1"
    metric: Annotated[str, Field(min_length=1)]    # e.g. "KID x100"
    direction: Literal["lower-is-better", "higher-is-better"]


class PaperColumn(Section):
    key: Annotated[str, Field(min_length=1)]
    label: Annotated[str, Field(min_length=1)]


class MeasuredColumn(Section):
    key: Annotated[str, Field(min_length=1)]               # in metrics/<run>.json, e.g. kid_x100
    unavailable_key: Annotated[str, Field(min_length=1)]   # in its `unavailable` mapping, e.g. kid
    label: Annotated[str, Field(min_length=1)]
    compare_with: Annotated[str, Field(min_length=1)]      # the paper column of the same direction
    source: str = "photo"                                  # the direction ToonLab measures
    target: str = "anime"


class PaperRow(Section):
    label: Annotated[str, Field(min_length=1)]
    variant: str = ""          # the ablations.variants entry that trains this row
    paper_only: str = ""       # why ToonLab has no run for it (a method it cannot train)
    values: dict[str, float]

    @model_validator(mode="after")
    def _one_of(self) -> PaperRow:
        if bool(self.variant) == bool(self.paper_only):
            raise ValueError(f"row {self.label!r}: give exactly one of `variant` and `paper_only`")
        return self


class PaperTable(Section):
    id: Annotated[str, Field(min_length=1)]
    title: Annotated[str, Field(min_length=1)]
    source: PaperSource
    set: str = ""              # the ablations.sets entry that trains its rows
    columns: Annotated[list[PaperColumn], Field(min_length=1)]
    measured: MeasuredColumn
    rows: Annotated[list[PaperRow], Field(min_length=1)]

    @model_validator(mode="after")
    def _keys(self) -> PaperTable:
        keys = [c.key for c in self.columns]
        if self.measured.compare_with not in keys:
            raise ValueError(f"table {self.id}: measured.compare_with {self.measured.compare_with!r} "
                             f"is not one of its columns {keys}")
        for row in self.rows:
            if set(row.values) != set(keys):
                raise ValueError(f"table {self.id}, row {row.label!r}: values for {sorted(row.values)}, "
                                 f"columns are {keys}")
        return self


class PaperTables(Section):
    tables: list[PaperTable]


def load_paper_tables(path: str | Path | None = None) -> list[PaperTable]:
    """The published tables (default: the package's `paper_tables.yaml`), validated."""
    import yaml

    if path is None:
        from importlib.resources import files

        text = files("toonlab.eval").joinpath(PAPER_TABLES).read_text(encoding="utf-8")
        where = f"toonlab/eval/{PAPER_TABLES}"
    else:
        text, where = Path(path).read_text(encoding="utf-8"), str(path)
    return validate(yaml.safe_load(text), PaperTables, source=where, strict=False).tables


def check_paper_tables(tables: list[PaperTable], variants: Any, sets: Any = None) -> list[str]:
    """Problems of the tables against params.yaml's ablations: rows naming an unknown
    variant, sets that are missing or do not hold the table's variants."""
    problems = []
    for t in tables:
        for row in t.rows:
            if row.variant and row.variant not in variants:
                problems.append(f"{t.id}: row {row.label!r} names variant {row.variant!r}, "
                                "not in ablations.variants")
        if sets is not None and t.set:
            if t.set not in sets:
                problems.append(f"{t.id}: set {t.set!r} is not in ablations.sets")
            else:
                missing = [r.variant for r in t.rows if r.variant and r.variant not in sets[t.set]]
                if missing:
                    problems.append(f"{t.id}: ablations.sets.{t.set} lacks {missing}")
    return problems


def kendall_tau(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b of two paired samples (ties handled as in scipy.stats.kendalltau);
    None when undefined (fewer than 2 pairs, or one side all tied)."""
    if len(x) != len(y):
        raise ValueError(f"kendall_tau: {len(x)} x values, {len(y)} y values")
    concordant = discordant = ties_x = ties_y = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                ties_x += 1
                ties_y += 1
            elif dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    pairs = n * (n - 1) // 2
    denom = math.sqrt((pairs - ties_x) * (pairs - ties_y))
    return None if denom == 0 else (concordant - discordant) / denom


NOT_PAPER_DATA = ("<b>Not the paper's dataset.</b> The paper's columns are its published numbers on its "
                  "selfie2anime data; the measured column ({label}) is ToonLab's, on its own packed test split "
                  "(the demo data unless real crawls were packed), in the paper's {direction} direction only "
                  "(ToonLab does not measure the reverse direction). Compare the orderings, not the values.")


def _measured(row: PaperRow, table: PaperTable, rows: dict[str, dict[str, Any]], variants: Any,
              subdir: str) -> tuple[float | None, str]:
    """(the measured value, or None and the reason) of one paper row."""
    m = table.measured
    if row.paper_only:
        return None, f"paper only: {row.paper_only}"
    if row.variant not in variants:
        return None, f"variant {row.variant} is not defined in params.yaml (ablations.variants)"
    r = rows.get(f"{subdir}/{row.variant}")
    if r is None:
        how = f"ablations='{{set: {table.set}}}'" if table.set else f"ablations='{{run: [{row.variant}]}}'"
        return None, f"not evaluated yet: snakemake -c2 ablations --config {how}"
    if (r.get("source"), r.get("target")) not in ((m.source, m.target), (None, None)):
        return None, f"the run translates {r.get('source')}→{r.get('target')}, not {m.source}→{m.target}"
    v = r.get(m.key)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v), ""
    return None, (r.get("unavailable") or {}).get(m.unavailable_key, "not measured")


def paper_table(table: PaperTable, rows: dict[str, dict[str, Any]], variants: Any, subdir: str) -> str:
    """One published table: the paper's columns, the measured column beside them, the
    Kendall tau of the two orderings, the source and the not-the-paper's-data note."""
    m, src = table.measured, table.source
    arrow = "&darr;" if src.direction == "lower-is-better" else "&uarr;"
    compare = next(c for c in table.columns if c.key == m.compare_with)
    out = [(f'<h3>{_e(table.title)}</h3><p class="small">Source: {_e(src.paper)}, {_e(src.table)}; '
            f"{_e(src.metric)}, {'lower' if src.direction == 'lower-is-better' else 'higher'} is better.</p>"),
           f'<p class="caveat">{NOT_PAPER_DATA.format(label=_e(m.label), direction=_e(compare.label))}</p>',
           (f'<table class="metrics paper" id="paper-{_e(table.id)}"><thead><tr><th>paper row</th>'
            "<th>ToonLab run</th>")]
    out += [f"<th>paper: {_e(c.label)} {_e(src.metric)} {arrow}</th>" for c in table.columns]
    out.append(f"<th>measured: {_e(m.label)} {arrow}</th></tr></thead><tbody>")
    notes: dict[str, int] = {}
    pairs: list[tuple[float, float]] = []
    for row in table.rows:
        value, reason = _measured(row, table, rows, variants, subdir)
        run = f"{subdir}/{row.variant}" if row.variant else "(paper only)"
        out.append(f"<tr><td>{_e(row.label)}</td><td>{_e(run)}</td>")
        out += [f"<td>{row.values[c.key]:.2f}</td>" for c in table.columns]
        if value is None:
            out.append(_na_cell(notes, reason))
        else:
            pairs.append((row.values[m.compare_with], value))
            out.append(f'<td class="measured">{value:.2f}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    out.append(_notes_list(notes))
    what = f"paper {_e(compare.label)} against measured {_e(m.label)}"
    if len(pairs) < 2:
        out.append(f'<p class="tau">Rank agreement (Kendall tau-b, {what}): not computed, fewer than 2 rows '
                   f"have both numbers ({len(pairs)} so far).</p>")
    else:
        tau = kendall_tau([p for p, _ in pairs], [v for _, v in pairs])
        shown = "undefined (every value of one side ties)" if tau is None else f"{tau:.3f}"
        out.append(f'<p class="tau">Rank agreement (Kendall tau-b, {what}, over the {len(pairs)} rows with both '
                   f"numbers): <b>{shown}</b> (1: the same ordering, &minus;1: reversed).</p>")
    return "".join(out)


def paper_tables_section(params, rows: dict[str, dict[str, Any]]) -> str:
    ab = getattr(params, "ablations", None)
    variants = ab.variants if ab is not None else {}
    subdir = ab.runs_subdir if ab is not None else "ablations"
    parts = [('<p class="small">Published numbers (from <code>toonlab/eval/paper_tables.yaml</code>) beside '
              "ToonLab's measurement of the ablation variant that reproduces each row.</p>")]
    parts += [paper_table(t, rows, variants, subdir) for t in load_paper_tables()]
    return "".join(parts)


CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0} th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left} .best{font-weight:bold;background:#e8f6e8}
.na{color:#999} .small{color:#666;font-size:90%} .grid td{padding:2px} .grid img{width:96px;height:96px;
image-rendering:auto;display:block} .samples img{max-width:100%} .curve text{font-size:10px;fill:#333}
.run{display:inline-block;vertical-align:top;margin:0 24px 24px 0} ol.notes{font-size:90%;color:#666}
.caveat{background:#fff4e0;border-left:4px solid #e0a030;padding:6px 10px;max-width:1000px}
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

    parts.append("<h2>Paper tables</h2>" + paper_tables_section(params, rows))

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
