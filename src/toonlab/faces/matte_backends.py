"""Background removal (foreground alpha mattes) for photos and anime images.

Three backends, all implementing `toonlab.faces.base.MatteBackend`
(`matte(rgb) -> HxW float32 alpha in [0, 1]`, 1 = subject, 0 = background):

* `MediapipeMatte` - photos, the default. MediaPipe's selfie segmentation; the model ships
  inside the mediapipe wheel, so it works offline. Optionally refined with a colour guided
  filter so that the (upsampled, 256x256) mask follows the image's edges.
* `RembgMatte` - rembg's ONNX models, `u2net_human_seg` for photos and `isnet-anime` for
  anime. Better quality, but the model files must be on disk ($U2NET_HOME or ~/.u2net):
  `toonlab.weights.require` (which fetches them, md5-checked, when `runtime.fetch_weights`
  is auto) is called before any rembg session exists, and the session is built from that
  local file with rembg's own pre- and post-processing, so rembg never reaches for the network.
* `FloodfillMatte` (`toonlab.faces.matte_floodfill`) - anime, the offline fallback and the
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

from toonlab.faces.base import BackendInfo, MatteBackend, as_rgb, onnx_providers, package_version
from toonlab.faces.params import MatteParams

# rembg's model names -> the key of the file in toonlab.weights.WEIGHTS
REMBG_MODELS: dict[str, str] = {"u2net_human_seg": "u2net_human_seg", "isnet-anime": "isnet_anime"}


def background_fraction(alpha: np.ndarray) -> float:
    """Share of the image that is background: the mean of 1 - alpha."""
    a = np.asarray(alpha, dtype=np.float64)
    if a.size == 0:
        return 0.0
    return float(np.mean(1.0 - np.clip(a, 0.0, 1.0)))


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float, subsample: int = 1) -> np.ndarray:
    """He et al.'s guided filter with a colour guide (HxWx3 float in [0, 1]) on a HxW float
    source: an edge-preserving smoothing of `src` whose edges follow the guide's.

    `subsample` s > 1 is the fast guided filter (He & Sun 2015): the linear coefficients
    are computed on the guide and source shrunk s times (radius / s), upsampled
    bilinearly and applied to the full-resolution guide, about s^2 times less work; the
    edges still follow the full-resolution guide."""
    import cv2

    g_full = guide.astype(np.float32)
    p = src.astype(np.float32)
    s = max(1, int(subsample))
    h, w = p.shape[:2]
    if s > 1 and min(h, w) >= 4 * s and radius >= s:
        size = (max(1, round(w / s)), max(1, round(h / s)))
        g = cv2.resize(g_full, size, interpolation=cv2.INTER_AREA)
        p = cv2.resize(p, size, interpolation=cv2.INTER_AREA)
        r = max(1, int(round(radius / s)))
    else:
        g, r, s = g_full, max(1, int(radius)), 1
    ksize = (2 * r + 1, 2 * r + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_32F, ksize, borderType=cv2.BORDER_REFLECT)

    # Three-channel box filters, then contiguous planes for the per-pixel algebra.
    mean_i = cv2.split(box(g))
    mean_p = box(p)
    cov_ip = [c - m * mean_p for c, m in zip(cv2.split(box(g * p[:, :, None])), mean_i)]
    # Covariance of the guide (symmetric 3x3 per pixel), regularised, inverted in closed form.
    sq = cv2.split(box(g * g))
    cross = cv2.split(box(g[:, :, [0, 0, 1]] * g[:, :, [1, 2, 2]]))
    rr = sq[0] - mean_i[0] * mean_i[0] + eps
    gg = sq[1] - mean_i[1] * mean_i[1] + eps
    bb = sq[2] - mean_i[2] * mean_i[2] + eps
    rg = cross[0] - mean_i[0] * mean_i[1]
    rb = cross[1] - mean_i[0] * mean_i[2]
    gb = cross[2] - mean_i[1] * mean_i[2]
    i00, i01, i02 = gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb
    i11, i12, i22 = rr * bb - rb * rb, rb * rg - rr * gb, rr * gg - rg * rg
    inv_det = 1.0 / (rr * i00 + rg * i01 + rb * i02)
    c0, c1, c2 = cov_ip
    planes = [(i00 * c0 + i01 * c1 + i02 * c2) * inv_det, (i01 * c0 + i11 * c1 + i12 * c2) * inv_det,
              (i02 * c0 + i12 * c1 + i22 * c2) * inv_det]
    b = mean_p - planes[0] * mean_i[0] - planes[1] * mean_i[1] - planes[2] * mean_i[2]
    a = cv2.merge(planes)
    mean_a, mean_b = box(a), box(b)
    if s > 1:
        mean_a = cv2.resize(mean_a, (w, h), interpolation=cv2.INTER_LINEAR)
        mean_b = cv2.resize(mean_b, (w, h), interpolation=cv2.INTER_LINEAR)
    # q = mean_a . guide + mean_b, the dot product summed over channels by cv2.transform
    dot = cv2.transform(cv2.multiply(mean_a, g_full), np.ones((1, 3), np.float32))
    return cv2.add(dot, mean_b)


# ----------------------------------------------------------------------------- mediapipe


class MediapipeMatte:
    """Photo matte from MediaPipe selfie segmentation (model bundled in the wheel, offline).

    `mediapipe_model` 0 ("general", 256x256 input) is the default: on portraits and upper
    bodies it is the cleaner of the two (skimage's astronaut: flag region 0.04 mean alpha
    against 0.23 with the "landscape" model 1, face 0.94 with both). Its soft mask is
    upsampled from 256x256, so a colour guided filter (`refine_radius`, `refine_eps`) snaps
    it onto the image's edges (hair outline, shoulders); about 9 ms at 512x512 as the fast
    guided filter (`refine_subsample` 2), 24 ms exact.

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
            alpha = guided_filter(img.astype(np.float32) / 255.0, alpha, r, self.params.refine_eps,
                                  self.params.refine_subsample)
        return np.ascontiguousarray(np.clip(alpha, 0.0, 1.0), dtype=np.float32)

    def close(self) -> None:
        if self._seg is not None:
            self._seg.close()
            self._seg = None


# ----------------------------------------------------------------------------- rembg


def _rembg_session(model: str, path: os.PathLike[str] | str, device: str = "auto") -> Any:
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
    return cls(model, opts, providers=onnx_providers(device))


class RembgMatte:
    """rembg matte from a local ONNX model: "u2net_human_seg" (photos) or "isnet-anime" (anime).

    The model file is checked (`toonlab.weights.require`, MissingWeightsError naming the file,
    the folder and the offline alternative) before rembg is even imported; the session is
    created lazily from that file and reused."""

    quality: ClassVar[str] = "good; needs the model file on disk"

    def __init__(self, model: str, device: str = "auto"):
        if model not in REMBG_MODELS:
            raise ValueError(f"unknown rembg model {model!r}; expected one of {sorted(REMBG_MODELS)}")
        self.model = model
        self.device = device  # runtime.device: the onnxruntime providers (onnx_providers)
        self.weights_key = REMBG_MODELS[model]
        self.info = BackendInfo(f"rembg:{model}", f"{package_version('rembg')} {model}.onnx")
        self._session: Any = None

    def _get_session(self) -> Any:
        if self._session is None:
            from toonlab.weights import WEIGHTS, require

            folder = require(self.weights_key)  # raises before rembg can try a download
            self._session = _rembg_session(self.model, folder / WEIGHTS[self.weights_key].files[0], self.device)
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


def make_matte_backend(domain: Literal["photo", "anime"], params: MatteParams | None = None,
                       device: str = "auto") -> MatteBackend:
    """The matte backend `params` selects for `domain`. rembg backends check their model file
    here (MissingWeightsError with the file, folder and offline alternative) and run on the
    onnxruntime providers of `device` (`runtime.device`)."""
    params = params or MatteParams()
    if domain == "photo":
        if params.photo_backend == "rembg":
            return RembgMatte("u2net_human_seg", device).load()
        return MediapipeMatte(params)
    if domain == "anime":
        if params.anime_backend == "rembg":
            return RembgMatte("isnet-anime", device).load()
        from toonlab.faces.matte_floodfill import FloodfillMatte

        return FloodfillMatte(params)
    raise ValueError(f"unknown domain {domain!r}; expected 'photo' or 'anime'")
