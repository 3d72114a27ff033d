"""Background removal (foreground alpha mattes) for photos and anime images.

Three backends, all implementing `toonlab.faces.base.MatteBackend`
(`matte(rgb) -> HxW float32 alpha in [0, 1]`, 1 = subject, 0 = background):

* `MediapipeMatte` - photos, the default. MediaPipe's selfie segmentation; the model ships
  inside the mediapipe wheel, so it works offline. Optionally refined with a colour guided
  filter so that the (upsampled, 256x256) mask follows the image's edges.
* `RembgMatte` - rembg's ONNX models, `u2net_human_seg` for photos and `isnet-anime` for
  anime. Better quality, but the model files must already be on disk ($U2NET_HOME or
  ~/.u2net): `toonlab.weights.require` is called before any rembg session exists, and the
  session is built from that local file with rembg's own pre- and post-processing, so rembg
  never reaches for the network.
* `FloodfillMatte` (`toonlab.faces.anime_matte`) - anime, the offline fallback and the
  LOW-QUALITY one: it assumes a
  flat(-ish) background reaching the image border (flat colour, gradient, a few stripes,
  circles or sparkles), finds it by flood-filling border-connected flat regions, then lets
  GrabCut settle the boundary. Busy or scenic backgrounds defeat it.

`make_matte_backend(domain, params)` picks one from `MatteParams`; `background_fraction`
summarises a matte (mean of 1 - alpha).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, ClassVar, Literal

import numpy as np

from toonlab.faces.base import BackendInfo, MatteBackend, as_rgb, package_version
from toonlab.faces.params import MatteParams

# rembg's model names -> the key of the file in toonlab.weights.WEIGHTS
REMBG_MODELS: dict[str, str] = {"u2net_human_seg": "u2net_human_seg", "isnet-anime": "isnet_anime"}


def background_fraction(alpha: np.ndarray) -> float:
    """Share of the image that is background: the mean of 1 - alpha."""
    a = np.asarray(alpha, dtype=np.float64)
    if a.size == 0:
        return 0.0
    return float(np.mean(1.0 - np.clip(a, 0.0, 1.0)))


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a colour guide (HxWx3 float in [0, 1]) on a HxW float
    source: an edge-preserving smoothing of `src` whose edges follow the guide's."""
    import cv2

    r = max(1, int(radius))
    ksize = (2 * r + 1, 2 * r + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_32F, ksize, borderType=cv2.BORDER_REFLECT)

    g = guide.astype(np.float32)
    p = src.astype(np.float32)
    mean_i = [box(g[:, :, c]) for c in range(3)]
    mean_p = box(p)
    cov_ip = [box(g[:, :, c] * p) - mean_i[c] * mean_p for c in range(3)]
    # Covariance of the guide (symmetric 3x3 per pixel), regularised, inverted in closed form.
    v = {(i, j): box(g[:, :, i] * g[:, :, j]) - mean_i[i] * mean_i[j] for i in range(3) for j in range(i, 3)}
    rr, rg, rb, gg, gb, bb = (v[0, 0] + eps, v[0, 1], v[0, 2], v[1, 1] + eps, v[1, 2], v[2, 2] + eps)
    inv = [[gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb],
           [None, rr * bb - rb * rb, rb * rg - rr * gb],
           [None, None, rr * gg - rg * rg]]
    det = rr * inv[0][0] + rg * inv[0][1] + rb * inv[0][2]
    inv[1][0], inv[2][0], inv[2][1] = inv[0][1], inv[0][2], inv[1][2]
    a = np.stack([sum(inv[i][j] * cov_ip[j] for j in range(3)) / det for i in range(3)], axis=2)
    b = mean_p - sum(a[:, :, c] * mean_i[c] for c in range(3))
    mean_a = [box(np.ascontiguousarray(a[:, :, c])) for c in range(3)]
    mean_b = box(b)
    return mean_b + sum(mean_a[c] * g[:, :, c] for c in range(3))


# ----------------------------------------------------------------------------- mediapipe


class MediapipeMatte:
    """Photo matte from MediaPipe selfie segmentation (model bundled in the wheel, offline).

    `mediapipe_model` 0 ("general", 256x256 input) is the default: on portraits and upper
    bodies it is the cleaner of the two (skimage's astronaut: flag region 0.04 mean alpha
    against 0.23 with the "landscape" model 1, face 0.94 with both). Its soft mask is
    upsampled from 256x256, so a colour guided filter (`refine_radius`, `refine_eps`) snaps
    it onto the image's edges (hair outline, shoulders); about 45 ms at 512x512.

    The segmenter is created on first use and reused; it keeps no state between images
    (same image in, same matte out). It segments people: anime drawings come out mostly
    background, which is why anime has its own backends."""

    quality: ClassVar[str] = "good for people in photos; bundled model, works offline"

    def __init__(self, params: MatteParams | None = None):
        self.params = params or MatteParams()
        self.info = BackendInfo("mediapipe", f"{package_version('mediapipe')} selfie_segmentation "
                                             f"model_selection={self.params.mediapipe_model}")
        self._seg: Any = None

    def _segmenter(self) -> Any:
        if self._seg is None:
            from mediapipe.python.solutions import selfie_segmentation

            self._seg = selfie_segmentation.SelfieSegmentation(model_selection=self.params.mediapipe_model)
        return self._seg

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        img = as_rgb(rgb)
        mask = self._segmenter().process(img).segmentation_mask
        alpha = np.clip(np.asarray(mask, np.float32), 0.0, 1.0)
        r = int(round(self.params.refine_radius * min(img.shape[:2])))
        if r >= 1 and min(img.shape[:2]) > 2 * r:
            alpha = guided_filter(img.astype(np.float32) / 255.0, alpha, r, self.params.refine_eps)
        return np.ascontiguousarray(np.clip(alpha, 0.0, 1.0), dtype=np.float32)

    def close(self) -> None:
        if self._seg is not None:
            self._seg.close()
            self._seg = None


# ----------------------------------------------------------------------------- rembg


def _rembg_session(model: str, path: os.PathLike[str] | str) -> Any:
    """A rembg session for `model` reading the ONNX file at `path`, never downloading.

    rembg's session classes find their file through `download_models()`, which calls
    `pooch.retrieve` (a download when the file is missing or its checksum differs). We use
    the model's own session class - its exact normalisation and input size - with that one
    classmethod replaced by "return this local path"."""
    import onnxruntime as ort

    if model == "u2net_human_seg":
        from rembg.sessions.u2net_human_seg import U2netHumanSegSession as base
    elif model == "isnet-anime":
        from rembg.sessions.dis_anime import DisSession as base
    else:  # pragma: no cover - guarded by RembgMatte
        raise ValueError(model)
    local = str(path)

    def download_models(cls: type, *args: Any, **kwargs: Any) -> str:
        return local

    cls = type(f"Local{base.__name__}", (base,), {"download_models": classmethod(download_models)})
    opts = ort.SessionOptions()
    if "OMP_NUM_THREADS" in os.environ:
        n = int(os.environ["OMP_NUM_THREADS"])
        opts.inter_op_num_threads = n
        opts.intra_op_num_threads = n
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return cls(model, opts, providers=providers or ["CPUExecutionProvider"])


class RembgMatte:
    """rembg matte from a local ONNX model: "u2net_human_seg" (photos) or "isnet-anime" (anime).

    The model file is checked (`toonlab.weights.require`, MissingWeightsError naming the file,
    the folder and the offline alternative) before rembg is even imported; the session is
    created lazily from that file and reused."""

    quality: ClassVar[str] = "good; needs the model file on disk"

    def __init__(self, model: str):
        if model not in REMBG_MODELS:
            raise ValueError(f"unknown rembg model {model!r}; expected one of {sorted(REMBG_MODELS)}")
        self.model = model
        self.weights_key = REMBG_MODELS[model]
        self.info = BackendInfo(f"rembg:{model}", f"{package_version('rembg')} {model}.onnx")
        self._session: Any = None

    def _get_session(self) -> Any:
        if self._session is None:
            from toonlab.weights import WEIGHTS, require

            folder = require(self.weights_key)  # raises before rembg can try a download
            self._session = _rembg_session(self.model, folder / WEIGHTS[self.weights_key].files[0])
        return self._session

    def load(self) -> RembgMatte:
        """Create the session now (fails fast when the model file is missing)."""
        self._get_session()
        return self

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        from PIL import Image

        img = as_rgb(rgb)
        session = self._get_session()
        with warnings.catch_warnings():  # rembg calls Image.fromarray(..., mode=), deprecated by Pillow
            warnings.filterwarnings("ignore", message=".*'mode' parameter is deprecated.*", category=DeprecationWarning)
            mask = session.predict(Image.fromarray(img))[0]
        if mask.size != (img.shape[1], img.shape[0]):
            mask = mask.resize((img.shape[1], img.shape[0]), Image.Resampling.BILINEAR)
        alpha = np.asarray(mask.convert("L"), np.float32) / 255.0
        return np.ascontiguousarray(np.nan_to_num(alpha, nan=0.0).clip(0.0, 1.0), dtype=np.float32)


# ----------------------------------------------------------------------------- factory


def make_matte_backend(domain: Literal["photo", "anime"], params: MatteParams | None = None) -> MatteBackend:
    """The matte backend `params` selects for `domain`. rembg backends check their model file
    here (MissingWeightsError with the file, folder and offline alternative)."""
    params = params or MatteParams()
    if domain == "photo":
        if params.photo_backend == "rembg":
            return RembgMatte("u2net_human_seg").load()
        return MediapipeMatte(params)
    if domain == "anime":
        if params.anime_backend == "rembg":
            return RembgMatte("isnet-anime").load()
        from toonlab.faces.anime_matte import FloodfillMatte

        return FloodfillMatte(params)
    raise ValueError(f"unknown domain {domain!r}; expected 'photo' or 'anime'")
