"""Ingest throughput: cold vs incremental, on 2,000 generated images (5% duplicates,
5% corrupt) with the configured number of worker processes (default 2).

Prints files per second for each run and the ratios against the cold run, measured in
this process. The incremental run with nothing changed must be at least 20x faster.

    python benchmarks/ingest.py [--files 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from toonlab.data.ingest import ingest_domain
from toonlab.data.params import DecodeParams, IngestParams


def make_crawl(root: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    out = root / "photo"
    out.mkdir(parents=True)
    n_dup, n_bad = n * 5 // 100, n * 5 // 100
    originals = []
    for i in range(n - n_dup - n_bad):
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        side = int(rng.integers(256, 640))
        img = Image.fromarray(small).resize((side, side), Image.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        path = out / f"img_{i:05d}.jpg"
        path.write_bytes(buf.getvalue())
        originals.append(path)
    for i in range(n_dup):
        src = originals[int(rng.integers(len(originals)))]
        (out / f"dup_{i:05d}.jpg").write_bytes(src.read_bytes())
    for i in range(n_bad):
        src = originals[int(rng.integers(len(originals)))].read_bytes()
        (out / f"bad_{i:05d}.jpg").write_bytes(src[: len(src) // 2] if i % 2 else rng.bytes(2048))


def timed(raw: Path, work: Path, workers: int) -> tuple[float, int]:
    params = IngestParams(out_dir=str(work / "interim"), cache_dir=str(work / "cache"))
    t0 = time.perf_counter()
    stats = ingest_domain(raw, "photo", params, DecodeParams(), workers=workers)
    return time.perf_counter() - t0, stats.analysed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="toonlab-bench-ingest-"))
    try:
        raw = tmp / "raw"
        make_crawl(raw, args.files)
        cold, n_cold = timed(raw, tmp, args.workers)
        warm, n_warm = timed(raw, tmp, args.workers)
        # Add 5% new files, then re-run: only those are decoded.
        extra = tmp / "extra"
        make_crawl(extra, args.files // 20, seed=1)
        for p in (extra / "photo").iterdir():
            shutil.copy(p, raw / "photo" / f"new_{p.name}")
        added, n_added = timed(raw, tmp, args.workers)
        total = args.files + args.files // 20
        print(f"ingest benchmark: {args.files} files (5% duplicates, 5% corrupt), {args.workers} workers")
        print(f"{'run':<28}{'seconds':>9}{'decoded':>9}{'files/s':>10}{'speed-up':>10}")
        for name, secs, dec, files in (("cold (empty cache)", cold, n_cold, args.files),
                                       ("incremental, no change", warm, n_warm, args.files),
                                       ("incremental, +5% files", added, n_added, total)):
            print(f"{name:<28}{secs:>9.3f}{dec:>9d}{files / secs:>10.0f}{cold / secs:>9.1f}x")
        ok = cold / warm >= 20
        print(f"incremental/no-change is {cold / warm:.1f}x faster than cold: "
              f"{'OK (>= 20x)' if ok else 'BELOW the 20x target'}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
