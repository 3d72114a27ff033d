"""The optimizer steps of a training recipe, done one way for every family.

A recipe's `phases(batch, step)` is a generator: it computes its losses phase by phase
(discriminators, generators, ...) and yields each phase as `(optimizer name, loss or
tuple of losses)`, then returns its detached losses for the log. `Stepper.drive` runs the
phases of one training step: for each phase it runs backward (each loss in turn) and steps
that optimizer before the recipe goes on, so a later phase sees the earlier phases'
updates (U-GAT-IT's generators train against the discriminators just updated).

Gradient accumulation (`train.accumulate: k`) is the same drive over k micro-batches in
lockstep: every micro-batch's generator runs to the phase, each loss scaled by 1/k is
backwarded into the same gradients, then the optimizer steps once, and only then do the
micro-batches go on to the next phase. Each phase therefore sees the same network weights
as in one step on the k micro-batches together (the mean of their gradients is the
gradient of the mean loss); what differs is what is computed per micro-batch: batch-norm
statistics (DCGAN) and the image pools' draws (CycleGAN).

The stepper clears the optimizer's gradients before the first backward of the phase, runs backward
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
from typing import Any, Iterator

import torch
from torch import Tensor

from toonlab.errors import ToonlabError, UsageError

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

    def drive(self, phases: list[Iterator[tuple[str, Any]]]) -> dict[str, Tensor]:
        """Run one training step of a recipe: `phases` are its `phases(batch, step)`
        generators, one per micro-batch (one without accumulation). Returns the step's
        losses (the micro-batches' mean)."""
        k = len(phases)
        outs: list[dict[str, Tensor] | None] = [None] * k
        while True:
            name, done = None, 0
            for i, gen in enumerate(phases):
                try:
                    phase, losses = next(gen)
                except StopIteration as stop:
                    outs[i], done = stop.value, done + 1
                    continue
                if name is not None and phase != name:
                    raise ToonlabError(f"the micro-batches of one step took different phases ({name} and {phase})")
                name = phase
                losses = losses if isinstance(losses, tuple) else (losses,)
                self.backward(phase, *(losses if k == 1 else (loss / k for loss in losses)))
            if done:
                if done != k:
                    raise ToonlabError("the micro-batches of one step took different numbers of phases")
                break
            self.step(name)
        if k == 1:
            return outs[0]
        return {key: sum(out[key] for out in outs) / k for key in outs[0]}

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


def has_phases(recipe: Any) -> bool:
    """Whether the recipe gives its step as phases (`phases(batch, step)`), not only as a
    `train_step` that steps its optimizers itself."""
    return callable(getattr(recipe, "phases", None))


def check_accumulate(recipe: Any, accumulate: int, family: str) -> None:
    """`train.accumulate` > 1 needs the recipe's phases: a clear error before training."""
    if accumulate > 1 and not (has_phases(recipe) and hasattr(recipe, "steps")):
        raise UsageError(f"train.accumulate: {accumulate}: the {family} recipe steps its optimizers itself "
                         "(train_step), so its gradients cannot be accumulated; give it phases(batch, step) "
                         "(toonlab.train.optimize) or set train.accumulate: 1")


def train_step(recipe: Any, batches: list[dict[str, Tensor]], step: int) -> dict[str, Tensor]:
    """One training step of `recipe` on one batch, or on several micro-batches accumulated
    (`train.accumulate`); the loss scale is then updated once (float16)."""
    if len(batches) == 1:
        losses = recipe.train_step(batches[0], step)
    else:
        losses = recipe.steps.drive([recipe.phases(batch, step) for batch in batches])
    stepper = getattr(recipe, "steps", None)
    if stepper is not None:
        stepper.finish()          # the loss scale, updated once per step (fp16)
    return losses
