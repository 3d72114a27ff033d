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

This module puts the page together; the values come from `report_data` (metric tables,
grids, curation summary), `report_plots` (loss curves) and `paper_tables` (the published
tables); the markup is `toonlab/templates/report.html.j2`, which escapes every value it
prints (run names, reasons, metric names and labels are text).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toonlab.eval.paper_tables import load_paper_tables, paper_table
from toonlab.eval.params import ReportParams
from toonlab.eval.report_data import comparison_grid, curation_summary, metric_table, png_uri, read_json
from toonlab.eval.report_plots import run_curves
from toonlab.log import get_logger
from toonlab.util import fileio
from toonlab.util.templates import render

log = get_logger(__name__)


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

    rows = {r: m for r in runs + ablation_runs if (m := read_json(metrics_dir / f"{r}.json"))}

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
                         "samples": png_uri(latest) if latest.is_file() else None})

    page = render(
        "report.html.j2",
        curation=curation_summary(read_json(cur_dir / "summary.json")), curation_link=link,
        metrics=metric_table(main_rows) if main_rows else None,
        ablations=bool(variants), families=families, sets=sets,
        paper_tables=[paper_table(t, rows, ab.variants if ab is not None else {}, subdir)
                      for t in load_paper_tables()],
        grids=comparison_grid(eval_dir, [r for r in runs + ablation_runs if r in rows]),
        training=training)
    fileio.write_text(out, page)
    log.info("report written to %s (%d runs with metrics)", out, len(rows))
    return out
