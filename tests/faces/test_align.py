"""Alignment maths on synthetic data (real-photo alignment is tested with the pipeline)."""

import cv2
import numpy as np
import pytest

from toonlab.faces.align import OUT_PX, TEMPLATES, align_face, eye_distance, similarity, transform_points


def random_similarity(rng) -> np.ndarray:
    angle = rng.uniform(-0.6, 0.6)
    s = rng.uniform(0.3, 4.0)
    c, sn = np.cos(angle) * s, np.sin(angle) * s
    return np.array([[c, -sn, rng.uniform(-50, 300)], [sn, c, rng.uniform(-50, 300)]])


@pytest.mark.parametrize("domain", ["photo", "anime"])
def test_similarity_recovers_exact_transform(domain):
    rng = np.random.default_rng(0)
    tpl = TEMPLATES[domain]
    for _ in range(20):
        m = random_similarity(rng)
        src = transform_points(m, tpl)  # template -> image
        back = similarity(src, tpl)     # image -> template
        assert np.allclose(transform_points(back, src), tpl, atol=1e-3)


def test_similarity_never_reflects():
    src = TEMPLATES["photo"].copy()
    mirrored = src.copy()
    mirrored[:, 0] = 300 - mirrored[:, 0]
    m = similarity(mirrored, TEMPLATES["photo"])
    assert np.linalg.det(m[:, :2]) > 0


def test_eyes_dominate_the_fit():
    """A face whose mouth is lower than the template's still gets its eyes on the template."""
    src = TEMPLATES["photo"].copy() * 1.7 + 40
    src[3:, 1] += 30  # long face
    m = similarity(src, TEMPLATES["photo"])
    eyes = transform_points(m, src[:2])
    assert np.abs(eyes - TEMPLATES["photo"][:2]).max() < 2.0


def dot_image(points, shape=(600, 700)):
    img = np.zeros((*shape, 3), np.uint8) + 40
    for k, (x, y) in enumerate(points):
        cv2.circle(img, (int(round(x)), int(round(y))), 6, (255, 255 - 40 * k, 40 * k), -1)
    return img


def centroid(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("scale", [0.8, 3.0])  # 3.0: large face, the shrink-first path
def test_crop_puts_marked_eyes_on_template(scale):
    m = np.array([[scale * np.cos(0.3), -scale * np.sin(0.3), 120], [scale * np.sin(0.3), scale * np.cos(0.3), 20]])
    five = transform_points(m, TEMPLATES["photo"])
    img = dot_image(five[:2], shape=(1000, 1000))
    al = align_face(img, None, five, five, "photo")
    assert al.rgba256.shape == (OUT_PX, OUT_PX, 4) and al.rgba128.shape == (128, 128, 4)
    assert np.allclose(al.five256, TEMPLATES["photo"], atol=1e-3)
    red = (al.rgba256[..., 0] > 200) & (al.rgba256[..., 1] > 200)
    left = centroid(red & (np.arange(OUT_PX)[None, :] < 128))
    assert np.abs(left - TEMPLATES["photo"][0]).max() < 1.5


def test_outside_source_is_transparent_and_matte_is_warped():
    five = TEMPLATES["photo"] * 0.5 - 20  # crop = (source + 20) * 2
    img = np.full((200, 200, 3), 128, np.uint8)
    alpha = np.zeros((200, 200), np.float32)
    alpha[:, :100] = 1.0
    al = align_face(img, alpha, five, five, "photo")
    a = al.rgba256[..., 3]
    assert a[0, 0] == 0  # above/left of the source image
    # Source column 100 maps to 256 px x = (100 + 20) * 2 = 240: opaque left of it, clear right.
    assert a[128, 150] == 255 and a[128, 250] == 0


def test_128_is_antialiased_downscale_of_256():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    five = TEMPLATES["photo"] * 0.9 + 10
    al = align_face(img, None, five, five, "photo")
    expected = cv2.resize(al.rgba256, (128, 128), interpolation=cv2.INTER_AREA)
    assert np.array_equal(al.rgba128, expected)
    # Antialiased: much smoother than nearest-neighbour subsampling of the noise.
    assert al.rgba128[..., :3].std() < al.rgba256[::2, ::2, :3].std() * 0.9


def test_landmarks_follow_the_transform():
    rng = np.random.default_rng(2)
    m = random_similarity(rng)
    five = transform_points(m, TEMPLATES["anime"])
    extra = transform_points(m, np.array([[128.0, 230.0], [60.0, 60.0]]))
    al = align_face(np.zeros((800, 800, 3), np.uint8), None, five, extra, "anime")
    assert np.allclose(al.landmarks256, [[128.0, 230.0], [60.0, 60.0]], atol=1e-2)
    assert eye_distance(al.five256) == pytest.approx(64.0, abs=1e-3)
