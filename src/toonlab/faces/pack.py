"""`toonlab pack`: curated splits -> memory-mappable arrays for the trainers.

For each domain, split (train/val/test) and crop size in `pack.crop_px`:

    <out_dir>/<domain>/<split>_<px>_rgb.npy    (N, px, px, 3) uint8
    <out_dir>/<domain>/<split>_<px>_alpha.npy  (N, px, px)    uint8, the matte
    <out_dir>/<domain>/<split>_<px>_five.npy   (N, 5, 2)      float32, landmarks in px coordinates
    <out_dir>/<domain>/index.json              rows in array order: raw_path, sha256, face_index and
                                               the provenance source_url, license, fetched_at

Row i of every array of a split is the face `index.json` lists at position i; the order
is the curated manifest's (raw_path, face_index). The pixels are the aligned crops'
exactly (`crop_128` / `crop_256` RGBA PNGs of the face stage). The provenance fields
come from the curated manifest (`toonlab.faces.provenance`; null when the raw file was
not crawled, or the manifest predates them). Landmarks come from
`five_256` with OpenCV's convention (pixel centres at integer coordinates, as the
alignment warp uses), so for the 128 px crop, which is the 256 px crop downscaled by
two, x_128 = (x_256 + 0.5) / 2 - 0.5.

Arrays are streamed: each is created with `np.lib.format.open_memmap` on a temporary
file in the destination folder, filled one image at a time, flushed, fsynced and
renamed over the destination; `index.json` is written last. An empty split gives
arrays with N = 0. `load_split` opens a split read-only as memory maps.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from toonlab.errors import ToonlabError, UsageError
from toonlab.faces import provenance
from toonlab.faces.params import PackParams
from toonlab.log import get_logger, progress
from toonlab.util import fileio, tables

log = get_logger(__name__)

SPLITS = ("train", "val", "test")
KINDS = ("rgb", "alpha", "five")
FIVE_POINT_NAMES = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")
INDEX_VERSION = 2  # 2: provenance fields in the rows


def array_name(split: str, px: int, kind: str) -> str:
    return f"{split}_{px}_{kind}.npy"


def array_spec(kind: str, n: int, px: int) -> tuple[tuple[int, ...], np.dtype]:
    if kind == "rgb":
        return (n, px, px, 3), np.dtype(np.uint8)
    if kind == "alpha":
        return (n, px, px), np.dtype(np.uint8)
    if kind == "five":
        return (n, 5, 2), np.dtype(np.float32)
    raise ValueError(f"unknown array kind {kind!r}")


def scale_five(five_256: Sequence[float], px: int) -> np.ndarray:
    """(5, 2) float32 landmarks in px-crop coordinates from the 256 px crop's ten numbers."""
    pts = np.asarray(five_256, dtype=np.float64)
    if pts.size != 10:
        raise ValueError(f"five_256 holds {pts.size} numbers, expected 10")
    pts = pts.reshape(5, 2)
    if px != 256:
        pts = (pts + 0.5) * (px / 256.0) - 0.5
    return pts.astype(np.float32)


def load_crop(path: Path, px: int) -> np.ndarray:
    """(px, px, 4) uint8 RGBA pixels of a crop PNG, exactly as stored."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.size != (px, px):
                raise ToonlabError(f"crop {path} is {im.size[0]}x{im.size[1]}, expected {px}x{px}")
            if im.mode != "RGBA":
                im = im.convert("RGBA")
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise ToonlabError(f"missing crop {path} (re-run the face stage)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ToonlabError(f"cannot read crop {path}: {exc}") from None


# ----------------------------------------------------------------------------- writing


class _AtomicArrays:
    """Temporary memory-mapped .npy files in the destination folder, renamed into place
    together by `commit`, removed on failure."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.pending: list[tuple[Path, Path]] = []  # (temporary, final)

    def create(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.memmap:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.folder)
        os.close(fd)
        self.pending.append((Path(tmp), self.folder / name))
        return np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)

    def commit(self, arrays: Sequence[np.memmap]) -> None:
        for a in arrays:
            a.flush()
        for tmp, _ in self.pending:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
        for tmp, final in self.pending:
            os.replace(tmp, final)
        self.pending = []

    def discard(self) -> None:
        for tmp, _ in self.pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self.pending = []


def _write_split(folder: Path, crops_root: Path, domain: str, split: str, px: int, rows: list[dict]) -> dict:
    n = len(rows)
    col = f"crop_{px}"
    writer = _AtomicArrays(folder)
    arrays: dict[str, np.memmap] = {}
    try:
        for kind in KINDS:
            shape, dtype = array_spec(kind, n, px)
            arrays[kind] = writer.create(array_name(split, px, kind), shape, dtype)
        for i, r in enumerate(progress(rows, f"pack {domain} {split} {px}px", total=n, unit="img")):
            rel = r.get(col) or ""
            if not rel:
                raise ToonlabError(f"{domain}: {r['raw_path']} face {r['face_index']} has no {col}")
            rgba = load_crop(crops_root / rel, px)
            arrays["rgb"][i] = rgba[..., :3]
            arrays["alpha"][i] = rgba[..., 3]
            try:
                arrays["five"][i] = scale_five(r.get("five_256") or [], px)
            except ValueError as exc:
                raise ToonlabError(f"{domain}: {r['raw_path']} face {r['face_index']}: {exc}") from None
        writer.commit(list(arrays.values()))
    except BaseException:
        arrays.clear()  # drop the maps before unlinking their files
        writer.discard()
        raise
    return {kind: {"file": array_name(split, px, kind), "shape": list(array_spec(kind, n, px)[0]),
                   "dtype": array_spec(kind, n, px)[1].name} for kind in KINDS}


def _clean_folder(folder: Path, keep: set[str]) -> None:
    """Remove temporaries left by a killed run and arrays of splits/sizes no longer packed."""
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        stale_tmp = p.name.startswith(".") and p.name.endswith(".tmp") and ".npy." in p.name
        stale_npy = p.suffix == ".npy" and p.name not in keep and p.name.split("_", 1)[0] in SPLITS
        if stale_tmp or stale_npy:
            p.unlink()


def pack(domains: Sequence[str], curated_dir: str | Path, processed_dir: str | Path,
         params: PackParams) -> dict[str, Any]:
    """Pack every domain's curated splits; return {domain: {split: face count}} and the layout."""
    curated_dir, processed_dir = Path(curated_dir), Path(processed_dir)
    domains = list(dict.fromkeys(domains))
    if not domains:
        raise UsageError("pack: no domains given")
    sizes = sorted(set(params.crop_px))
    result: dict[str, Any] = {"out_dir": str(params.out_dir), "crop_px": sizes, "domains": {}}
    for domain in domains:
        manifest = curated_dir / f"{domain}.parquet"
        table = tables.read_table(manifest, "curated manifest", "run `toonlab curate` first")
        needed = ["raw_path", "sha256", "face_index", "split", "five_256"] + [f"crop_{px}" for px in sizes]
        missing = [c for c in needed if c not in table.column_names]
        if missing:
            raise ToonlabError(f"curated manifest {manifest} lacks columns {missing}")
        needed += [c for c in provenance.JOINED if c in table.column_names]
        rows = table.select(needed).to_pylist()  # the manifest only; pixels are streamed
        bad = sorted({r["split"] for r in rows} - set(SPLITS))
        if bad:
            raise ToonlabError(f"curated manifest {manifest}: unknown split values {bad}")

        folder = Path(params.out_dir) / domain
        folder.mkdir(parents=True, exist_ok=True)
        keep = {array_name(s, px, k) for s in SPLITS for px in sizes for k in KINDS}
        _clean_folder(folder, keep)
        index: dict[str, Any] = {"version": INDEX_VERSION, "domain": domain, "crop_px": sizes,
                                 "five_point_names": list(FIVE_POINT_NAMES),
                                 "landmarks": "x, y in crop pixels, pixel centres at integer coordinates",
                                 "splits": {}}
        counts = {}
        for split in SPLITS:
            srows = [r for r in rows if r["split"] == split]
            entry: dict[str, Any] = {
                "count": len(srows),
                "rows": [provenance.record(r) for r in srows],
                "arrays": {},
            }
            for px in sizes:
                entry["arrays"][str(px)] = _write_split(folder, processed_dir / domain, domain, split, px, srows)
            index["splits"][split] = entry
            counts[split] = len(srows)
        fileio.write_json(folder / "index.json", index)
        _clean_folder(folder, keep)
        result["domains"][domain] = counts
        log.info("pack %s: train %d / val %d / test %d faces at %s px -> %s", domain, counts["train"],
                 counts["val"], counts["test"], "/".join(map(str, sizes)), folder)
    return result


# ----------------------------------------------------------------------------- reading


def load_split(out_dir: str | Path, domain: str, split: str, px: int) -> dict[str, np.memmap]:
    """Read-only memory maps {'rgb', 'alpha', 'five'} of one packed split."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    folder = Path(out_dir) / domain
    out: dict[str, np.memmap] = {}
    for kind in KINDS:
        path = folder / array_name(split, px, kind)
        if not path.is_file():
            raise ToonlabError(f"{path} does not exist; run `toonlab pack` (with {px} in pack.crop_px)")
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        out[kind] = arr
    n = {a.shape[0] for a in out.values()}
    if len(n) != 1:
        raise ToonlabError(f"{folder}: arrays of {split} {px}px disagree on the row count {sorted(n)}")
    return out
