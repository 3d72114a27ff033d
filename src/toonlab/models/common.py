"""Pieces every model family uses: the GAN papers' normal init, parameter counts, the
fastest available Adam, the data sections' crop check, the unpaired two-domain data
section and the recipes' shared base."""

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


class ReflectionPad2d(nn.ReflectionPad2d):
    """`nn.ReflectionPad2d` that pads in its input's dtype. CPU autocast runs
    reflection_pad2d in float32 (it is on autocast's fp32 list), so in a bf16 network every
    padded activation went to float32 and back (forward and backward: about a sixth of a
    CycleGAN step at 256 px). Padding only moves values: nothing is lost in bf16, and the
    fp32 path is the plain module."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kind = x.device.type
        if kind in ("cpu", "cuda") and torch.is_autocast_enabled(kind):
            with torch.autocast(kind, enabled=False):
                return super().forward(x)
        return super().forward(x)


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


class RecipeBase:
    """What every training recipe (toonlab.train.recipe.Recipe) does the same way: the
    context's device and memory format, the float16 loss scaler, autocast, moving batches
    to the device and freezing networks between updates. Subclasses fill `self.nets`,
    `self.opt` and `self.sched` (name -> optimizer / LR scheduler)."""

    nets: dict[str, nn.Module]
    opt: dict[str, torch.optim.Optimizer]
    sched: dict[str, Any]

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self.device: torch.device = ctx.device
        self.memory_format = torch.channels_last if ctx.channels_last else torch.contiguous_format
        # Only float16 autocast needs loss scaling; disabled (a pass-through) otherwise.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=ctx.amp_dtype == torch.float16)

    # -- Recipe protocol

    def networks(self) -> dict[str, nn.Module]:
        return self.nets

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.opt

    def schedulers(self) -> dict[str, Any]:
        return self.sched

    # -- helpers

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.ctx.amp_dtype, enabled=self.ctx.amp_dtype is not None)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    def extra_state(self) -> dict[str, Any]:
        """Checkpointed state beyond networks, optimizers and schedulers (families extend it)."""
        return {"scaler": self.scaler.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def _set_requires_grad(self, nets: Iterable[nn.Module], flag: bool) -> None:
        if self.ctx.distributed:   # DDP expects the same set of grads each backward
            return
        for net in nets:
            for p in net.parameters():
                p.requires_grad_(flag)
