"""`toonlab.faces.provenance`: the join of ingest provenance onto curated faces, by sha256."""

import pyarrow as pa

from toonlab.faces import provenance

INGEST = [
    # a crawled file and a hand-added exact duplicate of it (same sha256, no URL)
    {"path": "a_copy.jpg", "sha256": "aa", "source_url": None, "license": None, "fetched_at": None},
    {"path": "aa.jpg", "sha256": "aa", "source_url": "http://x/a.jpg", "license": "CC-BY-4.0",
     "fetched_at": "2026-01-01T00:00:00Z"},
    {"path": "b.png", "sha256": "bb", "source_url": "http://x/b.png", "license": "", "fetched_at": "2026-01-02T00:00:00Z"},
    {"path": "own.png", "sha256": "cc", "source_url": None, "license": None, "fetched_at": None},
    {"path": "unreadable", "sha256": "", "source_url": None, "license": None, "fetched_at": None},
]


def test_by_sha256_prefers_the_crawled_copy():
    index = provenance.by_sha256(INGEST)
    assert set(index) == {"aa", "bb", "cc"}
    assert index["aa"] == {"source_url": "http://x/a.jpg", "license": "CC-BY-4.0",
                           "fetched_at": "2026-01-01T00:00:00Z"}
    assert index["bb"]["license"] is None  # an empty license cell is no license
    assert index["cc"] == {"source_url": None, "license": None, "fetched_at": None}


def test_join_rows_and_table():
    faces = [{"raw_path": "a_copy.jpg", "sha256": "aa", "face_index": 0},
             {"raw_path": "b.png", "sha256": "bb", "face_index": 1},
             {"raw_path": "own.png", "sha256": "cc", "face_index": 0},
             {"raw_path": "gone.png", "sha256": "dd", "face_index": 0}]
    joined = provenance.join(faces, provenance.by_sha256(INGEST))
    assert [r["source_url"] for r in joined] == ["http://x/a.jpg", "http://x/b.png", None, None]
    assert joined[0]["face_index"] == 0 and joined[0]["raw_path"] == "a_copy.jpg"

    table = pa.Table.from_pylist([{**f, "license": "stale"} for f in faces])
    out = provenance.add_columns(table, INGEST)
    assert out.column_names == ["raw_path", "sha256", "face_index", "license", "source_url", "fetched_at"]
    assert out["license"].to_pylist() == ["CC-BY-4.0", None, None, None]  # replaced, not duplicated
    assert out["fetched_at"].to_pylist() == ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", None, None]
    assert provenance.record(out.to_pylist()[1], "split") == {
        "raw_path": "b.png", "sha256": "bb", "face_index": 1, "source_url": "http://x/b.png", "license": None,
        "fetched_at": "2026-01-02T00:00:00Z", "split": None}


def test_license_counts():
    rows = [{"license": "CC0"}, {"license": None}, {"license": "CC-BY"}, {"license": "CC0"}, {}]
    assert provenance.license_counts(rows) == {"CC0": 2, "unknown": 2, "CC-BY": 1}
    assert list(provenance.license_counts(rows)) == ["CC0", "unknown", "CC-BY"]
