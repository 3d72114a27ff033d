"""The optimizer steps of a training recipe, done one way for every family.

A recipe computes its losses phase by phase (discriminators, generators, ...) and hands
each to `Stepper.update(name, *losses)` (or `backward` and later `step`): the stepper
clears the optimizer's gradients before the first backward of the phase, runs backward
with the loss scaled when the run trains in float16 (dynamic loss scaling: a step whose
gradients overflow is skipped, and the skip is counted per optimizer), clips the gradient
norm when `train.clip_grad` asks, and steps. `finish()` ends a training step (the scale
is updated once, whichever optimizers stepped). Its state (the loss scale and the
counters) is checkpointed, so a resumed run continues with the same scale.

Under fp32 and bf16 the scaler is a pass-through: the arithmetic is exactly what a recipe
calling `zero_grad`, `backward` and `step` itself would do.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

# A skipped fp16 step (the first ones, while the scale settles) leaves the optimizer unstepped
# when the trainer steps the LR schedulers: the schedule counts training steps, on purpose.
warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`")


class Stepper:
    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], device: torch.device, *,
                 fp16: bool = False, clip_grad: float = 0.0):
        self.opt = optimizers
        self.scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self.clip_grad = clip_grad
        self.stepped: dict[str, int] = {name: 0 for name in optimizers}    # steps taken
        self.skipped: dict[str, int] = {name: 0 for name in optimizers}    # overflowing steps skipped
        self._open: set[str] = set()       # optimizers whose gradients this phase already holds
        self._any = False
        self._taken: dict[str, int] = {}
        for name, opt in optimizers.items():
            opt.register_step_post_hook(lambda *_, name=name: self._took(name))

    def _took(self, name: str) -> None:
        self._taken[name] = self._taken.get(name, 0) + 1

    def backward(self, name: str, *losses: Tensor) -> None:
        """Backward each loss in turn into optimizer `name`'s parameters (cleared first)."""
        if name not in self._open:
            self.opt[name].zero_grad(set_to_none=True)
            self._open.add(name)
        for loss in losses:
            self.scaler.scale(loss).backward()

    def step(self, name: str) -> None:
        """Step optimizer `name` on the gradients its phase accumulated (skipped on overflow)."""
        opt = self.opt[name]
        if self.clip_grad > 0:
            self.scaler.unscale_(opt)
            params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad)
        before = self._taken.get(name, 0)
        self.scaler.step(opt)
        if self._taken.get(name, 0) > before:
            self.stepped[name] += 1
        else:
            self.skipped[name] += 1
        self._open.discard(name)
        self._any = True

    def update(self, name: str, *losses: Tensor) -> None:
        """backward + step: one phase's update of optimizer `name`."""
        self.backward(name, *losses)
        self.step(name)

    def finish(self) -> None:
        """The end of a training step: the loss scale is updated once, if anything stepped."""
        if self._any:
            self.scaler.update()
        self._any = False
        self._open.clear()

    @property
    def scale(self) -> float:
        return float(self.scaler.get_scale()) if self.scaler.is_enabled() else 1.0

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict(), "stepped": dict(self.stepped), "skipped": dict(self.skipped)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.stepped.update(state.get("stepped", {}))
        self.skipped.update(state.get("skipped", {}))
