"""The arithmetic of a trained run's networks where they translate or generate images on
CPU (evaluate, cartoonize, serve): `runtime.cpu_precision` (auto | fp32 | bf16).

* `fp32` / `bf16`: as set (bf16 on a CPU without native bf16 is emulated: a warning).
* `auto` (default): bf16 only where the CPU has native bf16 (`toonlab.train.precision`)
  **and** a parity check on the run's own networks keeps bf16 within the tolerance below
  **and** bf16 is at least `PROBE_MIN_SPEEDUP` faster; otherwise fp32. The check runs the
  forward network (or the generator) on a fixed batch of image-like inputs (or noise) of
  the run's size in both precisions, twice each, alternated: outputs compared in 8-bit
  levels (1 level = 2/255 in [-1, 1]), times compared. Jobs of fewer than `MIN_IMAGES`
  images stay fp32 without the check (it would cost more than it saves).

Tolerance (bf16 against fp32, outputs as 8-bit images): mean |difference| at most
`PARITY_MEAN_LEVELS` and 99th percentile at most `PARITY_P99_LEVELS` levels. The floor
is about half a level: outputs near +-1 are rounded to bf16's 8-bit mantissa (1 level
apart) before they are cast back. Measured (mean / p99 levels): the demo's trained runs
0.08-0.42 / 0.3-1.9; reference-size networks with random weights: CycleGAN 256 px 9
blocks 1.47 / 6.8, U-GAT-IT light 0.67 / 2.4, Soft-AdaLIN 1.52 / 6.9, White-box 0.04 /
0.15, DCGAN 0.002 / 0.007. A network whose bf16 output drifts further stays fp32: e.g.
Soft-AdaLIN below 128 px (its hourglasses instance-normalise maps of 2 x 2 to 4 x 4
pixels, which amplifies bf16 rounding: 3.6 / 15 levels at 64 px).

Export stays fp32 whatever this says: its parity check verifies the exported fp32 graph
against the fp32 network at a tight tolerance, which bf16 rounding would blur.

The networks are wrapped (`Autocast`): their weights stay fp32; their outputs are fp32.
Evaluation's Inception and face networks keep their own fp32 (`toonlab.eval.inception`).
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from toonlab.log import get_logger
from toonlab.runs.inference import Inference
from toonlab.train.precision import PROBE_MIN_SPEEDUP, Precision, native_bf16, synthetic_batch
from toonlab.util.timing import best_of

log = get_logger(__name__)

PARITY_MEAN_LEVELS = 2.0      # mean |bf16 - fp32| in 8-bit levels
PARITY_P99_LEVELS = 8.0       # 99th percentile of |bf16 - fp32| in 8-bit levels
MIN_IMAGES = 8                # auto checks (and may pick bf16) only for jobs of at least this many images
CHECK_BATCH = 2


class Autocast(nn.Module):
    """`net` under CPU bf16 autocast; fp32 outputs."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.net(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            return out.float()
        if isinstance(out, (tuple, list)):
            return type(out)(o.float() if isinstance(o, torch.Tensor) else o for o in out)
        return out


def _in_bf16(inf: Inference) -> Inference:
    wrap = {k: Autocast(getattr(inf, k)).eval() for k in ("forward", "backward", "generate")
            if getattr(inf, k) is not None}
    return dataclasses.replace(inf, **wrap)


def _check_inputs(inf: Inference) -> tuple[nn.Module, torch.Tensor]:
    """The network to check and its fixed input: image-like images, or noise for a generator."""
    if inf.forward is not None:
        spec = SimpleNamespace(batch_size=CHECK_BATCH, crop_px=inf.px, domains={"x": ""})
        return inf.forward, synthetic_batch(spec, torch.device("cpu"))["x"]
    return inf.generate, torch.randn(CHECK_BATCH, inf.nz, 1, 1, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def parity(inf: Inference, rounds: int = 2) -> dict[str, float]:
    """fp32 against bf16 on the run's networks: 8-bit level differences and step times."""
    net, x = _check_inputs(inf)
    fast = Autocast(net)
    best, out = best_of({"fp32": lambda _: net(x), "bf16": lambda _: fast(x)}, rounds)
    diff = ((out["bf16"] - out["fp32"]).abs() * 127.5).flatten()
    return {"mean_levels": float(diff.mean()), "p99_levels": float(torch.quantile(diff[:2**24].float(), 0.99)),
            "fp32_s": best["fp32"], "bf16_s": best["bf16"], "speedup": best["fp32"] / best["bf16"]}


def choose(inf: Inference, setting: str, device: torch.device | str, images: int | None = None,
           ) -> tuple[Inference, Precision]:
    """The run's inference in the precision `setting` asks for (see the module text);
    `images`: how many images the job translates (None: many, e.g. a server)."""
    device = torch.device(device)
    if device.type != "cpu":
        return inf, Precision("fp32", f"inference on {device.type} in fp32", device=device.type)
    if setting == "fp32":
        return inf, Precision("fp32", "runtime.cpu_precision: fp32")
    native, why = native_bf16()
    if setting == "bf16":
        if not native:
            log.warning("runtime.cpu_precision is bf16 but %s: it will likely be slower than fp32", why)
        return _in_bf16(inf), Precision("bf16", "runtime.cpu_precision: bf16")
    if not native:
        return inf, Precision("fp32", f"auto: {why}")
    if images is not None and images < MIN_IMAGES:
        return inf, Precision("fp32", f"auto: {images} image(s), too few to be worth the bf16 parity check")
    figures = parity(inf)
    within = figures["mean_levels"] <= PARITY_MEAN_LEVELS and figures["p99_levels"] <= PARITY_P99_LEVELS
    shown = (f"bf16 off fp32 by {figures['mean_levels']:.2f} levels mean, {figures['p99_levels']:.2f} at the "
             f"99th percentile; {figures['speedup']:.2f}x")
    if not within:
        return inf, Precision("fp32", f"auto: outside the bf16 tolerance ({PARITY_MEAN_LEVELS:g} mean, "
                                      f"{PARITY_P99_LEVELS:g} p99): {shown}", figures)
    if figures["speedup"] < PROBE_MIN_SPEEDUP:
        return inf, Precision("fp32", f"auto: bf16 not at least {PROBE_MIN_SPEEDUP:g}x faster: {shown}", figures)
    return _in_bf16(inf), Precision("bf16", f"auto: native bf16 ({why}), within tolerance: {shown}", figures)
