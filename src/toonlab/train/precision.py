"""The arithmetic a training run uses: `train.amp` on CUDA, `train.cpu_precision` on CPU.

On CUDA, `train.amp` (auto | bf16 | fp16 | off; true / false: auto / off): `auto` takes what
the GPU computes natively: bf16 autocast on compute capability 8.0 and up (Ampere, Hopper),
fp16 autocast with dynamic loss scaling on 7.x (V100, T4: no bf16 units; bf16 there is
emulated), fp32 before. A resumed `auto` run keeps its first choice; an explicit value wins.

On CPU (`train.cpu_precision`: auto | fp32 | bf16 | fp16):

* `fp32` / `bf16`: as set (bf16 on a CPU without bf16 instructions is emulated and is
  usually slower: a warning says so).
* `fp16`: float16 autocast with dynamic loss scaling (`torch.amp.GradScaler("cpu")`), the
  same path as on a 7.x GPU: for CPUs with native fp16 and for testing that path here.
* `auto` (default): bf16 only where the CPU has native bf16 (oneDNN says so and, on
  Linux, the CPU flags list `avx512_bf16` or `amx_bf16`) **and** a short probe at start,
  a few of the family's own training steps on random images of the recipe's size in
  each precision (alternated, the fastest of each kept), finds bf16 at least
  `PROBE_MIN_SPEEDUP` times faster. Otherwise fp32. The probe runs on a throwaway copy of
  the recipe with the random-number state restored afterwards: the run itself is the
  same as without it.

The choice, why, and the probe's figures are logged and stored in every checkpoint and
in summary.json; a resumed `auto` run keeps the precision it started with (a noisy
probe never flips a run half way). An explicit fp32/bf16/fp16 always wins.

fp16 (either device): every optimizer step goes through the recipe's
`toonlab.train.optimize.Stepper`: losses scaled, a step whose gradients overflow skipped and
counted (logged), the scale updated once per training step and checkpointed, so a resumed
run continues with the same scale.

bf16 here is autocast: weights, gradients and the optimizer state stay fp32; matrix
products and convolutions run in bf16; losses and the parts that need range or
accumulation run in fp32 (each family casts its network outputs to fp32 for its losses;
autocast itself keeps MSE/L1/BCE in fp32, and norms accumulate their statistics in fp32).
Reflection padding stays in bf16 (`toonlab.models.common.ReflectionPad2d`).

`TOONLAB_CPU_BF16=0` in the environment makes this CPU look like one without native bf16
(`auto` then falls back to fp32): how the fallback is tested here.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from toonlab.log import get_logger
from toonlab.util import cpu
from toonlab.util.timing import best_of

log = get_logger(__name__)

PROBE_MIN_SPEEDUP = 1.1      # bf16 must be at least this much faster than fp32 to be chosen
PROBE_ROUNDS = 2             # timed steps per precision (after one warm-up step each)
ENV_NO_BF16 = "TOONLAB_CPU_BF16"


@dataclass(frozen=True)
class Precision:
    """The precision a run trains in (on its device) and why."""

    name: str                  # "fp32" | "bf16" | "fp16"
    reason: str
    probe: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def record(self) -> dict[str, Any]:
        """What checkpoints and summary.json keep."""
        return {"name": self.name, "reason": self.reason, "probe": dict(self.probe), "device": self.device}

    def describe(self) -> str:
        text = f"{self.name} ({self.reason}"
        if self.probe:
            p = self.probe
            text += (f"; probe: fp32 {1000 * p['fp32_s']:.0f} ms/step, bf16 {1000 * p['bf16_s']:.0f} ms/step, "
                     f"bf16 {p['speedup']:.2f}x")
        return text + ")"


_cpu_flags = cpu.flags     # the CPU's feature flags (None where /proc/cpuinfo does not say)


def _onednn_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def native_bf16() -> tuple[bool, str]:
    """(whether this CPU computes bf16 natively, why)."""
    if os.environ.get(ENV_NO_BF16, "").strip().lower() in ("0", "false", "no", "off"):
        return False, f"{ENV_NO_BF16}={os.environ[ENV_NO_BF16]} says this CPU has no native bf16"
    if not _onednn_bf16():
        return False, "oneDNN reports no bf16 support on this CPU"
    flags = _cpu_flags()
    if flags is not None and not flags & {"avx512_bf16", "amx_bf16"}:
        return False, "the CPU lacks avx512_bf16 / amx_bf16: bf16 would be emulated"
    found = sorted(flags & {"avx512_bf16", "amx_bf16"}) if flags else ["oneDNN bf16"]
    return True, " + ".join(found)


def synthetic_batch(spec: Any, device: torch.device, seed: int = 0,
                    channels_last: bool = False) -> dict[str, torch.Tensor]:
    """A batch of the recipe's shape for timing its steps (the probe, the benchmarks):
    smooth random images (low-frequency colour fields plus a little noise: the guided
    filter and SLIC see something image-like) in [-1, 1], N x 3 x px x px per batch key;
    five landmarks per image (eyes, nose, mouth corners) when the recipe wants them."""
    gen = torch.Generator().manual_seed(seed)
    n, px = spec.batch_size, spec.crop_px
    out: dict[str, torch.Tensor] = {}
    for key in spec.domains:
        low = torch.rand(n, 3, 6, 6, generator=gen) * 2 - 1
        x = torch.nn.functional.interpolate(low, size=(px, px), mode="bicubic", align_corners=False)
        x = (x + 0.05 * torch.randn(n, 3, px, px, generator=gen)).clamp(-1, 1).to(device)
        out[key] = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
        if getattr(spec, "with_landmarks", False):
            base = torch.tensor([[0.35, 0.40], [0.65, 0.40], [0.50, 0.55], [0.38, 0.72], [0.62, 0.72]])
            pts = (base + 0.02 * torch.randn(n, 5, 2, generator=gen)) * px
            out[f"{key}_five"] = pts.to(device)
    return out


def run_step(recipe: Any, batch: dict[str, torch.Tensor], i: int, device: torch.device) -> None:
    """Training step `i` of `recipe` on `batch`, finished: its losses read (and on CUDA the
    device synchronised), so that a clock around it times the whole step."""
    losses = recipe.train_step(batch, i)
    for v in losses.values():
        float(v)
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(build: Callable[[], Any], device: torch.device, precisions: tuple[str, ...] = ("fp32", "bf16"),
               rounds: int = PROBE_ROUNDS) -> dict[str, float]:
    """Seconds per training step of a throwaway recipe (`build()`, whose ctx this sets) in
    each precision (`<name>_s`), alternated, the fastest of `rounds` timed steps after one
    warm-up step each; `probe_s`: the time it all took. The random-number state is
    restored afterwards."""
    from toonlab.train import checkpoint as ckpt

    rng = ckpt.rng_state()
    recipe = build()
    try:
        batch = synthetic_batch(recipe.data, device)

        def step_in(name: str) -> Callable[[int], None]:
            def step(i: int) -> None:
                recipe.ctx.amp_dtype = torch.bfloat16 if name == "bf16" else None
                run_step(recipe, batch, i, device)
            return step

        t_all = time.perf_counter()
        best, _ = best_of({name: step_in(name) for name in precisions}, rounds)
        return {**{f"{name}_s": t for name, t in best.items()}, "probe_s": time.perf_counter() - t_all}
    finally:
        close = getattr(recipe, "close", None)
        if close is not None:
            close()
        ckpt.set_rng_state(rng)


def probe(build: Callable[[], Any], device: torch.device, rounds: int = PROBE_ROUNDS) -> dict[str, float]:
    """`time_steps` in fp32 and bf16, with `speedup` = fp32 / bf16 step time."""
    figures = time_steps(build, device, ("fp32", "bf16"), rounds)
    return {**figures, "speedup": figures["fp32_s"] / figures["bf16_s"]}


def cuda_precision(amp: bool | str, device: torch.device, stored: dict[str, Any] | None = None,
                   capability: tuple[int, int] | None = None) -> Precision:
    """`train.amp` on a CUDA device (its compute capability: `capability` or asked)."""
    setting = {True: "auto", False: "off"}.get(amp, amp) if isinstance(amp, bool) else amp
    if setting == "off":
        return Precision("fp32", "train.amp: off", device="cuda")
    if setting in ("bf16", "fp16"):
        return Precision(setting, f"train.amp: {setting}", device="cuda")
    if stored and stored.get("device") == "cuda" and stored.get("name") in ("fp32", "bf16", "fp16"):
        kept, first = "auto, kept from the run's start: ", str(stored.get("reason", ""))
        return Precision(stored["name"], first if first.startswith(kept) else kept + first, device="cuda")
    major, minor = capability or torch.cuda.get_device_capability(device)
    cc = f"compute capability {major}.{minor}"
    if major >= 8:
        return Precision("bf16", f"auto: native bf16 on {cc}", device="cuda")
    if major == 7:
        return Precision("fp16", f"auto: no bf16 units on {cc}: fp16 with loss scaling", device="cuda")
    return Precision("fp32", f"auto: {cc} has no tensor cores for bf16 or fp16", device="cuda")


def resolve(setting: str, device: torch.device, amp: bool | str, stored: dict[str, Any] | None,
            build: Callable[[], Any]) -> Precision:
    """The precision of a run. `stored`: the checkpoint's record when resuming on the same
    kind of device; `build`: makes a throwaway recipe for the probe."""
    if device.type == "cuda":
        return cuda_precision(amp, device, stored)
    if device.type != "cpu":
        return Precision("fp32", f"fp32 on {device.type}", device=device.type)
    if setting in ("fp32", "bf16", "fp16"):
        if setting == "bf16":
            native, why = native_bf16()
            if not native:
                log.warning("train.cpu_precision is bf16 but %s: it will likely be slower than fp32", why)
        return Precision(setting, f"train.cpu_precision: {setting}")
    native, why = native_bf16()
    if stored and stored.get("name") in ("fp32", "bf16") and stored.get("device", "cpu") == "cpu":
        if stored["name"] == "bf16" and not native:     # moved to a CPU without bf16
            log.info("train.cpu_precision auto: the run started in bf16, but %s: fp32 from here", why)
            return Precision("fp32", f"auto: started in bf16, but {why}")
        kept, first = "auto, kept from the run's start: ", str(stored.get("reason", ""))
        return Precision(stored["name"], first if first.startswith(kept) else kept + first,
                         dict(stored.get("probe") or {}))
    if not native:
        log.info("train.cpu_precision auto: fp32 (%s)", why)
        return Precision("fp32", f"auto: {why}")
    figures = probe(build, device)
    if figures["speedup"] >= PROBE_MIN_SPEEDUP:
        return Precision("bf16", f"auto: native bf16 ({why}), faster in the probe", figures)
    return Precision("fp32", f"auto: bf16 not at least {PROBE_MIN_SPEEDUP:g}x faster in the probe", figures)
