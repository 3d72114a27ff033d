"""The safe decoder: every bad input gets its own reason, every odd mode converts right."""

from __future__ import annotations

import io
import os
import random
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from pydantic import ValidationError

from toonlab.data.decode import REASONS, DecodeResult, decode_bytes, decode_file
from toonlab.data.params import DecodeParams

P = DecodeParams()
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


# ----------------------------------------------------------------------------- helpers


def save(img: Image.Image, path: Path, fmt: str, **kw) -> Path:
    img.save(path, fmt, **kw)
    return path


def to_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def noisy(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def crafted_png(w: int, h: int, idat: bytes | None = None) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(b"\x00" * 64) if idat is None else idat
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def ok(r: DecodeResult) -> DecodeResult:
    assert r.status == "ok", (r.reason, r.detail)
    assert r.reason == ""
    assert r.image is not None and r.image.dtype == np.uint8 and r.image.ndim == 3 and r.image.shape[2] == 3
    assert r.image.shape[:2] == (r.height, r.width)
    return r


def rejected(r: DecodeResult, reason: str) -> DecodeResult:
    assert r.status == "rejected", r
    assert r.reason == reason, (r.reason, r.detail)
    assert r.reason in REASONS
    assert r.image is None
    assert r.detail
    return r


def near(px, want, tol: int = 8) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(px, want))


@pytest.fixture
def no_load(monkeypatch):
    """Fail the test if any pixel data is decoded."""
    calls = []

    def refuse(self):
        calls.append(self)
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    return calls


# ----------------------------------------------------------------------------- params


def test_params_defaults_and_validation():
    assert (P.max_pixels, P.min_side, P.max_aspect, P.background, P.allow_animated) == (
        40_000_000, 64, 3.0, [255, 255, 255], True)
    assert "size" not in DecodeParams.model_fields and "nfiles" not in DecodeParams.model_fields
    for bad in ({"background": [256, 0, 0]}, {"background": [0, 0]}, {"max_pixels": "10"},
                {"min_side": 0}, {"max_aspect": 0.5}, {"colour": 1}):
        with pytest.raises(ValidationError):
            DecodeParams(**bad)
    with pytest.raises(ValidationError):
        P.min_side = 10  # frozen
    assert DecodeParams(max_aspect=4).max_aspect == 4


def test_every_reason_has_a_description():
    assert all(isinstance(k, str) and v and "\n" not in v for k, v in REASONS.items())
    for code in ("empty_file", "truncated", "not_an_image", "not_an_image_text", "html_not_image", "corrupt",
                 "too_many_pixels", "too_small", "extreme_aspect", "animated", "unreadable", "missing",
                 "unsupported_format"):
        assert code in REASONS


# ----------------------------------------------------------------------------- not images


def test_empty_file(tmp_path):
    f = tmp_path / "empty.jpg"
    f.write_bytes(b"")
    rejected(decode_file(f, P), "empty_file")
    rejected(decode_bytes(b"", P), "empty_file")


def test_truncated_jpeg_mid_scan(tmp_path, monkeypatch):
    data = to_bytes(noisy(256, 256), "JPEG", quality=90)
    sos = data.index(b"\xff\xda")
    cut = sos + (len(data) - sos) // 2  # in the middle of the entropy-coded scan
    f = tmp_path / "cut.jpg"
    f.write_bytes(data[:cut])
    r = rejected(decode_file(f, P), "truncated")
    assert (r.width, r.height, r.format) == (256, 256, "JPEG")
    # A global set elsewhere in the process must not make us accept it, and must survive.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    rejected(decode_file(f, P), "truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True
    ok(decode_bytes(data, P))  # the whole file is fine


def test_truncated_png():
    data = to_bytes(noisy(128, 128), "PNG")
    rejected(decode_bytes(data[: len(data) * 2 // 3], P), "truncated")


def test_truncated_webp():
    data = to_bytes(noisy(128, 128), "WEBP")
    rejected(decode_bytes(data[: len(data) // 2], P), "truncated")
    broken = bytearray(data)
    broken[20:30] = bytes(10)  # same length, damaged VP8 header: corrupt, not truncated
    rejected(decode_bytes(bytes(broken), P), "corrupt")


def test_garbage_with_jpg_name(tmp_path):
    f = tmp_path / "photo.jpg"
    f.write_bytes(random.Random(1234).randbytes(4096))
    r = rejected(decode_file(f, P), "not_an_image")
    assert r.format == ""


def test_text_file(tmp_path):
    f = tmp_path / "notes.jpg"
    f.write_text("These are not the pixels you are looking for.\nLine two, ünïcödé.\n" * 20, encoding="utf-8")
    rejected(decode_file(f, P), "not_an_image_text")


def test_html_file(tmp_path):
    f = tmp_path / "img_0001.jpg"
    f.write_text("\n  <!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head>"
                 "<body><h1>Forbidden</h1></body></html>\n", encoding="utf-8")
    rejected(decode_file(f, P), "html_not_image")
    rejected(decode_bytes(b"<html><body>not found</body></html>", P), "html_not_image")


def test_unsupported_formats(tmp_path):
    ico = to_bytes(Image.new("RGB", (64, 64), RED), "ICO")
    r = rejected(decode_bytes(ico, P, name="x.ico"), "unsupported_format")
    assert r.format == "ICO"
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
    assert rejected(decode_bytes(svg, P), "unsupported_format").format == "SVG"
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    assert rejected(decode_bytes(heic, P), "unsupported_format").format == "HEIC"


# ----------------------------------------------------------------------------- damaged images


def test_png_bad_crc_in_image_data():
    data = bytearray(to_bytes(noisy(96, 96), "PNG"))
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4: idat])[0]
    crc_at = idat + 4 + length
    data[crc_at] ^= 0xFF  # the pixels themselves decode fine; only the checksum is wrong
    r = rejected(decode_bytes(bytes(data), P), "corrupt")
    assert r.format == "PNG" and (r.width, r.height) == (96, 96)
    assert "checksum" in r.detail or "crc" in r.detail.lower()


def test_png_bad_crc_in_header():
    png = bytearray(crafted_png(100, 100, zlib.compress(b"\x00" + b"\x80" * 100) * 1))
    png[8 + 8 + 13] ^= 0xFF  # IHDR checksum
    r = rejected(decode_bytes(bytes(png), P), "corrupt")
    assert r.format == "PNG"


def test_decompression_bomb_refused_before_decoding(tmp_path, no_load):
    bomb = crafted_png(30000, 30000)
    assert len(bomb) < 200
    f = tmp_path / "bomb.png"
    f.write_bytes(bomb)
    limit = Image.MAX_IMAGE_PIXELS
    r = rejected(decode_file(f, P), "too_many_pixels")
    assert (r.width, r.height) == (30000, 30000)
    assert Image.MAX_IMAGE_PIXELS == limit  # restored after reading the header
    # Below Pillow's own limits, our max_pixels decides.
    r = rejected(decode_bytes(crafted_png(8000, 6000), P), "too_many_pixels")
    assert (r.width, r.height) == (8000, 6000)
    r = rejected(decode_bytes(to_bytes(noisy(100, 100), "PNG"), DecodeParams(max_pixels=9999)), "too_many_pixels")
    assert (r.width, r.height) == (100, 100)
    assert not no_load


def test_pillow_bomb_limits_handled(monkeypatch):
    data = to_bytes(noisy(100, 100), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # 10000 px: only Pillow's warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may escape
        ok(decode_bytes(data, P))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10000 px > 2x: Pillow's error
    r = rejected(decode_bytes(data, P), "too_many_pixels")
    assert (r.width, r.height) == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == 1000


# ----------------------------------------------------------------------------- conversions


def test_cmyk_jpeg_to_rgb(tmp_path):
    img = Image.new("CMYK", (96, 64), (0, 255, 255, 0))  # pure red
    img.paste((255, 0, 0, 0), (48, 0, 96, 64))  # cyan on the right
    f = save(img, tmp_path / "cmyk.jpg", "JPEG", quality=95)
    assert b"Adobe" in f.read_bytes()  # Adobe APP14: the samples are stored inverted
    r = ok(decode_file(f, P))
    assert r.mode == "CMYK" and "cmyk_converted" in r.flags
    assert near(r.image[32, 10], RED), r.image[32, 10]
    assert near(r.image[32, 80], (0, 255, 255)), r.image[32, 80]


def test_16bit_png_scaled(tmp_path):
    arr = np.zeros((64, 64), np.uint16)
    for i, v in enumerate((65535, 32768, 0, 257, 1000, 65000, 128, 200)):
        arr[:, i * 8:(i + 1) * 8] = v
    f = save(Image.fromarray(arr), tmp_path / "deep.png", "PNG")
    r = ok(decode_file(f, P))
    assert r.mode.startswith("I")
    assert "16bit_converted" in r.flags and "grayscale" in r.flags
    # round(v * 255 / 65535), not v >> 8
    assert [int(r.image[5, i * 8 + 3, 0]) for i in range(8)] == [255, 128, 0, 1, 4, 253, 0, 1]
    assert (r.image[..., 0] == r.image[..., 1]).all() and (r.image[..., 1] == r.image[..., 2]).all()


def test_16bit_rgb_png():
    row = b"\x00" + (b"\xff\xff\x80\x00\x00\x00") * 64  # filter byte, then R=65535 G=32768 B=0
    ihdr = struct.pack(">IIBBBBB", 64, 64, 16, 2, 0, 0, 0)
    png = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(row * 64))
           + png_chunk(b"IEND", b""))
    r = ok(decode_bytes(png, P))
    assert "16bit_converted" in r.flags and tuple(r.image[10, 10]) == (255, 128, 0)
    plain_bmp = ok(decode_bytes(to_bytes(Image.new("RGB", (64, 64), RED), "BMP"), P))
    assert "16bit_converted" not in plain_bmp.flags


def test_grayscale_L_and_1bit():
    g = Image.new("L", (64, 64), 77)
    r = ok(decode_bytes(to_bytes(g, "PNG"), P))
    assert r.mode == "L" and "grayscale" in r.flags and tuple(r.image[3, 3]) == (77, 77, 77)
    b = Image.new("1", (64, 64), 0)
    b.paste(1, (32, 0, 64, 64))
    r = ok(decode_bytes(to_bytes(b, "PNG"), P))
    assert r.mode == "1" and "grayscale" in r.flags
    assert tuple(r.image[10, 5]) == (0, 0, 0) and tuple(r.image[10, 50]) == WHITE


def test_grayscale_alpha_LA():
    la = Image.new("LA", (64, 64), (100, 128))
    r = ok(decode_bytes(to_bytes(la, "PNG"), P))
    want = round(100 * 128 / 255 + 255 * 127 / 255)
    assert r.mode == "LA" and {"grayscale", "alpha_composited"} <= set(r.flags)
    assert near(r.image[0, 0], (want,) * 3, 1), r.image[0, 0]


def test_palette_png_with_and_without_transparency():
    p = Image.new("P", (64, 64), 0)
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    p.paste(1, (32, 0, 64, 64))
    r = ok(decode_bytes(to_bytes(p, "PNG"), P))
    assert r.mode == "P" and "palette" in r.flags and "alpha_composited" not in r.flags
    assert tuple(r.image[5, 5]) == RED and tuple(r.image[5, 40]) == GREEN
    # index 1 fully transparent -> background
    bg = DecodeParams(background=[0, 0, 255])
    r = ok(decode_bytes(to_bytes(p, "PNG", transparency=1), bg))
    assert {"palette", "alpha_composited"} <= set(r.flags)
    assert tuple(r.image[5, 5]) == RED and tuple(r.image[5, 40]) == BLUE
    # per-index alpha (tRNS bytes): index 1 half transparent over white
    r = ok(decode_bytes(to_bytes(p, "PNG", transparency=bytes([255, 128])), P))
    assert near(r.image[5, 40], (127, 255, 127), 1), r.image[5, 40]


def test_rgba_half_transparent_blend():
    img = Image.new("RGBA", (64, 64), (255, 0, 0, 255))
    img.putpixel((10, 10), (255, 0, 0, 128))
    img.putpixel((20, 20), (0, 0, 0, 0))
    r = ok(decode_bytes(to_bytes(img, "PNG"), P))
    assert r.mode == "RGBA" and "alpha_composited" in r.flags
    assert tuple(r.image[0, 0]) == RED
    assert near(r.image[10, 10], (255, 127, 127), 1), r.image[10, 10]
    assert tuple(r.image[20, 20]) == WHITE
    r = ok(decode_bytes(to_bytes(img, "PNG"), DecodeParams(background=[0, 0, 0])))
    assert near(r.image[10, 10], (128, 0, 0), 1) and tuple(r.image[20, 20]) == (0, 0, 0)
    # exact rounding: round(c * a / 255) over black
    exact = Image.new("RGBA", (64, 64), (200, 100, 50, 90))
    r = ok(decode_bytes(to_bytes(exact, "PNG"), DecodeParams(background=[0, 0, 0])))
    assert tuple(r.image[0, 0]) == (71, 35, 18)
    opaque = ok(decode_bytes(to_bytes(Image.new("RGBA", (64, 64), (1, 2, 3, 255)), "PNG"), P))
    assert "alpha_composited" not in opaque.flags and tuple(opaque.image[0, 0]) == (1, 2, 3)


@pytest.mark.parametrize("orientation,corner", [(6, "top_right"), (8, "bottom_left")])
def test_exif_rotated_jpeg(tmp_path, orientation, corner):
    img = Image.new("RGB", (160, 96), BLUE)  # landscape as stored
    img.paste(RED, (0, 0, 24, 24))  # marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    f = save(img, tmp_path / f"rot{orientation}.jpg", "JPEG", quality=95, exif=exif.tobytes())
    before = f.read_bytes()
    r = ok(decode_file(f, P))
    assert (r.width, r.height) == (96, 160)  # upright portrait
    assert r.orientation == orientation and "exif_rotated" in r.flags
    y, x = {"top_right": (12, 96 - 12), "bottom_left": (160 - 12, 12)}[corner]
    assert near(r.image[y, x], RED, 30), r.image[y, x]
    assert near(r.image[12, 12] if corner != "bottom_left" else r.image[12, 84], BLUE, 30)
    assert f.read_bytes() == before  # never modified


def test_no_exif_orientation_is_1():
    r = ok(decode_bytes(to_bytes(Image.new("RGB", (80, 64), RED), "JPEG"), P))
    assert r.orientation == 1 and "exif_rotated" not in r.flags and (r.width, r.height) == (80, 64)


def _frames():
    return [Image.new("RGB", (80, 80), c) for c in (RED, GREEN, BLUE)]


@pytest.mark.parametrize("fmt,kw", [("GIF", {"duration": 100, "loop": 0}),
                                    ("WEBP", {"duration": 100, "loop": 0, "lossless": True}),
                                    ("PNG", {"duration": 100})])
def test_animated_first_frame(tmp_path, fmt, kw):
    first, *rest = _frames()
    f = save(first, tmp_path / f"anim.{fmt.lower()}", fmt, save_all=True, append_images=rest, **kw)
    r = ok(decode_file(f, P))
    assert r.animated and r.frames == 3 and "animated" in r.flags and r.format == fmt
    assert near(r.image[40, 40], RED, 2), r.image[40, 40]
    r = rejected(decode_file(f, DecodeParams(allow_animated=False)), "animated")
    assert r.frames == 3 and r.animated


def test_multiframe_mpo_is_not_animated():
    first, *rest = _frames()
    r = ok(decode_bytes(to_bytes(first, "MPO", save_all=True, append_images=rest[:1]), DecodeParams(allow_animated=False)))
    assert r.format == "MPO" and not r.animated and r.frames == 2 and "multiframe" in r.flags


def test_too_small():
    r = rejected(decode_bytes(to_bytes(Image.new("RGB", (32, 100), RED), "PNG"), P), "too_small")
    assert (r.width, r.height) == (32, 100)
    ok(decode_bytes(to_bytes(Image.new("RGB", (64, 64), RED), "PNG"), P))


def test_extreme_aspect():
    r = rejected(decode_bytes(to_bytes(Image.new("RGB", (400, 100), RED), "PNG"), P), "extreme_aspect")
    assert (r.width, r.height) == (400, 100)
    ok(decode_bytes(to_bytes(Image.new("RGB", (300, 100), RED), "PNG"), P))  # exactly 3.0 passes
    ok(decode_bytes(to_bytes(Image.new("RGB", (400, 100), RED), "PNG"), DecodeParams(max_aspect=4.0)))


# ----------------------------------------------------------------------------- filesystem


def _decode_reason_as_nobody(path) -> str:
    """Decode in a forked child that has dropped root, so file permissions really apply."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.setgid(65534)
            os.setuid(65534)
            r = decode_file(path, P)
            os.write(write, f"{r.reason}|{r.detail}".encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as fh:
        return fh.read()


def test_unreadable_permission(tmp_path):
    f = save(Image.new("RGB", (64, 64), RED), tmp_path / "secret.png", "PNG")
    f.chmod(0)
    try:
        if os.geteuid() == 0:  # root ignores permissions: check as an unprivileged user
            reason, _, detail = _decode_reason_as_nobody(f).partition("|")
        else:
            r = decode_file(f, P)
            reason, detail = r.reason, r.detail
        assert reason == "unreadable" and "permission" in detail
    finally:
        f.chmod(0o644)


def test_permission_error_maps_to_unreadable(tmp_path, monkeypatch):
    """Runs as root too: the open() a non-root chmod 000 would fail is simulated."""
    import toonlab.data.decode as dec

    f = save(Image.new("RGB", (64, 64), RED), tmp_path / "secret.png", "PNG")

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(f))

    monkeypatch.setattr(dec.os, "open", denied)
    assert "permission" in rejected(decode_file(f, P), "unreadable").detail


def test_unreadable_directory_symlink_fifo(tmp_path):
    d = tmp_path / "folder.jpg"
    d.mkdir()
    assert "directory" in rejected(decode_file(d, P), "unreadable").detail
    link = tmp_path / "dangling.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    rejected(decode_file(link, P), "unreadable")
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.jpg"
        os.mkfifo(fifo)
        rejected(decode_file(fifo, P), "unreadable")  # and does not hang


def test_missing_file(tmp_path):
    rejected(decode_file(tmp_path / "nope.jpg", P), "missing")
    rejected(decode_file(tmp_path / "nope" / "deeper.jpg", P), "missing")


def test_file_and_bytes_agree_and_file_untouched(tmp_path):
    f = save(noisy(120, 90), tmp_path / "a.png", "PNG")
    st = f.stat()
    a, b = ok(decode_file(f, P)), ok(decode_bytes(f.read_bytes(), P))
    assert np.array_equal(a.image, b.image) and a.format == "PNG" and a.mode == "RGB" and a.flags == ()
    assert np.array_equal(a.image, np.asarray(Image.open(f)))
    assert f.stat().st_mtime_ns == st.st_mtime_ns and f.stat().st_size == st.st_size
    with pytest.raises(ValueError):
        a.image[0, 0, 0] = 1  # frozen result, read-only pixels
    assert "image=" not in repr(a) and a == decode_bytes(f.read_bytes(), P, name=str(f))  # no pixels in repr/==


def test_extension_mismatch_flag():
    data = to_bytes(Image.new("RGB", (64, 64), RED), "PNG")
    assert "ext_mismatch" in ok(decode_bytes(data, P, name="x.jpg")).flags
    assert "ext_mismatch" not in ok(decode_bytes(data, P, name="x.png")).flags


# ----------------------------------------------------------------------------- never raises


def test_fuzzed_inputs_never_raise():
    rng = random.Random(7)
    sources = [to_bytes(noisy(72, 72, 1), "JPEG"), to_bytes(noisy(72, 72, 2), "PNG"),
               to_bytes(noisy(72, 72, 3).convert("P"), "GIF"), to_bytes(noisy(72, 72, 4), "WEBP"),
               to_bytes(noisy(72, 72, 5), "BMP"), to_bytes(noisy(72, 72, 6), "TIFF")]
    seen = set()
    for src in sources:
        for _ in range(40):
            data = bytearray(src)
            if rng.random() < 0.4:
                data = data[: rng.randrange(1, len(data))]
            for _ in range(rng.randrange(0, 6)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            r = decode_bytes(bytes(data), P, name="fuzz.bin")
            assert isinstance(r, DecodeResult)
            if r.status == "ok":
                ok(r)
            else:
                assert r.reason in REASONS and r.image is None
                seen.add(r.reason)
    assert seen & {"corrupt", "truncated"}
