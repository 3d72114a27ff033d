"""Face detection backends on real photos shipped inside installed packages.

Photos: skimage's astronaut (1 face), insightface's Tom_Hanks_54745.png (a 112x112 face
crop) and t1.jpg (a group photo with 6 people); anime: ToonLab's drawn portraits.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from toonlab.errors import MissingWeightsError, ToonlabError
from toonlab.faces.base import Face
from toonlab.faces.detectors import (
    ANIME_LANDMARK_NAMES,
    AnimefaceFaces,
    InsightfaceFaces,
    MediapipeFaces,
    close_mediapipe_graphs,
    estimate_yaw,
    face_blur,
    make_face_backend,
)
from toonlab.faces.params import DetectParams

skimage_data = importlib.import_module("skimage.data")

# Rough face centres in t1.jpg (1280x886), left to right: Rachel, Monica, Ross, Chandler,
# Joey, Phoebe.
T1_CENTRES = [(110, 345), (320, 215), (515, 350), (795, 420), (960, 140), (1180, 345)]


def _insightface_images() -> Path:
    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.submodule_search_locations
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "images"


def _read(name: str) -> np.ndarray:
    bgr = cv2.imread(str(_insightface_images() / name))
    assert bgr is not None, name
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _mirror(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[:, ::-1])


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {"astronaut": skimage_data.astronaut(), "tom": _read("Tom_Hanks_54745.png"),
            "t1": _read("t1.jpg")}


@pytest.fixture(scope="module")
def mp_backend():
    backend = make_face_backend("photo", DetectParams())
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def found(photos, mp_backend) -> dict[str, list[Face]]:
    """mediapipe results for every photo and its mirror image, computed once."""
    out = {}
    for name, rgb in photos.items():
        out[name] = mp_backend.detect(rgb)
        out[name + "_m"] = mp_backend.detect(_mirror(rgb))
    return out


def _inside(face: Face, tol: float = 1.0) -> bool:
    x0, y0, x1, y1 = face.box
    p = face.five
    return bool(np.all((p[:, 0] >= x0 - tol) & (p[:, 0] <= x1 + tol)
                       & (p[:, 1] >= y0 - tol) & (p[:, 1] <= y1 + tol)))


def _upright_geometry(face: Face) -> list[str]:
    """Problems with the five points of a roughly upright face, in image coordinates."""
    el, er, nose, ml, mr = face.five
    problems = []
    if not _inside(face):
        problems.append("five points outside the box")
    if not el[0] < er[0]:
        problems.append("eye_left not left of eye_right")
    if not el[0] < nose[0] < er[0]:
        problems.append("nose not between the eyes")
    if not nose[1] > max(el[1], er[1]):
        problems.append("nose not below the eyes")
    if not min(ml[1], mr[1]) > nose[1] - 1:
        problems.append("mouth not below the nose")
    if not ml[0] < mr[0]:
        problems.append("mouth_left not left of mouth_right")
    return problems


def _face_frame_geometry(face: Face) -> list[str]:
    """Same checks in the face's own frame (x along the eye line), for rolled/turned faces."""
    el, er, nose, ml, mr = (np.asarray(p, float) for p in face.five)
    u = (er - el) / np.linalg.norm(er - el)
    v = np.array([-u[1], u[0]])  # points "down" the face
    mid = (el + er) / 2
    problems = []
    if not _inside(face):
        problems.append("five points outside the box")
    if not el[0] < er[0]:
        problems.append("eye_left not left of eye_right")
    if not np.dot(nose - mid, v) > 0:
        problems.append("nose not below the eyes")
    if not np.dot((ml + mr) / 2 - nose, v) > 0:
        problems.append("mouth not below the nose")
    if not np.dot(mr - ml, u) > 0:
        problems.append("mouth corners in the wrong order")
    return problems


def _at(faces: list[Face], x: float, y: float) -> Face:
    hits = [f for f in faces if f.box[0] <= x <= f.box[2] and f.box[1] <= y <= f.box[3]]
    assert len(hits) == 1, f"{len(hits)} faces at ({x}, {y}): {[f.box for f in faces]}"
    return hits[0]


# --------------------------------------------------------------------------- params


def test_params_defaults_and_validation():
    p = DetectParams()
    assert (p.photo_backend, p.anime_backend, p.min_score) == ("mediapipe", "animeface", 0.5)
    assert not {"size", "nfiles"} & set(DetectParams.model_fields)
    for bad in ({"min_score": 1.5}, {"min_score": -0.1}, {"photo_backend": "dlib"},
                {"unknown": 1}, {"min_score": "0.5"}, {"tile_levels": 9}):
        with pytest.raises(Exception):
            DetectParams(**bad)


def test_factory_and_info():
    mp_be = make_face_backend("photo", DetectParams())
    assert isinstance(mp_be, MediapipeFaces)
    assert mp_be.info.name == "mediapipe" and mp_be.info.version.split()[0][0].isdigit()
    an = make_face_backend("anime", DetectParams())
    assert isinstance(an, AnimefaceFaces) and an.info.name == "animeface"
    with pytest.raises(ValueError):
        make_face_backend("cat", DetectParams())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- mediapipe


def test_astronaut_one_face(found, photos):
    faces = found["astronaut"]
    assert len(faces) == 1
    f = faces[0]
    assert f.five.shape == (5, 2) and f.five.dtype == np.float32
    assert f.landmarks.shape == (478, 2)
    assert 0.5 <= f.score <= 1.0
    assert _upright_geometry(f) == []
    # the face is the one at the top middle of the image
    assert 150 < (f.box[0] + f.box[2]) / 2 < 300 and 50 < (f.box[1] + f.box[3]) / 2 < 200
    assert abs(estimate_yaw(f)) < 20
    assert len(found["astronaut_m"]) == 1 and abs(estimate_yaw(found["astronaut_m"][0])) < 20
    assert _upright_geometry(found["astronaut_m"][0]) == []


def test_tiles_skipped_on_a_portrait_not_on_a_group_photo(photos, found, monkeypatch):
    """A portrait (a face >= tiles_skip_face_frac of the long side found by the whole-image
    passes) gets 2 BlazeFace passes, not 6, and the same face; a group photo still tiles."""
    calls = []
    original = MediapipeFaces._detect_in
    monkeypatch.setattr(MediapipeFaces, "_detect_in", lambda self, img, *a: calls.append(img.shape) or original(self, img, *a))
    rgb = photos["astronaut"]
    fast = make_face_backend("photo", DetectParams()).detect(rgb)
    assert len(calls) == 2
    calls.clear()
    full = make_face_backend("photo", DetectParams(tiles_skip_face_frac=0.0)).detect(rgb)
    assert [c[0] for c in calls] == [512, 768, 288, 288, 288, 288]  # whole, padded, 2 x 2 tiles
    calls.clear()
    make_face_backend("photo", DetectParams(tiles_skip_face_frac=0.0, tile_side=1.0, tile_overlap=0.5)).detect(rgb)
    assert [c[0] for c in calls] == [512, 768] + [256] * 9  # the earlier 3 x 3 half-step tiles
    assert len(fast) == len(full) == 1
    eye = float(np.hypot(*(full[0].five[1] - full[0].five[0])))
    assert np.abs(fast[0].five - full[0].five).max() < 0.02 * eye
    calls.clear()
    group = make_face_backend("photo", DetectParams()).detect(photos["t1"])
    assert len(calls) > 2 and len(group) == len(found["t1"])


def test_small_112px_face_crop(found):
    # A 112x112 crop that the face fills: found thanks to the padded pass.
    for key in ("tom", "tom_m"):
        assert len(found[key]) == 1, key
        assert _upright_geometry(found[key][0]) == [], key
    # Tom Hanks is turned toward the image's right; the mirror image turns the other way.
    yaw, yaw_m = estimate_yaw(found["tom"][0]), estimate_yaw(found["tom_m"][0])
    assert yaw > 10 and yaw_m < -10


def test_group_photo_finds_all_six(found, photos):
    faces = found["t1"]
    assert len(faces) == 6, [f.box for f in faces]
    areas = [f.width * f.height for f in faces]
    assert areas == sorted(areas, reverse=True)
    for x, y in T1_CENTRES:
        f = _at(faces, x, y)
        assert f.landmarks.shape == (478, 2)
        assert _face_frame_geometry(f) == [], (x, y)
    # mirror image: the same six, yaw signs flip for the clearly turned faces
    W = photos["t1"].shape[1]
    assert len(found["t1_m"]) == 6
    turned = 0
    for x, y in T1_CENTRES:
        yaw = estimate_yaw(_at(faces, x, y))
        yaw_m = estimate_yaw(_at(found["t1_m"], W - 1 - x, y))
        if abs(yaw) > 15:
            turned += 1
            assert yaw * yaw_m < 0, (x, y, yaw, yaw_m)
    assert turned >= 3


def test_blur_sharp_vs_blurred(found, photos):
    rgb = photos["astronaut"]
    f = found["astronaut"][0]
    sharp = face_blur(rgb, f)
    soft = face_blur(cv2.GaussianBlur(rgb, (0, 0), 2.0), f)
    assert sharp > 2 * soft > 0
    # about scale-independent: the same face in a 2x larger image scores similarly
    big = cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    f2 = Face(box=tuple(2 * v for v in f.box), score=f.score, five=f.five * 2,  # type: ignore[arg-type]
              landmarks=f.landmarks * 2)
    assert 0.5 < face_blur(big, f2) / sharp < 2.0


def test_no_face(mp_backend):
    assert mp_backend.detect(skimage_data.coffee()) == []
    assert mp_backend.detect(np.full((240, 320, 3), 128, np.uint8)) == []


def test_graphs_are_shared_and_reopened(photos):
    a, b = MediapipeFaces(DetectParams()), MediapipeFaces(DetectParams())
    assert len(a.detect(photos["tom"])) == 1
    close_mediapipe_graphs()
    assert len(b.detect(photos["tom"])) == 1  # re-created lazily after close


def test_keypoint_fallback_and_iris_option(photos):
    rgb = photos["astronaut"]
    iris = MediapipeFaces(DetectParams(eye_points="iris")).detect(rgb)
    assert len(iris) == 1 and _upright_geometry(iris[0]) == []
    # fallback points from BlazeFace's six keypoints keep the schema's order
    kps = np.array([[203, 103], [248, 106], [224, 132], [223, 149], [179, 108], [271, 112]], float)
    five = MediapipeFaces._five_from_keypoints(kps)
    assert five.shape == (5, 2) and five[3, 0] < five[2, 0] < five[4, 0]
    assert np.allclose(five[3:].mean(axis=0), kps[3])


# --------------------------------------------------------------------------- yaw


def _face(points) -> Face:
    p = np.asarray(points, np.float32)
    return Face(box=(0, 0, 200, 200), score=1.0, five=p, landmarks=p)


def test_estimate_yaw_synthetic():
    frontal = [[80, 100], [120, 100], [100, 125], [85, 145], [115, 145]]
    assert estimate_yaw(_face(frontal)) == pytest.approx(0.0, abs=1e-6)
    turned = [[80, 100], [120, 100], [110, 125], [90, 145], [118, 145]]
    yaw = estimate_yaw(_face(turned))
    assert yaw == pytest.approx(math.degrees(math.atan2(10, 0.5 * 40)))
    # mirrored: sign flips; rolled in the image plane: unchanged
    mirrored = [[200 - x, y] for x, y in turned]
    mirrored = [mirrored[1], mirrored[0], mirrored[2], mirrored[4], mirrored[3]]
    assert estimate_yaw(_face(mirrored)) == pytest.approx(-yaw)
    c, s = math.cos(0.4), math.sin(0.4)
    rolled = [[c * x - s * y, s * x + c * y] for x, y in turned]
    assert estimate_yaw(_face(rolled)) == pytest.approx(yaw, abs=1e-3)
    assert math.isnan(estimate_yaw(_face([[5, 5]] * 5)))


# --------------------------------------------------------------------------- insightface


def test_insightface_missing_pack_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    import importlib

    dl = importlib.import_module("insightface.utils.download")
    st = importlib.import_module("insightface.utils.storage")

    def no_download(*a, **k):
        raise AssertionError("insightface tried to download")

    monkeypatch.setattr(dl, "download_file", no_download)
    monkeypatch.setattr(st, "download_file", no_download)
    monkeypatch.setattr(st, "download", no_download)
    with pytest.raises(MissingWeightsError) as err:
        make_face_backend("photo", DetectParams(photo_backend="insightface"))
    msg = str(err.value)
    for needle in ("det_10g.onnx", "2d106det.onnx", str(tmp_path / "models"), "mediapipe"):
        assert needle in msg
    assert list(tmp_path.rglob("*")) == []  # nothing created, nothing downloaded


def test_insightface_unreadable_pack_is_a_clean_error(tmp_path, monkeypatch):
    # The real FaceAnalysis on a folder of empty files: loads from that folder, no download.
    pack = tmp_path / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    for name in ("det_10g.onnx", "2d106det.onnx", "w600k_r50.onnx"):
        (pack / name).write_bytes(b"")
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    import importlib

    st = importlib.import_module("insightface.utils.storage")

    def no_download(*a, **k):
        raise AssertionError("insightface tried to download")

    monkeypatch.setattr(st, "download_file", no_download)
    monkeypatch.setattr(st, "download", no_download)
    with pytest.raises(ToonlabError, match="could not load the buffalo_l pack"):
        InsightfaceFaces(DetectParams(photo_backend="insightface"))
    assert sorted(p.name for p in pack.iterdir()) == ["2d106det.onnx", "det_10g.onnx", "w600k_r50.onnx"]


class _FakeApp:
    """Stands in for insightface's FaceAnalysis (its models are not on this machine)."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.seen = None

    def prepare(self, **kwargs):
        self.prepared = kwargs

    def get(self, bgr):
        from insightface.app.common import Face as IFace

        self.seen = bgr
        small = IFace(bbox=np.array([10, 10, 40, 40], np.float32), det_score=np.float32(0.9),
                      kps=np.array([[18, 20], [32, 20], [25, 27], [19, 33], [31, 33]], np.float32),
                      landmark_2d_106=np.full((106, 2), 25, np.float32))
        big = IFace(bbox=np.array([50, 20, 150, 130], np.float32), det_score=np.float32(0.8),
                    kps=np.array([[75, 60], [125, 60], [100, 85], [80, 105], [120, 105]], np.float32),
                    landmark_2d_106=np.full((106, 2), 100, np.float32))
        weak = IFace(bbox=np.array([0, 0, 5, 5], np.float32), det_score=np.float32(0.1),
                     kps=np.zeros((5, 2), np.float32))
        return [small, big, weak]


def test_insightface_with_pack_present(tmp_path, monkeypatch):
    pack = tmp_path / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    for name in ("det_10g.onnx", "2d106det.onnx", "w600k_r50.onnx"):
        (pack / name).write_bytes(b"")
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    import insightface.app as ia

    made = []
    monkeypatch.setattr(ia, "FaceAnalysis", lambda **kw: made.append(_FakeApp(**kw)) or made[-1])
    be = InsightfaceFaces(DetectParams(photo_backend="insightface", insightface_det_px=[640]))
    app = made[0]
    assert Path(app.kwargs["name"]) == pack  # an explicit folder: never downloads
    assert set(app.kwargs["allowed_modules"]) == {"detection", "landmark_2d_106"}
    assert app.prepared["det_size"] == [(640, 640)]
    assert be.info.name == "insightface" and "det_10g.onnx" in be.info.version
    rgb = np.zeros((160, 200, 3), np.uint8)
    rgb[..., 0] = 255
    faces = be.detect(rgb)
    assert app.seen[0, 0].tolist() == [0, 0, 255]  # insightface gets BGR
    assert [f.score for f in faces] == pytest.approx([0.8, 0.9])  # largest first, weak dropped
    assert faces[0].landmarks.shape == (106, 2)
    assert _upright_geometry(faces[0]) == []


# --------------------------------------------------------------------------- animeface


def test_anime_portraits():
    from toonlab.data.anime_draw import draw_portrait

    backend = make_face_backend("anime", DetectParams())
    good = 0
    problems = {}
    for n in range(8):
        rgb = np.asarray(draw_portrait(np.random.default_rng([0, 2, n]), 512).convert("RGB"))
        faces = backend.detect(rgb)
        if len(faces) != 1:
            problems[n] = f"{len(faces)} faces"
            continue
        f = faces[0]
        assert f.landmark_names == ANIME_LANDMARK_NAMES
        assert f.landmarks.shape == (len(ANIME_LANDMARK_NAMES), 2)
        assert 0.0 <= f.score <= 1.0
        names = dict(zip(f.landmark_names, f.landmarks))
        assert names["chin"][1] > names["mouth"][1]
        p = _upright_geometry(f)
        if p:
            problems[n] = p
        else:
            good += 1
    assert good >= 7, problems


def test_anime_no_face():
    backend = make_face_backend("anime", DetectParams())
    assert backend.detect(np.full((256, 256, 3), 200, np.uint8)) == []


def test_animeface_refuses_pillow_12(monkeypatch):
    import PIL

    monkeypatch.setattr(PIL, "__version__", "12.0.0")
    with pytest.raises(ToonlabError, match="Pillow"):
        AnimefaceFaces(DetectParams())


def test_rgb_validation(mp_backend):
    with pytest.raises(ValueError):
        mp_backend.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError):
        mp_backend.detect(np.zeros((10, 10, 5), np.uint8))
