"""Face pipeline throughput on 512x512 inputs, measured through the stages' own per-image
job functions (`toonlab.faces.detect._detect_one`, `matte._matte_one`, `align._align_one`:
what `toonlab detect/matte/align` run in their worker processes), per backend chain.

    python benchmarks/preprocess.py [--images 24] [--workers 2] [--combos photo:mediapipe:mediapipe,...]

Two tables:

1. Where the time goes, one process: per stage, ms per image split into the backend's
   own call (detector + landmarks, segmenter / floodfill / GrabCut), decoding the raw
   file (each stage decodes it again) and ToonLab's other work (yaw, blur, resize,
   alignment warps, PNG encoding), and the backend's share of the chain.
2. Throughput: images/s of the whole chain (detect, then matte, then align, as the
   stages run it) in a pool of 1 worker process and of `--workers` processes, and the
   speed-up (run it on an idle machine: the ratio is the point).

The inputs are files on disk (JPEG photos cut from the real photos shipped in installed
packages, PNG anime portraits from the demo generator). Backends whose model files are
missing (insightface buffalo_l, rembg) are listed as unavailable with the reason.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from toonlab.errors import ToonlabError

COMBOS = ("photo:mediapipe:mediapipe", "photo:insightface:rembg", "anime:animeface:floodfill",
          "anime:animeface:rembg")


def photo_inputs(n: int) -> list[np.ndarray]:
    from skimage import data

    from toonlab.data.demo import package_file

    sources = [Image.fromarray(data.astronaut())]
    group = package_file("insightface", "data/images/t1.jpg")
    if group is not None:
        sources.append(Image.open(group).convert("RGB"))
    out = []
    for k in range(n):
        img = sources[k % len(sources)]
        w, h = img.size
        side = min(w, h)
        off = (k // len(sources)) * 7 % max(1, (max(w, h) - side) + 1)
        box = (off, 0, off + side, side) if w > h else (0, 0, side, side)
        out.append(np.asarray(img.crop(box).resize((512, 512), Image.LANCZOS)))
    return out


def anime_inputs(n: int) -> list[np.ndarray]:
    from toonlab.data.anime_draw import draw_portrait

    return [np.asarray(draw_portrait(np.random.default_rng([9, 2, k]), 512)) for k in range(n)]


def write_inputs(folder: Path, domain: str, images: list[np.ndarray]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, rgb in enumerate(images):
        path = folder / (f"{k:04d}.jpg" if domain == "photo" else f"{k:04d}.png")
        Image.fromarray(rgb).save(path, quality=92) if domain == "photo" else Image.fromarray(rgb).save(path)
        paths.append(str(path))
    return paths


# ----------------------------------------------------------------------------- the chain


def settings(domain: str, det: str, mat: str) -> tuple[dict, dict, dict]:
    from toonlab.data.params import DecodeParams
    from toonlab.faces.params import DetectParams, MatteParams

    return (DecodeParams().model_dump(mode="json"),
            DetectParams(**{f"{domain}_backend": det}).model_dump(mode="json"),
            MatteParams(**{f"{domain}_backend": mat}).model_dump(mode="json"))


def chain(job: tuple) -> int:
    """detect -> matte -> align of one raw file with the stages' job functions; faces aligned."""
    from toonlab.faces.align import _align_one
    from toonlab.faces.detect import _detect_one
    from toonlab.faces.matte import _matte_one

    path, domain, decode_json, detect_json, matte_json = job
    found = _detect_one((path, decode_json, domain, detect_json))
    faces = found.get("faces") or []
    if not faces:
        return 0
    matte_png = _matte_one((path, decode_json, domain, matte_json))
    if isinstance(matte_png, dict):
        return 0
    first = {0: {"five": faces[0]["five"], "landmarks": faces[0]["landmarks"]}}
    aligned = _align_one((path, decode_json, matte_png, domain, first))
    return len(aligned) if "error" not in aligned else 0


def _warm(job: tuple) -> None:
    chain(job)
    time.sleep(0.5)  # keep this worker busy so the next warm-up job starts another one


def pool_rate(jobs: list[tuple], workers: int) -> float:
    """Images/s of the chain over `jobs` in a pool of `workers` spawned processes (one
    OpenCV thread each, as the stages run), backends built before the clock starts."""
    from toonlab.faces.jobs import limit_threads

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=limit_threads) as pool:
        list(pool.map(_warm, [jobs[0]] * workers))
        t0 = time.perf_counter()
        list(pool.map(chain, jobs, chunksize=1))
        return len(jobs) / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- where the time goes


@contextmanager
def timed(totals: dict[str, float], key: str, obj, name: str):
    """Add the wall time of every call of obj.<name> to totals[key] while inside."""
    original = getattr(obj, name)

    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return original(*a, **kw)
        finally:
            totals[key] += time.perf_counter() - t0

    setattr(obj, name, wrapper)
    try:
        yield
    finally:
        setattr(obj, name, original)


def profile(jobs: list[tuple]) -> dict[str, float]:
    """Seconds per image by stage and part ("<stage>.total", ".backend", ".decode"), in
    this process with one OpenCV thread, as a stage's worker runs."""
    import cv2

    from toonlab.faces import align, detect, matte
    from toonlab.faces import jobs as stage_jobs

    cv2.setNumThreads(1)
    _, domain, decode_json, detect_json, matte_json = jobs[0]
    det = stage_jobs.backend(detect.face_backend, domain, detect_json)
    mat = stage_jobs.backend(matte.matte_backend, domain, matte_json)
    chain(jobs[0])  # warm-up
    totals: dict[str, float] = defaultdict(float)

    def run(stage: str, fn, job: tuple):
        t0 = time.perf_counter()
        try:
            return fn(job)
        finally:
            totals[f"{stage}.total"] += time.perf_counter() - t0

    with ExitStack() as stack:
        stack.enter_context(timed(totals, "detect.backend", det, "detect"))
        stack.enter_context(timed(totals, "matte.backend", mat, "matte"))
        for module, stage in ((detect, "detect"), (matte, "matte"), (align, "align")):
            stack.enter_context(timed(totals, f"{stage}.decode", module, "decode_file"))
        for path, *_ in jobs:
            found = run("detect", detect._detect_one, (path, decode_json, domain, detect_json))
            faces = found.get("faces") or []
            if not faces:
                continue
            matte_png = run("matte", matte._matte_one, (path, decode_json, domain, matte_json))
            first = {0: {"five": faces[0]["five"], "landmarks": faces[0]["landmarks"]}}
            run("align", align._align_one, (path, decode_json, matte_png, domain, first))
    return {k: v / len(jobs) for k, v in totals.items()}


def peak_mib() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, kids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--combos", default=",".join(COMBOS), help="domain:detect:matte, comma-separated")
    args = ap.parse_args()
    combos = [tuple(c.split(":")) for c in args.combos.split(",") if c]
    print(f"face pipeline benchmark: {args.images} images of 512x512 per chain, detect + matte + align "
          f"through the stages' job functions")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for domain in sorted({c[0] for c in combos}):
            images = photo_inputs(args.images) if domain == "photo" else anime_inputs(args.images)
            files[domain] = write_inputs(Path(tmp) / domain, domain, images)
        print(f"\n{'chain':<28}{'stage':<8}{'ms/img':>8}{'backend':>9}{'decode':>8}{'other':>8}")
        for domain, det, mat in combos:
            name = f"{domain}:{det}+{mat}"
            jobs = [(p, domain, *settings(domain, det, mat)) for p in files[domain]]
            try:
                prof = profile(jobs)
            except ToonlabError as exc:
                print(f"{name:<28}unavailable: {str(exc).splitlines()[0][:100]}")
                continue
            backend_s = 0.0
            for stage in ("detect", "matte", "align"):
                total = prof.get(f"{stage}.total", 0.0)
                back = prof.get(f"{stage}.backend", 0.0)
                dec = prof.get(f"{stage}.decode", 0.0)
                backend_s += back
                print(f"{name:<28}{stage:<8}{1000 * total:>8.1f}{1000 * back:>9.1f}{1000 * dec:>8.1f}"
                      f"{1000 * (total - back - dec):>8.1f}")
            chain_s = sum(prof.get(f"{s}.total", 0.0) for s in ("detect", "matte", "align"))
            decode_s = sum(prof.get(f"{s}.decode", 0.0) for s in ("detect", "matte", "align"))
            print(f"{name:<28}{'chain':<8}{1000 * chain_s:>8.1f}{1000 * backend_s:>9.1f}{1000 * decode_s:>8.1f}"
                  f"{1000 * (chain_s - backend_s - decode_s):>8.1f}   backend share {backend_s / chain_s:.0%}")
            rows.append((name, jobs))
        print(f"\n{'chain':<28}{'1 proc img/s':>13}{f'{args.workers} procs img/s':>16}{'speed-up':>10}")
        for name, jobs in rows:
            one = pool_rate(jobs, 1)
            many = pool_rate(jobs, args.workers)
            print(f"{name:<28}{one:>13.2f}{many:>16.2f}{many / one:>9.2f}x")
    own, kids = peak_mib()
    print(f"memory peak: {own:.0f} MiB this process, {kids:.0f} MiB largest worker")
    return 0


if __name__ == "__main__":
    sys.exit(main())
