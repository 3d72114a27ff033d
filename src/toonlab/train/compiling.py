"""`train.compile`: torch.compile (inductor) of a run's trainable networks: true | false | auto.

* `true` / `false`: as set.
* `auto` (default): compiled only where compilation is measured to pay back its own cost
  within the first `PAYBACK_MAX_STEPS` steps of this run and by the middle of the steps
  it has left (runs of fewer than `MIN_REMAINING` steps stay eager without timing
  anything). Compilation costs from tens of seconds to minutes once (per process: a
  resumed run compiles again, faster from inductor's on-disk cache) and then saves a fraction of every step; how much depends on the family and the
  precision and the image size, so it is measured per family and kind of CPU
  (`Family.cpu_compile`: the figures of the family folder's `figures.py` for this CPU's
  kind, from `benchmarks/train_step.py --compile` with a cold inductor cache; the
  measured size nearest the run's applies; a kind not measured stays eager), and the saving per step of this
  run is that fraction of this run's own eager step time (the precision probe's figure, or a few
  timed steps of a throwaway copy of the recipe). Pay-back steps = compile seconds /
  (step seconds x (1 - compiled / eager)).
  On CUDA `auto` stays off: no GPU measurement in this project says it pays (set `true`).
  Without a C++ compiler (inductor needs one on CPU) `auto` is off; `true` fails with
  torch's own error.

The decision, why, and (when compiled) the first step's time, which holds the compilation,
are logged and written to summary.json. Compiling does not change what is trained: a run
continues across a change of this setting.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from toonlab.log import get_logger
from toonlab.registry import CompileGain

if TYPE_CHECKING:
    import torch

log = get_logger(__name__)

PAYBACK_MAX_STEPS = 300      # "within the first few hundred steps"
MIN_REMAINING = 100          # shorter runs stay eager without timing anything


@dataclass(frozen=True)
class Compile:
    on: bool
    reason: str
    estimate: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"on": self.on, "reason": self.reason, "estimate": dict(self.estimate)}

    def describe(self) -> str:
        return f"{'on' if self.on else 'off'} ({self.reason})"


def cxx_compiler() -> str | None:
    """The C++ compiler inductor would use on CPU, or None."""
    try:
        from torch._inductor import config

        name = config.cpp.cxx[-1] if isinstance(config.cpp.cxx, tuple) else config.cpp.cxx
    except (ImportError, AttributeError, IndexError):
        name = None
    for candidate in (name, "g++", "clang++", "c++"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def payback_steps(speedup: float, compile_s: float, step_s: float) -> float:
    """Steps after which compiling a run of `step_s` eager seconds per step, `speedup`
    times faster compiled, has paid back `compile_s` (inf where it saves nothing)."""
    saved = step_s * (1.0 - 1.0 / speedup) if speedup > 1.0 else 0.0
    return compile_s / saved if saved > 0 else float("inf")


def resolve(setting: bool | str, device: torch.device, family: str, gain: CompileGain | None,
            precision: str, px: int, remaining: int, step_s: Callable[[], float]) -> Compile:
    """Whether this run compiles. `precision`: the run's ("fp32" | "bf16"); `px`: its image
    size (the nearest measured size's figures apply); `remaining`: steps left to train;
    `step_s()`: this run's eager seconds per step (asked only when the answer depends on it)."""
    if setting is True:
        return Compile(True, "train.compile: true")
    if setting is False:
        return Compile(False, "train.compile: false")
    if device.type != "cpu":
        return Compile(False, f"auto: not measured on {device.type} (set train.compile: true to compile)")
    point = gain.at(precision, px) if gain is not None else None
    if point is None:
        return Compile(False, f"auto: torch.compile not measured for {family} in {precision} on CPU")
    speedup, compile_s = point
    if speedup <= 1.0:
        return Compile(False, f"auto: measured not faster for {family} in {precision} on CPU near {px} px "
                              f"({speedup:.2f}x)")
    if cxx_compiler() is None:
        return Compile(False, "auto: no C++ compiler (g++ / clang++) for inductor on this machine")
    if remaining < MIN_REMAINING:       # not worth timing: too short to gain much, whatever the step time
        return Compile(False, f"auto: {remaining} steps left; compiling (~{compile_s:.0f} s) is left to "
                              f"runs of at least {MIN_REMAINING} steps")
    s = step_s()
    steps = payback_steps(speedup, compile_s, s)
    estimate = {"step_s": s, "speedup": speedup, "compile_s": compile_s, "payback_steps": steps}
    figures = (f"{1000 * s:.0f} ms/step eager, {speedup:.2f}x compiled, "
               f"~{compile_s:.0f} s to compile: pays back after ~{steps:.0f} steps")
    limit = min(PAYBACK_MAX_STEPS, remaining / 2)
    if steps <= limit:
        return Compile(True, f"auto: {figures}", estimate)
    return Compile(False, f"auto: {figures}, not within {limit:.0f} ({remaining} steps left)", estimate)
