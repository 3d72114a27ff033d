"""The published tables of `toonlab report` (`paper_tables.yaml`, beside this module:
the U-GAT-IT paper's KID x100): their schema and loading, their check against the
ablations of params.yaml, and each table beside the measured values of the variants that
reproduce its rows, with the Kendall tau of the two orderings.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from toonlab.eval.report_data import Notes
from toonlab.schema import Section, validate

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
    notes = Notes()
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
