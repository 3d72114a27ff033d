"""`toonlab detect`: faces, five points + the backend's full landmarks and quality checks
for every image the ingest kept -> `<preprocess.work_dir>/detect/<domain>.parquet`.

One row per face (`face_index` 0.. largest first) plus one row per image without a usable
face (`face_index` -1); every face leaving the pipeline has its reason: several faces
(by `preprocess.multi_face`), too small, extreme yaw, blurry. The backends are in
`toonlab.faces.detectors`; per-image results are cached by content hash, so re-runs only
process new images, in `runtime.workers` processes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from toonlab.data.decode import decode_file, path_from_text
from toonlab.data.params import DecodeParams
from toonlab.faces import jobs
from toonlab.faces.params import DetectParams, PreprocessParams
from toonlab.log import get_logger
from toonlab.util import tables

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


def detect_schema() -> list[tuple[str, Any]]:
    import pyarrow as pa

    f = pa.list_(pa.float32())
    return [("domain", pa.string()), ("raw_path", pa.string()), ("sha256", pa.string()),
            ("width", pa.int32()), ("height", pa.int32()), ("face_index", pa.int32()), ("n_faces", pa.int32()),
            ("status", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
            ("box", f), ("score", pa.float32()), ("face_px", pa.float32()), ("yaw", pa.float32()),
            ("blur", pa.float32()), ("five", f), ("landmarks", f), ("landmark_names", pa.string()),
            ("detect_backend", pa.string()), ("detect_version", pa.string())]


def face_backend(domain: str, params_json: dict, device: str = "auto") -> Any:
    """The detection backend of a domain (the factory the worker processes call)."""
    from toonlab.faces.detectors import make_face_backend

    return make_face_backend(domain, DetectParams.model_validate(params_json), device)


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


def _detect_one(job: tuple) -> dict:
    path, decode_json, domain, detect_json, device = job
    res = decode_file(path, DecodeParams.model_validate(decode_json))
    if not res.ok:
        return {"error": res.reason, "detail": res.detail}
    from toonlab.faces.detectors import estimate_yaw, face_blur

    faces = jobs.backend(face_backend, domain, detect_json, device).detect(res.image)
    return {"width": res.width, "height": res.height, "faces": [{
        "box": [float(v) for v in f.box], "score": float(f.score),
        "five": np.asarray(f.five, np.float32).ravel().tolist(),
        "landmarks": np.asarray(f.landmarks, np.float32).ravel().tolist(),
        "names": ";".join(f.landmark_names), "yaw": float(estimate_yaw(f)),
        "blur": float(face_blur(res.image, f)),
    } for f in faces]}


def _ok_images(ingest_dir: str, domain: str) -> list[dict]:
    rows = tables.read_rows(f"{ingest_dir}/{domain}/manifest.parquet", f"ingest manifest for '{domain}'",
                            "run `toonlab ingest` first")
    return [r for r in rows if r["status"] == "ok"]


def run_detect(params: Any, domain: str) -> dict:
    pp: PreprocessParams = params.preprocess
    images = _ok_images(params.ingest.out_dir, domain)
    stage = jobs.BackendStage.open(params, "detect", face_backend, domain)
    cache = stage.cache
    todo = [r for r in images if cache.get_json(r["sha256"]) is None]
    work = [(str(stage.raw_root / path_from_text(r["path"])), stage.decode, domain, stage.settings, stage.device)
            for r in todo]
    for r, result in zip(todo, jobs.run_jobs(_detect_one, work, params.runtime.workers, f"detect {domain}")):
        cache.put_json(r["sha256"], result)

    rows = []
    for img in images:
        result = cache.get_json(img["sha256"])
        base = {"domain": domain, "raw_path": img["path"], "sha256": img["sha256"], "detect_backend": stage.name,
                "detect_version": stage.version, "width": result.get("width", img["width"]),
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
    tables.write_parquet(rows, f"{pp.work_dir}/detect/{domain}.parquet", detect_schema())
    summary = jobs.count_reasons(rows)
    log.info("detect %s (%s %s): %d images, %d processed now, faces %s", domain, stage.name, stage.version,
             len(images), len(work), summary)
    return summary
