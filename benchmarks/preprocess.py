"""Face pipeline throughput on 512x512 inputs, measured through the stages' own per-image
job functions (`toonlab.faces.detect._detect_one`, `matte._matte_one`, `align._align_one`:
what `toonlab detect/matte/align` run in their worker processes), per backend chain, for
two settings in the same run:

* before: the face pipeline as issue 20 found it (3 x 3 half-step tiles on every image,
  the exact guided filter on the photo matte, PNGs at zlib level 6), reproduced through
  params (`detect.tiles_skip_face_frac: 0`, `tile_side: 1`, `tile_overlap: 0.5`,
  `matte.refine_subsample: 1`, `png_compression: small`);
* now: the defaults.

    python benchmarks/preprocess.py [--images 16] [--workers 2] [--combos photo:mediapipe:mediapipe,...]

Tables:

1. Where the time goes, one process: per stage, ms per image split into the backend's
   own call (detector + landmarks, segmenter / floodfill / GrabCut), decoding the raw
   file (each stage decodes it again) and ToonLab's other work (yaw, blur, resize,
   alignment warps, PNG encoding), and the backend's share of the chain.
2. Throughput: images/s of each stage and of the chain (detect over all images, then matte,
   then align, as the stages run) in a pool of 1 worker process and of `--workers`
   processes, and the speed-up (run it on an idle machine: the ratio is the point).
3. now / before, 1 process and `--workers` processes (the issue's target: 3x).
4. Same quality: faces per image, five points (largest deviation / eye distance), matte
   IoU (alpha > 0.5) and the 256 px crops (mean absolute difference), now against before.

The inputs are files on disk (JPEG photos cut from the real photos shipped in installed
packages, half portraits, half group photos; PNG anime portraits from the demo generator).
Backends whose model files are missing (insightface buffalo_l, rembg) are listed as
unavailable with the reason.
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


def kind_of(path: str) -> str:
    """The kind of input a benchmark file is (its name's prefix)."""
    return Path(path).name.split("-")[0]


def write_inputs(folder: Path, domain: str, images: list[np.ndarray]) -> list[str]:
    """The images as files: photos alternate portraits (astronaut) and group photos (t1),
    as `photo_inputs` makes them; their names say which (`kind_of`)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, rgb in enumerate(images):
        path = folder / (f"{('portrait', 'group')[k % 2]}-{k:04d}.jpg" if domain == "photo"
                         else f"anime-{k:04d}.png")
        Image.fromarray(rgb).save(path, quality=92) if domain == "photo" else Image.fromarray(rgb).save(path)
        paths.append(str(path))
    return paths


# ----------------------------------------------------------------------------- the chain

# The settings of each column: params overrides of (detect, matte, align).
CONFIGS = {
    "before": ({"tiles_skip_face_frac": 0.0, "tile_side": 1.0, "tile_overlap": 0.5},
               {"refine_subsample": 1, "png_compression": "small"}, {"png_compression": "small"}),
    "now": ({}, {}, {}),
}
STAGES = ("detect", "matte", "align")


def settings(domain: str, det: str, mat: str, config: str) -> dict:
    """The JSON settings one chain's jobs carry, under `config`."""
    from toonlab.data.params import DecodeParams
    from toonlab.faces.params import AlignParams, DetectParams, MatteParams

    d, m, a = CONFIGS[config]
    return {"domain": domain, "decode": DecodeParams().model_dump(mode="json"),
            "detect": DetectParams(**{f"{domain}_backend": det, **d}).model_dump(mode="json"),
            "matte": MatteParams(**{f"{domain}_backend": mat, **m}).model_dump(mode="json"),
            "png": AlignParams(**a).png_compression}


def stage_job(stage: str, path: str, cfg: dict, detected: dict | None = None, matte_png: bytes = b"") -> tuple:
    """The job tuple `toonlab <stage>` gives its worker for one raw file."""
    dom, dec = cfg["domain"], cfg["decode"]
    if stage == "detect":
        return (path, dec, dom, cfg["detect"], "cpu")
    if stage == "matte":
        return (path, dec, dom, cfg["matte"], "cpu")
    faces = {k: {"five": f["five"], "landmarks": f["landmarks"]} for k, f in enumerate(detected["faces"])}
    return (path, dec, matte_png, dom, faces, cfg["png"])


def run_stage(item: tuple) -> object:
    """One stage's job function on one job (what the stage's worker runs)."""
    from toonlab.faces.align import _align_one
    from toonlab.faces.detect import _detect_one
    from toonlab.faces.matte import _matte_one

    stage, job = item
    return {"detect": _detect_one, "matte": _matte_one, "align": _align_one}[stage](job)


def chain_outputs(paths: list[str], cfg: dict) -> dict[str, dict]:
    """detect -> matte -> align of every file in this process: each stage's results."""
    out: dict[str, dict] = {s: {} for s in (*STAGES, "seconds")}
    for path in paths:
        t0 = time.perf_counter()
        found = run_stage(("detect", stage_job("detect", path, cfg)))
        out["seconds"][path] = time.perf_counter() - t0
        out["detect"][path] = found
        if not found.get("faces"):
            continue
        out["matte"][path] = matte_png = run_stage(("matte", stage_job("matte", path, cfg)))
        out["align"][path] = run_stage(("align", stage_job("align", path, cfg, found, matte_png)))
        out["seconds"][path] = time.perf_counter() - t0
    return out


def stage_items(paths: list[str], cfg: dict, outputs: dict[str, dict]) -> dict[str, list[tuple]]:
    """Each stage's (stage, job) list: detect every file, matte and align those with faces."""
    with_faces = [p for p in paths if outputs["detect"][p].get("faces")]
    return {"detect": [("detect", stage_job("detect", p, cfg)) for p in paths],
            "matte": [("matte", stage_job("matte", p, cfg)) for p in with_faces],
            "align": [("align", stage_job("align", p, cfg, outputs["detect"][p], outputs["matte"][p]))
                      for p in with_faces]}


def _warm(items: list[tuple]) -> None:
    for item in items:
        run_stage(item)
    time.sleep(0.5)  # keep this worker busy so the next warm-up job starts another one


def pool_seconds(items: dict[str, list[tuple]], workers: int) -> dict[str, float]:
    """Seconds each stage takes over its jobs in a pool of `workers` spawned processes (one
    OpenCV thread each, as the stages run), backends built before the clock starts."""
    from toonlab.faces.jobs import limit_threads

    ctx = multiprocessing.get_context("spawn")
    first = [items[s][0] for s in STAGES if items[s]]
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=limit_threads) as pool:
        list(pool.map(_warm, [first] * workers))
        out = {}
        for stage in STAGES:
            t0 = time.perf_counter()
            list(pool.map(run_stage, items[stage], chunksize=1))
            out[stage] = time.perf_counter() - t0
        return out


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


def profile(paths: list[str], cfg: dict) -> tuple[dict[str, float], dict[str, dict]]:
    """Seconds per image by stage and part ("<stage>.total", ".backend", ".decode"), in
    this process with one OpenCV thread, as a stage's worker runs; and the outputs."""
    import cv2

    from toonlab.faces import align, detect, matte
    from toonlab.faces import jobs as stage_jobs

    cv2.setNumThreads(1)
    dom = cfg["domain"]
    det = stage_jobs.backend(detect.face_backend, dom, cfg["detect"], "cpu")
    mat = stage_jobs.backend(matte.matte_backend, dom, cfg["matte"], "cpu")
    chain_outputs(paths[:1], cfg)  # warm-up
    totals: dict[str, float] = defaultdict(float)
    with ExitStack() as stack:
        stack.enter_context(timed(totals, "detect.backend", det, "detect"))
        stack.enter_context(timed(totals, "matte.backend", mat, "matte"))
        for module, stage in ((detect, "detect"), (matte, "matte"), (align, "align")):
            stack.enter_context(timed(totals, f"{stage}.decode", module, "decode_file"))
            stack.enter_context(timed(totals, f"{stage}.total", module, f"_{stage}_one"))
        outputs = chain_outputs(paths, cfg)
    return {k: v / len(paths) for k, v in totals.items()}, outputs


# ----------------------------------------------------------------------------- same quality


def _matched(fb: list[dict], fn: list[dict]) -> list[tuple[int, int]]:
    """Pairs (i, j) of the same face in two detections of an image (order may differ):
    box centres closer than a third of the face width."""
    pairs = []
    for i, x in enumerate(fb):
        bx = np.asarray(x["box"])
        d = [np.hypot(*((bx[:2] + bx[2:]) - (np.asarray(y["box"])[:2] + np.asarray(y["box"])[2:])) / 2)
             for y in fn]
        if d and min(d) < (bx[2] - bx[0]) / 3:
            pairs.append((i, int(np.argmin(d))))
    return pairs


def agreement(before: dict[str, dict], now: dict[str, dict]) -> dict[str, float]:
    """How far `now`'s outputs are from `before`'s on the same files."""
    from toonlab.util import codec

    faces_differ, five_dev, crop_mad, iou_min = 0, 0.0, 0.0, 1.0
    for path, b in before["detect"].items():
        fb, fn = b.get("faces") or [], now["detect"][path].get("faces") or []
        pairs = _matched(fb, fn)
        if len(fb) != len(fn) or len(pairs) != len(fb):
            faces_differ += 1
        for i, j in pairs:
            p, q = np.reshape(fb[i]["five"], (5, 2)), np.reshape(fn[j]["five"], (5, 2))
            eye = max(float(np.hypot(*(p[1] - p[0]))), 1e-6)
            five_dev = max(five_dev, float(np.abs(p - q).max()) / eye)
            cb = codec.read_png(before["align"][path][i]["png256"]).astype(np.int16)
            cn = codec.read_png(now["align"][path][j]["png256"]).astype(np.int16)
            crop_mad = max(crop_mad, float(np.abs(cb - cn).mean()))
        if fb and fn:
            ab = codec.read_png(before["matte"][path]) > 127
            an = codec.read_png(now["matte"][path]) > 127
            iou_min = min(iou_min, float((ab & an).sum() / max((ab | an).sum(), 1)))
    return {"images whose faces differ": faces_differ, "five points, max dev / eye distance": five_dev,
            "256 px crop, max mean abs diff (0-255)": crop_mad, "matte IoU, min": iou_min}


def peak_mib() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, kids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--combos", default=",".join(COMBOS), help="domain:detect:matte, comma-separated")
    args = ap.parse_args()
    combos = [tuple(c.split(":")) for c in args.combos.split(",") if c]
    n = args.workers
    print(f"face pipeline benchmark: {args.images} images of 512x512 per chain, detect + matte + align "
          f"through the stages' job functions; settings 'before' (as issue 20 found them) and 'now'")
    prof_rows, rate_rows, ratio_rows, quality_rows, kind_rows = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for domain in sorted({c[0] for c in combos}):
            images = photo_inputs(args.images) if domain == "photo" else anime_inputs(args.images)
            files[domain] = write_inputs(Path(tmp) / domain, domain, images)
        for domain, det, mat in combos:
            name = f"{domain}:{det}+{mat}"
            paths = files[domain]
            outputs, chain_rates = {}, {}
            for config in CONFIGS:
                cfg = settings(domain, det, mat, config)
                try:
                    prof, outputs[config] = profile(paths, cfg)
                except ToonlabError as exc:
                    prof_rows.append(f"{name:<28}unavailable: {str(exc).splitlines()[0][:100]}")
                    break
                backend_s = sum(prof.get(f"{s}.backend", 0.0) for s in STAGES)
                decode_s = sum(prof.get(f"{s}.decode", 0.0) for s in STAGES)
                chain_s = sum(prof.get(f"{s}.total", 0.0) for s in STAGES)
                for stage in STAGES:
                    total, back = prof.get(f"{stage}.total", 0.0), prof.get(f"{stage}.backend", 0.0)
                    dec = prof.get(f"{stage}.decode", 0.0)
                    prof_rows.append(f"{name:<28}{config:<8}{stage:<8}{1000 * total:>8.1f}{1000 * back:>9.1f}"
                                     f"{1000 * dec:>8.1f}{1000 * (total - back - dec):>8.1f}")
                prof_rows.append(f"{name:<28}{config:<8}{'chain':<8}{1000 * chain_s:>8.1f}{1000 * backend_s:>9.1f}"
                                 f"{1000 * decode_s:>8.1f}{1000 * (chain_s - backend_s - decode_s):>8.1f}"
                                 f"   backend share {backend_s / chain_s:.0%}")
                items = stage_items(paths, cfg, outputs[config])
                secs = {w: pool_seconds(items, w) for w in (1, n)}
                for stage in STAGES:
                    k = len(items[stage])
                    if k:
                        one, many = k / secs[1][stage], k / secs[n][stage]
                        rate_rows.append(f"{name:<28}{config:<8}{stage:<8}{one:>13.2f}{many:>16.2f}{many / one:>9.2f}x")
                chain_rates[config] = (len(paths) / sum(secs[1].values()), len(paths) / sum(secs[n].values()))
                one, many = chain_rates[config]
                rate_rows.append(f"{name:<28}{config:<8}{'chain':<8}{one:>13.2f}{many:>16.2f}{many / one:>9.2f}x")
            if len(chain_rates) == len(CONFIGS):
                (b1, bn), (n1, nn) = chain_rates["before"], chain_rates["now"]
                ratio_rows.append(f"{name:<28}{b1:>12.2f}{n1:>10.2f}{n1 / b1:>9.2f}x{bn:>12.2f}{nn:>10.2f}"
                                  f"{nn / bn:>9.2f}x")
                for kind in sorted({kind_of(p) for p in paths}):
                    ms = {c: 1000 * np.mean([outputs[c]["seconds"][p] for p in paths if kind_of(p) == kind])
                          for c in CONFIGS}
                    kind_rows.append(f"{name:<28}{kind:<10}{ms['before']:>10.1f}{ms['now']:>10.1f}"
                                     f"{ms['before'] / ms['now']:>9.2f}x")
                q = agreement(outputs["before"], outputs["now"])
                quality_rows += [f"{name:<28}{k:<42}{v:>10.4g}" for k, v in q.items()]
    for title, header, rows in (
            ("1. where the time goes, one process",
             f"{'chain':<28}{'config':<8}{'stage':<8}{'ms/img':>8}{'backend':>9}{'decode':>8}{'other':>8}", prof_rows),
            ("2. throughput", f"{'chain':<28}{'config':<8}{'stage':<8}{'1 proc img/s':>13}"
             f"{f'{n} procs img/s':>16}{'speed-up':>10}", rate_rows),
            ("3. now / before (target 3x)", f"{'chain':<28}{'1p before':>12}{'1p now':>10}{'ratio':>10}"
             f"{f'{n}p before':>12}{f'{n}p now':>10}{'ratio':>10}", ratio_rows),
            ("   by kind of input, one process, chain ms/img",
             f"{'chain':<28}{'input':<10}{'before':>10}{'now':>10}{'ratio':>10}", kind_rows),
            ("4. same quality: now against before", "", quality_rows)):
        print("\n".join(["", title] + ([header] if header else []) + rows))
    own, kids = peak_mib()
    print(f"\nmemory peak: {own:.0f} MiB this process, {kids:.0f} MiB largest worker")
    return 0


if __name__ == "__main__":
    sys.exit(main())
