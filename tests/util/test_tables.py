"""Parquet tables: one writer (atomic, byte-stable), one reader with clear errors."""

from __future__ import annotations

import pyarrow as pa
import pytest

from toonlab.errors import ToonlabError, UsageError
from toonlab.util import tables

SCHEMA = [("name", pa.string()), ("n", pa.int32()), ("xs", pa.list_(pa.float32()))]


def test_rows_on_a_schema_round_trip_and_are_byte_stable(tmp_path):
    rows = [{"name": "a", "n": 1, "xs": [0.5], "extra": "dropped"}, {"name": "b", "n": None, "xs": None}]
    tables.write_parquet(rows, tmp_path / "t.parquet", SCHEMA)
    first = (tmp_path / "t.parquet").read_bytes()
    tables.write_parquet(rows, tmp_path / "t.parquet", SCHEMA)
    assert (tmp_path / "t.parquet").read_bytes() == first
    got = tables.read_rows(tmp_path / "t.parquet")
    assert got == [{"name": "a", "n": 1, "xs": [0.5]}, {"name": "b", "n": None, "xs": None}]
    table = tables.read_table(tmp_path / "t.parquet")
    tables.write_parquet(table, tmp_path / "u.parquet")   # a pyarrow Table is written as it is
    assert tables.read_rows(tmp_path / "u.parquet") == got
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_missing_and_damaged_tables_say_what_and_how(tmp_path):
    with pytest.raises(UsageError, match=r"no curated manifest at .*x\.parquet; run `toonlab curate` first"):
        tables.read_table(tmp_path / "x.parquet", "curated manifest", "run `toonlab curate` first")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ToonlabError, match="cannot read table .*bad.parquet"):
        tables.read_rows(tmp_path / "bad.parquet")
