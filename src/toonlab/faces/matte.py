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
* `FloodfillMatte` - anime, the offline fallback and the LOW-QUALITY one: it assumes a
  flat(-ish) background reaching the image border (flat colour, gradient, a few stripes,
  circles or sparkles), finds it by flood-filling border-connected flat regions, then lets
  GrabCut settle the boundary. Busy or scenic backgrounds defeat it.

`make_matte_backend(domain, params)` picks one from `MatteParams`; `background_fraction`
summarises a matte (mean of 1 - alpha).
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from toonlab.faces.base import BackendInfo, MatteBackend, as_rgb
from toonlab.schema import Section

# rembg's model names -> the key of the file in toonlab.weights.WEIGHTS
REMBG_MODELS: dict[str, str] = {"u2net_human_seg": "u2net_human_seg", "isnet-anime": "isnet_anime"}


class MatteParams(Section):
    """Background removal. `photo_backend`/`anime_backend` pick the backend per domain; the
    other keys tune the backends (each backend ignores the keys of the others)."""

    # Photos: mediapipe (selfie segmentation, model bundled in the wheel, offline) or rembg
    # (u2net_human_seg.onnx must already be in $U2NET_HOME or ~/.u2net; never downloaded).
    photo_backend: Literal["mediapipe", "rembg"] = "mediapipe"
    # Anime: floodfill (offline, flat backgrounds only, LOWER QUALITY) or rembg (isnet-anime.onnx).
    anime_backend: Literal["floodfill", "rembg"] = "floodfill"

    # --- mediapipe
    # Selfie segmentation model: 0 = "general" (256x256 input; better on portraits and upper
    # bodies: on skimage's astronaut the flag behind her gets mean alpha 0.04, against 0.23
    # with model 1), 1 = "landscape" (144x256, a little faster, made for video calls).
    mediapipe_model: Literal[0, 1] = 0
    # Guided-filter refinement radius, as a fraction of the image's shorter side (0 = off):
    # snaps the blurry, upsampled 256x256 mask onto the image's edges (hair, shoulders).
    refine_radius: Annotated[float, Field(ge=0.0, le=0.1)] = 0.008
    # Guided-filter regularisation (image in [0, 1]): larger = smoother, follows edges less.
    refine_eps: Annotated[float, Field(gt=0.0, le=1.0)] = 0.002

    # --- floodfill (anime fallback)
    # Work on the image downscaled to at most this many pixels on its longer side (speed);
    # the matte is scaled back to the input size.
    work_side: Annotated[int, Field(ge=64, le=4096)] = 512
    # Pixels whose Lab gradient (delta E per pixel) is below this are flat colour; background
    # regions are grown through flat pixels only, so outlines and edges stop them.
    flat_threshold: Annotated[float, Field(gt=0.0, le=50.0)] = 2.5
    # Delta E within which a region's colour counts as the background's (half of it for
    # regions enclosed by the subject, e.g. background seen between a twin tail and the neck).
    match_tolerance: Annotated[float, Field(gt=0.0, le=50.0)] = 8.0
    # Border regions touching the top edge, or the left/right edges within this upper fraction
    # of the height, seed the background (subjects enter from the bottom).
    upper_side_frac: Annotated[float, Field(gt=0.0, le=1.0)] = 0.6
    # Candidate foreground further than this fraction of the shorter side from any background
    # estimate is fixed as foreground for GrabCut (protects light skin and white clothes).
    sure_fg_margin: Annotated[float, Field(ge=0.0, le=0.5)] = 0.02
    # GrabCut iterations settling the boundary by colour (0 = flood-fill estimate only).
    grabcut_iters: Annotated[int, Field(ge=0, le=20)] = 4
    # Gaussian sigma, in pixels of the input, of the feathered edge (0 = hard edge).
    feather_px: Annotated[float, Field(ge=0.0, le=20.0)] = 1.0


def background_fraction(alpha: np.ndarray) -> float:
    """Share of the image that is background: the mean of 1 - alpha."""
    a = np.asarray(alpha, dtype=np.float64)
    if a.size == 0:
        return 0.0
    return float(np.mean(1.0 - np.clip(a, 0.0, 1.0)))


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


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
        self.info = BackendInfo("mediapipe", f"{_version('mediapipe')} selfie_segmentation "
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
        self.info = BackendInfo(f"rembg:{model}", f"{_version('rembg')} {model}.onnx")
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


# ----------------------------------------------------------------------------- floodfill


class FloodfillMatte:
    """LOW-QUALITY offline fallback for anime: flat backgrounds only.

    Anime backgrounds are often flat colour, a gradient, or that with a few stripes, circles
    or sparkles, and anime subjects are outlined. So:

    1. Lab gradient -> "flat" pixels -> connected flat regions (outlines separate them).
    2. The border region with the longest border contact seeds the background; regions of
       its colour touching the top or the upper sides are sure background. Other upper
       regions that blend into it without an outline (stripes, circles, sparkles) are
       probable background; outlined ones (hair reaching the top) are not. Regions touching
       only the bottom / lower sides are background only if coloured like it - and not when
       outlined across the bottom middle (clothes in the background's colour). Enclosed
       regions of the background's colour (background seen between a twin tail and the
       neck) are background unless they look like part of an object (they blend into one,
       or enclose darker things: a face around its mouth). See `_regions`.
    3. Thin seams between background regions (anti-aliased edges) are closed; foreground
       islands far smaller than the subject (sparkles, circles) become probable background.
    4. GrabCut, initialised from that: sure background = step 2's sure regions, sure
       foreground = candidate foreground further than `sure_fg_margin` from any background
       estimate (so light skin and white clothes survive), probable labels in between.
    5. Specks and small islands removed, small holes filled, edge feathered.

    On 250 drawn portraits (toonlab.anime_draw) the matte's IoU with the true subject mask
    is 0.99 on average; faces were never lost; the typical error is leaving background
    visible through gaps in the hair. Scenic or textured backgrounds defeat it: use rembg's
    isnet-anime (`matte.anime_backend: rembg`) whenever its model file is available.
    """

    quality: ClassVar[str] = "low: offline fallback for flat anime backgrounds (use rembg isnet-anime when available)"
    low_quality: ClassVar[bool] = True

    def __init__(self, params: MatteParams | None = None):
        self.params = params or MatteParams()
        self.info = BackendInfo("floodfill", f"toonlab {_version('toonlab')}, opencv {_cv2_version()} "
                                             "(low-quality fallback)")

    # -- public
    def matte(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        img = as_rgb(rgb)
        h, w = img.shape[:2]
        p = self.params
        scale = min(1.0, p.work_side / max(h, w))
        if scale < 1.0:
            ww, wh = max(1, round(w * scale)), max(1, round(h * scale))
            work = cv2.resize(img, (ww, wh), interpolation=cv2.INTER_AREA)
        else:
            work = img
        fg = self._foreground(work)
        if fg.all() or not fg.any():
            return np.full((h, w), 1.0 if fg.all() else 0.0, np.float32)
        alpha = fg.astype(np.float32)
        if work.shape[:2] != (h, w):
            alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)
        if p.feather_px > 0:
            alpha = cv2.GaussianBlur(alpha, (0, 0), p.feather_px, borderType=cv2.BORDER_REPLICATE)
        return np.ascontiguousarray(np.clip(alpha, 0.0, 1.0), dtype=np.float32)

    # -- steps
    def _foreground(self, img: np.ndarray) -> np.ndarray:
        """Binary foreground at the working resolution."""
        import cv2

        p = self.params
        h, w = img.shape[:2]
        if min(h, w) < 8:
            return np.ones((h, w), bool)
        short = min(h, w)
        lab = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
        lab_s = cv2.GaussianBlur(lab, (0, 0), 0.7)
        gx = cv2.Sobel(lab_s, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(lab_s, cv2.CV_32F, 0, 1, ksize=3)
        grad = np.sqrt((gx * gx + gy * gy).sum(axis=2)) / 8.0  # delta E per pixel
        flat = (grad < p.flat_threshold).astype(np.uint8)

        n, labels = cv2.connectedComponents(flat, connectivity=4)
        sure_bg, prob_bg, unsure = self._regions(lab, labels, n)
        if not sure_bg.any():
            return np.ones((h, w), bool)  # no background found: keep everything

        # Close the thin non-flat seams between background regions (anti-aliased edges of
        # stripes and circles); the subject's outline has background on one side only.
        bg = sure_bg | prob_bg
        k = max(3, int(round(short * 0.012)) | 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        closed = cv2.morphologyEx(bg.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)
        seam = closed & ~bg
        cand = ~closed
        islands = self._islands(cand)
        cand &= ~islands
        if not cand.any():
            return np.zeros((h, w), bool)
        if p.grabcut_iters <= 0:
            return self._clean(cand, sure_bg)

        # Sure foreground: candidate pixels far from any background estimate.
        dist = cv2.distanceTransform((cand & ~unsure).astype(np.uint8), cv2.DIST_L2, 3)
        sure_fg = dist > max(1.0, p.sure_fg_margin * short)
        gc = np.full((h, w), cv2.GC_PR_FGD, np.uint8)
        gc[prob_bg | seam | islands] = cv2.GC_PR_BGD
        gc[sure_bg] = cv2.GC_BGD
        gc[sure_fg] = cv2.GC_FGD
        bgd = np.zeros((1, 65), np.float64)
        fgd = np.zeros((1, 65), np.float64)
        # GrabCut's k-means initialisation draws from OpenCV's (per-thread) global RNG:
        # seed it so that the same image always gives the same matte.
        cv2.setRNGSeed(12345)
        cv2.grabCut(img[:, :, ::-1].copy(), gc, None, bgd, fgd, p.grabcut_iters, cv2.GC_INIT_WITH_MASK)
        return self._clean((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD), sure_bg)

    def _regions(self, lab: np.ndarray, labels: np.ndarray,
                 n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sure background, probable background and "unsure" masks from the flat regions.

        * "Upper" regions touch the top edge or the upper part of the left/right edges. The
          one with the longest border contact seeds the background; upper regions of its
          colour are sure background. Other upper regions that blend into it without an
          outline (stripes, circles, sparkles) are probable background; outlined ones (hair
          reaching the top) are left to the foreground.
        * Regions touching only the bottom / lower sides (where the subject enters) are
          probable background when their colour matches the background - unless they cover
          the middle of the bottom edge and are outlined (clothes that happen to be the
          background's colour) - else foreground (clothes, hair).
        * Enclosed regions ("pockets", e.g. background between a twin tail and the neck)
          matching the background closely (within half `match_tolerance`) are background,
          unless they look like part of an object (see `_real_pockets`).

        Colours are compared with each reference region's mean over the same rows, so
        vertical gradients match."""
        p = self.params
        h, w = labels.shape
        tol = p.match_tolerance
        ids = labels.reshape(-1)
        upper_rows = max(1, int(round(h * p.upper_side_frac)))
        min_contact = max(2, int(round(0.01 * min(h, w))))
        border = np.concatenate([labels[0, :], labels[-1, :], labels[1:-1, 0], labels[1:-1, -1]])
        contact = np.bincount(border, minlength=n)
        up = np.bincount(np.concatenate([labels[0, :], labels[:upper_rows, 0], labels[:upper_rows, -1]]),
                         minlength=n)
        mid = np.bincount(labels[-1, w // 3: w - w // 3], minlength=n)
        # Label 0 holds the non-flat pixels (connectedComponents' "background"): never a region.
        contact[0] = up[0] = mid[0] = 0
        is_upper = up >= min_contact
        empty = np.zeros((h, w), bool)
        if not is_upper.any():
            return empty, empty, empty

        count = np.bincount(ids, minlength=n).astype(np.float64)
        means = np.stack([np.bincount(ids, weights=lab[:, :, c].reshape(-1), minlength=n)
                          for c in range(3)], axis=1) / np.maximum(count, 1)[:, None]
        rows = np.repeat(np.arange(h), w)
        first = np.full(n, h, np.int64)
        last = np.full(n, -1, np.int64)
        np.minimum.at(first, ids, rows)
        np.maximum.at(last, ids, rows)

        # Per-row colour sums of each upper region, cumulated over rows.
        ref_ids = np.flatnonzero(is_upper)
        nref = ref_ids.size
        k_of = np.full(n, -1, np.int64)
        k_of[ref_ids] = np.arange(nref)
        k = k_of[ids]
        sel = k >= 0
        key = rows[sel] * nref + k[sel]
        cnt = np.bincount(key, minlength=h * nref).reshape(h, nref)
        sums = np.stack([np.bincount(key, weights=lab[:, :, c].reshape(-1)[sel], minlength=h * nref)
                         .reshape(h, nref) for c in range(3)], axis=2)
        ccnt = np.concatenate([np.zeros((1, nref)), np.cumsum(cnt, axis=0)])
        csum = np.concatenate([np.zeros((1, nref, 3)), np.cumsum(sums, axis=0)])

        def distances(cid: int) -> np.ndarray:
            """Delta E from region `cid` to every upper region, in `cid`'s rows where possible."""
            r0, r1 = int(first[cid]), int(last[cid]) + 1
            c = ccnt[r1] - ccnt[r0]
            ref = means[ref_ids].copy()
            ok = c > 0
            ref[ok] = (csum[r1] - csum[r0])[ok] / c[ok][:, None]
            return np.sqrt(((ref - means[cid]) ** 2).sum(axis=1))

        seed = int(ref_ids[np.argmax(contact[ref_ids])])
        seed_k = int(k_of[seed])
        is_sure = np.zeros(n, bool)
        is_prob = np.zeros(n, bool)
        is_unsure = np.zeros(n, bool)
        others = []
        for cid in ref_ids:
            if cid == seed or distances(cid)[seed_k] < tol:
                is_sure[cid] = True
            else:
                others.append(int(cid))
        if others:
            for cid in self._decorations(lab, labels, is_sure[labels], others, tol):
                is_prob[cid] = True
        bg_k = k_of[np.flatnonzero(is_sure | is_prob)]
        primary_k = k_of[np.flatnonzero(is_sure)]

        # Regions on the bottom / lower sides only.
        for cid in np.flatnonzero((contact >= min_contact) & ~is_upper):
            if cid == 0:
                continue
            # A small decoration (a sparkle) does not vouch for a big region (a white shirt).
            refs = np.flatnonzero(is_sure | (is_prob & (count >= 0.5 * count[cid])))
            d = distances(cid)
            if d[k_of[refs]].min() < tol:
                if mid[cid] >= min_contact and not self._blends_into(
                        lab, labels, means, cid, is_sure | is_prob, tol, tints=False):
                    continue  # outlined, across the bottom middle: the subject's clothes
                is_prob[cid] = True
            elif d[bg_k].min() < tol:
                is_unsure[cid] = True  # GrabCut decides

        # Enclosed regions.
        on_border = np.zeros(n, bool)
        on_border[border] = True
        min_pocket = max(4, int(0.0005 * h * w))  # ignore specks
        bg_pockets = []
        for cid in np.flatnonzero(~on_border & (count >= min_pocket)):
            if cid == 0:
                continue
            d = distances(cid)
            if d[primary_k].min() < 0.5 * tol:
                bg_pockets.append(int(cid))
            elif d[bg_k].min() < tol:
                is_unsure[cid] = True
        # Neighbours that make a pocket part of an object when it blends into them:
        # sizeable, not near-black (an outline the colour of the region it bounds looks like
        # a blend), not background-coloured, and not coloured like the decorations floating
        # in the background (sparkles seen through a gap).
        deco = np.concatenate([means[is_prob], self._floating_colours(labels, is_sure[labels], means, count)])
        objects = ~(is_sure | is_prob | is_unsure) & (count >= min_pocket) & (means[:, 0] >= 30.0)
        objects[0] = False
        objects[bg_pockets] = False
        if deco.size:
            dd = np.sqrt(((means[:, None, :] - deco[None, :, :]) ** 2).sum(axis=2)).min(axis=1)
            objects &= dd >= tol
        blended = [cid for cid in bg_pockets if self._blends_into(lab, labels, means, cid, objects, tol)]
        for cid in self._real_pockets(labels, lab[:, :, 0], bg_pockets, blended):
            # Background seen through a gap. Small pockets are fixed as background
            # (GrabCut's smoothness would close narrow ones); a large one could be light
            # skin that happens to match the background, so GrabCut decides those.
            if count[cid] <= 0.05 * h * w:
                is_sure[cid] = True
            else:
                is_prob[cid] = True
        return is_sure[labels], is_prob[labels], is_unsure[labels]

    @staticmethod
    def _blends_into(lab: np.ndarray, labels: np.ndarray, means: np.ndarray, cid: int,
                     allowed: np.ndarray, tol: float, reach: float = 4.0, tints: bool = True) -> bool:
        """Whether region `cid` meets one of the `allowed` regions across an anti-aliased
        seam (most seam pixels close to the colour segment joining the two regions) rather
        than across an outline."""
        import cv2

        h, w = labels.shape
        ys, xs = np.nonzero(labels == cid)
        pad = int(2 * reach) + 2
        y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + pad + 1)
        x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + pad + 1)
        sub = labels[y0:y1, x0:x1]
        dist_r = cv2.distanceTransform((sub != cid).astype(np.uint8), cv2.DIST_L2, 5)
        near = np.unique(sub[dist_r <= 2 * reach + 1])
        near = near[(near != 0) & (near != cid) & allowed[near]]
        a = means[cid]
        sub_lab = lab[y0:y1, x0:x1]
        white = np.array([100.0, 0.0, 0.0])
        aw = white - a
        for q in near:
            dist_q = cv2.distanceTransform((sub != q).astype(np.uint8), cv2.DIST_L2, 5)
            # A lighter tint of the region (a bokeh circle, a stripe) is decoration, and so is
            # white inside it (a sparkle; eye whites are not enclosed by the skin around them).
            if tints and np.sqrt(((means[q] - a) ** 2).sum()) < tol:
                continue  # a slightly different shade of the same colour (a faint circle)
            tq = float(((means[q] - a) * aw).sum() / max(float((aw * aw).sum()), 1e-6))
            if tints and tq > 0.05 and np.sqrt(((means[q] - (a + min(tq, 1.0) * aw)) ** 2).sum()) < tol:
                ring = sub[(dist_q > 0) & (dist_q <= 2 * reach + 1)]
                if tq < 0.9 or np.isin(ring, (0, cid)).all():
                    continue
            seam = (sub == 0) & (dist_r <= reach) & (dist_q <= reach)
            if seam.sum() < 5:
                continue
            pix = sub_lab[seam]
            ab = means[q] - a
            t = np.clip(((pix - a) * ab).sum(axis=1) / max(float((ab * ab).sum()), 1e-6), 0.0, 1.0)
            off = np.sqrt(((pix - (a + t[:, None] * ab)) ** 2).sum(axis=1))
            if np.mean(off < tol) >= 0.6:
                return True
        return False

    @staticmethod
    def _floating_colours(labels: np.ndarray, primary: np.ndarray, means: np.ndarray,
                          count: np.ndarray) -> np.ndarray:
        """Mean colours of the flat regions inside small things floating in the background
        (sparkles, circles): what the background's decorations look like."""
        import cv2

        h, w = labels.shape
        k = max(3, int(round(min(h, w) * 0.012)) | 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        cand = ~cv2.morphologyEx(primary.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(cand.astype(np.uint8), connectivity=8)
        if n <= 2:
            return np.zeros((0, 3))
        areas = stats[1:, cv2.CC_STAT_AREA]
        small = np.flatnonzero(areas < 0.1 * areas.max()) + 1
        ids = np.unique(labels[np.isin(lab, small)])
        ids = ids[(ids != 0) & (count[ids] >= 4)]
        return means[ids]

    @staticmethod
    def _real_pockets(labels: np.ndarray, lab_l: np.ndarray, cids: list[int],
                      blended: list[int]) -> list[int]:
        """Those of the background-coloured enclosed regions `cids` that are background.

        Not background: the `blended` ones (they meet an object without an outline), those
        enclosing darker things (more than 1% of their filled outline: a face around its
        mouth and nose; sparkles and circles are lighter), and every such region next to one
        of those (the neck below that face)."""
        import cv2

        if not cids:
            return []
        h, w = labels.shape
        objects = np.zeros((h, w), np.uint8)
        masks = {}
        for cid in cids:
            region = labels == cid
            masks[cid] = region
            if cid in blended:
                objects |= region
                continue
            ys, xs = np.nonzero(region)
            y0, x0 = ys.min(), xs.min()
            sub = region[y0:ys.max() + 1, x0:xs.max() + 1].astype(np.uint8)
            contours, _ = cv2.findContours(sub, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            filled = np.zeros_like(sub)
            cv2.drawContours(filled, contours, -1, 1, thickness=-1)
            holes = filled.astype(bool) & ~sub.astype(bool)
            inside_l = lab_l[y0:ys.max() + 1, x0:xs.max() + 1][holes]
            if (inside_l < lab_l[region].mean() - 20.0).sum() > 0.01 * filled.sum():
                objects |= region
        if objects.any():
            k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (13, 13))
            changed = True
            while changed:
                changed = False
                near = cv2.dilate(objects, k).astype(bool)
                for cid in cids:
                    if not objects[masks[cid]].any() and near[masks[cid]].any():
                        objects |= masks[cid]
                        changed = True
        return [cid for cid in cids if not objects[masks[cid]].any()]

    @staticmethod
    def _decorations(lab: np.ndarray, labels: np.ndarray, primary: np.ndarray, cids: list[int],
                     tol: float) -> list[int]:
        """Those of the regions `cids` that blend into the primary background: most pixels of
        the seam between them (non-flat pixels within a few pixels of both) lie close to the
        colour segment joining the two sides, as anti-aliased edges do and outlines do not."""
        import cv2

        h, w = labels.shape
        reach = 4.0
        not_p = (~primary).astype(np.uint8)
        dist_p, near_p = cv2.distanceTransformWithLabels(not_p, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        p_pix = np.flatnonzero(not_p.reshape(-1) == 0)  # label l -> the l-th zero pixel, raster order
        flat_lab = lab.reshape(-1, 3)
        out = []
        for cid in cids:
            region = labels == cid
            ys, xs = np.nonzero(region)
            y0, y1 = max(0, ys.min() - 6), min(h, ys.max() + 7)
            x0, x1 = max(0, xs.min() - 6), min(w, xs.max() + 7)
            sub = region[y0:y1, x0:x1]
            dist_r = cv2.distanceTransform((~sub).astype(np.uint8), cv2.DIST_L2, 5)
            seam = (labels[y0:y1, x0:x1] == 0) & (dist_r <= reach) & (dist_p[y0:y1, x0:x1] <= reach)
            if seam.sum() < 3:
                continue  # touches the background nowhere: not a decoration of it
            pix = lab[y0:y1, x0:x1][seam]
            a = lab[region].mean(axis=0)
            b = flat_lab[p_pix[near_p[y0:y1, x0:x1][seam] - 1]]
            ab = b - a
            t = np.clip(((pix - a) * ab).sum(axis=1) / np.maximum((ab * ab).sum(axis=1), 1e-6), 0.0, 1.0)
            off = np.sqrt(((pix - (a + t[:, None] * ab)) ** 2).sum(axis=1))
            if np.mean(off < tol) >= 0.6:
                out.append(cid)
        return out

    def _islands(self, cand: np.ndarray) -> np.ndarray:
        """Candidate-foreground components much smaller than the largest one."""
        import cv2

        n, lab, stats, _ = cv2.connectedComponentsWithStats(cand.astype(np.uint8), connectivity=8)
        if n <= 2:
            return np.zeros_like(cand)
        areas = stats[1:, cv2.CC_STAT_AREA]
        small = np.flatnonzero(areas < 0.1 * areas.max()) + 1
        return np.isin(lab, small)

    def _clean(self, fg: np.ndarray, sure_bg: np.ndarray) -> np.ndarray:
        """Remove specks and small islands, fill small holes (not known background)."""
        import cv2

        h, w = fg.shape
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        m = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, k)
        if not m.any():
            return fg
        m = ~self._islands(m.astype(bool)) & m.astype(bool)
        # Fill holes (background components not touching the border) smaller than 0.5% of the image.
        inv = (~m).astype(np.uint8)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
        if n > 1:
            x, y, bw, bh, area = (stats[1:, i] for i in range(5))
            inner = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h) & (area < 0.005 * h * w)
            known = np.bincount(lab[sure_bg], minlength=n)[1:] > 0
            m |= np.isin(lab, np.flatnonzero(inner & ~known) + 1)
        return m


def _cv2_version() -> str:
    import cv2

    return str(cv2.__version__)


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
        return FloodfillMatte(params)
    raise ValueError(f"unknown domain {domain!r}; expected 'photo' or 'anime'")
