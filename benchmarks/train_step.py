"""Training-step speed per model family: fp32 eager against the optimized paths, side by
side in one run, with the speed-up and the peak memory of each path.

    python benchmarks/train_step.py [--models ...] [--sets reference cpu] [--steps 3]
                                    [--max-seconds 60] [--rounds 1] [--compile]

Paths (each measured in its own process, so that its peak memory is its own):

* plain: fp32 eager, NCHW, single-tensor Adam (as the reference implementations);
  White-box computes its superpixels in the training process, serialised with the step.
* fp32: the trainer's fp32 path: multi-tensor (foreach) Adam, White-box superpixels in two
  worker processes overlapped with the step; on CUDA also channels_last and fused Adam.
* bf16: the same under bf16 autocast (`train.cpu_precision: bf16`, `train.amp` on CUDA).
* auto: what `train.cpu_precision: auto` picks on this machine by the trainer's rule
  (bf16 when the CPU has native bf16 and bf16 is >= 1.1x faster than fp32; the
  trainer's start-up probe times a few steps, here the longer measurement decides).
* --rounds N: the three paths measured N times in turn, the fastest of each kept (this
  shared 2-core VM drifts by 20-80% over minutes; alternating cancels most of it).
* --compile: torch.compile (inductor) on top of the auto path: the first step's extra time
  (compilation, cold: each compiled process gets an empty inductor cache) and after how
  many steps it pays that back, or "never". With one --paths entry the compiled path
  takes part in the rounds (fastest step kept; compile time of that same process).
* Loader: the samples per second the training data loader delivers at the row's size and
  batch (`--loader-workers` worker processes, default 2 as `train.loader_workers`; uint8
  crops resized, cropped and flipped in the workers, collated, copied to the device and
  made float there; synthetic packed crops of 256 px, 128 px for rows of 128 px and less),
  measured alone in its own process, beside what the step consumes: the measured auto
  step here (`step/s`), and an H100 at an assumed `--gpu-tflops` (default 346: 35% of
  its 989 TFLOP/s bf16 dense peak, a typical MFU for these convolutional GANs) doing the
  row's counted FLOPs (`H100/s`); `x H100` is the loader's share of that (3x leaves room).
* Distance to the limit: the FLOPs of one training step of each path are counted with
  torch's FlopCounterMode (convolutions and matrix products, forward and backward), and
  the table gives the achieved GFLOP/s of the plain and the auto path and their share of
  this machine's peak, measured in the same run: the best of a large square matmul
  (`PEAK_N`) in the path's precision with the same number of threads.

Configurations: `reference` = the papers' settings (CycleGAN 256 px 9 blocks batch 1,
DCGAN 96 px batch 256, U-GAT-IT light 256, Soft-AdaLIN 256 with the face-ID loss on,
White-box 256 px batch 16); `cpu` = the small CPU sizes (128 px, CycleGAN 6 blocks, DCGAN
batch 32, White-box batch 4). Pretrained weights (VGG, MobileFaceNet) are replaced by
random ones of the same architecture: the same arithmetic. Reference CPU step times
(2 threads): ../shared/reference-facts.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

from toonlab.train.compiling import payback_steps
from toonlab.train.precision import PROBE_MIN_SPEEDUP, native_bf16, run_step, synthetic_batch
from toonlab.train.recipe import Context
from toonlab.util.timing import timed

PEAK_N = 2048      # the peak: an N x N @ N x N matmul (2 N^3 FLOPs), best of a few


def peak_gflops(device: torch.device, dtype: torch.dtype, n: int = PEAK_N, rounds: int = 5) -> float:
    """This machine's peak GFLOP/s for matrix products in `dtype` (the same threads as the paths)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(rounds + 1):                      # the first is a warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def step_gflop(recipe, batch, i: int, device: torch.device) -> float:
    """GFLOPs of one training step (FlopCounterMode: convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run_step(recipe, batch, i, device)
    return counter.get_total_flops() / 1e9


# (model, px, batch, set, note)
CONFIGS = [
    ("cyclegan", 256, 1, "reference", "9 blocks"),
    ("cyclegan", 128, 1, "cpu", "6 blocks"),
    ("dcgan", 96, 256, "reference", "G every batch"),
    ("dcgan", 96, 32, "cpu", "G every batch"),
    ("ugatit_light", 256, 1, "reference", "ch 64"),
    ("ugatit_light", 128, 1, "cpu", "ch 64"),
    ("soft_adalin", 256, 1, "reference", "face-ID on"),
    ("soft_adalin", 128, 1, "cpu", "face-ID on"),
    ("whitebox", 256, 16, "reference", "SLIC 200"),
    ("whitebox", 128, 4, "cpu", "SLIC 200"),
]
MODELS = ["cyclegan", "dcgan", "ugatit_light", "soft_adalin", "whitebox"]


# ----------------------------------------------------------------------------- recipes


def _params(model: str, px: int, batch: int, plain: bool):
    if model == "cyclegan":
        from toonlab.models.cyclegan.params import CycleGANParams
        return CycleGANParams.model_validate({"model": {"n_blocks": 9 if px >= 256 else 6},
                                              "data": {"crop_px": px, "batch_size": batch},
                                              "optim": {"steps_constant": 100, "steps_decay": 100}})
    if model == "dcgan":
        from toonlab.models.dcgan.params import DCGANParams
        return DCGANParams.model_validate({"data": {"batch_size": batch}, "optim": {"g_every": 1, "steps": 100}})
    if model in ("ugatit_light", "soft_adalin"):
        from toonlab.models.ugatit.params import VARIANT_SETTINGS, UGATITParams
        if model == "soft_adalin":
            raw = {k: dict(v) for k, v in VARIANT_SETTINGS["soft_adalin"].items()}
            raw.pop("data")      # composite onto white needs packed mattes; the same cost
        else:
            raw = {"model": {"variant": "ugatit", "light": True, "ch": 64, "n_res": 4}}
        raw["data"] = {"crop_px": px, "batch_size": batch}
        raw["optim"] = {"steps": 1000}
        return UGATITParams.model_validate(raw)
    if model == "whitebox":
        from toonlab.models.whitebox.params import WhiteboxParams
        return WhiteboxParams.model_validate({
            "model": {"vgg_weights": "random"}, "data": {"crop_px": px, "batch_size": batch},
            "optim": {"steps": 1000}, "pretrain": {"run_dir": ""}, "loss": {"landmark": 0.0},
            "structure": {"workers": 0 if plain else 2}})
    raise SystemExit(f"unknown model {model}")


def _random_faceid() -> None:
    """The face-ID network with random weights (model_mobilefacenet.pth is not on every
    machine): the same cost as the pretrained one."""
    from toonlab.models.ugatit import faceid

    faceid.load_mobilefacenet = lambda path=None: faceid.MobileFaceNet().eval()


def build(model: str, px: int, batch: int, path: str, device: torch.device, compile_: bool):
    from toonlab import registry

    _random_faceid()
    plain = path == "plain"
    cuda = device.type == "cuda"
    ctx = Context(device=device, amp_dtype=torch.bfloat16 if path == "bf16" else None,
                  channels_last=cuda and not plain, total_steps=1000)
    family = registry.get({"ugatit_light": "ugatit", "soft_adalin": "ugatit"}.get(model, model))
    recipe = family.build(_params(model, px, batch, plain), ctx)
    for k, net in recipe.nets.items():
        net.to(device)
        if ctx.channels_last:
            net.to(memory_format=torch.channels_last)
        if compile_ and any(q.requires_grad for q in net.parameters()):
            recipe.nets[k] = torch.compile(net)
    if plain:   # single-tensor Adam, as the reference implementations
        for opt in recipe.optimizers().values():
            for g in opt.param_groups:
                g["foreach"] = False
                g["fused"] = False
    return recipe


# ----------------------------------------------------------------------------- one path, in its own process


def measure_loader(spec: dict) -> dict:
    """Samples per second the trainer's loader delivers for the row (see the docstring)."""
    import numpy as np

    from toonlab.train.data import BatchStream, ImageSource, UnpairedDataset, to_device

    device = torch.device(spec["device"])
    recipe = build(spec["model"], spec["px"], spec["batch"], "fp32", torch.device("cpu"), False)
    data = recipe.data
    close = getattr(recipe, "close", None)
    if close:
        close()
    del recipe
    size = 256 if max(data.crop_px, data.load_px or 0) > 128 else 128
    rgb = np.random.default_rng(0).integers(0, 256, (max(64, 2 * data.batch_size), size, size, 3), dtype=np.uint8)
    sources = {key: ImageSource(rgb) for key in data.domains}
    stream = BatchStream(UnpairedDataset(sources, data, 0), data.batch_size, spec["workers"],
                         pin_memory=device.type == "cuda", prefetch=2)
    try:
        for _ in range(2):                 # the workers start, the first batches come
            to_device(next(stream), device)
        n, t0 = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - t0 < spec["seconds"]:
            to_device(next(stream), device)
            n += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        return {"samples_per_s": n * data.batch_size / (time.perf_counter() - t0), "source_px": size}
    finally:
        stream.close()


def measure_one(spec: dict) -> dict:
    if spec["path"] == "loader":
        return measure_loader(spec)
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    recipe = build(spec["model"], spec["px"], spec["batch"], spec["path"], device, spec["compile"])
    batch = synthetic_batch(recipe.data, device, channels_last=recipe.ctx.channels_last)

    def step(i: int) -> float:
        return timed(run_step, recipe, batch, i, device)[0]

    first = step(0)                # warm-up: allocations, oneDNN kernels, compilation
    second = step(1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, t_all = [], time.perf_counter()
    while len(times) < spec["steps"] and (len(times) < 2 or time.perf_counter() - t_all < spec["max_seconds"]):
        times.append(step(2 + len(times)))
    times.sort()
    median = times[len(times) // 2]
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out = {"ms": 1000 * median, "first_ms": 1000 * first, "second_ms": 1000 * second, "peak_mib": peak,
           "steps": len(times)}
    if not spec["compile"]:           # FlopCounterMode and inductor do not mix; the same FLOPs
        out["gflop"] = step_gflop(recipe, batch, 2 + len(times), device)
    timings = getattr(recipe, "timings", None)
    if timings and timings.get("steps"):
        n = timings["steps"]
        out["superpixel_work_ms"] = 1000 * timings["superpixel_work_total_s"] / n
        out["superpixel_wait_ms"] = 1000 * timings["superpixel_wait_total_s"] / n
    close = getattr(recipe, "close", None)
    if close:
        close()
    return out


def _fastest(best: dict | None, new: dict) -> dict:
    """Of two measurements of one path: a result over an error, then the faster."""
    if best is None or ("error" in best and "error" not in new):
        return new
    if "error" in new:
        return best
    return new if new["ms"] < best["ms"] else best


def run_path(spec: dict) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
        if spec["compile"]:       # a cold compile, as a user's first run: inductor's cache would hide it
            env["TORCHINDUCTOR_CACHE_DIR"] = cache
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True,
                              env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
    return {"error": " | ".join(tail) or f"exit {proc.returncode}"}


# ----------------------------------------------------------------------------- the table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--sets", nargs="+", default=["reference", "cpu"], choices=["reference", "cpu"])
    ap.add_argument("--steps", type=int, default=3, help="measured steps per path (after 2 warm-up steps)")
    ap.add_argument("--max-seconds", type=float, default=60.0,
                    help="stop measuring a path after this long (at least 2 measured steps)")
    ap.add_argument("--rounds", type=int, default=1, help="measure the paths this many times in turn, keep the fastest")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile on the auto path")
    ap.add_argument("--paths", nargs="+", default=["plain", "fp32", "bf16"], choices=["plain", "fp32", "bf16"],
                    help="eager paths to measure (auto needs fp32 and bf16; with one of them only, auto is that one)")
    ap.add_argument("--loader-workers", type=int, default=2, help="loader worker processes (0: no loader column)")
    ap.add_argument("--loader-seconds", type=float, default=5.0, help="how long to time the loader per row")
    ap.add_argument("--gpu-tflops", type=float, default=346.0,
                    help="achieved TFLOP/s assumed for an H100 step (default: 35%% of its 989 bf16 dense peak)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure_one(json.loads(args.one))), flush=True)
        return 0

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    native, why = native_bf16() if device.type == "cpu" else (True, "CUDA")
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"train-step benchmark on {device} ({where}); native bf16: {'yes' if native else 'no'} ({why}); "
          f"median of up to {args.steps} steps after 2 warm-up steps; each path in its own process", flush=True)
    peaks = {"fp32": peak_gflops(device, torch.float32)}
    if "bf16" in args.paths:
        peaks["bf16"] = peak_gflops(device, torch.bfloat16)
    print("peak (a " + f"{PEAK_N} x {PEAK_N} matmul, same threads): "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()), flush=True)
    head = (f"{'model':<13}{'px':>4}{'batch':>6}  {'plain ms':>9}{'fp32 ms':>9}{'bf16 ms':>9}  {'auto':<5}"
            f"{'auto ms':>8}{'speed-up':>9}{'bf16/fp32':>10}  {'peak MiB plain/auto':>20}"
            f"  {'GFLOP/step':>10}{'GFLOP/s plain/auto':>19}{'% of peak':>13}")
    if args.loader_workers:
        head += f"  {'loader/s':>9}{'step/s':>8}{'H100/s':>9}{'x H100':>8}"
    if args.compile:
        head += f"  {'compiled ms':>11}{'compile s':>10}  pays back"
    print(head, flush=True)
    rows = [c for c in CONFIGS if c[0] in args.models and c[3] in args.sets]
    for model, px, batch, set_, note in rows:
        base = {"model": model, "px": px, "batch": batch, "device": str(device), "compile": False,
                "steps": args.steps, "max_seconds": args.max_seconds}
        res: dict[str, dict] = {}
        compiled: dict = {}
        for _ in range(max(1, args.rounds)):
            for path in args.paths:
                res[path] = _fastest(res.get(path), run_path({**base, "path": path}))
            if args.compile and len(args.paths) == 1:    # the compiled path in the same rounds
                compiled = _fastest(compiled or None, run_path({**base, "path": args.paths[0], "compile": True}))
        errors = {p: r["error"] for p, r in res.items() if "error" in r}
        if errors:
            print(f"{model:<13}{px:>4}{batch:>6}  failed: {errors}", flush=True)
            continue
        ms = {p: f"{res[p]['ms']:>9.0f}" if p in res else f"{'-':>9}" for p in ("plain", "fp32", "bf16")}
        if "fp32" in res and "bf16" in res:
            ratio = res["fp32"]["ms"] / res["bf16"]["ms"]
            auto = "bf16" if (native and ratio >= PROBE_MIN_SPEEDUP) else "fp32"
            ratio_s = f"{ratio:>9.2f}x"
        else:
            auto = "bf16" if "bf16" in res else "fp32"
            ratio_s = f"{'-':>10}"
        a = res[auto] if auto in res else res[next(iter(res))]
        speedup = f"{res['plain']['ms'] / a['ms']:>8.2f}x" if "plain" in res else f"{'-':>9}"
        plain_mib = f"{res['plain']['peak_mib']:>9.0f}" if "plain" in res else f"{'-':>9}"
        line = (f"{model:<13}{px:>4}{batch:>6}  {ms['plain']}{ms['fp32']}{ms['bf16']}  {auto:<5}{a['ms']:>8.0f}"
                f"{speedup}{ratio_s}  {plain_mib} /{a['peak_mib']:>8.0f}")
        pl = res.get("plain")
        if "gflop" in a:
            auto_rate = a["gflop"] / (a["ms"] / 1000)
            auto_share = f"{100 * auto_rate / peaks.get(auto, peaks['fp32']):>4.1f}%"
            if pl is not None and "gflop" in pl:      # plain is fp32: its share of the fp32 peak
                plain_rate = pl["gflop"] / (pl["ms"] / 1000)
                plain_s, plain_share = f"{plain_rate:>10.1f}", f"{100 * plain_rate / peaks['fp32']:>6.1f}%"
            else:
                plain_s, plain_share = f"{'-':>10}", f"{'-':>7}"
            line += f"  {a['gflop']:>10.1f}{plain_s} /{auto_rate:>7.1f}{plain_share} /{auto_share}"
        if args.loader_workers:
            ld = run_path({**base, "path": "loader", "workers": args.loader_workers, "seconds": args.loader_seconds})
            if "error" in ld:
                line += f"  loader failed: {ld['error'][:80]}"
            else:
                h100 = batch / (a["gflop"] / (args.gpu_tflops * 1000)) if "gflop" in a else float("nan")
                line += (f"  {ld['samples_per_s']:>9.0f}{batch / (a['ms'] / 1000):>8.1f}{h100:>9.0f}"
                         f"{ld['samples_per_s'] / h100:>7.2f}x")
        if args.compile:
            c = compiled or run_path({**base, "path": auto, "compile": True})
            if "error" in c:
                line += f"  compile failed: {c['error'][:80]}"
            else:
                compile_s = (c["first_ms"] + c["second_ms"] - 2 * c["ms"]) / 1000
                steps = payback_steps(a["ms"] / c["ms"], compile_s, a["ms"] / 1000)
                pays = f"after {steps:.0f} steps" if steps != float("inf") else "never (not faster)"
                line += f"  {c['ms']:>11.0f}{compile_s:>10.1f}  {pays}"
        notes = [note, set_]
        for path in dict.fromkeys(p for p in ("plain", auto) if p in res):
            if "superpixel_work_ms" in res[path]:
                notes.append(f"{path}: superpixels {res[path]['superpixel_work_ms']:.0f} ms of work, "
                             f"{res[path]['superpixel_wait_ms']:.0f} ms waited per step")
        print(f"{line}  ({'; '.join(notes)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
