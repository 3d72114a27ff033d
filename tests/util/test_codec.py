"""The image codec: one rounding rule between model tensors and pixels, byte-stable
encoders, data URIs."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from toonlab.util import codec


def test_rounding_rule_on_tensors_and_arrays():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0]).reshape(1, 1, 1, 7)
    want = [0, 0, 64, 128, 191, 255, 255]   # floor((x + 1) * 127.5 + 0.5), clamped; 0 -> 127.5 rounds up
    assert codec.to_uint8(x).ravel().tolist() == want
    assert codec.to_uint8(x.numpy()).ravel().tolist() == want
    assert codec.to_uint8(x).shape == (1, 1, 7, 1)   # N x C x H x W -> N x H x W x C


def test_every_pixel_value_survives_the_round_trip():
    u8 = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    x = codec.from_uint8(u8)
    assert x.dtype == torch.float32 and x.shape == (1, 3, 16, 16)
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    np.testing.assert_array_equal(codec.to_uint8(x), u8)
    np.testing.assert_array_equal(codec.to_uint8(x.numpy()), u8)


def test_tensor_and_array_paths_agree_on_random_values():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2.2 - 1.1
    np.testing.assert_array_equal(codec.to_uint8(x), codec.to_uint8(x.numpy()))


def test_read_only_arrays_are_copied_not_shared(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.full((1, 2, 2, 3), 255, np.uint8))
    ro = np.load(path, mmap_mode="r")
    x = codec.from_uint8(ro)
    x.zero_()
    assert int(ro.min()) == 255


def test_png_is_pillows_default_and_stable():
    img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    assert codec.png_bytes(img) == buf.getvalue() == codec.png_bytes(Image.fromarray(img))
    np.testing.assert_array_equal(codec.read_png(codec.png_bytes(img)), img)
    assert codec.png_bytes(img, compress_level=1) != codec.png_bytes(img)


@pytest.mark.parametrize("subsampling", [0, 2])
def test_jpeg_is_baseline_and_stable(subsampling):
    img = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    a = codec.jpeg_bytes(img, quality=85, subsampling=subsampling)
    assert a == codec.jpeg_bytes(img, quality=85, subsampling=subsampling)
    with Image.open(io.BytesIO(a)) as im:
        assert im.format == "JPEG" and "progressive" not in im.info


def test_data_uris():
    png = codec.png_bytes(np.zeros((2, 2, 3), np.uint8))
    uri = codec.png_uri(png)
    assert uri.startswith("data:image/png;base64,") and base64.b64decode(uri.split(",", 1)[1]) == png
    assert codec.png_uri(np.zeros((2, 2, 3), np.uint8)) == uri
    assert codec.jpeg_uri(np.zeros((8, 8, 3), np.uint8)).startswith("data:image/jpeg;base64,")


def test_png_bytes_as_fast_is_lossless_and_smaller_work():
    rng = np.random.default_rng(5)
    for shape in ((33, 17), (33, 17, 3), (33, 17, 4)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        fast = codec.png_bytes_as(img, "fast")
        assert fast[:8] == b"\x89PNG\r\n\x1a\n" and fast != codec.png_bytes(img)
        np.testing.assert_array_equal(codec.read_png(fast), img)  # channel order kept
        assert codec.png_bytes_as(img, "small") == codec.png_bytes(img)
        assert codec.png_bytes_as(img, "fast") == fast  # byte-stable
    with pytest.raises(ValueError, match="png compression 'best'"):
        codec.png_bytes_as(img, "best")
