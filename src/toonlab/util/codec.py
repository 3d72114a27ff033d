"""The image codec: every PNG, JPEG and data URI ToonLab writes, and the one conversion
between model tensors and 8-bit pixels.

Byte-stable for DVC: the same pixels and settings give the same bytes (Pillow's encoders
with fixed settings, no metadata, no timestamps). PNG uses zlib level 6 (Pillow's
default), or, where many files are written per image (the face stages' mattes and crops),
`png_compression="fast"`: zlib level 1 with the run-length strategy through OpenCV's
libpng (2-5x faster to encode, files within ~5-40% of level 6); JPEG is baseline (not progressive, not optimised) with the quality and chroma
subsampling the caller names.

Tensors and pixels. Models see images as N x C x H x W floats in [-1, 1]; files hold
uint8 in 0..255. The rule, everywhere (grids, evaluation, cartoonize, export, the
White-box superpixels):

    uint8 = floor((clamp(x, -1, 1) + 1) * 127.5 + 0.5)      computed in float32
    x     = uint8 / 127.5 - 1

that is, round half up of the affine map, so -1 -> 0, 0 -> 128 (127.5 rounds up), 1 -> 255.
`to_uint8` works on torch tensors (on their device, so only bytes cross to the host) and
on numpy arrays alike; this module itself does not import torch.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

PNG_LEVEL = 6


def _pil(img: Any):
    from PIL import Image

    if isinstance(img, Image.Image):
        return img
    return Image.fromarray(np.ascontiguousarray(img))


def png_bytes(img: Any, compress_level: int = PNG_LEVEL) -> bytes:
    """PNG bytes of an H x W [x C] uint8 array or a PIL image."""
    buf = io.BytesIO()
    _pil(img).save(buf, "PNG", compress_level=compress_level)
    return buf.getvalue()


PNG_COMPRESSION = ("fast", "small")


def png_bytes_as(img: np.ndarray, compression: str) -> bytes:
    """PNG bytes of an H x W [x 3|4] uint8 RGB(A) array: `compression` "small" is
    `png_bytes` (zlib level 6), "fast" zlib level 1 with the run-length strategy. Lossless
    either way: the pixels read back are the same."""
    if compression == "small":
        return png_bytes(img)
    if compression != "fast":
        raise ValueError(f"png compression {compression!r}: expected one of {PNG_COMPRESSION}")
    import cv2

    arr = np.ascontiguousarray(img)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 1,
                                         cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])
    if not ok:  # pragma: no cover - imencode fails only on unsupported shapes
        raise ValueError(f"PNG encoding failed for an array of shape {arr.shape}")
    return buf.tobytes()


def jpeg_bytes(img: Any, quality: int = 90, subsampling: int = 2) -> bytes:
    """Baseline JPEG bytes (subsampling: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0)."""
    buf = io.BytesIO()
    _pil(img).convert("RGB").save(buf, "JPEG", quality=quality, optimize=False, progressive=False,
                                  subsampling=subsampling)
    return buf.getvalue()


def data_uri(data: bytes, mime: str) -> str:
    """`data:<mime>;base64,...` of encoded bytes, for self-contained HTML."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def png_uri(img: Any, compress_level: int = PNG_LEVEL) -> str:
    """A PNG data URI of an array, a PIL image or already encoded PNG bytes."""
    return data_uri(img if isinstance(img, bytes) else png_bytes(img, compress_level), "image/png")


def jpeg_uri(img: Any, quality: int = 90, subsampling: int = 2) -> str:
    return data_uri(jpeg_bytes(img, quality, subsampling), "image/jpeg")


def read_png(data: bytes) -> np.ndarray:
    """The pixels of PNG bytes, as stored (no mode conversion)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def to_uint8(x: Any) -> np.ndarray:
    """N x C x H x W in [-1, 1] (torch tensor or numpy array) -> N x H x W x C uint8
    (the rule in the module docstring); a tensor is converted on its device."""
    if hasattr(x, "detach"):   # a torch tensor (so torch is loaded already)
        import torch

        u8 = ((x.detach().float().clamp(-1, 1) + 1) * 127.5 + 0.5).floor_().to(torch.uint8)
        return u8.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    a = (np.clip(np.asarray(x, np.float32), -1, 1) + np.float32(1)) * np.float32(127.5) + np.float32(0.5)
    return np.ascontiguousarray(np.floor(a).astype(np.uint8).transpose(0, 2, 3, 1))


def from_uint8(pixels: np.ndarray) -> Any:
    """N x H x W x C uint8 -> N x C x H x W float32 torch tensor in [-1, 1] (x / 127.5 - 1)."""
    import torch

    a = np.ascontiguousarray(pixels)
    if not a.flags.writeable:   # a read-only memory map (packed data): torch wants its own copy
        a = a.copy()
    return torch.from_numpy(a).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
