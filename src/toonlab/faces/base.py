"""The small interfaces every face backend implements, and the common landmark schema.

Common landmark schema: five canonical points, in this order, in pixel coordinates
(x, y) of the image they were found in:

    0  eye centre on the image's left   (the subject's right eye)
    1  eye centre on the image's right  (the subject's left eye)
    2  nose tip
    3  mouth corner on the image's left
    4  mouth corner on the image's right

Photo backends derive them from their own landmark sets; the anime backend uses the
centres of the detected eye boxes, the nose point and the left/right ends of the mouth
box (anime mouths are small, so the two "corners" lie close together). The backend's
full landmark set is kept alongside (`Face.landmarks`, with `Face.landmark_names` when
the points have names, e.g. the anime parts).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

FIVE_POINT_NAMES = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")


def package_version(dist: str) -> str:
    """The installed version of a distribution, for a backend's `BackendInfo`."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class BackendInfo:
    name: str      # e.g. "mediapipe", "insightface", "animeface", "rembg:u2net_human_seg"
    version: str   # the package version (and model file name where relevant)


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    score: float                             # detector confidence in [0, 1]
    five: np.ndarray                         # (5, 2) float32, see FIVE_POINT_NAMES
    landmarks: np.ndarray                    # (N, 2) float32: the backend's full set, pixels
    landmark_names: tuple[str, ...] = field(default=())  # names of `landmarks` rows when known

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


class FaceBackend(Protocol):
    info: BackendInfo

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces in an HxWx3 uint8 RGB image, largest first."""


class MatteBackend(Protocol):
    info: BackendInfo

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        """Foreground alpha of an HxWx3 uint8 RGB image: HxW float32 in [0, 1]."""


def as_rgb(rgb: np.ndarray) -> np.ndarray:
    """The image every backend works on: HxWx3 uint8, C-contiguous. Also accepts HxW
    and HxWx1 grey and HxWx4 (alpha dropped); anything else is a ValueError."""
    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {np.asarray(rgb).shape}")
    return np.ascontiguousarray(a)


def onnx_providers(device: str = "auto") -> list[str]:
    """onnxruntime execution providers for `runtime.device` (insightface and rembg sessions):
    "cpu" -> CPU only; "cuda" -> CUDA then CPU, an error when this onnxruntime has no CUDA
    provider; "auto" -> CUDA when this onnxruntime has it, else CPU."""
    import onnxruntime as ort

    from toonlab.errors import ToonlabError

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise ToonlabError(
            "runtime.device is 'cuda' but this onnxruntime has no CUDAExecutionProvider (it has "
            f"{', '.join(available)}): install onnxruntime-gpu in place of onnxruntime, or set "
            "runtime.device: cpu (or auto).")
    return ["CPUExecutionProvider"]
