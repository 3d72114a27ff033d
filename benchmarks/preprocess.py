"""Face pipeline throughput on 512x512 inputs: detect + landmarks + matte + align, per
available backend, single process (baseline) vs 2 worker processes, and memory peak.

    python benchmarks/preprocess.py [--images 24] [--workers 2]

Backends whose model files are missing (insightface buffalo_l, rembg) are listed as
unavailable with the reason, not timed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

from toonlab.errors import ToonlabError


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


def chain(job):
    """detect + landmarks + matte + align of one image; returns the number of faces aligned."""
    domain, detect_backend, matte_backend, rgb = job
    from toonlab.faces.align import align_face
    from toonlab.faces.detectors import make_face_backend
    from toonlab.faces.mattes import make_matte_backend
    from toonlab.faces.params import DetectParams, MatteParams

    key = (domain, detect_backend, matte_backend)
    if key not in _CACHE:
        dp = DetectParams(**{f"{domain}_backend": detect_backend})
        mp = MatteParams(**{f"{domain}_backend": matte_backend})
        _CACHE[key] = (make_face_backend(domain, dp), make_matte_backend(domain, mp))
    det, mat = _CACHE[key]
    faces = det.detect(rgb)
    if not faces:
        return 0
    alpha = mat.matte(rgb)
    align_face(rgb, alpha, faces[0].five, faces[0].landmarks, domain)
    return 1


_CACHE: dict = {}


def _start_worker(job) -> None:
    from toonlab.faces.stages import limit_threads

    limit_threads()
    chain(job)
    time.sleep(0.5)  # keep this worker busy so the next warm-up job starts another one


def peak_mib() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, kids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    combos = [("photo", "mediapipe", "mediapipe"), ("photo", "insightface", "rembg"),
              ("anime", "animeface", "floodfill"), ("anime", "animeface", "rembg")]
    inputs = {"photo": photo_inputs(args.images), "anime": anime_inputs(args.images)}
    print(f"face pipeline benchmark: {args.images} images of 512x512 per backend, detect + landmarks + matte + align")
    print(f"{'domain':<7}{'detect':<13}{'matte':<11}{'faces':>6}{'1 proc ms/img':>15}"
          f"{f'{args.workers} procs img/s':>16}{'speed-up':>10}")
    ctx = multiprocessing.get_context("spawn")
    for domain, det, mat in combos:
        jobs = [(domain, det, mat, rgb) for rgb in inputs[domain]]
        try:
            chain(jobs[0])  # warm-up: builds the backends (and fails fast on missing models)
        except ToonlabError as exc:
            print(f"{domain:<7}{det:<13}{mat:<11}  unavailable: {str(exc).splitlines()[0][:110]}")
            continue
        t0 = time.perf_counter()
        found = sum(chain(j) for j in jobs)
        single = time.perf_counter() - t0
        with ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
            list(pool.map(_start_worker, [jobs[0]] * args.workers))  # start every worker, backends built
            t0 = time.perf_counter()
            list(pool.map(chain, jobs))
            multi = time.perf_counter() - t0
        print(f"{domain:<7}{det:<13}{mat:<11}{found:>6}{1000 * single / len(jobs):>15.1f}"
              f"{len(jobs) / multi:>16.2f}{single / multi:>9.2f}x")
    own, kids = peak_mib()
    print(f"memory peak: {own:.0f} MiB this process, {kids:.0f} MiB largest worker")
    return 0


if __name__ == "__main__":
    sys.exit(main())
