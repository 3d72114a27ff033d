"""Packing curated splits into memory-mapped arrays."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pydantic import ValidationError

from toonlab.errors import ToonlabError, UsageError
from toonlab.faces.pack import load_split, pack
from toonlab.faces.params import PackParams

CURATED_SCHEMA = pa.schema([
    ("domain", pa.string()), ("raw_path", pa.string()), ("sha256", pa.string()), ("face_index", pa.int32()),
    ("status", pa.string()), ("reason", pa.string()), ("crop_256", pa.string()), ("crop_128", pa.string()),
    ("five_256", pa.list_(pa.float32())), ("split", pa.string()),
])

# (raw_path, face_index, split): sorted by (raw_path, face_index) as curate writes them; no test rows.
ROWS = [("a.png", 0, "train"), ("b/c.png", 0, "val"), ("b/c.png", 1, "val"), ("d.png", 0, "train"),
        ("e.png", 0, "train")]


def build(root: Path, domain: str = "photo", rows=ROWS) -> None:
    proc = root / "processed" / domain
    records = []
    for k, (raw_path, fi, split) in enumerate(rows):
        sha = hashlib.sha256(raw_path.encode()).hexdigest()
        rng = np.random.default_rng(k)
        rec = {"domain": domain, "raw_path": raw_path, "sha256": sha, "face_index": fi, "status": "ok",
               "reason": "", "split": split,
               "five_256": (rng.uniform(0, 255, 10)).astype(np.float32).tolist()}
        for px in (256, 128):
            rel = f"{px}/{sha[:12]}_{fi}.png"
            (proc / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (px, px, 4), dtype=np.uint8)).save(proc / rel)
            rec[f"crop_{px}"] = rel
        records.append(rec)
    (root / "curated").mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records, schema=CURATED_SCHEMA), root / "curated" / f"{domain}.parquet")


def png(root: Path, domain: str, rel: str) -> np.ndarray:
    return np.asarray(Image.open(root / "processed" / domain / rel))


@pytest.fixture
def packed(tmp_path: Path):
    build(tmp_path)
    params = PackParams(out_dir=str(tmp_path / "packed"))
    result = pack(["photo"], tmp_path / "curated", tmp_path / "processed", params)
    return tmp_path, params, result


def test_shapes_dtypes_and_index(packed):
    root, params, result = packed
    assert result["domains"] == {"photo": {"train": 3, "val": 2, "test": 0}}
    folder = root / "packed" / "photo"
    index = json.loads((folder / "index.json").read_text())
    assert index["crop_px"] == [128, 256]
    for split, n in (("train", 3), ("val", 2), ("test", 0)):
        want = [(p, fi) for p, fi, s in ROWS if s == split]
        assert [(r["raw_path"], r["face_index"]) for r in index["splits"][split]["rows"]] == want
        assert index["splits"][split]["count"] == n
        for px in (128, 256):
            arrays = load_split(root / "packed", "photo", split, px)
            assert set(arrays) == {"rgb", "alpha", "five"}
            assert arrays["rgb"].shape == (n, px, px, 3) and arrays["rgb"].dtype == np.uint8
            assert arrays["alpha"].shape == (n, px, px) and arrays["alpha"].dtype == np.uint8
            assert arrays["five"].shape == (n, 5, 2) and arrays["five"].dtype == np.float32
            for kind, a in arrays.items():
                assert isinstance(a, np.memmap), kind
                assert not a.flags.writeable
                spec = index["splits"][split]["arrays"][str(px)][kind]
                assert spec["shape"] == list(a.shape) and spec["dtype"] == a.dtype.name
                assert (folder / spec["file"]).is_file()


def test_pixels_and_landmarks_round_trip(packed):
    root, _, _ = packed
    table = pq.read_table(root / "curated" / "photo.parquet").to_pylist()
    for split in ("train", "val"):
        rows = [r for r in table if r["split"] == split]
        for px in (128, 256):
            arrays = load_split(root / "packed", "photo", split, px)
            for i, r in enumerate(rows):
                rgba = png(root, "photo", r[f"crop_{px}"])
                assert np.array_equal(arrays["rgb"][i], rgba[..., :3])
                assert np.array_equal(arrays["alpha"][i], rgba[..., 3])
                five = np.asarray(r["five_256"], np.float64).reshape(5, 2)
                want = five if px == 256 else (five + 0.5) / 2 - 0.5
                np.testing.assert_allclose(arrays["five"][i], want, atol=1e-4)
    # sanity of the 128 px convention: the centre of the 256 crop maps to the centre of the 128 crop
    assert (127.5 + 0.5) / 2 - 0.5 == 63.5


def test_no_temporary_files_left(packed):
    root, _, _ = packed
    names = sorted(p.name for p in (root / "packed" / "photo").iterdir())
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]
    assert len(names) == 3 * 2 * 3 + 1  # splits x sizes x kinds + index.json


def test_repack_with_fewer_sizes_removes_stale_arrays(packed):
    root, _, _ = packed
    folder = root / "packed" / "photo"
    (folder / ".train_128_rgb.npy.abc123.tmp").write_bytes(b"left by a killed run")
    pack(["photo"], root / "curated", root / "processed", PackParams(out_dir=str(root / "packed"), crop_px=[128]))
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([f"{s}_128_{k}.npy" for s in ("train", "val", "test") for k in ("rgb", "alpha", "five")]
                           + ["index.json"])
    with pytest.raises(ToonlabError, match="256"):
        load_split(root / "packed", "photo", "train", 256)


def test_failure_leaves_previous_arrays_and_no_temporaries(packed):
    root, params, _ = packed
    folder = root / "packed" / "photo"
    before = (folder / "val_128_rgb.npy").read_bytes()
    table = pq.read_table(root / "curated" / "photo.parquet").to_pylist()
    victim = [r for r in table if r["split"] == "val"][1]
    (root / "processed" / "photo" / victim["crop_128"]).unlink()
    with pytest.raises(ToonlabError, match="missing crop"):
        pack(["photo"], root / "curated", root / "processed", params)
    assert (folder / "val_128_rgb.npy").read_bytes() == before
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_wrong_crop_size_is_an_error(tmp_path):
    build(tmp_path)
    rel = pq.read_table(tmp_path / "curated" / "photo.parquet").to_pylist()[0]["crop_128"]
    Image.new("RGBA", (100, 128)).save(tmp_path / "processed" / "photo" / rel)
    with pytest.raises(ToonlabError, match="expected 128x128"):
        pack(["photo"], tmp_path / "curated", tmp_path / "processed", PackParams(out_dir=str(tmp_path / "p")))


def test_all_empty_domain(tmp_path):
    build(tmp_path, domain="anime", rows=[])
    pack(["anime"], tmp_path / "curated", tmp_path / "processed", PackParams(out_dir=str(tmp_path / "p")))
    for split in ("train", "val", "test"):
        a = load_split(tmp_path / "p", "anime", split, 256)
        assert a["rgb"].shape == (0, 256, 256, 3) and a["five"].shape == (0, 5, 2)


def test_params_and_inputs_validated(tmp_path):
    for bad in ([64], [], [128, "256"]):
        with pytest.raises(ValidationError):
            PackParams(crop_px=bad)
    with pytest.raises(ValidationError):
        PackParams(size=3)
    with pytest.raises(UsageError, match="curate"):
        pack(["photo"], tmp_path / "nowhere", tmp_path, PackParams(out_dir=str(tmp_path / "p")))
    with pytest.raises(UsageError, match="split"):
        load_split(tmp_path, "photo", "dev", 128)


def test_index_rows_carry_provenance(tmp_path):
    """The curated manifest's provenance columns reach index.json, row by row."""
    build(tmp_path)
    path = tmp_path / "curated" / "photo.parquet"
    table = pq.read_table(path)
    urls = [f"http://example.org/{p}" if p != "d.png" else None for p in table["raw_path"].to_pylist()]
    table = (table.append_column("source_url", pa.array(urls, pa.string()))
             .append_column("license", pa.array(["CC0" if u else None for u in urls], pa.string()))
             .append_column("fetched_at", pa.array(["2026-01-01T00:00:00Z" if u else None for u in urls],
                                                   pa.string())))
    pq.write_table(table, path)
    pack(["photo"], tmp_path / "curated", tmp_path / "processed", PackParams(out_dir=str(tmp_path / "packed")))
    index = json.loads((tmp_path / "packed/photo/index.json").read_text())
    assert index["version"] == 2
    rows = {(r["raw_path"], r["face_index"]): r for s in index["splits"].values() for r in s["rows"]}
    assert rows[("b/c.png", 1)] == {"raw_path": "b/c.png", "sha256": hashlib.sha256(b"b/c.png").hexdigest(),
                                    "face_index": 1, "source_url": "http://example.org/b/c.png",
                                    "license": "CC0", "fetched_at": "2026-01-01T00:00:00Z"}
    assert (rows[("d.png", 0)]["source_url"], rows[("d.png", 0)]["license"]) == (None, None)
