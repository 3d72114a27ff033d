"""Alignment: a similarity transform of the five canonical points onto a template,
then 256 px and 128 px crops with alpha and the transformed landmarks.

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

import cv2
import numpy as np

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
