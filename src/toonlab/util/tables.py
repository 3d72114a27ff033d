"""Parquet tables, the manifests every stage hands to the next: one writer (zstd,
atomic, byte-stable for the same rows) and one reader with clear errors."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from toonlab.errors import ToonlabError, UsageError
from toonlab.util import fileio

Schema = Sequence[tuple[str, Any]]   # (column, pyarrow type) pairs


def write_parquet(data: Any, path: str | Path, schema: Schema | None = None) -> None:
    """Write a pyarrow Table, or rows (dicts) projected on `schema`'s columns, as zstd parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if schema is not None:
        data = pa.Table.from_pylist([{k: r.get(k) for k, _ in schema} for r in data],
                                    schema=pa.schema(list(schema)))
    buf = io.BytesIO()
    pq.write_table(data, buf, compression="zstd")
    fileio.write_bytes(path, buf.getvalue())


def read_table(path: str | Path, what: str = "table",
               hint: str = "run the previous stage first (e.g. `dvc repro` or `snakemake -c2 preprocess`)"):
    """The pyarrow Table at `path`; UsageError when it is missing, ToonlabError when damaged."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no {what} at {path}; {hint}")
    try:
        return pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a damaged file
        raise ToonlabError(f"cannot read {what} {path}: {exc}") from None


def read_rows(path: str | Path, what: str = "table",
              hint: str = "run the previous stage first (e.g. `dvc repro` or `snakemake -c2 preprocess`)") -> list[dict]:
    """The rows of the table at `path`, as dicts (see `read_table`)."""
    return read_table(path, what, hint).to_pylist()
