"""Safe image decoding: one file (or byte string) in, an RGB uint8 array or a reason out.

Used by `toonlab ingest` on crawled files and by `toonlab cartoonize` on user photos.
`decode_file` / `decode_bytes` never raise for bad input: every failure becomes a
`DecodeResult` with ``status="rejected"`` and a machine-readable ``reason`` (a key of
`REASONS`). They never write to the input file (it is opened read-only).

Order of work, cheapest first, so nothing large is allocated for a bad file:

1. filesystem checks (missing, not a regular file, unreadable, empty);
2. header-only `Image.open`, restricted to `ACCEPTED_FORMATS`; on failure the first
   bytes are sniffed to tell HTML, text, a broken known image and other formats apart;
3. declared width*height against `max_pixels`, then `min_side`, `max_aspect` and
   `allow_animated` - all before any pixel data is decoded (Pillow's own
   DecompressionBombError is mapped to ``too_many_pixels`` as well, and its warning
   is swallowed since our limit is the one that decides);
4. PNG chunk checksums (`verify()`, which Pillow skips for image data when loading),
   then a full decode with ``ImageFile.LOAD_TRUNCATED_IMAGES`` forced off;
5. EXIF orientation, then conversion to 8-bit RGB: CMYK (Adobe-inverted JPEGs are
   handled by Pillow's decoder), 16-bit, float, grayscale, palette; any alpha or
   transparency is composited over ``params.background``.

The returned array is read-only (the result is frozen); copy it to modify it.
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import threading
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Iterator, Literal

import numpy as np

# Importing a plugin registers it, so Image.open(formats=...) never needs Image.init().
from PIL import (  # noqa: F401  (imported for registration)
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,
    MpoImagePlugin,
    PngImagePlugin,
    PpmImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from toonlab.data.params import DecodeParams

try:  # AVIF arrived in Pillow 11.2; optional.
    from PIL import AvifImagePlugin  # noqa: F401
except Exception:  # pragma: no cover - depends on the Pillow build
    pass

__all__ = [
    "ACCEPTED_FORMATS",
    "DecodeParams",
    "DecodeResult",
    "FLAGS",
    "REASONS",
    "decode_bytes",
    "decode_file",
    "display_text",
    "path_from_text",
    "path_text",
    "sniff_format",
]

# Raster formats we decode; anything else Pillow recognises is `unsupported_format`.
ACCEPTED_FORMATS: tuple[str, ...] = tuple(
    f for f in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "PPM", "AVIF") if f in Image.OPEN
)
_ALL_ACCEPTED = frozenset(ACCEPTED_FORMATS) | {"MPO"}  # MPO comes out of the JPEG opener

REASONS: dict[str, str] = {
    "missing": "the path does not exist",
    "unreadable": "the path cannot be read (permissions, a directory, a dangling symlink or a special file)",
    "empty_file": "the file is zero bytes long",
    "html_not_image": "the file is an HTML page (e.g. an error page saved by a crawler), not an image",
    "not_an_image_text": "the file is plain text, not an image",
    "not_an_image": "the content is not a recognised image format",
    "unsupported_format": "a recognised file type that is not an accepted raster image (HEIC, SVG, PSD, ICO, PDF, ...)",
    "corrupt": "the file looks like an image but its data is damaged (bad checksum, broken stream or header)",
    "truncated": "the image data ends before the image is complete",
    "too_many_pixels": "the declared width*height exceeds max_pixels (refused before decoding)",
    "too_small": "the shorter side is below min_side",
    "extreme_aspect": "long side / short side exceeds max_aspect",
    "animated": "the image is animated and allow_animated is false",
    "unsupported_mode": "the pixel mode cannot be converted to RGB",
    "out_of_memory": "decoding ran out of memory",
    "decode_error": "decoding failed for an unexpected reason (see detail)",
}

FLAGS: dict[str, str] = {
    "animated": "animated image; only the first frame was kept",
    "multiframe": "several frames that are not an animation (MPO, multi-page TIFF); the first was kept",
    "alpha_composited": "had transparent pixels; composited over params.background",
    "cmyk_converted": "CMYK converted to RGB",
    "16bit_converted": "16 bits per sample reduced to 8",
    "float_converted": "floating-point samples mapped to 8 bits",
    "grayscale": "grayscale or 1-bit source, replicated to RGB",
    "palette": "palette (indexed) source, expanded to RGB",
    "exif_rotated": "rotated/flipped upright from the EXIF orientation",
    "bad_orientation": "EXIF orientation unreadable or out of range; left as stored",
    "ext_mismatch": "the file name's extension names another image format",
}

_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXTENSIONS = {
    "JPEG": {".jpg", ".jpeg", ".jpe", ".jfif"},
    "MPO": {".jpg", ".jpeg", ".jpe", ".jfif", ".mpo"},
    "PNG": {".png", ".apng"},
    "GIF": {".gif"},
    "WEBP": {".webp"},
    "BMP": {".bmp", ".dib"},
    "TIFF": {".tif", ".tiff"},
    "PPM": {".ppm", ".pgm", ".pbm", ".pnm"},
    "AVIF": {".avif"},
}
_KNOWN_EXTENSIONS = set().union(*_EXTENSIONS.values())
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_RAW16 = re.compile(r";16[BLN]")
_SNIFF_BYTES = 4096
# Serialises the rare moments this module changes a Pillow global (see _pillow_guard).
_PIL_GLOBALS_LOCK = threading.RLock()


@dataclass(frozen=True)
class DecodeResult:
    status: Literal["ok", "rejected"]
    reason: str  # a key of REASONS; "" when ok
    detail: str  # one line for humans
    width: int  # after orientation; declared size when rejected before decoding; 0 if unknown
    height: int
    mode: str  # Pillow mode as opened, e.g. "CMYK", "I;16", "P"
    format: str  # e.g. "JPEG", "PNG"; "" when not identified
    orientation: int  # EXIF orientation 1..8 (1 when absent)
    animated: bool
    frames: int  # 1 for a still image; 0 when rejected before it was known
    flags: tuple[str, ...]
    # HxWx3 uint8 RGB, read-only; None when rejected. Left out of repr and ==.
    image: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class _Reject(Exception):
    """Internal: stop decoding with a reason; carries what is known so far."""

    def __init__(self, reason: str, detail: str, **known: object):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.known = known


# ----------------------------------------------------------------------------- path text

_PATH_ESCAPE = re.compile(r"\\(\\|x[0-9a-fA-F]{2})")


def path_text(path: str | os.PathLike | bytes) -> str:
    """A file path as lossless, valid UTF-8 text (what manifests and summaries store).

    A path whose bytes are valid UTF-8 and hold no backslash is its own text (the usual
    case: unchanged). Otherwise every backslash is written `\\\\` and every byte that is
    not valid UTF-8 `\\xNN`, so any byte sequence survives; `path_from_text` inverts it.
    """
    raw = os.fsencode(path)
    try:
        text = raw.decode("utf-8")
        if "\\" not in text:
            return text
    except UnicodeDecodeError:
        pass
    out = []
    for ch in raw.decode("utf-8", "surrogateescape"):  # encoded surrogates are invalid: escaped too
        if ch == "\\":
            out.append("\\\\")
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def path_from_text(text: str) -> str:
    """The real path (a str for `os` calls, surrogate-escaped where the bytes are not
    UTF-8) of text written by `path_text`."""
    if "\\" not in text:
        return text
    out = bytearray()
    pos = 0
    for m in _PATH_ESCAPE.finditer(text):
        out += text[pos:m.start()].encode("utf-8", "surrogateescape")
        code = m.group(1)
        out += b"\\" if code == "\\" else bytes([int(code[1:], 16)])
        pos = m.end()
    out += text[pos:].encode("utf-8", "surrogateescape")
    return os.fsdecode(bytes(out))


def display_text(text: str) -> str:
    """`text` made encodable (for messages and logs): undecodable bytes shown as `\\xNN`."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# ----------------------------------------------------------------------------- public API


def decode_file(path: str | os.PathLike, params: DecodeParams | None = None) -> DecodeResult:
    """Decode one file into an RGB uint8 array, or say why not. Never raises for bad input."""
    params = params or DecodeParams()
    name = os.fspath(path)
    try:
        flags = getattr(os, "O_RDONLY", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        flags |= getattr(os, "O_BINARY", 0)
        fd = os.open(name, flags)  # O_NONBLOCK: a FIFO must not hang us; no effect on files
    except FileNotFoundError:
        if os.path.lexists(name):
            return _rejected("unreadable", f"{name}: dangling symbolic link")
        return _rejected("missing", f"{name}: no such file")
    except NotADirectoryError:
        return _rejected("missing", f"{name}: a parent of this path is not a directory")
    except PermissionError as exc:
        return _rejected("unreadable", f"{name}: permission denied ({exc.strerror or exc})")
    except (OSError, ValueError) as exc:  # IsADirectoryError on Windows, ELOOP, NUL in path...
        return _rejected("unreadable", f"{name}: cannot open ({_exc_text(exc)})")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            return _rejected("unreadable", f"{name}: {what}")
        if st.st_size == 0:
            return _rejected("empty_file", f"{name}: zero bytes")
        with os.fdopen(fd, "rb") as fp:
            fd = -1  # now owned by fp
            try:
                head = fp.read(_SNIFF_BYTES)
            except OSError as exc:
                return _rejected("unreadable", f"{name}: read failed ({_exc_text(exc)})")
            if not head:
                return _rejected("empty_file", f"{name}: zero bytes")
            return _decode_stream(fp, head, name, params)
    except Exception as exc:  # last resort: never raise for bad input
        return _rejected("decode_error", f"{name}: {_exc_text(exc)}")
    finally:
        if fd >= 0:
            os.close(fd)


def decode_bytes(data: bytes, params: DecodeParams | None = None, name: str = "") -> DecodeResult:
    """Like `decode_file` for content already in memory; `name` is used in messages only."""
    params = params or DecodeParams()
    label = name or "<bytes>"
    try:
        if not data:
            return _rejected("empty_file", f"{label}: zero bytes")
        data = bytes(data)
        return _decode_stream(io.BytesIO(data), data[:_SNIFF_BYTES], name, params)
    except Exception as exc:
        return _rejected("decode_error", f"{label}: {_exc_text(exc)}")


# ----------------------------------------------------------------------------- core


def _decode_stream(fp: IO[bytes], head: bytes, name: str, params: DecodeParams) -> DecodeResult:
    label = name or "<bytes>"
    caught: list[warnings.WarningMessage] = []
    try:
        with _pillow_guard(caught):
            result = _decode(fp, head, name, params)
    except _Reject as rej:
        known = rej.known
        result = _rejected(rej.reason, f"{label}: {rej.detail}", **known)  # type: ignore[arg-type]
    except Exception as exc:  # pragma: no cover - _decode converts what it expects
        result = _rejected(*_classify_error(exc), prefix=label)
    notes = _warning_notes(caught)
    if notes:
        result = _replace(result, detail=f"{result.detail}; warnings: {notes}")
    return result


def _decode(fp: IO[bytes], head: bytes, name: str, params: DecodeParams) -> DecodeResult:
    label = name or "<bytes>"
    fmt_hint = sniff_format(head)

    # --- 1. header only
    try:
        fp.seek(0)
        img = Image.open(fp, formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        w, h = _declared_size_unchecked(fp)
        raise _Reject("too_many_pixels", f"declared {w}x{h}: {exc}", width=w, height=h,
                      format=fmt_hint or "") from None
    except UnidentifiedImageError:
        raise _unidentified(fp, head, fmt_hint) from None
    except Exception as exc:
        reason, detail = _classify_error(exc)
        reason = _refine(reason, fmt_hint, fp, head)
        raise _Reject(reason, f"cannot read header: {detail}", format=fmt_hint or "") from None

    with img:
        fmt = img.format or fmt_hint or ""
        mode = img.mode
        w, h = img.size
        orientation, bad_orientation = _orientation(img, cheap=True)
        dw, dh = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
        known: dict[str, object] = dict(width=dw, height=dh, mode=mode, format=fmt, orientation=orientation)

        # --- 2. checks on the declared size, before any pixel is decoded
        if w * h > params.max_pixels:
            raise _Reject("too_many_pixels", f"declared {w}x{h} = {w * h} pixels > max_pixels {params.max_pixels}",
                          **known)
        if min(w, h) < params.min_side:
            raise _Reject("too_small", f"{dw}x{dh}: shorter side < min_side {params.min_side}", **known)
        aspect = max(w, h) / min(w, h)
        if aspect > params.max_aspect:
            raise _Reject("extreme_aspect", f"{dw}x{dh}: aspect {aspect:.2f} > max_aspect {params.max_aspect:g}",
                          **known)
        try:
            multi = bool(getattr(img, "is_animated", False))
        except Exception as exc:
            raise _Reject(*_classify_error(exc), **known) from None
        frames = _count_frames(img) if multi else 1  # frame headers only, no pixels
        animated = multi and fmt in {"GIF", "PNG", "WEBP", "AVIF"}
        known.update(animated=animated, frames=frames)
        if animated and not params.allow_animated:
            raise _Reject("animated", f"animated {fmt} with {frames} frames; allow_animated is false", **known)
        sixteen_source = mode in _SIXTEEN_BIT_MODES or _tile_is_16bit(img)

    # --- 3. PNG checksums, which a plain load skips for image data
    if fmt == "PNG":
        try:
            fp.seek(0)
            with Image.open(fp, formats=["PNG"]) as checker:
                checker.verify()
        except Exception as exc:
            raise _Reject(*_classify_error(exc), **known) from None

    # --- 4. full decode (a fresh object: verify() consumed the previous one)
    try:
        fp.seek(0)
        with Image.open(fp, formats=ACCEPTED_FORMATS) as img:
            img.load()
            orientation, bad_orientation = _orientation(img, cheap=False)
            flags: list[str] = []
            if animated:
                flags.append("animated")
            elif frames > 1:
                flags.append("multiframe")
            if bad_orientation:
                flags.append("bad_orientation")
            upright: Image.Image = img
            if orientation in _TRANSPOSE:
                upright = _transpose(img, orientation)
                flags.append("exif_rotated")
            known.update(orientation=orientation)
            rgb = _to_rgb(upright, params.background, flags, sixteen_source, known)
    except _Reject:
        raise
    except Image.DecompressionBombError as exc:
        raise _Reject("too_many_pixels", str(exc), **known) from None
    except Exception as exc:
        reason, detail = _classify_error(exc)
        raise _Reject(_refine(reason, fmt, fp, head), detail, **known) from None

    if name and _ext_mismatch(name, fmt):
        flags.append("ext_mismatch")
    rgb.flags.writeable = False
    height, width = rgb.shape[:2]
    return DecodeResult(
        status="ok", reason="", detail=f"{label}: {fmt} {width}x{height} {mode}",
        width=width, height=height, mode=mode, format=fmt, orientation=orientation,
        animated=animated, frames=frames, flags=tuple(dict.fromkeys(flags)), image=rgb,
    )


# ----------------------------------------------------------------------------- conversion


def _to_rgb(img: Image.Image, background: list[int], flags: list[str], sixteen_source: bool,
            known: dict) -> np.ndarray:
    mode = img.mode
    trns = img.info.get("transparency")
    alpha: np.ndarray | None = None
    if mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img)
        wide = np.clip(arr.astype(np.int64), 0, 65535)
        gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535)
        if isinstance(trns, int):
            alpha = np.where(arr == trns, 0, 255).astype(np.uint8)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
        flags += ["16bit_converted", "grayscale"]
    elif mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        if arr.size and float(arr.max()) <= 1.0:
            arr = arr * 255.0
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
        flags += ["float_converted", "grayscale"]
    else:
        if mode in ("P", "PA"):
            flags.append("palette")
        elif mode in ("1", "L", "LA", "La"):
            flags.append("grayscale")
        elif mode == "CMYK":
            flags.append("cmyk_converted")
        if sixteen_source:
            flags.append("16bit_converted")
        has_alpha = mode in _ALPHA_MODES or (trns is not None and mode in ("1", "L", "P", "RGB"))
        try:
            if has_alpha:
                rgba = np.asarray(img.convert("RGBA"))
                rgb, alpha = rgba[:, :, :3], rgba[:, :, 3]
            elif mode == "RGB":
                rgb = np.asarray(img)
            else:
                rgb = np.asarray(img.convert("RGB"))
        except ValueError as exc:
            raise _Reject("unsupported_mode", f"mode {mode}: {exc}", **known) from None
    if alpha is not None and alpha.size and int(alpha.min()) < 255:
        a = alpha[:, :, None].astype(np.uint16)
        bg = np.asarray(background, dtype=np.uint16).reshape(1, 1, 3)
        rgb = ((rgb.astype(np.uint16) * a + bg * (255 - a) + 127) // 255).astype(np.uint8)
        flags.append("alpha_composited")
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise _Reject("unsupported_mode", f"mode {mode} gave an array of shape {rgb.shape}", **known)
    return rgb


def _transpose(img: Image.Image, orientation: int) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # EXIF that cannot be rewritten: rotate the pixels anyway
        return img.transpose(_TRANSPOSE[orientation])


def _orientation(img: Image.Image, cheap: bool) -> tuple[int, bool]:
    """EXIF orientation (1..8) and whether the tag was present but unusable.

    cheap=True never triggers a pixel load (PNG's getexif() loads when eXIf is not
    in the header), so before decoding a PNG without header EXIF reports 1.
    """
    if cheap and img.format == "PNG" and "exif" not in img.info:
        return 1, False
    try:
        value = img.getexif().get(_ORIENTATION_TAG)
    except Exception:
        return 1, True
    if value is None:
        return 1, False
    try:
        value = int(value)
    except Exception:
        return 1, True
    if 1 <= value <= 8:
        return value, False
    return 1, True


def _count_frames(img: Image.Image) -> int:
    try:
        return max(1, int(getattr(img, "n_frames", 1)))
    except Exception:
        return 2  # it said it was animated, then failed to walk its frames


def _tile_is_16bit(img: Image.Image) -> bool:
    try:
        # PNG/TIFF rawmodes such as "RGB;16B" (not BMP's packed "BGR;16")
        return any(_RAW16.search(str(t.args if hasattr(t, "args") else t[3])) for t in img.tile)
    except Exception:
        return False


def _refine(reason: str, fmt: str | None, fp: IO[bytes], head: bytes) -> str:
    """WebP errors do not say "truncated"; the RIFF length does."""
    if reason == "corrupt" and fmt == "WEBP" and _riff_cut_short(fp, head):
        return "truncated"
    return reason


def _riff_cut_short(fp: IO[bytes], head: bytes) -> bool:
    """A RIFF (WebP) container whose declared length runs past the end of the data."""
    try:
        declared = struct.unpack("<I", head[4:8])[0] + 8
        return declared > fp.seek(0, io.SEEK_END)
    except Exception:
        return False


def _ext_mismatch(name: str, fmt: str) -> bool:
    ext = Path(name).suffix.lower()
    return ext in _KNOWN_EXTENSIONS and fmt in _EXTENSIONS and ext not in _EXTENSIONS[fmt]


# ----------------------------------------------------------------------------- errors and sniffing


def _classify_error(exc: BaseException) -> tuple[str, str]:
    text = _exc_text(exc)
    if isinstance(exc, MemoryError):
        return "out_of_memory", text
    if isinstance(exc, Image.DecompressionBombError):
        return "too_many_pixels", text
    if isinstance(exc, EOFError) or "truncat" in text.lower() or "premature end" in text.lower():
        return "truncated", text
    if isinstance(exc, (OSError, SyntaxError, ValueError, struct.error, zlib.error, IndexError, TypeError,
                        KeyError, ZeroDivisionError, OverflowError)):
        return "corrupt", text
    return "decode_error", text


def _unidentified(fp: IO[bytes], head: bytes, fmt_hint: str | None) -> _Reject:
    """Pillow could not identify the content: say what it is instead."""
    if fmt_hint in _ALL_ACCEPTED:
        detail = _plugin_error(fp, fmt_hint)
        reason = _refine("truncated" if "truncat" in detail.lower() else "corrupt", fmt_hint, fp, head)
        return _Reject(reason, f"starts like a {fmt_hint} file but its header cannot be read: {detail}",
                       format=fmt_hint)
    kind = _text_kind(head)
    if kind == "html":
        return _Reject("html_not_image", "HTML document, not an image")
    if kind == "svg":
        return _Reject("unsupported_format", "SVG vector image", format="SVG")
    if fmt_hint:
        return _Reject("unsupported_format", f"{fmt_hint} file", format=fmt_hint)
    other = _other_pillow_format(fp)
    if other:
        return _Reject("unsupported_format", f"{other} image (not one of {', '.join(ACCEPTED_FORMATS)})",
                       format=other)
    if kind == "text":
        return _Reject("not_an_image_text", "plain text, not an image")
    return _Reject("not_an_image", f"unrecognised content (starts {head[:8].hex(' ')})")


def _plugin_error(fp: IO[bytes], fmt: str) -> str:
    """The error message of `fmt`'s own opener, which Image.open hides."""
    try:
        factory = Image.OPEN[fmt if fmt != "MPO" else "JPEG"][0]
        fp.seek(0)
        factory(fp, "")
    except Exception as exc:
        return _exc_text(exc)
    return "unidentified"


def _other_pillow_format(fp: IO[bytes]) -> str | None:
    """Name of a non-accepted format Pillow recognises by its magic bytes (header only)."""
    try:
        Image.init()
        others = [f for f in Image.ID if f not in _ALL_ACCEPTED and Image.OPEN[f][1] is not None]
        if not others:
            return None
        with _pillow_limits_lifted():
            fp.seek(0)
            with Image.open(fp, formats=others) as other:
                return str(other.format or "unknown")
    except Exception:
        return None


def _declared_size_unchecked(fp: IO[bytes]) -> tuple[int, int]:
    """Header size of an image Pillow refused as a bomb (no pixel data is read)."""
    try:
        with _pillow_limits_lifted():
            fp.seek(0)
            with Image.open(fp, formats=ACCEPTED_FORMATS) as im:
                return im.size
    except Exception:
        return 0, 0


_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"II+\x00", "TIFF"),
    (0, b"MM\x00+", "TIFF"),
    (0, b"8BPS", "PSD"),
    (0, b"%PDF-", "PDF"),
    (0, b"\xff\x0a", "JXL"),
    (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JXL"),
]
_FTYP_BRANDS = {b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIC", b"heix": "HEIC", b"heim": "HEIC",
                b"heis": "HEIC", b"hevc": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF"}


def sniff_format(head: bytes) -> str | None:
    """The file type named by the first bytes ("JPEG", "PNG", "WEBP", "HEIC", "PDF", ...),
    or None when they match no known signature. Cheap: nothing is decoded."""
    for offset, magic, fmt in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12])
    if head[:2] == b"BM" and len(head) >= 18 and struct.unpack("<I", head[14:18])[0] in (12, 40, 52, 56, 64, 108, 124):
        return "BMP"
    if re.match(rb"P[1-7][ \t\r\n]", head[:3]):
        return "PPM"
    return None


_HTML_RE = re.compile(rb"<(!doctype\s+html|html|head|body|meta|title|script|iframe)[\s>/]", re.IGNORECASE)
_SVG_RE = re.compile(rb"<svg[\s>]", re.IGNORECASE)


def _text_kind(head: bytes) -> str | None:
    """'html', 'svg', 'text' or None (binary) from the first bytes."""
    body = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if not body or b"\x00" in head:
        return None
    control = sum(1 for b in body if b < 32 and b not in (9, 10, 12, 13, 27))
    if control > max(1, len(body) // 100):
        return None
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut by the sniff window is fine; anything else is binary
        if exc.start < len(body) - 3:
            try:
                body.decode("latin-1")
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
                return None
            high = sum(1 for b in body if b >= 128)
            if high > len(body) // 10:
                return None
    lower = body[:1024].lower()
    if lower.startswith((b"<?xml", b"<svg", b"<!doctype svg")) and _SVG_RE.search(body):
        return "svg"
    if body.startswith(b"<") and _HTML_RE.search(body[:2048]):
        return "html"
    if _HTML_RE.search(body[:512]) and b"<html" in lower:
        return "html"
    return "text"


# ----------------------------------------------------------------------------- Pillow globals


@contextmanager
def _pillow_guard(caught: list) -> Iterator[None]:
    """Record warnings instead of printing them, and force strict (non-truncated) loading.

    ImageFile.LOAD_TRUNCATED_IMAGES is process-global; if some other code set it,
    it is switched off for the duration of the decode (under a lock) and restored.
    Like `warnings.catch_warnings` itself this is meant for one decoding thread per
    process (ingest uses worker processes); the pixels stay correct either way.
    """
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        if not ImageFile.LOAD_TRUNCATED_IMAGES:
            try:
                yield
            finally:
                caught.extend(record)
            return
        with _PIL_GLOBALS_LOCK:
            saved = ImageFile.LOAD_TRUNCATED_IMAGES
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            try:
                yield
            finally:
                ImageFile.LOAD_TRUNCATED_IMAGES = saved
                caught.extend(record)


@contextmanager
def _pillow_limits_lifted() -> Iterator[None]:
    """Turn Pillow's bomb check off while reading a header only (never while decoding)."""
    with _PIL_GLOBALS_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _warning_notes(caught: list) -> str:
    notes = []
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            continue  # our max_pixels decides
        text = str(w.message).splitlines()[0][:160] if str(w.message) else w.category.__name__
        if text not in notes:
            notes.append(text)
    return "; ".join(notes[:3])


# ----------------------------------------------------------------------------- results


def _exc_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def _rejected(reason: str, detail: str, *, prefix: str = "", width: int = 0, height: int = 0, mode: str = "",
              format: str = "", orientation: int = 1, animated: bool = False, frames: int = 0) -> DecodeResult:
    if reason not in REASONS:  # pragma: no cover - programming error guard
        reason = "decode_error"
    return DecodeResult(
        status="rejected", reason=reason, detail=f"{prefix}: {detail}" if prefix else detail,
        width=int(width), height=int(height), mode=mode, format=format, orientation=int(orientation),
        animated=bool(animated), frames=int(frames), flags=("animated",) if animated else (), image=None,
    )


def _replace(result: DecodeResult, **changes: object) -> DecodeResult:
    return replace(result, **changes)  # type: ignore[arg-type]
