"""Pieces every model family uses: the GAN papers' normal init, parameter counts, the
fastest available Adam, the data sections' crop check, the unpaired two-domain data
section and the recipes' shared base."""

from __future__ import annotations

from typing import Annotated, Any, Iterable

import torch
from pydantic import Field, model_validator
from torch import nn

from toonlab.schema import Section


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


def check_crop(crop_px: int, load_px: int, multiple: int, why: str) -> None:
    """The data sections' shared check: crop_px a multiple of `multiple` (`why` says which
    down-sampling stages need it), load_px 0 (derived) or at least crop_px."""
    if crop_px % multiple:
        raise ValueError(f"crop_px must be a multiple of {multiple} ({why}), got {crop_px}")
    if load_px and load_px < crop_px:
        raise ValueError(f"load_px ({load_px}) must be 0 or >= crop_px ({crop_px})")


class UnpairedDataParams(Section):
    """The `data` section of the unpaired translation families (CycleGAN, U-GAT-IT):
    batches of domain_a and domain_b faces, resized to load_px, randomly cropped to
    crop_px and flipped."""

    # 256 (the papers) or 128; a multiple of 4 (two stride-2 stages; U-GAT-IT's
    # soft_adalin needs 16, checked by its section). U-GAT-IT's full generator's MLP is
    # built for this size.
    crop_px: Annotated[int, Field(ge=16, le=4096)] = 256
    # Resize to this before the random crop; 0: crop_px * 286/256 (286 for 256, 143 for 128).
    load_px: Annotated[int, Field(ge=0, le=8192)] = 0
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 1
    flip: bool = True
    domain_a: Annotated[str, Field(min_length=1)] = "photo"
    domain_b: Annotated[str, Field(min_length=1)] = "anime"

    @model_validator(mode="after")
    def _check(self) -> UnpairedDataParams:
        check_crop(self.crop_px, self.load_px, 4, "two stride-2 stages")
        return self

    @property
    def resolved_load_px(self) -> int:
        return self.load_px or round(self.crop_px * 286 / 256)

    def spec(self):
        """The trainer's DataSpec: domains A and B."""
        from toonlab.train.recipe import DataSpec

        return DataSpec(domains={"A": self.domain_a, "B": self.domain_b}, crop_px=self.crop_px,
                        batch_size=self.batch_size, load_px=self.resolved_load_px, flip=self.flip)


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
