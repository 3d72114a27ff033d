"""How a run computes, decided when it starts (and again when it resumes): its precision
(`train.cpu_precision` / `train.amp`, the rules in `toonlab.train.precision`) and then
whether torch.compile compiles its trainable networks (`train.compile`, the rules in
`toonlab.train.compiling`). Rank 0 decides, every rank follows (`toonlab.train.ranks`);
each decision and why is logged. A compiled run's first step holds the compilation: its
time is reported as what compiling cost.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

import torch

from toonlab.log import get_logger
from toonlab.train import compiling, precision
from toonlab.train.params import TrainParams
from toonlab.train.ranks import Ranks
from toonlab.train.recipe import Recipe

if TYPE_CHECKING:
    from toonlab.registry import Family

log = get_logger(__name__)


def choose_precision(tp: TrainParams, ranks: Ranks, name: str, stored: dict[str, Any] | None,
                     build: Callable[[], Recipe]) -> precision.Precision:
    """The run's precision, resolved on rank 0 and the same on every rank; a resumed auto
    run keeps its checkpoint's (`stored`). `build`: a throwaway recipe for the probe."""
    chosen = ranks.on_rank0(lambda: precision.resolve(tp.cpu_precision, ranks.device, tp.amp, stored, build))
    if ranks.rank == 0:
        log.info("%s: precision %s", name, chosen.describe())
    return chosen


def choose_compile(tp: TrainParams, ranks: Ranks, family: Family, chosen: precision.Precision, px: int,
                   remaining: int, build: Callable[[], Recipe]) -> compiling.Compile:
    """Whether the run compiles, resolved on rank 0 and the same on every rank; the eager
    step time it may need is the precision probe's or a short timing of `build()`."""
    name = chosen.name

    def step_s() -> float:
        figure = chosen.probe.get(f"{name}_s")
        if figure:
            return float(figure)
        return precision.time_steps(build, ranks.device, (name,))[f"{name}_s"]

    compiled = ranks.on_rank0(lambda: compiling.resolve(
        tp.compile, ranks.device, family.name, family.cpu_compile, name, px, remaining, step_s))
    if ranks.rank == 0:
        log.info("%s: torch.compile %s", family.name, compiled.describe())
    return compiled


def compile_nets(recipe: Recipe) -> None:
    """torch.compile each trainable network of the recipe, in place."""
    for name, net in list(recipe.nets.items()):
        if any(p.requires_grad for p in net.parameters()):
            recipe.nets[name] = torch.compile(net)


def first_step_s(losses: dict[str, torch.Tensor], t0: float, compiled: compiling.Compile, ranks: Ranks,
                 name: str) -> float:
    """The first compiled step's seconds since `t0` (its losses read): what compiling cost."""
    for v in losses.values():
        float(v)
    took = time.perf_counter() - t0
    if ranks.rank == 0:
        eager = compiled.estimate.get("step_s")
        log.info("%s: the first step, compiling, took %.1f s%s", name, took,
                 f" (eager: {eager:.2f} s/step)" if eager else "")
    return took
