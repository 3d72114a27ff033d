"""The inference contract of a trained family: what its model module's `inference(params,
nets)` returns, and what evaluation, cartoonizing, serving and export use."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class Inference:
    """What evaluation, cartoonizing and export need of a trained family: networks in
    eval mode that map images of the `source` domain to the `target` domain.

    `forward(x) -> y` and `backward(y) -> x` take and return N x 3 x px x px in [-1, 1];
    `backward` is None for models without a cycle. Unconditional models (DCGAN) set
    `forward` None and give `generate(z) -> images` with `nz` noise channels instead."""

    family: str
    source: str | None
    target: str
    px: int
    forward: nn.Module | None
    backward: nn.Module | None = None
    generate: nn.Module | None = None
    nz: int = 0
