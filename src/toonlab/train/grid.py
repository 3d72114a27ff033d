"""Sample grids: rows of named images side by side (e.g. real_A | fake_B | rec_A)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from toonlab.util import codec, fileio


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """N x C x H x W in [-1, 1] (C = 3), or heatmaps in [0, 1] (C = 1, shown grey) ->
    N x H x W x 3 uint8, by the codec's one rounding rule (`toonlab.util.images`)."""
    t = t.detach().float()
    if t.shape[1] == 1:
        t = t.clamp(0, 1).mul(2).sub(1).repeat(1, 3, 1, 1)
    return codec.to_uint8(t)


def make_grid(pictures: dict[str, torch.Tensor], rows: list[list[str]], pad: int = 2) -> Image.Image:
    arrays = {k: to_uint8(v) for k, v in pictures.items()}
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


def save_grid(pictures: dict[str, torch.Tensor], rows: list[list[str]], path: Path) -> Image.Image:
    img = make_grid(pictures, rows)
    fileio.write_bytes(path, codec.png_bytes(img))
    return img
