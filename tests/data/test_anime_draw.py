"""The generated anime portraits: deterministic, the right size, and anime enough that the
real anime face detector (animeface, nagadomi's animeface-2009) finds their faces."""

import importlib

import numpy as np
import pytest

from toonlab.data.anime_draw import draw_portrait, render_portrait


def _rng(seed: int, n: int) -> np.random.Generator:
    return np.random.default_rng([seed, 2, n])  # as toonlab.data.demo seeds each portrait


@pytest.mark.parametrize("px", [64, 256, 512])
def test_size_and_mode(px):
    img = draw_portrait(_rng(0, 3), px)
    assert img.mode == "RGB"
    assert img.size == (px, px)
    a = np.asarray(img)
    assert a.shape == (px, px, 3) and a.dtype == np.uint8
    assert a.std() > 20  # a drawing, not a flat fill


def test_same_seed_same_pixels():
    for n in (0, 5, 11):
        a = np.asarray(draw_portrait(_rng(0, n), 256))
        b = np.asarray(draw_portrait(_rng(0, n), 256))
        assert a.tobytes() == b.tobytes()


def test_different_seeds_differ():
    arrays = [np.asarray(draw_portrait(_rng(s, n), 128)).tobytes() for s in (0, 1) for n in range(4)]
    assert len(set(arrays)) == len(arrays)


def test_only_the_passed_generator_is_used():
    np.random.seed(1)
    a = np.asarray(draw_portrait(_rng(0, 7), 128))
    np.random.seed(2)
    _ = np.random.random(100)
    b = np.asarray(draw_portrait(_rng(0, 7), 128))
    assert a.tobytes() == b.tobytes()


def test_draw_portrait_matches_render_portrait():
    img, info = render_portrait(_rng(1, 2), 256)
    assert np.asarray(img).tobytes() == np.asarray(draw_portrait(_rng(1, 2), 256)).tobytes()
    x, y = info.face_centre
    assert 0 < x < 256 and 0 < y < 256
    assert 0.2 * 256 < info.face_width < 0.6 * 256


def _inside(px: float, py: float, box) -> bool:
    return box.x <= px <= box.x + box.width and box.y <= py <= box.y + box.height


def _good_face(face, centre, px: int) -> bool:
    box = face.face.pos
    parts_found = (
        all(p.pos.width > 0 and p.pos.height > 0 for p in (face.left_eye, face.right_eye, face.mouth))
        and _inside(face.nose.pos.x, face.nose.pos.y, box)
        and _inside(face.chin.pos.x, face.chin.pos.y, box)
        and all(_inside(p.pos.x + p.pos.width / 2, p.pos.y + p.pos.height / 2, box)
                for p in (face.left_eye, face.right_eye, face.mouth))
    )
    box_centre = (box.x + box.width / 2, box.y + box.height / 2)
    near_middle = np.hypot(box_centre[0] - px / 2, box_centre[1] - px / 2) < 0.15 * px
    plausible_size = 0.15 * px < box.width < 0.7 * px
    return parts_found and _inside(*centre, box) and near_middle and plausible_size


def test_animeface_finds_the_faces():
    import animeface  # the faces extra (make install installs it): missing is a failure, not a skip

    px = 512
    found = []
    for n in range(16):
        img, info = render_portrait(_rng(0, n), px)
        faces = animeface.detect(img)
        found.append(any(_good_face(f, info.face_centre, px) for f in faces))
    rate = sum(found) / len(found)
    assert rate >= 0.85, f"animeface found {sum(found)}/{len(found)} faces; misses at n={[n for n, ok in enumerate(found) if not ok]}"


def test_animeface_finds_nothing_in_a_background_only_image():
    # The detector check above is meaningful: the same detector does not fire on an image
    # without a face.
    animeface = importlib.import_module("animeface")
    from PIL import Image

    assert animeface.detect(Image.new("RGB", (512, 512), (200, 180, 220))) == []
