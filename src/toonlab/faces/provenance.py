"""Provenance of curated faces: raw file -> URL, license and fetch time of the crawl.

Ingest records, per raw file, `source_url`, `license` and `fetched_at` joined from the
crawl log (see `toonlab.data.ingest`; null for files not from a crawl). This module
carries them on, by the raw file's sha256, to the rows of later stages: the curated
manifests (`toonlab curate`), pack's `index.json` and `toonlab export-dataset`.

Pure functions of plain rows (dicts) and pyarrow tables; no I/O.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping

JOINED = ("source_url", "license", "fetched_at")  # from the ingest manifest, by sha256
COLUMNS = ("raw_path", "sha256", *JOINED)  # what a curated face carries back to its source
UNKNOWN_LICENSE = "unknown"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def by_sha256(ingest_rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str | None]]:
    """sha256 -> {source_url, license, fetched_at} of an ingest manifest's rows.

    Rows with the same bytes (exact duplicates) share their provenance; where only some
    of them have one (a crawled copy beside a hand-added copy), the row with a source
    URL wins, then the earliest path."""
    out: dict[str, dict[str, str | None]] = {}
    for r in sorted(ingest_rows, key=lambda r: (not _text(r.get("source_url")), str(r.get("path") or ""))):
        sha = _text(r.get("sha256"))
        if sha and sha not in out:
            out[sha] = {k: _text(r.get(k)) for k in JOINED}
    return out


def join(rows: Iterable[Mapping[str, Any]], index: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """`rows` (with a `sha256`) each with `source_url`, `license`, `fetched_at` from `index`
    (`by_sha256`); None where the raw file has no provenance."""
    none = dict.fromkeys(JOINED)
    return [{**r, **{k: index.get(r.get("sha256") or "", none).get(k) for k in JOINED}} for r in rows]


def add_columns(table, ingest_rows: Iterable[Mapping[str, Any]]):
    """A pyarrow table with a `sha256` column, with the provenance columns set (appended,
    or replaced where present) from the ingest manifest's rows."""
    import pyarrow as pa

    index = by_sha256(ingest_rows)
    shas = table["sha256"].to_pylist()
    for k in JOINED:
        values = pa.array([index.get(sha or "", {}).get(k) for sha in shas], type=pa.string())
        if k in table.column_names:
            table = table.set_column(table.column_names.index(k), k, values)
        else:
            table = table.append_column(k, values)
    return table


def record(row: Mapping[str, Any], *extra: str) -> dict[str, Any]:
    """The provenance fields of a curated row (raw_path, sha256, face_index, then the joined
    columns, None when the row lacks them) plus the `extra` keys it names."""
    out: dict[str, Any] = {"raw_path": row.get("raw_path"), "sha256": row.get("sha256"),
                           "face_index": int(row["face_index"]) if row.get("face_index") is not None else None}
    out.update({k: _text(row.get(k)) for k in JOINED})
    out.update({k: row.get(k) for k in extra})
    return out


def license_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Faces per license (`unknown` for none), most first, then by name."""
    counts = Counter(_text(r.get("license")) or UNKNOWN_LICENSE for r in rows)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
