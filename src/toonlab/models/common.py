"""Pieces every model family uses: the GAN papers' normal init, parameter counts, the
fastest available Adam, the data sections' crop check, the unpaired two-domain data
section and the recipes' shared base."""

from __future__ import annotations

from typing import Any, Generator, Iterable

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


# A recipe's training step as phases (`RecipeBase.phases`): yields (optimizer name, loss or
# tuple of losses) per phase, returns the step's detached losses.
Phases = Generator[tuple[str, Any], None, dict[str, torch.Tensor]]


class RecipeBase:
    """What every training recipe (toonlab.train.recipe.Recipe) does the same way: the
    context's device and memory format, the float16 loss scaler, autocast, moving batches
    to the device and freezing networks between updates. Subclasses fill `self.nets`,
    `self.opt` and `self.sched` (name -> optimizer / LR scheduler)."""

    nets: dict[str, nn.Module]
    opt: dict[str, torch.optim.Optimizer]
    sched: dict[str, Any]
    ema_nets: tuple[str, ...] = ()    # the generators that train.ema averages (none: EMA off)

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self.device: torch.device = ctx.device
        self.memory_format = torch.channels_last if ctx.channels_last else torch.contiguous_format
        self._steps: Any = None
        self._resumed_steps: dict[str, Any] | None = None

    # -- Recipe protocol

    def networks(self) -> dict[str, nn.Module]:
        return self.nets

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.opt

    def schedulers(self) -> dict[str, Any]:
        return self.sched

    # A subclass defines `phases(batch, step) -> Phases`: one training step as phases
    # (compute a phase's losses, `yield name, loss` or a tuple of losses for optimizer
    # `name`, go on once it has stepped; return the detached losses to log;
    # `toonlab.train.optimize`).

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """One optimisation step on `batch` (the Recipe protocol): the recipe's phases,
        each stepped by `self.steps` as it comes."""
        return self.steps.drive([self.phases(batch, step)])  # type: ignore[attr-defined]

    # -- helpers

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.ctx.amp_dtype, enabled=self.ctx.amp_dtype is not None)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    @property
    def steps(self) -> Any:
        """The optimizer steps (`toonlab.train.optimize.Stepper` over `self.opt`), which
        drives `phases`: clearing, loss scaling (float16 autocast only), clipping, stepping,
        skipping and gradient accumulation are done there."""
        if self._steps is None:   # made at first use: after the trainer has set the precision
            from toonlab.train.optimize import Stepper

            self._steps = Stepper(self.opt, self.device, fp16=self.ctx.amp_dtype == torch.float16,
                                  clip_grad=float(self.ctx.extra.get("clip_grad", 0.0)))
            if self._resumed_steps is not None:
                self._steps.load_state_dict(self._resumed_steps)
                self._resumed_steps = None
        return self._steps

    def extra_state(self) -> dict[str, Any]:
        """Checkpointed state beyond networks, optimizers and schedulers (families extend it):
        the loss scaler's state (empty unless float16) and, in float16, the step counts."""
        state = self.steps.state_dict()
        return {"scaler": state["scaler"], **({"steps": state} if self.steps.scaler.is_enabled() else {})}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        # Kept until the stepper is made (a resumed run's precision is decided after this).
        self._resumed_steps = {**state.get("steps", {}), "scaler": state.get("scaler")}
        self._steps = None

    def _set_requires_grad(self, nets: Iterable[nn.Module], flag: bool) -> None:
        if self.ctx.distributed:   # DDP expects the same set of grads each backward
            return
        for net in nets:
            for p in net.parameters():
                p.requires_grad_(flag)


def unpaired_spec(d: Any) -> Any:
    """The trainer's DataSpec of an unpaired data section (`data_params.UnpairedDataParams`):
    domains A and B."""
    from toonlab.models.data_params import composite_rgb
    from toonlab.train.recipe import DataSpec

    return DataSpec(domains={"A": d.domain_a, "B": d.domain_b}, crop_px=d.crop_px, batch_size=d.batch_size,
                    load_px=d.resolved_load_px, flip=d.flip, resize=d.resize, composite=composite_rgb(d.composite))
