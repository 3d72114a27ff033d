"""The values of `toonlab report` that come from the runs' files: the metric tables
(runs x metrics, the best value of each column marked, every "n/a" with its reason as a
footnote), the side-by-side evaluation grids (images as data URIs) and the curation
summary. `toonlab.eval.report` renders them into the page.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from toonlab.util import codec

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


def png_uri(path: Path) -> str:
    return codec.png_uri(path.read_bytes())


class Notes:
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
    notes = Notes()
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
            rows.append({"input": png_uri(src) if conditional and src.is_file() else None,
                         "outputs": [png_uri(f) if f.is_file() else None for f in outputs]})
        out.append({"key": key, "conditional": conditional, "runs": members, "rows": rows})
    return out


def _source_key(folder: Path) -> str:
    """Inputs identical across runs share a group: key on the first input's bytes."""
    import hashlib

    first = folder / "input-000.png"
    return "inputs " + hashlib.sha256(first.read_bytes()).hexdigest()[:8] if first.is_file() else "inputs"


def read_json(path: Path) -> dict[str, Any] | None:
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
