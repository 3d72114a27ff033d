"""GPU acceptance in one command: every model family's training step at its reference
size, then the system checks, one PASS / FAIL table.

    python benchmarks/gpu_check.py [--smoke] [--device auto|cuda|cpu] [--steps N] [--out results.json]
    make gpu-check [ARGS="--smoke"]

Family rows (one per entry of `toonlab.registry.FAMILIES`): the recipe is built at
the family's reference size (its `reference` preset, else its params defaults, with the
changes in `REFERENCE`; `--smoke`: tiny sizes, `SMOKE`) and its
`train_step` run on a fixed synthetic batch on the device (no data loading: the step
only), as the trainer runs it: bf16 autocast and channels_last on CUDA (fp32 NCHW on
CPU), fused Adam, LR schedulers stepped. The first step(s) run under
`torch.utils.flop_counter.FlopCounterMode` (FLOPs per step, also the first warm-up),
then a few warm-up steps, then up to --steps timed steps (stopped early after
--family-s seconds). Columns: images/s (batch size x steps / s, as the trainer logs it),
step ms, peak MiB (`torch.cuda.max_memory_allocated` over the timed steps; CUDA only),
MFU (FLOPs per step / step time / the GPU's dense peak in the row's precision,
`PEAK_BF16_TFLOPS` / `PEAK_FP16_TFLOPS`; n/a on CPU or an unknown GPU). A family passes
when every returned loss stayed finite.

"fp16" rows (CUDA by default, `--fp16 on|off`): the same step in float16 autocast with
dynamic loss scaling (what `train.amp: auto` picks on a 7.x GPU such as a V100 or T4), the
optimizer steps skipped on overflow counted in the row, MFU against the fp16 peak.

"+compile" rows (CUDA by default, `--compile on|off`): the same measurement with every
trainable network wrapped in `torch.compile`, in a child process (a compiler crash or a
slow compile cannot take the run down), after the system checks and only while the time
budget (--budget-s) lasts; the row says how much faster or slower than eager it is.

System rows:
  resume     `toonlab train cyclegan` on a synthetic image-folder dataset, SIGKILLed once
             its first checkpoint exists, resumed (the checkpoints before the kill must stay
             untouched: it continued, not started over); final weights against an
             uninterrupted run: bit-identical on CPU; on CUDA (non-deterministic kernels) the distance
             must stay within 5x that between two uninterrupted runs.
  torchrun   `torchrun --standalone --nproc_per_node=1 -m toonlab train ...`, and a DDP
             probe under torchrun: process group (NCCL on CUDA, gloo on CPU), all_reduce,
             three DDP-wrapped CycleGAN steps. (The trainer creates no process group at
             world size 1, so the probe is what exercises NCCL.)
  onnx       `toonlab.apps.export.export_run` of a CycleGAN run at reference size, then
             onnxruntime with the CUDAExecutionProvider (CPU provider with --smoke) against
             PyTorch fp32 on the same device (TF32 off on both sides) on random and real
             images: max abs difference <= `PARITY_TOL` (1e-3).
  serve      `toonlab serve --device cuda` (cpu with --smoke) on a free loopback port
             answering one real multipart upload (skimage's astronaut) with a cartoon.

Exit status 1 when any row is FAIL (SKIP rows, e.g. a compile the budget left no time
for, do not fail). Without a CUDA device and without --smoke (as `make bench` runs
every benchmark), it says so and runs the CPU smoke check instead.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import follow, multipart, url_in

from toonlab import registry
from toonlab.train.precision import synthetic_batch
from toonlab.train.recipe import Context
from toonlab.util import keys

MARK = "GPU_CHECK_RESULT "   # a child process's result line: MARK + JSON

# Dense (no sparsity) bf16 tensor-core peak, TFLOPS, by a piece of torch.cuda.get_device_name();
# the first match wins (so the specific names come first). --peak-tflops overrides.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.0), ("H200", 989.0), ("H100", 989.0),
    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("RTX 4090", 165.0),
)

# Dense fp16 tensor-core peak, TFLOPS (the same as bf16 on Ampere and later; 7.x GPUs have fp16 only).
PEAK_FP16_TFLOPS: tuple[tuple[str, float], ...] = (
    *PEAK_BF16_TFLOPS, ("V100", 125.0), ("T4", 65.0),
)

# Superpixel processes for White-box on the GPU machine: the step waits for SLIC otherwise
# (about 70 ms of CPU per 256 px image, 16 images a step).
WHITEBOX_WORKERS = max(2, min(14, (os.cpu_count() or 4) - 2))

# The reference size of a family: its `reference` preset (`toonlab.models.<family>.presets`,
# the paper's settings; see ../shared/reference-facts.md) where it has one, else its params
# class's defaults (also the papers'), with these changes for a machine without
# downloaded weights and for a step that does not wait on the CPU ...
REFERENCE: dict[str, dict[str, Any]] = {
    # cyclegan: ngf/ndf 64, 9 residual blocks, 256 px, batch 1, LSGAN, pool 50
    # dcgan: ngf/ndf 64, 96 px, batch 256, D every batch, G every 5th
    # ugatit: light, ch 64, 4 residual blocks, 256 px, global D 7 layers, local D 5, batch 1
    # landmarker: ch 32, 2 blocks, stride 4, 128 px, batch 16 per domain
    # whitebox(_pretrain): ch 32, 4 residual blocks, 256 px, batch 16, SLIC 200 segments;
    # a random VGG19 (the same cost as ImageNet's weights), no pretrained generator.
    "whitebox_pretrain": {"model": {"vgg_weights": "random"}, "pretrain": {"run_dir": ""}},
    "whitebox": {"model": {"vgg_weights": "random"}, "pretrain": {"run_dir": ""},
                 "loss": {"landmark": 0.0}, "structure": {"workers": WHITEBOX_WORKERS}},
    "ugatit": {"loss": {"faceid_weight": 0.0}},   # the face-ID net needs downloaded weights
}
# ... and tiny ones for --smoke (a minute on 2 CPU cores, everything included).
SMOKE: dict[str, dict[str, Any]] = {
    "cyclegan": {"model": {"ngf": 8, "ndf": 8, "n_blocks": 1, "n_layers_d": 2},
                 "data": {"crop_px": 32, "batch_size": 1}, "optim": {"steps_constant": 10, "steps_decay": 10}},
    "dcgan": {"model": {"nz": 16, "ngf": 8, "ndf": 8}, "data": {"batch_size": 4}},
    "ugatit": {"model": {"ch": 8, "n_res": 1, "n_dis_global": 4, "n_dis_local": 3},
               "data": {"crop_px": 32}, "optim": {"steps": 100}},
    "landmarker": {"model": {"ch": 8, "n_blocks": 1}, "data": {"crop_px": 32, "batch_size": 2},
                   "optim": {"steps": 100}},
    "whitebox_pretrain": {"model": {"ch": 8, "n_res": 1, "vgg_weights": "random"}, "pretrain": {"run_dir": ""},
                          "data": {"crop_px": 32, "batch_size": 2}},
    "whitebox": {"model": {"ch": 8, "n_res": 1, "d_ch": 8, "vgg_weights": "random"}, "pretrain": {"run_dir": ""},
                 "data": {"crop_px": 32, "batch_size": 2}, "structure": {"segments": 10, "workers": 1},
                 "optim": {"steps": 100}},
}
# The CycleGAN of the resume / torchrun training runs (three to four whole runs): small.
# onnx / serve use the family-row size (reference, or SMOKE with --smoke).
TRAIN_CYCLEGAN = {
    "full": {"model": {"ngf": 32, "ndf": 32, "n_blocks": 3, "n_layers_d": 3},
             "data": {"crop_px": 64, "load_px": 72, "batch_size": 4},
             "optim": {"steps_constant": 30, "steps_decay": 30}},
    "smoke": {"model": {"ngf": 8, "ndf": 8, "n_blocks": 1, "n_layers_d": 2},
              "data": {"crop_px": 32, "load_px": 36, "batch_size": 2},
              "optim": {"steps_constant": 10, "steps_decay": 10}},
}
CKPT_EVERY = {"full": 10, "smoke": 5}
SYSTEM_CHECKS = ("resume", "torchrun", "onnx", "serve")


class CheckFailed(Exception):
    """A check's failure, with the reason to print."""


@dataclass
class Row:
    check: str
    kind: str                      # family | compile | system
    status: str                    # PASS | FAIL | SKIP
    reason: str = ""
    images_per_s: float | None = None
    step_ms: float | None = None
    peak_mib: float | None = None
    mfu: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- helpers


def peak_tflops(override: float | None, amp: str = "bf16") -> float | None:
    if override:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    table = PEAK_FP16_TFLOPS if amp == "fp16" else PEAK_BF16_TFLOPS
    return next((tf for key, tf in table if key.lower() in name.lower()), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")[:300]


def _tail(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[-400:]


def _env(smoke: bool) -> dict[str, str]:
    env = {**os.environ, "TOONLAB_PROGRESS": "0", "NO_ALBUMENTATIONS_UPDATE": "1", "DVC_NO_ANALYTICS": "1",
           "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if smoke:
        env["OMP_NUM_THREADS"] = "1"   # tiny tensors on a few shared cores
    return env


def reference_preset(fam: registry.Family) -> dict[str, Any] | None:
    """The family's `reference` preset (its package's presets.py), None without one."""
    name = f"{fam.params_module.rpartition('.')[0]}.presets"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return None
    preset = getattr(module, "PRESETS", {}).get("reference")
    return copy.deepcopy(preset) if isinstance(preset, dict) else None


def family_params(fam: registry.Family, smoke: bool) -> tuple[Any, str]:
    """(the family's params section for the check, where its sizes come from)."""
    if smoke:
        if fam.name not in SMOKE:
            raise CheckFailed(f"no smoke size for family {fam.name}: add it to SMOKE in benchmarks/gpu_check.py")
        return fam.params_cls.model_validate(SMOKE[fam.name]), "smoke sizes"
    preset = reference_preset(fam)
    values = keys.merge(preset or {}, REFERENCE.get(fam.name, {}))
    return fam.params_cls.model_validate(values), ("reference preset" if preset is not None
                                                   else "params defaults")
def _period(fam: registry.Family, params: Any) -> int:
    """Steps after which a family's step pattern repeats (DCGAN: D every d_every, G every g_every)."""
    optim = getattr(params, "optim", None)
    d, g = getattr(optim, "d_every", 1), getattr(optim, "g_every", 1)
    return math.lcm(int(d), int(g)) if isinstance(d, int) and isinstance(g, int) else 1


# ----------------------------------------------------------------------------- one family's step


def _finite_all(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([torch.isfinite(v.detach().float()).all() for v in losses.values()]).all()


def measure_family(name: str, device: torch.device, smoke: bool, steps: int, max_s: float,
                   compile_: bool = False, backend: str = "inductor", flops: float | None = None,
                   amp: str = "bf16") -> dict[str, Any]:
    """Build `name`'s recipe, count the FLOPs of a step (eager only), warm up, time up to
    `steps` steps (at least a few, at most about `max_s` seconds). Raises CheckFailed."""
    fam = registry.get(name)
    params, note = family_params(fam, smoke)
    cuda = device.type == "cuda"
    warm = (2 if smoke else 5) if not compile_ else (3 if smoke else 6)
    period = _period(fam, params)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp] if cuda or amp == "fp16" else None
    ctx = Context(device=device, amp_dtype=dtype, channels_last=cuda,
                  total_steps=max(1000, 10 * (steps + warm + period)))
    torch.manual_seed(0)
    t_build = time.perf_counter()
    recipe = fam.build(params, ctx)
    try:
        n_params = 0
        for key, net in list(recipe.nets.items()):
            net.to(device)
            if cuda:
                net.to(memory_format=torch.channels_last)
            trainable = any(p.requires_grad for p in net.parameters())
            n_params += sum(p.numel() for p in net.parameters() if p.requires_grad)
            if compile_ and trainable:
                recipe.nets[key] = torch.compile(net, backend=backend)
        build_s = time.perf_counter() - t_build
        spec = recipe.data
        batch = synthetic_batch(spec, device, channels_last=cuda)
        step = 0

        def one() -> dict[str, torch.Tensor]:
            nonlocal step
            losses = recipe.train_step(batch, step)
            stepper = getattr(recipe, "steps", None)
            if stepper is not None:
                stepper.finish()      # the loss scale (fp16), as the trainer's loop does
            for s in recipe.schedulers().values():
                s.step()
            step += 1
            return losses

        finite = torch.ones((), dtype=torch.bool, device=device)
        if flops is None and not compile_:
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            with counter:
                for _ in range(period):
                    finite &= _finite_all(one())
            flops = counter.get_total_flops() / period
        t_warm = time.perf_counter()
        for _ in range(warm * period if period > 1 else warm):
            finite &= _finite_all(one())
        _sync(device)
        warm_s = time.perf_counter() - t_warm
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        timings = getattr(recipe, "timings", None)
        waited0 = timings.get("superpixel_wait_total_s", 0.0) if timings else 0.0
        min_steps = max(period, 2 if smoke else 10)
        n, losses = 0, {}
        t0 = time.perf_counter()
        while n < max(steps, min_steps):
            losses = one()
            finite &= _finite_all(losses)
            n += 1
            if n >= min_steps and n % period == 0 and time.perf_counter() - t0 > max_s:
                break
        ok = bool(finite)   # syncs
        _sync(device)
        elapsed = time.perf_counter() - t0
        out = {
            "family": name, "steps": n, "batch": spec.batch_size, "px": spec.crop_px,
            "step_ms": 1000 * elapsed / n, "images_per_s": spec.batch_size * n / elapsed,
            "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
            "flops_per_step": flops, "finite": ok, "losses": {k: float(v) for k, v in losses.items()},
            "trainable_params": n_params, "build_s": build_s, "warmup_s": warm_s, "note": note,
            "compiled": compile_, "amp": amp if dtype is not None else "fp32",
        }
        stepper = getattr(recipe, "steps", None)
        if stepper is not None and stepper.scaler.is_enabled():
            out["skipped_steps"] = sum(stepper.skipped.values())
            out["loss_scale"] = stepper.scale
        if timings and timings.get("steps"):
            out["superpixel_wait_ms"] = 1000 * (timings["superpixel_wait_total_s"] - waited0) / n
        return out
    finally:
        close = getattr(recipe, "close", None)
        if close:
            close()


def _release(device: torch.device) -> None:
    """Give back what the last family held (its recipe is gone with measure_family's frame)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def family_row(name: str, device: torch.device, args, peak: float | None, amp: str = "bf16") -> Row:
    check = name if amp == "bf16" else f"{name} {amp}"
    try:
        res = measure_family(name, device, args.smoke, args.steps, args.family_s, amp=amp)
    except Exception as exc:  # noqa: BLE001 - a family's failure is its row, never the whole run's
        if args.verbose:
            traceback.print_exc()
        return Row(check, "family", "FAIL", _first_line(exc))
    finally:
        _release(device)
    return _family_result_row(check, "family", res, peak, device)


def _family_result_row(check: str, kind: str, res: dict[str, Any], peak: float | None,
                       device: torch.device) -> Row:
    mfu = None
    if peak and res.get("flops_per_step"):
        mfu = res["flops_per_step"] / (res["step_ms"] / 1000) / (peak * 1e12)
    amp = res.get("amp", "fp32")
    what = ({"bf16": "bf16 autocast", "fp16": "fp16 autocast + loss scaling"}.get(amp, "fp32")
            + (" + channels_last" if device.type == "cuda" else " NCHW")
            + (" + torch.compile" if res.get("compiled") else ""))
    reason = f"{what}, batch {res['batch']}, {res['px']} px, {res['steps']} steps"
    if res.get("skipped_steps") is not None:
        reason += f", {res['skipped_steps']} overflowing steps skipped (scale {res['loss_scale']:g})"
    if res.get("superpixel_wait_ms") is not None:
        reason += f", waited {res['superpixel_wait_ms']:.0f} ms/step for superpixels"
    if res.get("note"):
        reason += f" ({res['note']})"
    if not res["finite"]:
        bad = [k for k, v in res["losses"].items() if not math.isfinite(v)]
        return Row(check, kind, "FAIL", f"non-finite loss ({', '.join(bad) or 'during warm-up'}); " + reason,
                   res["images_per_s"], res["step_ms"], res["peak_mib"], mfu, res)
    return Row(check, kind, "PASS", "losses finite; " + reason, res["images_per_s"], res["step_ms"],
               res["peak_mib"], mfu, res)


# ----------------------------------------------------------------------------- child processes


def _child_cmd(kind: str, args, *extra: str) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--device", args.device]
    if args.smoke:
        cmd.append("--smoke")
    return cmd + list(extra)


def _parse_child(out: str) -> dict[str, Any]:
    for line in reversed(out.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise CheckFailed(f"no result from the child process: {_tail(out) or 'no output'}")


def run_child(args) -> int:
    device = torch.device(args.device)
    if args.child == "compile":
        try:
            res = measure_family(args.family, device, args.smoke, args.steps, args.family_s, compile_=True,
                                 backend=args.compile_backend, flops=args.flops)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            res = {"error": _first_line(exc)}
        print(MARK + json.dumps(res), flush=True)
        return 0
    if args.child == "ddp":
        print(MARK + json.dumps(ddp_probe(args)), flush=True)
        return 0
    raise SystemExit(f"unknown --child {args.child}")


def compile_row(name: str, eager: Row, args, peak: float | None, timeout: float) -> Row:
    check = f"{name}+compile"
    # Half the eager timing window: a mean step time needs no more, and the budget is for compiling.
    extra = ["--family", name, "--steps", str(args.steps), "--family-s", str(args.family_s / 2),
             "--compile-backend", args.compile_backend]
    if eager.extra.get("flops_per_step"):
        extra += ["--flops", repr(float(eager.extra["flops_per_step"]))]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(_child_cmd("compile", args, *extra), check=False, capture_output=True, text=True,
                              timeout=timeout, env=_env(args.smoke))
    except subprocess.TimeoutExpired:
        return Row(check, "compile", "SKIP", f"compile + timing took over {timeout:.0f} s (time budget); "
                   "raise --budget-s to measure it")
    try:
        res = _parse_child(proc.stdout + proc.stderr)
    except CheckFailed as exc:
        return Row(check, "compile", "FAIL", f"child exited {proc.returncode}: {exc}")
    if "error" in res:
        return Row(check, "compile", "FAIL", f"torch.compile: {res['error']}")
    row = _family_result_row(check, "compile", res, peak, torch.device(args.device))
    speedup = eager.step_ms / row.step_ms if eager.step_ms and row.step_ms else None
    row.extra.update(speedup=speedup, child_s=time.perf_counter() - t0)
    if speedup is not None:
        verdict = "helps" if speedup >= 1.05 else ("no gain" if speedup >= 0.95 else "slower")
        row.reason = (f"{speedup:.2f}x eager ({verdict}); compile + warm-up {res['warmup_s']:.0f} s; "
                      + row.reason)
    return row


def compile_figures(rows: list[Row]) -> list[str]:
    """The measured figures that would let `train.compile: auto` compile on this device (it
    stays eager where nothing is measured): per family, the point a family's `figures.py`
    would hold (`registry.CompileGain`: precision, px, speed-up, compile seconds) and after
    how many steps of this step time compiling pays back (`train.compiling`: auto compiles
    when that is within PAYBACK_MAX_STEPS and half the steps left)."""
    from toonlab.train.compiling import PAYBACK_MAX_STEPS, payback_steps

    out = []
    for row in rows:
        if row.kind != "compile" or row.status != "PASS" or not row.extra.get("speedup"):
            continue
        ex = row.extra
        compile_s = float(ex.get("warmup_s") or 0.0)
        steps = payback_steps(ex["speedup"], compile_s, ex["step_ms"] * ex["speedup"] / 1000)
        pays = f"pays back after {steps:.0f} steps" if steps != float("inf") else "never pays back"
        turn = "auto would compile" if steps <= PAYBACK_MAX_STEPS else "auto stays eager"
        out.append(f"  figures: {row.check.split('+')[0]}: ({ex.get('amp', 'fp32')!r}, {ex['px']}, "
                   f"{ex['speedup']:.2f}, {compile_s:.1f})  # {pays}: {turn}")
    return out


# ----------------------------------------------------------------------------- system checks: data and runs


def write_folders(root: Path, n: int = 16, px: int = 80) -> dict[str, str]:
    """Two folders of smooth synthetic PNG images (A dark, B their inversion)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folders = {}
    for key in ("A", "B"):
        folder = root / "data" / key
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            small = rng.uniform(0, 0.5, (4, 4, 3))
            img = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((px, px), Image.BICUBIC))
            if key == "B":
                img = 255 - img
            Image.fromarray(img).save(folder / f"{i:03d}.png")
        folders[key] = str(folder)
    return folders


def write_train_params(root: Path, device: str, mode: str) -> Path:
    import yaml

    params = {
        "runtime": {"device": device},
        "train": {"source": "folders", "folders": write_folders(root), "out_dir": str(root / "models"),
                  "log_every": CKPT_EVERY[mode], "ckpt_every": CKPT_EVERY[mode], "keep_last": 100,
                  "sample_every": 0, "loader_workers": 0 if mode == "smoke" else 2, "seed": 0},
        "cyclegan": TRAIN_CYCLEGAN[mode],
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _train_cmd(params: Path, run_dir: Path, device: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "toonlab", "--params", str(params), "train", "cyclegan", "--run-dir",
            str(run_dir), "--device", device, *extra]


def _run(cmd: list[str], cwd: Path, timeout: float, env: dict[str, str], what: str) -> str:
    try:
        proc = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"{what} did not finish in {timeout:.0f} s") from None
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise CheckFailed(f"{what} exited {proc.returncode}: {_tail(out)}")
    return out


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from toonlab.train import checkpoint as ckpt

    state = ckpt.load(path)
    return {f"{net}.{k}": v for net, sd in state["nets"].items() for k, v in sd.items() if v.is_floating_point()}


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(L2 norm, max abs) of the difference of two weight sets."""
    if a.keys() != b.keys():
        raise CheckFailed("the two runs' checkpoints hold different tensors")
    sq, mx = 0.0, 0.0
    for k, va in a.items():
        d = (va.double() - b[k].double()).abs()
        sq += float((d * d).sum())
        mx = max(mx, float(d.max()) if d.numel() else 0.0)
    return math.sqrt(sq), mx


def check_resume(work: Path, args, timeout: float) -> Row:
    mode = "smoke" if args.smoke else "full"
    params = work / "params.yaml"
    total = sum(TRAIN_CYCLEGAN[mode]["optim"].values())
    env, final = _env(args.smoke), f"step-{total:08d}.pt"
    t0 = time.perf_counter()

    def left() -> float:
        return max(20.0, timeout - (time.perf_counter() - t0))

    _run(_train_cmd(params, work / "straight", args.device), work, left(), env, "the uninterrupted run")
    # SIGKILL as soon as the first checkpoint exists (written atomically: it is complete).
    ckpts = work / "killed" / "checkpoints"
    log = (work / "killed.log").open("w")
    proc = subprocess.Popen(_train_cmd(params, work / "killed", args.device), cwd=work, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + left()
        while not any(ckpts.glob("step-*.pt")):
            if proc.poll() is not None:
                raise CheckFailed(f"the run to kill exited {proc.returncode} before its first checkpoint: "
                                  f"{_tail((work / 'killed.log').read_text())}")
            if time.time() > deadline:
                raise CheckFailed("no checkpoint appeared in time")
            time.sleep(0.01)
        if proc.poll() is not None:
            raise CheckFailed("the run finished before it could be killed: make TRAIN_CYCLEGAN longer")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    from toonlab.train import checkpoint as ckpt

    before = {path.name: path.stat().st_mtime_ns for _, path in ckpt.list_checkpoints(ckpts)}
    killed_at = ckpt.list_checkpoints(ckpts)[-1][0]
    if killed_at >= total:
        raise CheckFailed(f"killed after the last step ({killed_at}): nothing left to resume")
    out = _run(_train_cmd(params, work / "killed", args.device), work, left(), env, "the resumed run")
    # Evidence that it continued rather than started over: the checkpoints written before the
    # kill are still there, unrewritten (the log line is the second witness).
    after = {name: (ckpts / name).stat().st_mtime_ns for name in before if (ckpts / name).exists()}
    if after != before:
        raise CheckFailed(f"the second run rewrote or removed the checkpoints up to step {killed_at}: it started "
                          f"over instead of resuming ({_tail(out)})")
    m = re.search(r"resumed from \S+ at step (\d+)", out)
    resumed_at = int(m.group(1)) if m else None
    if resumed_at is not None and resumed_at != killed_at:
        raise CheckFailed(f"resumed at step {resumed_at}, but the last checkpoint is step {killed_at}")
    a = _weights(work / "straight" / "checkpoints" / final)
    b = _weights(work / "killed" / "checkpoints" / final)
    d_resume, max_resume = _distance(a, b)
    extra: dict[str, Any] = {"killed_after_step": killed_at, "resumed_at": resumed_at, "total_steps": total,
                             "earlier_checkpoints_untouched": True, "l2_diff": d_resume, "max_abs_diff": max_resume}
    where = f"killed after step {killed_at}, resumed from it, final step {total}"
    if args.device == "cpu":
        extra["noise_l2"] = 0.0
        if d_resume != 0.0:
            return Row("resume", "system", "FAIL", f"{where}: weights differ from the uninterrupted run "
                       f"(max abs {max_resume:.3g}; CPU runs are deterministic)", extra=extra)
        return Row("resume", "system", "PASS", f"{where}: weights bit-identical to the uninterrupted run",
                   extra=extra)
    # CUDA kernels (reflection-pad and cuDNN backward) are not deterministic: measure the noise.
    _run(_train_cmd(params, work / "straight2", args.device), work, left(), env, "the second uninterrupted run")
    d_noise, max_noise = _distance(a, _weights(work / "straight2" / "checkpoints" / final))
    extra.update(noise_l2=d_noise, noise_max_abs=max_noise)
    scale = math.sqrt(sum(float((v.double() ** 2).sum()) for v in a.values()))
    limit = max(5 * d_noise, 1e-7 * scale)
    extra["limit_l2"] = limit
    verdict = "PASS" if d_resume <= limit else "FAIL"
    return Row("resume", "system", verdict, f"{where}: L2 distance to the uninterrupted run {d_resume:.3g} "
               f"(two uninterrupted runs: {d_noise:.3g}; limit {limit:.3g}); max abs {max_resume:.3g}",
               extra=extra)


def check_torchrun(work: Path, args, timeout: float) -> Row:
    params = work / "params.yaml"
    env = _env(args.smoke)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    t0 = time.perf_counter()
    steps = 4
    cmd = [torchrun, "--standalone", "--nproc_per_node=1", "-m", "toonlab", "--params", str(params), "train",
           "cyclegan", "--run-dir", str(work / "torchrun"), "--device", args.device, "--steps", str(steps)]
    _run(cmd, work, timeout, env, "torchrun -m toonlab train")
    from toonlab.train import checkpoint as ckpt

    latest = ckpt.latest(work / "torchrun" / "checkpoints")
    if latest is None or latest.name != f"step-{steps:08d}.pt":
        raise CheckFailed(f"torchrun -m toonlab train left no step-{steps} checkpoint (latest: {latest})")
    left = max(20.0, timeout - (time.perf_counter() - t0))
    probe_cmd = [torchrun, "--standalone", "--nproc_per_node=1", str(Path(__file__).resolve()), "--child", "ddp",
                 "--device", args.device] + (["--smoke"] if args.smoke else [])
    try:
        proc = subprocess.run(probe_cmd, check=False, cwd=work, capture_output=True, text=True, timeout=left, env=env)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"the DDP probe under torchrun did not finish in {left:.0f} s") from None
    res = _parse_child(proc.stdout + proc.stderr)
    want = "nccl" if args.device == "cuda" else "gloo"
    extra = {"train_steps": steps, **res}
    if "error" in res:
        return Row("torchrun", "system", "FAIL", f"DDP probe: {res['error']}", extra=extra)
    problems = []
    if res.get("backend") != want:
        problems.append(f"backend {res.get('backend')}, expected {want}")
    if not res.get("all_reduce_ok"):
        problems.append("all_reduce gave a wrong sum")
    if not res.get("finite"):
        problems.append("non-finite DDP losses")
    if proc.returncode != 0:
        problems.append(f"torchrun exited {proc.returncode}")
    if problems:
        return Row("torchrun", "system", "FAIL", "; ".join(problems), extra=extra)
    return Row("torchrun", "system", "PASS",
               f"toonlab train under torchrun to step {steps}; {want} process group, all_reduce and "
               f"{res['steps']} DDP-wrapped CycleGAN steps", extra=extra)


def ddp_probe(args) -> dict[str, Any]:
    """Run under torchrun: process group, all_reduce, a few DDP-wrapped CycleGAN steps."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    cuda = args.device == "cuda"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(local)
    res: dict[str, Any] = {}
    try:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        world = dist.get_world_size()
        res.update(backend=str(dist.get_backend()), world_size=world)
        t = torch.ones(4, device=device)
        dist.all_reduce(t)
        res["all_reduce_ok"] = bool(torch.all(t == world))
        fam = registry.get("cyclegan")
        params = fam.params_cls.model_validate(TRAIN_CYCLEGAN["smoke" if args.smoke else "full"])
        ctx = Context(device=device, amp_dtype=torch.bfloat16 if cuda else None, channels_last=cuda,
                      total_steps=100, distributed=True)
        torch.manual_seed(0)
        recipe = fam.build(params, ctx)
        for key, net in list(recipe.nets.items()):
            net.to(device)
            if cuda:
                net.to(memory_format=torch.channels_last)
            if any(p.requires_grad for p in net.parameters()):
                recipe.nets[key] = DDP(net, device_ids=[local] if cuda else None, broadcast_buffers=False)
        batch = synthetic_batch(recipe.data, device, channels_last=cuda)
        finite = torch.ones((), dtype=torch.bool, device=device)
        n = 3
        for i in range(n):
            finite &= _finite_all(recipe.train_step(batch, i))
        res.update(finite=bool(finite), steps=n)
        dist.barrier()
    except Exception as exc:  # noqa: BLE001 - reported as the row's reason
        traceback.print_exc()
        res["error"] = _first_line(exc)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return res


def write_reference_run(work: Path, smoke: bool) -> Path:
    """models/cyclegan: one checkpoint of a CycleGAN (reference size; tiny with --smoke)
    with trained-looking weights (the init plus noise)."""
    from toonlab.train import checkpoint as ckpt

    run = work / "models" / "cyclegan"
    if (run / "checkpoints").is_dir():
        return run
    fam = registry.get("cyclegan")
    params, _ = family_params(fam, smoke)
    torch.manual_seed(0)
    recipe = fam.build(params, Context(device=torch.device("cpu"), amp_dtype=None, channels_last=False,
                                       total_steps=100))
    gen = torch.Generator().manual_seed(1)
    nets = {}
    for key in ("G_A", "G_B"):
        nets[key] = {k: (v + 0.02 * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v
                     for k, v in recipe.nets[key].state_dict().items()}
    ckpt.save(run / "checkpoints" / "step-00000001.pt",
              {"family": "cyclegan", "step": 1, "config": {"params": params.model_dump(mode="json")}, "nets": nets})
    (run / "summary.json").write_text(json.dumps({"family": "cyclegan", "steps": 1}))
    return run


@contextlib.contextmanager
def _no_tf32():
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def check_onnx(work: Path, args, timeout: float) -> Row:
    import onnxruntime as ort

    from toonlab.apps.export import PARITY_TOL, default_parity_images, export_run
    from toonlab.runs.load import load_run

    cuda = args.device == "cuda"
    want = "CUDAExecutionProvider" if cuda else "CPUExecutionProvider"
    available = ort.get_available_providers()
    if want not in available:
        raise CheckFailed(f"onnxruntime {ort.__version__} here has no {want} (available: {', '.join(available)}); "
                          "install onnxruntime-gpu in place of onnxruntime")
    run = write_reference_run(work, args.smoke)
    t0 = time.perf_counter()
    manifest = export_run(run, work / "export")   # exports and checks parity on the CPU provider
    export_s = time.perf_counter() - t0
    device = torch.device(args.device)
    _, inf = load_run(run, device)
    px = inf.px
    gen = torch.Generator().manual_seed(0)
    inputs = {"random": torch.rand(2, 3, px, px, generator=gen) * 2 - 1, "images": default_parity_images(px)}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    providers: list[Any] = ([("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"] if cuda
                            else ["CPUExecutionProvider"])
    if cuda and hasattr(ort, "preload_dlls"):
        with contextlib.suppress(Exception):   # CUDA / cuDNN from the nvidia-* wheels torch uses
            ort.preload_dlls()
    parity: dict[str, dict[str, float]] = {}
    rates = []
    for role, fname in manifest["files"].items():
        net = getattr(inf, role)
        try:
            sess = ort.InferenceSession(str(work / "export" / fname), sess_options=opts, providers=providers)
        except Exception:  # noqa: BLE001 - an onnxruntime without the use_tf32 option: its defaults
            providers = [want, "CPUExecutionProvider"] if cuda else providers
            sess = ort.InferenceSession(str(work / "export" / fname), sess_options=opts, providers=providers)
        if sess.get_providers()[0] != want:
            raise CheckFailed(f"{fname}: onnxruntime runs it on {sess.get_providers()[0]}, not {want}")
        iname, oname = sess.get_inputs()[0].name, sess.get_outputs()[0].name
        parity[fname] = {}
        for what, x in inputs.items():
            with torch.no_grad(), _no_tf32():
                ref = net(x.to(device)).float().cpu()
            got = torch.from_numpy(np.asarray(sess.run([oname], {iname: x.numpy()})[0], np.float32))
            if got.shape != ref.shape:
                raise CheckFailed(f"{fname}: onnxruntime gives {tuple(got.shape)}, PyTorch {tuple(ref.shape)}")
            parity[fname][what] = float((got - ref).abs().max())
        x = inputs["images"].numpy()
        sess.run([oname], {iname: x})
        t = time.perf_counter()
        reps = 3 if args.smoke else 10
        for _ in range(reps):
            sess.run([oname], {iname: x})
        rates.append(reps * x.shape[0] / (time.perf_counter() - t))
    worst = max(v for d in parity.values() for v in d.values())
    extra = {"provider": want, "parity": parity, "tol": PARITY_TOL, "px": px, "export_s": export_s,
             "files": manifest["files"], "cpu_parity": manifest["parity"]}
    text = (f"{want} vs PyTorch fp32 on {args.device} ({px} px, TF32 off): max abs diff {worst:.2g} "
            f"(tolerance {PARITY_TOL:g}) over {', '.join(parity)}")
    images_per_s = min(rates) if rates else None
    if not worst <= PARITY_TOL:
        return Row("onnx", "system", "FAIL", text, images_per_s, extra=extra)
    return Row("onnx", "system", "PASS", text + "; images/s: onnxruntime, batch 2", images_per_s, extra=extra)





def check_serve(work: Path, args, timeout: float) -> Row:
    import base64

    import yaml
    from PIL import Image

    from toonlab.data.demo import package_file

    photo = package_file("skimage", "data/astronaut.png")
    if photo is None:
        raise CheckFailed("skimage's data/astronaut.png is missing (the upload)")
    write_reference_run(work, args.smoke)
    params = work / "serve.yaml"
    params.write_text(yaml.safe_dump({"runtime": {"device": args.device},
                                      "train": {"out_dir": str(work / "models")}}))
    cmd = [sys.executable, "-m", "toonlab", "--params", str(params), "serve", "--run", "cyclegan", "--host",
           "127.0.0.1", "--port", "0", "--device", args.device]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=work, env=_env(args.smoke), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    ready, lines = follow(proc, "serving")
    try:
        if not ready.wait(timeout) or proc.poll() is not None:
            raise CheckFailed(f"toonlab serve did not start: {_tail(''.join(lines)) or 'no output'}")
        start_s = time.perf_counter() - t0
        url = url_in(lines, "serving")
        if url is None:
            raise CheckFailed(f"no URL in the serve output: {_tail(''.join(lines))}")
        data = photo.read_bytes()
        body, ctype = multipart({"run": "cyclegan", "faces": "largest", "paste_back": "1"},
                                 {"photo": ("astronaut.png", data)})
        req = urllib.request.Request(url + "api/cartoonize", data=body, method="POST",
                                     headers={"Content-Type": ctype})
        t1 = time.perf_counter()
        left = max(10.0, timeout - (t1 - t0))
        try:
            with urllib.request.urlopen(req, timeout=left) as r:
                status, res = r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            status, res = e.code, json.loads(e.read() or b"{}")
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise CheckFailed(f"the upload got no answer: {e}") from None
        answer_ms = 1000 * (time.perf_counter() - t1)
        if status != 200:
            raise CheckFailed(f"the upload was answered {status}: {res.get('error', res)}")
        b64 = res["cartoon"].split(",", 1)[1]
        cartoon = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
        original = np.asarray(Image.open(photo).convert("RGB"))
        if res.get("faces", 0) < 1 or cartoon.shape != original.shape:
            raise CheckFailed(f"unexpected answer: {res.get('faces')} faces, cartoon {cartoon.shape}, "
                              f"photo {original.shape}")
        changed = float(np.any(cartoon != original, axis=-1).mean())
        extra = {"status": status, "faces": res["faces"], "answer_ms": answer_ms, "start_s": start_s,
                 "changed_fraction": changed, "server_ms": res.get("ms")}
        if not 0.0 < changed < 1.0:
            return Row("serve", "system", "FAIL", f"the pasted-back cartoon changed {changed:.1%} of the photo",
                       extra=extra)
        return Row("serve", "system", "PASS", f"--device {args.device}: 200 for one {original.shape[1]}x"
                   f"{original.shape[0]} upload in {answer_ms:.0f} ms ({res['faces']} face, {changed:.0%} of "
                   f"the pixels changed); started in {start_s:.1f} s", extra=extra)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ----------------------------------------------------------------------------- the table


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[Row]) -> None:
    print(f"{'check':<24}{'status':<7}{'images/s':>10}{'step ms':>10}{'peak MiB':>10}{'MFU':>7}  reason")
    for r in rows:
        mfu = "n/a" if r.mfu is None and r.kind != "system" and r.status == "PASS" else _fmt(
            None if r.mfu is None else 100 * r.mfu, ".1f")
        mfu = mfu + "%" if r.mfu is not None else mfu
        print(f"{r.check:<24}{r.status:<7}{_fmt(r.images_per_s, '.1f'):>10}{_fmt(r.step_ms, '.1f'):>10}"
              f"{_fmt(r.peak_mib, '.0f'):>10}{mfu:>7}  {r.reason}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and few steps (the CPU check the tests run)")
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per family (default 300; smoke 3)")
    ap.add_argument("--family-s", type=float, default=None,
                    help="stop timing a family after this many seconds (default 15; smoke 5)")
    ap.add_argument("--families", nargs="+", default=None, help="only these families (default: every one)")
    ap.add_argument("--checks", nargs="*", default=None, choices=list(SYSTEM_CHECKS),
                    help="only these system checks (default: all; none with an empty list)")
    ap.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                    help="+compile rows: auto = on CUDA only")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    ap.add_argument("--compile-families", nargs="+", default=None,
                    help="+compile rows for these families only (default: every measured family)")
    ap.add_argument("--budget-s", type=float, default=450,
                    help="no compile row starts once this much time has passed (default 450 s)")
    ap.add_argument("--fp16", choices=["auto", "on", "off"], default="auto",
                    help="fp16 (loss-scaled) family rows: auto = on CUDA only")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak (default: by name)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    ap.add_argument("--verbose", action="store_true", help="tracebacks of failures")
    # internal: child processes
    ap.add_argument("--child", choices=["compile", "ddp"], help=argparse.SUPPRESS)
    ap.add_argument("--family", help=argparse.SUPPRESS)
    ap.add_argument("--flops", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.device == "auto":
        if torch.cuda.is_available():
            args.device = "cuda"
        else:
            args.device = "cpu"
            if not args.smoke:
                print("no CUDA device: running the CPU smoke check instead (--smoke --device cpu)")
                args.smoke = True
    elif args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda, but no CUDA device is available here (try --smoke --device cpu)",
              file=sys.stderr)
        return 2
    if args.steps is None:
        args.steps = 3 if args.smoke else 300
    if args.family_s is None:
        args.family_s = 5.0 if args.smoke else 15.0
    if args.smoke:
        torch.set_num_threads(1)   # tiny tensors: one thread is fastest, and steady on shared cores
    if args.child:
        return run_child(args)

    os.environ.setdefault("TOONLAB_PROGRESS", "0")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    t_start = time.perf_counter()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    peak = peak_tflops(args.peak_tflops) if cuda else None
    names = args.families or [f.name for f in registry.FAMILIES]
    unknown = [n for n in names if n not in registry.families()]
    if unknown:
        print(f"gpu_check: no family {', '.join(unknown)} (registered: {', '.join(registry.families())})",
              file=sys.stderr)
        return 2
    checks = list(SYSTEM_CHECKS) if args.checks is None else args.checks
    do_compile = args.compile == "on" or (args.compile == "auto" and cuda)
    where = (f"{torch.cuda.get_device_name(0)}, bf16 peak {f'{peak:g} TFLOPS' if peak else 'unknown (MFU n/a)'}"
             if cuda else f"CPU, {torch.get_num_threads()} threads")
    print(f"gpu_check ({'smoke, tiny sizes' if args.smoke else 'reference sizes'}) on {where}; torch "
          f"{torch.__version__}; up to {args.steps} timed steps or {args.family_s:g} s per family; "
          f"compile {'on' if do_compile else 'off'}", flush=True)
    if not cuda and not args.smoke:
        print("  (reference sizes on the CPU: minutes per family and per check; --smoke is the CPU mode)")

    rows: list[Row] = []
    do_fp16 = args.fp16 == "on" or (args.fp16 == "auto" and cuda)
    for name in names:
        rows.append(family_row(name, device, args, peak))
        print(f"  {rows[-1].check}: {rows[-1].status} ({time.perf_counter() - t_start:.0f} s)", flush=True)
    if do_fp16:
        peak16 = peak_tflops(args.peak_tflops, "fp16") if cuda else None
        for name in names:
            rows.append(family_row(name, device, args, peak16, amp="fp16"))
            print(f"  {rows[-1].check}: {rows[-1].status} ({time.perf_counter() - t_start:.0f} s)", flush=True)

    runners = {"resume": check_resume, "torchrun": check_torchrun, "onnx": check_onnx, "serve": check_serve}
    caps = {"resume": 180.0, "torchrun": 120.0, "onnx": 120.0, "serve": 120.0}   # hung-check limits
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        if any(c in checks for c in ("resume", "torchrun")):
            write_train_params(work, args.device, "smoke" if args.smoke else "full")
        for name in checks:
            t0 = time.perf_counter()
            try:
                row = runners[name](work, args, caps[name])
            except Exception as exc:  # noqa: BLE001 - a failed check is its row
                if args.verbose:
                    traceback.print_exc()
                row = Row(name, "system", "FAIL", str(exc) if isinstance(exc, CheckFailed) else _first_line(exc))
            row.extra["seconds"] = time.perf_counter() - t0
            rows.append(row)
            print(f"  {name}: {row.status} ({time.perf_counter() - t_start:.0f} s)", flush=True)

    if do_compile:
        for name in [n for n in names if args.compile_families is None or n in args.compile_families]:
            eager = next(r for r in rows if r.check == name)
            left = args.budget_s - (time.perf_counter() - t_start)
            if eager.status != "PASS":
                rows.append(Row(f"{name}+compile", "compile", "SKIP", "the eager step failed"))
            elif left < 45:
                rows.append(Row(f"{name}+compile", "compile", "SKIP",
                                f"time budget spent (--budget-s {args.budget_s:g})"))
            else:
                rows.append(compile_row(name, eager, args, peak, timeout=min(240.0, left)))
            print(f"  {rows[-1].check}: {rows[-1].status} ({time.perf_counter() - t_start:.0f} s)", flush=True)

    wall = time.perf_counter() - t_start
    print()
    print_table(rows)
    helped = [f"{r.check.split('+')[0]} {r.extra['speedup']:.2f}x" for r in rows
              if r.kind == "compile" and r.status == "PASS" and (r.extra.get("speedup") or 0) >= 1.05]
    if do_compile:
        print(f"torch.compile helps: {', '.join(helped) if helped else 'no family measured'}")
        for line in compile_figures(rows):
            print(line)
    failed = [r.check for r in rows if r.status == "FAIL"]
    print(f"{len(rows) - len(failed)}/{len(rows)} rows without FAIL in {wall:.0f} s"
          + (f"; FAIL: {', '.join(failed)}" if failed else ""))
    if args.out:
        out = {"mode": "smoke" if args.smoke else "reference", "device": args.device, "device_name": where,
               "torch": torch.__version__, "peak_bf16_tflops": peak, "wall_s": wall, "ok": not failed,
               "families": names, "checks": checks, "rows": [asdict(r) for r in rows]}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
