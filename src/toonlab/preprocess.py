"""Face pipeline stages over the ingest manifest: detect -> matte -> align.

    detect  data/faces/detect/<domain>.parquet   faces, 5 points + full landmarks, quality
    matte   data/faces/matte/<domain>/<sha256>.png (alpha) + data/faces/matte/<domain>.parquet
    align   data/processed/<domain>/{256,128}/<sha12>_<k>.png (RGBA) + data/processed/<domain>/manifest.parquet

Every image that leaves the pipeline leaves a row with its reason: no face, several
faces (by `preprocess.multi_face`), face too small, extreme yaw, blurry; nothing is
dropped silently. Per-image results are cached by content hash (see toonlab.cache),
so re-runs only process new images; the work runs in `runtime.workers` processes.
"""

from __future__ import annotations

import io
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Literal

import numpy as np
from pydantic import Field

from toonlab import io as tio
from toonlab.cache import ContentCache
from toonlab.decode import DecodeParams, decode_file
from toonlab.errors import ToonlabError, UsageError
from toonlab.log import get_logger, progress
from toonlab.schema import Section

log = get_logger(__name__)

QUALITY_REASONS = {
    "no_face": "no face found by the detector",
    "multiple_faces": "several faces and preprocess.multi_face is 'reject'",
    "not_largest_face": "not the largest face of the image (preprocess.multi_face: keep_largest)",
    "face_too_small": "face box narrower than preprocess.min_face_px",
    "extreme_yaw": "head turned further than preprocess.max_yaw degrees (from landmarks)",
    "blurry": "variance of the Laplacian of the face below preprocess.min_blur",
    "bad_matte": "the matte leaves less than 1 - preprocess.max_bg_fraction of the aligned crop",
}


class PreprocessParams(Section):
    work_dir: str = "data/faces"              # detect and matte outputs
    cache_dir: str = ".toonlab-cache"         # per-image results (outside DVC outputs)
    multi_face: Literal["keep_largest", "keep_all", "reject"] = "keep_largest"
    min_face_px: Annotated[int, Field(ge=8)] = 48
    max_yaw: Annotated[float, Field(ge=0, le=90)] = 45.0
    min_blur: Annotated[float, Field(ge=0)] = 10.0
    # Reject aligned crops whose matte is mostly background (the segmenter missed the person).
    max_bg_fraction: Annotated[float, Field(ge=0, le=1)] = 0.85


class AlignParams(Section):
    out_dir: str = "data/processed"


# ----------------------------------------------------------------------------- workers

_BACKENDS: dict[tuple, Any] = {}


def _backend(kind: str, domain: str, params_json: dict) -> Any:
    """One backend per worker process, built on first use."""
    key = (kind, domain, repr(sorted(params_json.items())))
    if key not in _BACKENDS:
        if kind == "detect":
            from toonlab.faces.detect import DetectParams, make_face_backend

            _BACKENDS[key] = make_face_backend(domain, DetectParams.model_validate(params_json))
        else:
            from toonlab.faces.matte import MatteParams, make_matte_backend

            _BACKENDS[key] = make_matte_backend(domain, MatteParams.model_validate(params_json))
    return _BACKENDS[key]


def limit_threads() -> None:
    """In a worker process: one OpenCV thread, so N workers use N cores without contention."""
    import cv2

    cv2.setNumThreads(1)


def run_jobs(fn: Callable, jobs: list, workers: int, desc: str) -> Iterable:
    """`fn` over `jobs` in order, in `workers` spawned processes (inline for 0/1 or one job)."""
    if workers <= 1 or len(jobs) <= 1:
        yield from progress(map(fn, jobs), desc, total=len(jobs), unit="img")
        return
    ctx = multiprocessing.get_context("spawn")  # backends hold threads: never fork them
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=limit_threads) as pool:
        yield from progress(pool.map(fn, jobs, chunksize=1), desc, total=len(jobs), unit="img")


def backend_info(kind: str, domain: str, params_json: dict) -> tuple[str, str]:
    info = _backend(kind, domain, params_json).info
    return info.name, info.version


def _detect_one(job: tuple) -> dict:
    path, decode_json, domain, detect_json = job
    res = decode_file(path, DecodeParams.model_validate(decode_json))
    if not res.ok:
        return {"error": res.reason, "detail": res.detail}
    from toonlab.faces.detect import estimate_yaw, face_blur

    backend = _backend("detect", domain, detect_json)
    faces = backend.detect(res.image)
    return {"width": res.width, "height": res.height, "faces": [{
        "box": [float(v) for v in f.box], "score": float(f.score),
        "five": np.asarray(f.five, np.float32).ravel().tolist(),
        "landmarks": np.asarray(f.landmarks, np.float32).ravel().tolist(),
        "names": ";".join(f.landmark_names), "yaw": float(estimate_yaw(f)),
        "blur": float(face_blur(res.image, f)),
    } for f in faces]}


def _matte_one(job: tuple) -> bytes | dict:
    path, decode_json, domain, matte_json = job
    res = decode_file(path, DecodeParams.model_validate(decode_json))
    if not res.ok:
        return {"error": res.reason, "detail": res.detail}
    alpha = _backend("matte", domain, matte_json).matte(res.image)
    return _png(np.clip(np.rint(alpha * 255), 0, 255).astype(np.uint8))


def _align_one(job: tuple) -> dict:
    from toonlab.faces.align import align_face

    path, decode_json, matte_png, domain, faces = job
    res = decode_file(path, DecodeParams.model_validate(decode_json))
    if not res.ok:
        return {"error": res.reason, "detail": res.detail}
    alpha = _unpng(matte_png).astype(np.float32) / 255.0 if matte_png else None
    out = {}
    for k, face in faces.items():
        five = np.asarray(face["five"], np.float32).reshape(5, 2)
        lms = np.asarray(face["landmarks"], np.float32).reshape(-1, 2)
        al = align_face(res.image, alpha, five, lms, domain)
        out[k] = {"png256": _png(al.rgba256), "png128": _png(al.rgba128),
                  "five_256": al.five256.ravel().tolist(), "landmarks_256": al.landmarks256.ravel().tolist(),
                  "bg_fraction": float(1.0 - al.rgba256[..., 3].mean() / 255.0)}
    return out


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _unpng(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


# ----------------------------------------------------------------------------- parquet


def _write_parquet(rows: list[dict], path: Path, schema: list[tuple[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{k: r.get(k) for k, _ in schema} for r in rows],
                                 schema=pa.schema([(k, t) for k, t in schema]))
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    tio.write_bytes(path, buf.getvalue())


def read_parquet(path: str | Path) -> list[dict]:
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p} not found: run the previous stage first (e.g. `dvc repro` or `snakemake -c2 preprocess`)")
    return pq.read_table(p).to_pylist()


def _detect_schema() -> list[tuple[str, Any]]:
    import pyarrow as pa

    f = pa.list_(pa.float32())
    return [("domain", pa.string()), ("raw_path", pa.string()), ("sha256", pa.string()),
            ("width", pa.int32()), ("height", pa.int32()), ("face_index", pa.int32()), ("n_faces", pa.int32()),
            ("status", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
            ("box", f), ("score", pa.float32()), ("face_px", pa.float32()), ("yaw", pa.float32()),
            ("blur", pa.float32()), ("five", f), ("landmarks", f), ("landmark_names", pa.string()),
            ("detect_backend", pa.string()), ("detect_version", pa.string())]


def processed_schema() -> list[tuple[str, Any]]:
    import pyarrow as pa

    f = pa.list_(pa.float32())
    keep = ("domain", "raw_path", "sha256", "face_index", "status", "reason", "detail", "box", "score",
            "face_px", "yaw", "blur", "landmark_names", "detect_backend", "detect_version")
    base = dict(_detect_schema())
    return [(k, base[k]) for k in keep] + [
        ("crop_256", pa.string()), ("crop_128", pa.string()), ("bg_fraction", pa.float32()),
        ("five_256", f), ("landmarks_256", f), ("matte_backend", pa.string()), ("matte_version", pa.string())]


# ----------------------------------------------------------------------------- stages


def _ok_images(ingest_dir: str, domain: str) -> list[dict]:
    from toonlab.ingest import read_manifest

    path = Path(ingest_dir) / domain / "manifest.parquet"
    if not path.is_file():
        raise UsageError(f"{path} not found: run `toonlab ingest` first")
    return [r for r in read_manifest(path) if r["status"] == "ok"]


def judge_faces(faces: list[dict], p: PreprocessParams) -> list[tuple[str, str]]:
    """(reason, detail) per face, largest first; "" for a face that is kept."""
    verdicts = []
    for k, f in enumerate(faces):
        width = f["box"][2] - f["box"][0]
        if len(faces) > 1 and p.multi_face == "reject":
            verdicts.append(("multiple_faces", f"{len(faces)} faces in the image"))
        elif k > 0 and p.multi_face == "keep_largest":
            verdicts.append(("not_largest_face", f"face {k + 1} of {len(faces)}"))
        elif width < p.min_face_px:
            verdicts.append(("face_too_small", f"face {width:.0f} px wide < {p.min_face_px}"))
        elif abs(f["yaw"]) > p.max_yaw:
            verdicts.append(("extreme_yaw", f"yaw {f['yaw']:.0f} deg > {p.max_yaw:g}"))
        elif f["blur"] < p.min_blur:
            verdicts.append(("blurry", f"Laplacian variance {f['blur']:.1f} < {p.min_blur:g}"))
        else:
            verdicts.append(("", ""))
    return verdicts


def _backend_stage(params, kind: str, domain: str) -> tuple[dict, dict, str, str, ContentCache, Path]:
    """What a per-image backend stage (detect, matte) starts with: its settings and the
    decode settings as JSON, the backend's name and version, the per-content cache keyed
    by all of them, and the domain's raw folder."""
    kind_json = getattr(params, kind).model_dump(mode="json")
    decode_json = params.decode.model_dump(mode="json")
    name, version = _backend_version(kind, domain, kind_json)
    cache = ContentCache(params.preprocess.cache_dir, f"{kind}-{domain}",
                         {kind: kind_json, "decode": decode_json, "backend": [name, version], "v": 1})
    return kind_json, decode_json, name, version, cache, Path(params.data.raw_dir) / domain


def run_detect(params, domain: str) -> dict:
    pp: PreprocessParams = params.preprocess
    images = _ok_images(params.ingest.out_dir, domain)
    detect_json, decode_json, name, version, cache, raw_root = _backend_stage(params, "detect", domain)
    todo = [r for r in images if cache.get_json(r["sha256"]) is None]
    jobs = [(str(raw_root / r["path"]), decode_json, domain, detect_json) for r in todo]
    for r, result in zip(todo, run_jobs(_detect_one, jobs, params.runtime.workers, f"detect {domain}")):
        cache.put_json(r["sha256"], result)

    rows = []
    for img in images:
        result = cache.get_json(img["sha256"])
        base = {"domain": domain, "raw_path": img["path"], "sha256": img["sha256"], "detect_backend": name,
                "detect_version": version, "width": result.get("width", img["width"]),
                "height": result.get("height", img["height"])}
        faces = result.get("faces", [])
        if "error" in result or not faces:
            reason = result.get("error", "no_face")
            rows.append({**base, "face_index": -1, "n_faces": 0, "status": "rejected", "reason": reason,
                         "detail": result.get("detail", QUALITY_REASONS["no_face"])})
            continue
        for k, (f, (reason, detail)) in enumerate(zip(faces, judge_faces(faces, pp))):
            rows.append({**base, "face_index": k, "n_faces": len(faces), "status": "rejected" if reason else "ok",
                         "reason": reason, "detail": detail, "box": f["box"], "score": f["score"],
                         "face_px": f["box"][2] - f["box"][0], "yaw": f["yaw"], "blur": f["blur"],
                         "five": f["five"], "landmarks": f["landmarks"], "landmark_names": f["names"]})
    out = Path(pp.work_dir) / "detect" / f"{domain}.parquet"
    _write_parquet(rows, out, _detect_schema())
    summary = _count(rows)
    log.info("detect %s (%s %s): %d images, %d processed now, faces %s", domain, name, version, len(images),
             len(jobs), summary)
    return summary


def _backend_version(kind: str, domain: str, params_json: dict) -> tuple[str, str]:
    """Backend name and version, asked in a throw-away process so this one stays fork-free."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        try:
            return pool.submit(backend_info, kind, domain, params_json).result()
        except ToonlabError:
            raise
        except Exception as exc:  # surfaced as a clean failure with its cause
            raise ToonlabError(f"{kind} backend for {domain} failed to start: {type(exc).__name__}: {exc}") from None


def run_matte(params, domain: str) -> dict:
    pp: PreprocessParams = params.preprocess
    detected = read_parquet(Path(pp.work_dir) / "detect" / f"{domain}.parquet")
    shas = sorted({r["sha256"]: r["raw_path"] for r in detected if r["status"] == "ok"}.items())
    matte_json, decode_json, name, version, cache, raw_root = _backend_stage(params, "matte", domain)
    todo = [(sha, rel) for sha, rel in shas if not cache.has(sha, ".png")]
    jobs = [(str(raw_root / rel), decode_json, domain, matte_json) for _, rel in todo]
    for (sha, _), result in zip(todo, run_jobs(_matte_one, jobs, params.runtime.workers, f"matte {domain}")):
        if isinstance(result, dict):
            raise ToonlabError(f"matte {domain}: {result['detail']}")
        cache.put_bytes(sha, ".png", result)
    out = Path(pp.work_dir) / "matte" / domain
    rows = []
    with tio.atomic_dir(out) as tmp:
        for sha, rel in shas:
            src = cache.path(sha, ".png")
            _copy(src, tmp / f"{sha}.png")
            alpha = _unpng(src.read_bytes())
            rows.append({"sha256": sha, "raw_path": rel, "matte": f"{domain}/{sha}.png",
                         "bg_fraction": float(1.0 - alpha.mean() / 255.0), "matte_backend": name, "matte_version": version})
    import pyarrow as pa

    _write_parquet(rows, Path(pp.work_dir) / "matte" / f"{domain}.parquet",
                   [("sha256", pa.string()), ("raw_path", pa.string()), ("matte", pa.string()),
                    ("bg_fraction", pa.float32()), ("matte_backend", pa.string()), ("matte_version", pa.string())])
    log.info("matte %s (%s %s): %d images, %d processed now", domain, name, version, len(shas), len(jobs))
    return {"images": len(shas), "processed": len(jobs)}


def _copy(src: Path, dst: Path) -> None:
    """Copy a cached file into an output folder being built. Not a hard link: DVC re-copies
    files that have other links when it records outputs, which would touch them."""
    shutil.copyfile(src, dst)


def run_align(params, domain: str) -> dict:
    pp: PreprocessParams = params.preprocess
    detected = read_parquet(Path(pp.work_dir) / "detect" / f"{domain}.parquet")
    mattes = {r["sha256"]: r for r in read_parquet(Path(pp.work_dir) / "matte" / f"{domain}.parquet")}
    decode_json = params.decode.model_dump(mode="json")
    by_image: dict[str, dict[int, dict]] = {}
    for r in detected:
        if r["status"] == "ok":
            by_image.setdefault(r["sha256"], {})[r["face_index"]] = r
    settings = {"decode": decode_json, "detect": params.detect.model_dump(mode="json"),
                "matte": params.matte.model_dump(mode="json"), "quality": pp.model_dump(mode="json"), "v": 1}
    cache = ContentCache(pp.cache_dir, f"align-{domain}", settings)
    raw_root = Path(params.data.raw_dir) / domain
    matte_root = Path(pp.work_dir) / "matte"
    todo = [sha for sha in sorted(by_image) if cache.get_json(sha) is None]
    jobs = []
    for sha in todo:
        faces = {k: {"five": r["five"], "landmarks": r["landmarks"]} for k, r in by_image[sha].items()}
        m = mattes.get(sha)
        matte_png = (matte_root / m["matte"]).read_bytes() if m else b""
        jobs.append((str(raw_root / next(iter(by_image[sha].values()))["raw_path"]), decode_json, matte_png, domain, faces))
    for sha, result in zip(todo, run_jobs(_align_one, jobs, params.runtime.workers, f"align {domain}")):
        if "error" in result:
            raise ToonlabError(f"align {domain}: {result['detail']}")
        meta = {}
        for k, res in result.items():
            cache.put_bytes(f"{sha}", f"_{k}_256.png", res["png256"])
            cache.put_bytes(f"{sha}", f"_{k}_128.png", res["png128"])
            meta[str(k)] = {key: res[key] for key in ("five_256", "landmarks_256", "bg_fraction")}
        cache.put_json(sha, meta)

    rows = []
    out = Path(params.align.out_dir) / domain
    with tio.atomic_dir(out) as tmp:
        (tmp / "256").mkdir()
        (tmp / "128").mkdir()
        for r in detected:
            row = {k: r.get(k) for k, _ in processed_schema() if k in r}
            if r["status"] == "ok":
                meta = cache.get_json(r["sha256"])[str(r["face_index"])]
                m = mattes.get(r["sha256"], {})
                name = f"{r['sha256'][:12]}_{r['face_index']}.png"
                if meta["bg_fraction"] > pp.max_bg_fraction:
                    row.update(status="rejected", reason="bad_matte", crop_256="", crop_128="",
                               detail=f"background fraction {meta['bg_fraction']:.2f} > {pp.max_bg_fraction:g}",
                               bg_fraction=meta["bg_fraction"], matte_backend=m.get("matte_backend", ""),
                               matte_version=m.get("matte_version", ""))
                    rows.append(row)
                    continue
                for px in ("256", "128"):
                    _copy(cache.path(r["sha256"], f"_{r['face_index']}_{px}.png"), tmp / px / name)
                row.update(crop_256=f"256/{name}", crop_128=f"128/{name}", bg_fraction=meta["bg_fraction"],
                           five_256=meta["five_256"], landmarks_256=meta["landmarks_256"],
                           matte_backend=m.get("matte_backend", ""), matte_version=m.get("matte_version", ""))
            else:
                row.update(crop_256="", crop_128="", matte_backend="", matte_version="")
            rows.append(row)
        _write_parquet(rows, tmp / "manifest.parquet", processed_schema())
    summary = _count(rows)
    log.info("align %s: %d faces aligned (%d images processed now); %s", domain,
             sum(r["status"] == "ok" for r in rows), len(jobs), summary)
    return summary


def _count(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        key = r["reason"] or "ok"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
