"""An exponential moving average of a run's generator weights (`train.ema`), one
implementation for every family.

With `train.ema: beta` (0 < beta < 1; 0, the default, is off) the trainer keeps, after every
training step, `avg = beta * avg + (1 - beta) * weights` for the networks the recipe names
in `ema_nets` (its generators; buffers such as batch-norm statistics are copied). Sample
grids are drawn with the averaged weights, checkpoints hold them (`ema`) beside the trained
ones, and a run's inference (evaluation, cartoonize, serve, export: `toonlab.runs.load`)
uses them. A resumed run continues the same average.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

from toonlab.train.device import unwrap


class EMA:
    def __init__(self, nets: dict[str, nn.Module], names: tuple[str, ...] | list[str], beta: float):
        if not 0.0 < beta < 1.0:
            raise ValueError(f"EMA beta must be in (0, 1), got {beta}")
        missing = [n for n in names if n not in nets]
        if missing:
            raise ValueError(f"ema_nets names networks the recipe does not have: {', '.join(missing)}")
        self.beta = beta
        self.avg = {n: copy.deepcopy(unwrap(nets[n])).requires_grad_(False) for n in names}

    @torch.no_grad()
    def update(self, nets: dict[str, nn.Module]) -> None:
        for name, avg in self.avg.items():
            net = unwrap(nets[name])
            torch._foreach_lerp_(list(avg.parameters()), [p.detach() for p in net.parameters()], 1.0 - self.beta)
            for a, b in zip(avg.buffers(), net.buffers(), strict=True):
                a.copy_(b)

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {name: {k: v.detach().clone() for k, v in avg.state_dict().items()} for name, avg in self.avg.items()}

    def load_state_dict(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        for name, avg in self.avg.items():
            if name in state:
                avg.load_state_dict(state[name])

    @contextlib.contextmanager
    @torch.no_grad()
    def applied(self, nets: dict[str, nn.Module]) -> Iterator[None]:
        """The averaged weights in the recipe's networks for the duration (samples), the
        trained ones put back exactly afterwards."""
        saved = {}
        for name, avg in self.avg.items():
            net = unwrap(nets[name])
            saved[name] = {k: v.detach().clone() for k, v in net.state_dict().items()}
            net.load_state_dict(avg.state_dict())
        try:
            yield
        finally:
            for name, state in saved.items():
                unwrap(nets[name]).load_state_dict(state)
