"""Sample grids: rows of named images side by side (e.g. real_A | fake_B | rec_A)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from toonlab import io as tio


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """N x C x H x W in [-1, 1] (C = 3) or heatmaps in [0, 1] (C = 1) -> N x H x W x 3 uint8."""
    t = t.detach().float().cpu()
    if t.shape[1] == 1:
        t = t.clamp(0, 1).repeat(1, 3, 1, 1)
    else:
        t = (t.clamp(-1, 1) + 1) / 2
    return (t.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)


def make_grid(images: dict[str, torch.Tensor], rows: list[list[str]], pad: int = 2) -> Image.Image:
    arrays = {k: to_uint8(v) for k, v in images.items()}
    n = min(len(a) for a in arrays.values())
    blocks = []
    for i in range(n):
        for row in rows:
            tiles = [arrays[name][i] for name in row if name in arrays]
            h = max(t.shape[0] for t in tiles)
            tiles = [np.pad(t, ((0, h - t.shape[0]), (0, pad), (0, 0)), constant_values=255) for t in tiles]
            blocks.append(np.concatenate(tiles, axis=1))
    width = max(b.shape[1] for b in blocks)
    blocks = [np.pad(b, ((0, pad), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
    return Image.fromarray(np.concatenate(blocks, axis=0))


def save_grid(images: dict[str, torch.Tensor], rows: list[list[str]], path: Path) -> Image.Image:
    import io

    img = make_grid(images, rows)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    tio.write_bytes(path, buf.getvalue())
    return img
