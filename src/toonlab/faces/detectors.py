"""Face detection with landmarks, one backend per domain, all in the schema of `base.py`.

Backends (``make_face_backend(domain, params)``):

* ``MediapipeFaces`` (photo default; offline, its models ship inside the mediapipe wheel).
  BlazeFace full-range (``mp.solutions.face_detection``, ``model_selection=1``) finds the
  faces; it is run on the whole image, on the whole image with a grey border (faces that
  fill the frame or touch its edge, e.g. 112x112 face crops) and, unless those found a
  face at least ``tiles_skip_face_frac`` of the long side wide (a portrait), on
  overlapping square tiles (``tile_levels``) so that small faces are seen at a usable
  resolution (with the default ``tile_levels: 1`` a face down to about a tenth of the
  image's long side is found; a bare, tight face crop on a flat background at that size
  may need ``tile_levels: 2``, at about 2.5x the time). Every graph call costs about 7 ms
  on one core whatever its input size (3 x 3 tiles at level 1: 11 passes on a group
  photo, 2 on a portrait), so the number of passes is the detector's cost. Detections
  are merged by non-maximum suppression. Then the 478-point face
  mesh (``mp.solutions.face_mesh``, ``static_image_mode=True``, ``refine_landmarks=True``)
  runs on an expanded square crop around each detection (the mesh's own short-range
  detector misses the small faces of group photos when given the whole image) and its
  points are mapped back to image pixels. Five points from the mesh: eye centres (the
  midpoint of the two eye corners, 33/133 and 362/263, or the iris centres 468/473 with
  ``eye_points: iris``), nose tip 1, mouth corners 61/291. In an upright photo 33, 133, 468
  and 61 lie on the image's left (the subject's right), as the schema wants.
  When the mesh finds no face in the crop (a false detection, or a profile / heavily
  occluded face), ``mesh_fallback`` decides: ``drop`` (default) discards it, so the mesh
  also filters BlazeFace's false positives (small background blobs at scores 0.5-0.65);
  ``keypoints`` keeps it with five points built from BlazeFace's own six keypoints (eyes
  and nose as given; mouth corners = BlazeFace's mouth centre +- 0.42 x the inter-ocular
  vector, the ArcFace template's proportion) and those six keypoints as `landmarks`
  (named, ``BLAZEFACE_KEYPOINT_NAMES``). `box` is the extent of the mesh points
  (forehead to chin, cheek to cheek), or BlazeFace's box for a fallback face; `score` is
  BlazeFace's confidence.
  The mediapipe graphs are created lazily, once per process (and again in a forked child),
  shared by every ``MediapipeFaces`` and closed at exit or by ``close_mediapipe_graphs()``.

* ``InsightfaceFaces`` (photo, optional): SCRFD (``det_10g.onnx``) + 106-point 2D
  landmarks (``2d106det.onnx``) of insightface's ``buffalo_l`` pack. The pack must be on
  disk: ``toonlab.weights.require("buffalo_l")`` (which fetches it when
  ``runtime.fetch_weights`` is auto) is called before anything of insightface is built
  (its own downloader has no timeout), and the pack folder is passed to
  ``FaceAnalysis`` as a path, so it never downloads. Five points = SCRFD's keypoints
  (ArcFace template order: image-left eye, image-right eye, nose, image-left and
  image-right mouth corner).

* ``AnimefaceFaces`` (anime): ``animeface.detect`` (nvxs). Its part names are from the
  character's point of view (``left_eye`` is on the image's right), so the image-left eye
  is animeface's ``right_eye``. Five points: eye box centres, nose point, the left and right
  middle points of the mouth box. `landmarks` are named (``ANIME_LANDMARK_NAMES``, image
  sides). animeface silently finds nothing with Pillow >= 12, so it refuses to run there.

Helpers: ``estimate_yaw(face)`` (degrees, from the five points) and ``face_blur(rgb, face)``
(sharpness of the face box, scale-independent).
"""

from __future__ import annotations

import atexit
import math
import os
import threading
from typing import Any, Literal

import cv2
import numpy as np

from toonlab.errors import ToonlabError
from toonlab.faces.base import BackendInfo, Face, FaceBackend, as_rgb, onnx_providers, package_version
from toonlab.faces.params import DetectParams

# --------------------------------------------------------------------------- helpers


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and intersection over the smaller box, for boxes (N,4) x (M,4)."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    iou = inter / np.maximum(union, 1e-9)
    iomin = inter / np.maximum(np.minimum(area_a[:, None], area_b[None, :]), 1e-9)
    return iou, iomin


def _nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float, iomin_thr: float) -> list[int]:
    """Greedy NMS; also suppresses a box mostly inside a kept one (tile-edge fragments)."""
    order = list(np.argsort(-scores, kind="stable"))
    if not order:
        return []
    iou, iomin = _iou_matrix(boxes, boxes)
    keep: list[int] = []
    for i in order:
        if all(iou[i, k] <= iou_thr and iomin[i, k] <= iomin_thr for k in keep):
            keep.append(int(i))
    return keep


def _tile_starts(length: int, side: int, overlap: float) -> list[int]:
    """Start offsets of square tiles of `side` covering [0, length): steps of
    side - overlap (whole pixels), the last tile moved back to end at the border."""
    last = max(length - side, 0)
    step = max(1, int(side - overlap))
    return sorted({min(x, last) for x in range(0, last + step, step)})


def _sort_largest_first(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: -(f.width * f.height))


# --------------------------------------------------------------------------- mediapipe

# BlazeFace's six keypoints, in its order (image sides for an upright, unmirrored face).
BLAZEFACE_KEYPOINT_NAMES = ("eye_left", "eye_right", "nose", "mouth", "ear_left", "ear_right")

# Face mesh indices (478-point topology with refine_landmarks=True).
MESH_EYE_LEFT_CORNERS = (33, 133)     # image-left eye: outer, inner corner
MESH_EYE_RIGHT_CORNERS = (362, 263)   # image-right eye: inner, outer corner
MESH_IRIS_LEFT, MESH_IRIS_RIGHT = 468, 473
MESH_NOSE_TIP = 1
MESH_MOUTH_LEFT, MESH_MOUTH_RIGHT = 61, 291

_MOUTH_HALF_WIDTH = 0.42   # mouth half-width / inter-ocular distance (ArcFace 5-point template)
_BORDER_FRACTION = 0.25    # grey border added for the padded whole-image pass
_MIN_TILE_PX = 256         # tiles smaller than this are not used
_DET_MAX_PX = 1024         # detection inputs larger than this are area-downscaled first
_MESH_CROP_PX = 384        # the face-mesh crop is resized to this square side


class _Graphs:
    """Process-wide, lazily created mediapipe solution graphs, each with its own lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._graphs: dict[tuple, tuple[Any, threading.Lock]] = {}

    def get(self, key: tuple) -> tuple[Any, threading.Lock]:
        with self._lock:
            if self._pid != os.getpid():
                # A forked child must not use (or close) its parent's native graphs.
                self._graphs = {}
                self._pid = os.getpid()
            entry = self._graphs.get(key)
            if entry is None:
                entry = (self._create(key), threading.Lock())
                self._graphs[key] = entry
            return entry

    @staticmethod
    def _create(key: tuple) -> Any:
        import mediapipe as mp

        kind = key[0]
        if kind == "detection":
            return mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=key[1])
        if kind == "mesh":
            return mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=key[1], refine_landmarks=True,
                min_detection_confidence=key[2])
        raise KeyError(key)

    def close(self) -> None:
        with self._lock:
            graphs, self._graphs = self._graphs, {}
            same_process = self._pid == os.getpid()
        if not same_process:
            return
        for graph, lock in graphs.values():
            with lock:
                graph.close()


_GRAPHS = _Graphs()
atexit.register(_GRAPHS.close)


def close_mediapipe_graphs() -> None:
    """Close the process's mediapipe graphs; the next detection creates them again."""
    _GRAPHS.close()


def _run_graph(key: tuple, image: np.ndarray) -> Any:
    graph, lock = _GRAPHS.get(key)
    with lock:
        return graph.process(image)


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    shrink = w < img.shape[1] or h < img.shape[0]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


class MediapipeFaces:
    """Photo faces: BlazeFace full-range detection + 478-point face mesh per face crop."""

    def __init__(self, params: DetectParams | None = None):
        import mediapipe as mp

        self.params = params or DetectParams()
        self.info = BackendInfo(
            "mediapipe",
            f"{mp.__version__} face_detection_full_range_sparse.tflite+face_landmark_with_attention.tflite")

    # -- detection -------------------------------------------------------------------

    def _detect_in(self, img: np.ndarray, x0: float, y0: float, scale: float,
                   out: list[tuple[np.ndarray, float, np.ndarray]]) -> None:
        """Run BlazeFace on `img`, whose pixel (u, v) is image pixel (x0 + u*scale, y0 + v*scale)."""
        h, w = img.shape[:2]
        if max(h, w) > _DET_MAX_PX:
            f = _DET_MAX_PX / max(h, w)
            img = _resize(img, max(1, round(w * f)), max(1, round(h * f)))
            scale = scale / f
            h, w = img.shape[:2]
        res = _run_graph(("detection", float(self.params.min_score)), np.ascontiguousarray(img))
        for det in res.detections or []:
            bb = det.location_data.relative_bounding_box
            box = np.array([bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w,
                            (bb.ymin + bb.height) * h]) * scale
            box[[0, 2]] += x0
            box[[1, 3]] += y0
            kps = np.array([(k.x * w, k.y * h) for k in det.location_data.relative_keypoints], float)
            kps = kps * scale + (x0, y0)
            out.append((box, float(det.score[0]), kps))

    def _candidates(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        H, W = rgb.shape[:2]
        long_side = max(H, W)
        found: list[tuple[np.ndarray, float, np.ndarray]] = []
        # 1. whole image
        self._detect_in(rgb, 0.0, 0.0, 1.0, found)
        # 2. whole image with a grey border: faces filling the frame or cut by its edge
        p = max(1, round(_BORDER_FRACTION * long_side))
        padded = cv2.copyMakeBorder(rgb, p, p, p, p, cv2.BORDER_CONSTANT, value=(127, 127, 127))
        self._detect_in(padded, -p, -p, 1.0, found)
        # 3. overlapping square tiles for small faces, unless a face found so far makes the
        # image a portrait (tiles_skip_face_frac)
        widest = max((b[2] - b[0] for b, _, _ in found), default=0.0)
        frac = self.params.tiles_skip_face_frac
        levels = 0 if frac > 0 and widest >= frac * long_side else self.params.tile_levels
        for level in range(1, levels + 1):
            nominal = long_side / 2 ** level
            if nominal < _MIN_TILE_PX:
                break
            side = int(math.ceil(self.params.tile_side * nominal))
            overlap = self.params.tile_overlap * nominal
            for y in _tile_starts(H, side, overlap):
                for x in _tile_starts(W, side, overlap):
                    self._detect_in(rgb[y:y + side, x:x + side], float(x), float(y), 1.0, found)
        if not found:
            return []
        boxes = np.array([f[0] for f in found])
        scores = np.array([f[1] for f in found])
        keep = _nms(boxes, scores, 0.3, 0.6)
        return [found[i] for i in keep]

    # -- mesh --------------------------------------------------------------------------

    def _mesh(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """478 mesh points (pixels of `rgb`) of the face in `box`, or None."""
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = max(box[2] - box[0], box[3] - box[1]) * self.params.mesh_crop_scale
        side = max(side, 8.0)
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        s = int(round(side))
        H, W = rgb.shape[:2]
        ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x0 + s, W), min(y0 + s, H)
        if ax1 <= ax0 or ay1 <= ay0:
            return None
        crop = cv2.copyMakeBorder(rgb[ay0:ay1, ax0:ax1], ay0 - y0, y0 + s - ay1, ax0 - x0,
                                  x0 + s - ax1, cv2.BORDER_CONSTANT, value=(127, 127, 127))
        crop = _resize(crop, _MESH_CROP_PX, _MESH_CROP_PX)
        res = _run_graph(("mesh", 3, 0.3), crop)
        if not res.multi_face_landmarks:
            return None
        f = s / _MESH_CROP_PX
        best, best_d = None, math.inf
        for lm in res.multi_face_landmarks:
            pts = np.array([(p.x * _MESH_CROP_PX, p.y * _MESH_CROP_PX) for p in lm.landmark], float)
            pts = pts * f + (x0, y0)
            nose = pts[MESH_NOSE_TIP]
            # the mesh must belong to this detection: nose tip inside the (slightly grown) box
            grow = 0.15 * (box[2] - box[0])
            if not (box[0] - grow <= nose[0] <= box[2] + grow and box[1] - grow <= nose[1] <= box[3] + grow):
                continue
            d = math.hypot(nose[0] - cx, nose[1] - cy)
            if d < best_d:
                best, best_d = pts, d
        return best

    def _five_from_mesh(self, pts: np.ndarray) -> np.ndarray:
        if self.params.eye_points == "iris":
            el, er = pts[MESH_IRIS_LEFT], pts[MESH_IRIS_RIGHT]
        else:
            el = pts[list(MESH_EYE_LEFT_CORNERS)].mean(axis=0)
            er = pts[list(MESH_EYE_RIGHT_CORNERS)].mean(axis=0)
        return np.array([el, er, pts[MESH_NOSE_TIP], pts[MESH_MOUTH_LEFT], pts[MESH_MOUTH_RIGHT]],
                        np.float32)

    @staticmethod
    def _five_from_keypoints(kps: np.ndarray) -> np.ndarray:
        el, er, nose, mouth = kps[0], kps[1], kps[2], kps[3]
        half = _MOUTH_HALF_WIDTH * (er - el)
        return np.array([el, er, nose, mouth - half, mouth + half], np.float32)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces in an HxWx3 uint8 RGB image, largest first."""
        rgb = as_rgb(rgb)
        H, W = rgb.shape[:2]
        faces: list[Face] = []
        for box, score, kps in self._candidates(rgb):
            pts = self._mesh(rgb, box)
            if pts is not None:
                lo = np.clip(pts.min(axis=0), 0, [W, H])
                hi = np.clip(pts.max(axis=0), 0, [W, H])
                faces.append(Face(box=(float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])),
                                  score=score, five=self._five_from_mesh(pts),
                                  landmarks=pts.astype(np.float32)))
            elif self.params.mesh_fallback == "keypoints":
                b = np.clip(box, 0, [W, H, W, H])
                faces.append(Face(box=tuple(float(v) for v in b), score=score,  # type: ignore[arg-type]
                                  five=self._five_from_keypoints(kps),
                                  landmarks=kps.astype(np.float32),
                                  landmark_names=BLAZEFACE_KEYPOINT_NAMES))
        if len(faces) > 1:  # two detections may have converged on the same face
            boxes = np.array([f.box for f in faces])
            keep = _nms(boxes, np.array([f.score for f in faces]), 0.5, 0.8)
            faces = [faces[i] for i in keep]
        return _sort_largest_first([f for f in faces if f.width > 0 and f.height > 0])

    def close(self) -> None:
        """Close the process-wide mediapipe graphs (they are re-created on next use)."""
        close_mediapipe_graphs()

    def __enter__(self) -> MediapipeFaces:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- insightface


class InsightfaceFaces:
    """Photo faces: SCRFD + 106-point landmarks from insightface's buffalo_l pack (on disk)."""

    PACK = "buffalo_l"

    def __init__(self, params: DetectParams | None = None, device: str = "auto"):
        from toonlab.weights import require

        self.params = params or DetectParams()
        providers = onnx_providers(device)  # runtime.device
        root = require(self.PACK)  # raises MissingWeightsError before insightface is touched
        pack = root / self.PACK
        import insightface
        from insightface.app import FaceAnalysis

        # A folder path as `name` is used as is: FaceAnalysis never downloads then.
        try:
            self._app = FaceAnalysis(name=str(pack), root=str(root.parent),
                                     allowed_modules=["detection", "landmark_2d_106"], providers=providers)
            sizes = [(n, n) for n in self.params.insightface_det_px]
            ctx_id = 0 if providers[0] == "CUDAExecutionProvider" else -1  # -1: insightface's CPU
            self._app.prepare(ctx_id=ctx_id, det_thresh=float(self.params.min_score), det_size=sizes)
        except Exception as e:  # corrupt or truncated .onnx files, wrong pack
            raise ToonlabError(
                f"insightface could not load the {self.PACK} pack in {pack}: {e}. Replace the "
                f"files, or use the offline face backend `mediapipe`.") from e
        self._lock = threading.Lock()
        self.info = BackendInfo("insightface",
                                f"{insightface.__version__} {self.PACK}/det_10g.onnx+2d106det.onnx")

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces in an HxWx3 uint8 RGB image, largest first."""
        rgb = as_rgb(rgb)
        H, W = rgb.shape[:2]
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # insightface works on BGR
        with self._lock:
            found = self._app.get(bgr)
        faces = []
        for f in found:
            if f.kps is None or float(f.det_score) < self.params.min_score:
                continue
            b = np.clip(np.asarray(f.bbox, float), 0, [W, H, W, H])
            lm = f.landmark_2d_106
            lm = np.asarray(lm if lm is not None else f.kps, np.float32)[:, :2]
            faces.append(Face(box=tuple(float(v) for v in b),  # type: ignore[arg-type]
                              score=float(f.det_score), five=np.asarray(f.kps, np.float32)[:5, :2],
                              landmarks=lm))
        return _sort_largest_first([f for f in faces if f.width > 0 and f.height > 0])


# --------------------------------------------------------------------------- animeface

# Named anime landmarks, image sides (eye_left = the eye on the image's left).
ANIME_LANDMARK_NAMES = (
    "eye_left", "eye_right", "nose", "mouth", "chin", "mouth_left", "mouth_right",
    "eye_left_box_tl", "eye_left_box_br", "eye_right_box_tl", "eye_right_box_br",
    "mouth_box_tl", "mouth_box_br", "face_box_tl", "face_box_br",
)


def _check_pillow_for_animeface() -> None:
    import PIL

    major = int(str(PIL.__version__).split(".")[0])
    if major >= 12:
        raise ToonlabError(
            f"animeface does not work with Pillow {PIL.__version__}: it silently finds no faces "
            "with Pillow >= 12. Install Pillow < 12 (pip install 'pillow<12').")


class AnimefaceFaces:
    """Anime faces: animeface (nvxs) with eye, nose, mouth and chin parts."""

    def __init__(self, params: DetectParams | None = None):
        _check_pillow_for_animeface()
        import animeface  # noqa: F401  (fail here, not at the first image)

        self.params = params or DetectParams()
        self.info = BackendInfo("animeface", f"{package_version('animeface')} nvxs (built in)")

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces in an HxWx3 uint8 RGB image, largest first."""
        import animeface
        from PIL import Image

        _check_pillow_for_animeface()
        rgb = as_rgb(rgb)
        H, W = rgb.shape[:2]
        faces = []
        for af in animeface.detect(Image.fromarray(rgb)):
            score = float(af.likelihood)
            if score < self.params.min_score:
                continue
            fb, lb, rb, mb = af.face.pos, af.right_eye.pos, af.left_eye.pos, af.mouth.pos

            def centre(b: Any) -> tuple[float, float]:
                return (b.x + b.width / 2, b.y + b.height / 2)

            def corners(b: Any) -> list[tuple[float, float]]:
                return [(b.x, b.y), (b.x + b.width, b.y + b.height)]

            eye_l, eye_r = centre(lb), centre(rb)  # animeface's right_eye is the image-left eye
            nose = (float(af.nose.pos.x), float(af.nose.pos.y))
            mouth_l = (float(mb.x), mb.y + mb.height / 2)
            mouth_r = (float(mb.x + mb.width), mb.y + mb.height / 2)
            five = np.array([eye_l, eye_r, nose, mouth_l, mouth_r], np.float32)
            lm = np.array([eye_l, eye_r, nose, centre(mb), (af.chin.pos.x, af.chin.pos.y),
                           mouth_l, mouth_r, *corners(lb), *corners(rb), *corners(mb),
                           *corners(fb)], np.float32)
            box = (max(0.0, float(fb.x)), max(0.0, float(fb.y)),
                   min(float(W), float(fb.x + fb.width)), min(float(H), float(fb.y + fb.height)))
            faces.append(Face(box=box, score=min(max(score, 0.0), 1.0), five=five, landmarks=lm,
                              landmark_names=ANIME_LANDMARK_NAMES))
        return _sort_largest_first([f for f in faces if f.width > 0 and f.height > 0])


# --------------------------------------------------------------------------- factory


def make_face_backend(domain: Literal["photo", "anime"], params: DetectParams | None = None,
                      device: str = "auto") -> FaceBackend:
    """The configured face backend for a domain; onnxruntime backends (insightface) run on
    the providers of `device` (`runtime.device`)."""
    params = params or DetectParams()
    if domain == "photo":
        if params.photo_backend == "insightface":
            return InsightfaceFaces(params, device)
        return MediapipeFaces(params)
    if domain == "anime":
        return AnimefaceFaces(params)
    raise ValueError(f"unknown domain {domain!r} (photo or anime)")


# --------------------------------------------------------------------------- measures

# Depth of the nose tip in front of the eye centres, as a fraction of the inter-ocular
# distance (about 0.5 for adult faces; MediaPipe's mesh gives 0.5-0.6).
NOSE_DEPTH_RATIO = 0.5


def estimate_yaw(face: Face) -> float:
    """Head yaw in degrees from the five points; 0 = frontal, nan if the eyes coincide.

    Model (orthographic camera, head turning about a vertical axis): the eyes lie at
    +-d0/2 across the face, the nose tip a depth p = NOSE_DEPTH_RATIO * d0 in front of them.
    Turned by yaw t, the eyes appear d0*cos(t) apart and the nose tip shifts by p*sin(t)
    from the eye midpoint, so t = atan(offset / (NOSE_DEPTH_RATIO * d)) with `offset` the
    nose tip's shift from the eye midpoint measured along the eye line (so in-plane roll
    does not count) and d the measured eye distance. Sign: positive when the nose tip is
    to the image's right of the eye midpoint (the face turned toward the image's right);
    mirroring the image flips the sign.
    """
    five = np.asarray(face.five, float)
    el, er, nose = five[0], five[1], five[2]
    axis = er - el
    d = float(np.hypot(*axis))
    if d < 1e-6:
        return float("nan")
    offset = float(np.dot(nose - (el + er) / 2, axis / d))
    return math.degrees(math.atan2(offset, NOSE_DEPTH_RATIO * d))


def face_blur(rgb: np.ndarray, face: Face, px: int = 128) -> float:
    """Sharpness of the face: variance of the Laplacian of the grey face box resized to px x px.

    Resizing to a fixed size makes the value comparable across face sizes; larger = sharper.
    Returns 0.0 for an empty box.
    """
    rgb = as_rgb(rgb)
    H, W = rgb.shape[:2]
    x0, y0 = max(int(math.floor(face.box[0])), 0), max(int(math.floor(face.box[1])), 0)
    x1, y1 = min(int(math.ceil(face.box[2])), W), min(int(math.ceil(face.box[3])), H)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0
    grey = cv2.cvtColor(rgb[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    grey = _resize(grey, px, px)
    return float(cv2.Laplacian(grey.astype(np.float64), cv2.CV_64F).var())
