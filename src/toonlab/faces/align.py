"""`toonlab align`: a similarity transform of the five canonical points onto a template,
then 256 px and 128 px crops with alpha and the transformed landmarks ->
`<align.out_dir>/<domain>/{256,128}/<sha12>_<k>.png` (RGBA) and
`<align.out_dir>/<domain>/manifest.parquet` (the processed manifest: one row per face,
plus the images rejected earlier with their reasons).

The template (256 x 256 output, pixel coordinates) frames the face FFHQ-style: the
eyes sit 64 px apart a little above the centre, so the crop spans about four eye
distances and includes the hair, ears and chin. Photo proportions follow the standard
five-point face template (ArcFace's, scaled to 64 px between the eyes); anime faces
have the same eye placement, with the mouth higher and narrower as anime faces draw
it. The transform is a weighted least-squares similarity (Umeyama) fit in which the
eyes dominate, so the eye centres land on the template (within a pixel or two) and
the nose and mouth only steady the scale and angle.

The 128 px crop is the 256 px crop downscaled with antialiasing (INTER_AREA).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from toonlab.data.decode import decode_file, path_from_text
from toonlab.data.params import DecodeParams
from toonlab.errors import ToonlabError
from toonlab.faces import jobs
from toonlab.faces.detect import detect_schema
from toonlab.faces.params import PreprocessParams
from toonlab.log import get_logger
from toonlab.util import codec, fileio, tables
from toonlab.util.cache import ContentCache

log = get_logger(__name__)

OUT_PX = 256
TEMPLATES = {
    "photo": np.array([[96.0, 118.0], [160.0, 118.0], [128.0, 154.5], [101.5, 192.0], [154.5, 192.0]],
                      dtype=np.float64),
    "anime": np.array([[96.0, 124.0], [160.0, 124.0], [128.0, 156.0], [119.0, 180.0], [137.0, 180.0]],
                      dtype=np.float64),
}
# Least-squares weights of (eye, eye, nose, mouth, mouth).
WEIGHTS = np.array([1.0, 1.0, 0.05, 0.05, 0.05])


def similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray = WEIGHTS) -> np.ndarray:
    """2x3 matrix of the weighted least-squares similarity (rotation, uniform scale,
    translation, no reflection) mapping points `src` onto `dst` (Umeyama 1991)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    w = np.asarray(weights, np.float64) / np.sum(weights)
    mu_s, mu_d = w @ src, w @ dst
    s0, d0 = src - mu_s, dst - mu_d
    cov = (d0 * w[:, None]).T @ s0
    u, sig, vt = np.linalg.svd(cov)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1
    rot = u @ d @ vt
    var_s = np.sum(w * np.sum(s0 ** 2, axis=1))
    scale = np.trace(np.diag(sig) @ d) / var_s
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    return (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)


@dataclass(frozen=True)
class Aligned:
    rgba256: np.ndarray      # 256x256x4 uint8 (alpha = matte, 0 outside the source image)
    rgba128: np.ndarray      # 128x128x4 uint8, downscaled from the 256 crop
    five256: np.ndarray      # (5, 2) float32 in 256 px coordinates
    landmarks256: np.ndarray  # (N, 2) float32 in 256 px coordinates
    matrix: np.ndarray       # 2x3 source -> 256 px crop
    scale: float             # 256 px crop pixels per source pixel


def align_face(rgb: np.ndarray, alpha: np.ndarray | None, five: np.ndarray, landmarks: np.ndarray,
               domain: str = "photo") -> Aligned:
    """Warp one face of `rgb` (HxWx3 uint8) and its matte `alpha` (HxW float in [0,1],
    None for all-foreground) to the template; return both crops and the landmarks."""
    m = similarity(five, TEMPLATES[domain])
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    src, a_src, m_eff = rgb, alpha, m.copy()
    if scale < 0.5:  # large face: shrink the source first so the warp does not alias
        f = scale * 1.5
        h, w = rgb.shape[:2]
        size = (max(1, round(w * f)), max(1, round(h * f)))
        src = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        a_src = None if alpha is None else cv2.resize(alpha.astype(np.float32), size, interpolation=cv2.INTER_AREA)
        fx, fy = size[0] / w, size[1] / h
        m_eff = m @ np.array([[1 / fx, 0, 0], [0, 1 / fy, 0], [0, 0, 1]])
    out = (OUT_PX, OUT_PX)
    crop = cv2.warpAffine(src, m_eff, out, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpAffine(np.ones(src.shape[:2], np.float32), m_eff, out, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if a_src is None:
        a = inside
    else:
        a = cv2.warpAffine(a_src.astype(np.float32), m_eff, out, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0) * inside
    alpha8 = np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)
    rgba256 = np.dstack([crop, alpha8])
    rgba128 = cv2.resize(rgba256, (OUT_PX // 2, OUT_PX // 2), interpolation=cv2.INTER_AREA)
    return Aligned(rgba256, rgba128, transform_points(m, five), transform_points(m, landmarks), m, scale)


def eye_distance(five: np.ndarray) -> float:
    return float(np.hypot(*(np.asarray(five[1]) - np.asarray(five[0]))))


# ----------------------------------------------------------------------------- the stage


def processed_schema() -> list[tuple[str, Any]]:
    import pyarrow as pa

    f = pa.list_(pa.float32())
    keep = ("domain", "raw_path", "sha256", "face_index", "status", "reason", "detail", "box", "score",
            "face_px", "yaw", "blur", "landmark_names", "detect_backend", "detect_version")
    base = dict(detect_schema())
    return [(k, base[k]) for k in keep] + [
        ("crop_256", pa.string()), ("crop_128", pa.string()), ("bg_fraction", pa.float32()),
        ("five_256", f), ("landmarks_256", f), ("matte_backend", pa.string()), ("matte_version", pa.string())]


def _align_one(job: tuple) -> dict:
    path, decode_json, matte_png, domain, faces, png_compression = job
    res = decode_file(path, DecodeParams.model_validate(decode_json))
    if not res.ok:
        return {"error": res.reason, "detail": res.detail}
    alpha = codec.read_png(matte_png).astype(np.float32) / 255.0 if matte_png else None
    out = {}
    for k, face in faces.items():
        five = np.asarray(face["five"], np.float32).reshape(5, 2)
        lms = np.asarray(face["landmarks"], np.float32).reshape(-1, 2)
        al = align_face(res.image, alpha, five, lms, domain)
        out[k] = {"png256": codec.png_bytes_as(al.rgba256, png_compression),
                  "png128": codec.png_bytes_as(al.rgba128, png_compression),
                  "five_256": al.five256.ravel().tolist(), "landmarks_256": al.landmarks256.ravel().tolist(),
                  "bg_fraction": float(1.0 - al.rgba256[..., 3].mean() / 255.0)}
    return out


def _alignable(r: dict) -> bool:
    """A detected face with its five points (kept, or rejected by a face-level check)."""
    five = r.get("five")
    return int(r["face_index"]) >= 0 and five is not None and len(five) == 10


def run_align(params: Any, domain: str) -> dict:
    pp: PreprocessParams = params.preprocess
    detected = tables.read_rows(f"{pp.work_dir}/detect/{domain}.parquet", f"face detections for '{domain}'",
                                "run `toonlab detect` first")
    mattes = {r["sha256"]: r for r in tables.read_rows(f"{pp.work_dir}/matte/{domain}.parquet",
                                                         f"mattes for '{domain}'", "run `toonlab matte` first")}
    decode_json = params.decode.model_dump(mode="json")
    by_image: dict[str, dict[int, dict]] = {}
    for r in detected:
        # Faces rejected by a quality threshold are aligned too: a reviewer may rescue them
        # (toonlab.faces.review_decisions), and sees their crop on the review page.
        if _alignable(r):
            by_image.setdefault(r["sha256"], {})[r["face_index"]] = r
    settings = {"decode": decode_json, "detect": params.detect.model_dump(mode="json"),
                "matte": params.matte.model_dump(mode="json"), "quality": pp.model_dump(mode="json"),
                "png": params.align.png_compression, "v": 2}
    cache = ContentCache(pp.cache_dir, f"align-{domain}", settings)
    raw_root = Path(params.data.raw_dir) / domain
    matte_root = Path(pp.work_dir) / "matte"
    todo = [sha for sha in sorted(by_image) if cache.get_json(sha) is None]
    work = []
    for sha in todo:
        faces = {k: {"five": r["five"], "landmarks": r["landmarks"]} for k, r in by_image[sha].items()}
        m = mattes.get(sha)
        matte_png = (matte_root / m["matte"]).read_bytes() if m else b""
        rel = path_from_text(next(iter(by_image[sha].values()))["raw_path"])
        work.append((str(raw_root / rel), decode_json, matte_png, domain, faces, params.align.png_compression))
    for sha, result in zip(todo, jobs.run_jobs(_align_one, work, params.runtime.workers, f"align {domain}")):
        if "error" in result:
            raise ToonlabError(f"align {domain}: {result['detail']}")
        meta = {}
        for k, res in result.items():
            cache.put_bytes(f"{sha}", f"_{k}_256.png", res["png256"])
            cache.put_bytes(f"{sha}", f"_{k}_128.png", res["png128"])
            meta[str(k)] = {key: res[key] for key in ("five_256", "landmarks_256", "bg_fraction")}
        cache.put_json(sha, meta)

    rows = []
    schema = processed_schema()
    with fileio.atomic_dir(Path(params.align.out_dir) / domain) as tmp:
        (tmp / "256").mkdir()
        (tmp / "128").mkdir()
        for r in detected:
            row = {k: r.get(k) for k, _ in schema if k in r}
            if r["status"] == "ok":
                meta = cache.get_json(r["sha256"])[str(r["face_index"])]
                if meta["bg_fraction"] > pp.max_bg_fraction:
                    row.update(status="rejected", reason="bad_matte",
                               detail=f"background fraction {meta['bg_fraction']:.2f} > {pp.max_bg_fraction:g}")
            if _alignable(r):
                # Rejected faces keep their crops (a human review may rescue them); only
                # the `ok` rows reach the curated manifests.
                meta = cache.get_json(r["sha256"])[str(r["face_index"])]
                m = mattes.get(r["sha256"], {})
                name = f"{r['sha256'][:12]}_{r['face_index']}.png"
                for px in ("256", "128"):
                    jobs.copy_cached(cache.path(r["sha256"], f"_{r['face_index']}_{px}.png"), tmp / px / name)
                row.update(crop_256=f"256/{name}", crop_128=f"128/{name}", bg_fraction=meta["bg_fraction"],
                           five_256=meta["five_256"], landmarks_256=meta["landmarks_256"],
                           matte_backend=m.get("matte_backend", ""), matte_version=m.get("matte_version", ""))
            else:
                row.update(crop_256="", crop_128="", matte_backend="", matte_version="")
            rows.append(row)
        tables.write_parquet(rows, tmp / "manifest.parquet", schema)
    summary = jobs.count_reasons(rows)
    log.info("align %s: %d faces aligned (%d images processed now); %s", domain,
             sum(r["status"] == "ok" for r in rows), len(work), summary)
    return summary
