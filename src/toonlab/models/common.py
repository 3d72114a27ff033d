"""Pieces every model family uses: the GAN papers' normal init, parameter counts and
the fastest available Adam."""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn


@torch.no_grad()
def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """The DCGAN / CycleGAN 'normal' init: conv, transposed-conv and linear weights
    ~ N(0, gain), biases 0; batch-norm weights ~ N(1, gain), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def adam(params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float], device: torch.device,
         weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with the fused kernel on CUDA and the multi-tensor (foreach) one elsewhere."""
    params = list(params)
    kwargs: dict[str, Any] = {"fused": True} if device.type == "cuda" else {"foreach": True}
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, **kwargs)
    except (RuntimeError, TypeError, ValueError):   # no fused/foreach kernel for this device
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
