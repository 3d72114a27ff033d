"""`toonlab report`: one self-contained HTML page (`reports/index.html`) over every run.

Sections: the curation summary (from `reports/curation/summary.json`), a metric table
per run with the best value of each column marked, the ablation comparison (variants
named in `params.yaml`, per family and per set of several families), the published
tables of `paper_tables.yaml` (the U-GAT-IT paper's KID x100) beside the measured KID of
the variants that reproduce their rows, with the Kendall tau of the two orderings,
side-by-side evaluation grids (rows: the same test inputs, columns: runs), each run's
latest training samples and its loss curves (DVCLive TSVs, drawn by matplotlib as SVG).
Every image is embedded as a data URI and there is no script or style from outside, so
the page works offline and can be mailed as one file.

This module gathers the values; the markup is `toonlab/templates/report.html.j2`, which
escapes every value it prints (run names, reasons, metric names and labels are text).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from toonlab.eval.params import ReportParams
from toonlab.log import get_logger
from toonlab.schema import Section, validate
from toonlab.util import codec, fileio
from toonlab.util.templates import render

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


def _png_uri(path: Path) -> str:
    return codec.png_uri(path.read_bytes())


class _Notes:
    """The reasons of a table's "n/a" cells, numbered in order of first use: each cell
    points at its footnote, and a reason shared by several cells is listed once."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}

    def cell(self, reason: str) -> dict[str, Any]:
        n = self.numbers.setdefault(reason, len(self.numbers) + 1)
        return {"text": "n/a", "best": False, "na": n, "reason": reason}

    def listed(self) -> list[dict[str, Any]]:
        return [{"n": n, "reason": reason} for reason, n in self.numbers.items()]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# ----------------------------------------------------------------------------- pieces


def metric_table(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Runs x metrics; the best value per column marked; unavailable cells say 'n/a' with
    the reason in a tooltip and a footnote (`report.html.j2`, macro metric_table)."""
    cols = [c for c in COLUMNS if any(c[0] in r or UNAVAILABLE_KEYS.get(c[0]) in r.get("unavailable", {})
                                      for r in rows.values())]
    best: dict[str, float] = {}
    for key, _, higher in cols:
        vals = [r[key] for r in rows.values() if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if len(vals) > 1 and len(set(vals)) > 1:   # a tie across every run marks nothing
            best[key] = max(vals) if higher else min(vals)
    notes = _Notes()
    out_rows = []
    for run, r in rows.items():
        cells = []
        for key, _, _ in cols:
            v = r.get(key)
            if isinstance(v, (int, float)):
                cells.append({"text": _fmt(v), "best": best.get(key) == v, "na": 0, "reason": ""})
            else:
                cells.append(notes.cell(r.get("unavailable", {}).get(UNAVAILABLE_KEYS.get(key, key), "not measured")))
        out_rows.append({"run": run, "family": r.get("family", ""), "step": r.get("step", ""),
                         "images": r.get("n_images", ""), "cells": cells})
    return {"columns": [{"label": label, "higher": higher} for _, label, higher in cols], "rows": out_rows,
            "notes": notes.listed()}


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


def loss_chart(curves: dict[str, tuple[list[float], list[float]]]) -> bytes | None:
    """Loss curves of one run as an SVG line chart (shared axes, legend: the loss names),
    drawn by matplotlib under the pages' chart setup; None when nothing was logged. The
    page shows it as an <img> data URI: an image's SVG runs no script and shares no ids
    with the page, and matplotlib escapes the names it writes as <text>."""
    from toonlab.util.templates import figure, figure_bytes

    curves = {k: v for k, v in sorted(curves.items()) if v[0]}
    if not curves:
        return None
    with figure(5.8, 2.5, layout="constrained") as fig:
        ax = fig.subplots()
        for name, (xs, ys) in curves.items():
            # A label starting with "_" would be left out of the legend by matplotlib.
            ax.plot(xs, ys, linewidth=1.2, label=" " + name if name.startswith("_") else name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(True, linewidth=0.4, alpha=0.5)
        legend = fig.legend(loc="outside right upper", frameon=False)
        for text in legend.get_texts():
            text.set_parse_math(False)     # a "$" in a loss name is text, not mathtext
        return figure_bytes(fig, "svg")


def run_curves(run_dir: Path, max_points: int) -> dict[str, str]:
    """{"uri": the loss chart's data URI, or "" and "message": why there is none}."""
    folder = run_dir / "dvclive" / "plots" / "metrics" / "train"
    if not folder.is_dir():
        return {"uri": "", "message": "no DVCLive logs"}
    losses = {p.stem: read_curve(p, max_points) for p in sorted(folder.glob("*.tsv"))
              if p.stem not in NOT_LOSSES}
    svg = loss_chart(losses)
    if svg is None:
        return {"uri": "", "message": "no logged losses"}
    return {"uri": codec.data_uri(svg, "image/svg+xml"), "message": ""}


def comparison_grid(eval_dir: Path, runs: list[str]) -> list[dict[str, Any]]:
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
        n_rows = max(len(list((eval_dir / r).glob("output-*.png"))) for r in members)
        conditional = key != "unconditional"
        rows = []
        for i in range(n_rows):
            src = eval_dir / members[0] / f"input-{i:03d}.png"
            outputs = [eval_dir / r / f"output-{i:03d}.png" for r in members]
            rows.append({"input": _png_uri(src) if conditional and src.is_file() else None,
                         "outputs": [_png_uri(f) if f.is_file() else None for f in outputs]})
        out.append({"key": key, "conditional": conditional, "runs": members, "rows": rows})
    return out


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


def curation_summary(summary: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """One row per domain of `reports/curation/summary.json`; None without a summary."""
    if not summary:
        return None
    rows = []
    for name, d in sorted(summary.get("domains", {}).items()):
        ing, faces, split = d.get("ingest", {}), d.get("faces", {}), d.get("split", {})
        rows.append({"domain": name, "counts": [d.get("raw_files", ""), ing.get("ok", ""), ing.get("rejected", ""),
                                                faces.get("kept", ""), faces.get("rejected", "")]
                     + [split.get(s, {}).get("faces", 0) for s in ("train", "val", "test")]})
    return rows


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


def paper_table(table: PaperTable, rows: dict[str, dict[str, Any]], variants: Any, subdir: str) -> dict[str, Any]:
    """One published table: the paper's columns, the measured column beside them, the
    Kendall tau of the two orderings, the source and the not-the-paper's-data note."""
    m = table.measured
    compare = next(c for c in table.columns if c.key == m.compare_with)
    notes = _Notes()
    pairs: list[tuple[float, float]] = []
    out_rows = []
    for row in table.rows:
        value, reason = _measured(row, table, rows, variants, subdir)
        if value is None:
            measured = notes.cell(reason)
        else:
            pairs.append((row.values[m.compare_with], value))
            measured = {"text": f"{value:.2f}", "best": False, "na": 0, "reason": ""}
        out_rows.append({"label": row.label, "run": f"{subdir}/{row.variant}" if row.variant else "(paper only)",
                         "paper": [f"{row.values[c.key]:.2f}" for c in table.columns], "measured": measured})
    tau = kendall_tau([p for p, _ in pairs], [v for _, v in pairs]) if len(pairs) >= 2 else None
    return {"table": table, "lower": table.source.direction == "lower-is-better", "compare": compare,
            "rows": out_rows, "notes": notes.listed(), "pairs": len(pairs),
            "tau": None if tau is None else f"{tau:.3f}"}


# ----------------------------------------------------------------------------- page


def build_report(params) -> Path:
    """Write `params.report.out` from what is on disk; return its path."""
    rp: ReportParams = params.report
    out = Path(rp.out)
    models = Path(params.train.out_dir)
    metrics_dir = Path(params.evaluate.metrics_dir)
    eval_dir = Path(params.evaluate.out_dir)
    runs = list(params.evaluate.runs)
    ab = getattr(params, "ablations", None)
    variants = list(ab.variants) if ab is not None else []
    subdir = ab.runs_subdir if ab is not None else "ablations"
    ablation_runs = [f"{subdir}/{v}" for v in variants]

    rows = {r: m for r in runs + ablation_runs if (m := _read_json(metrics_dir / f"{r}.json"))}

    cur_dir = Path(params.curate.report_dir)
    link = None
    if (cur_dir / "index.html").is_file():
        import os

        link = os.path.relpath(cur_dir / "index.html", out.parent)

    main_rows = {r: rows[r] for r in runs if r in rows}
    families: list[dict[str, Any]] = []
    sets: list[dict[str, Any]] = []
    if variants:
        by_family: dict[str, dict[str, dict[str, Any]]] = {}
        for v in variants:
            if f"{subdir}/{v}" in rows:
                by_family.setdefault(ab.variants[v].family, {})[v] = rows[f"{subdir}/{v}"]
        for fam, vrows in by_family.items():
            if fam in rows:   # the main run of the family, as the baseline row
                vrows = {f"{fam} (main run)": rows[fam], **vrows}
            families.append({"name": fam, "table": metric_table(vrows),
                             "variants": [{"name": v, "describe": ab.variants[v].describe()}
                                          for v in vrows if v in ab.variants]})
        # Sets across families (e.g. ugatit_vs_cyclegan): their variants side by side.
        for set_name, members in ab.sets.items():
            srows = {v: rows[f"{subdir}/{v}"] for v in members if f"{subdir}/{v}" in rows}
            if len(srows) > 1 and len({ab.variants[v].family for v in srows}) > 1:
                sets.append({"name": set_name, "table": metric_table(srows)})

    training = []
    for run in runs + ablation_runs:
        run_dir = models / run
        if not (run_dir / "summary.json").is_file():
            continue
        latest = run_dir / "samples" / "latest.png"
        training.append({"run": run, "curves": run_curves(run_dir, rp.curve_points),
                         "samples": _png_uri(latest) if latest.is_file() else None})

    page = render(
        "report.html.j2",
        curation=curation_summary(_read_json(cur_dir / "summary.json")), curation_link=link,
        metrics=metric_table(main_rows) if main_rows else None,
        ablations=bool(variants), families=families, sets=sets,
        paper_tables=[paper_table(t, rows, ab.variants if ab is not None else {}, subdir)
                      for t in load_paper_tables()],
        grids=comparison_grid(eval_dir, [r for r in runs + ablation_runs if r in rows]),
        training=training)
    fileio.write_text(out, page)
    log.info("report written to %s (%d runs with metrics)", out, len(rows))
    return out
