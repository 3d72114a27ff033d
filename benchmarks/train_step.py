"""Training-step speed per model family: the plain eager fp32 path against the optimized
path (channels_last, bf16 autocast and fused Adam on CUDA, foreach Adam, optional
torch.compile), side by side in one run, with the peak memory.

    python benchmarks/train_step.py [--models ...] [--sizes 128 256] [--steps 3] [--compile]

On CUDA when present, on CPU otherwise. CycleGAN and U-GAT-IT (light, Soft-AdaLIN) at
batch 1 (as the papers); DCGAN at batch 256 on GPU (the recipe) and 32 on CPU, with a G
step every batch; White-box at batch 16 on GPU and 4 on CPU, with the superpixel cost
(work and time the step waited for it) printed beside the speed. Reference CPU step
times (2 threads, batch 1): ../shared/reference-facts.md.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from toonlab.train.recipe import Context


def _prepare(recipe, ctx: Context, optimized: bool, device: torch.device, compile_: bool):
    for k, net in recipe.nets.items():
        net.to(device)
        if ctx.channels_last:
            net.to(memory_format=torch.channels_last)
        if optimized and compile_ and any(q.requires_grad for q in net.parameters()):
            recipe.nets[k] = torch.compile(net)
    if not optimized:  # the plain path: single-tensor Adam, as the reference implementations
        for opt in recipe.optimizers().values():
            for g in opt.param_groups:
                g["foreach"] = False
                g["fused"] = False
    return recipe


def _ctx(device: torch.device, optimized: bool, total: int) -> Context:
    cuda = device.type == "cuda"
    # channels_last and bf16 pay off on GPUs; on CPU the trainer (and this benchmark) keep NCHW fp32.
    return Context(device=device, amp_dtype=torch.bfloat16 if (optimized and cuda) else None,
                   channels_last=optimized and cuda, total_steps=total)


def cyclegan_recipe(px: int, optimized: bool, device: torch.device, compile_: bool):
    from toonlab.models.cyclegan.model import build
    from toonlab.models.cyclegan.params import CycleGANParams

    p = CycleGANParams.model_validate({"model": {"n_blocks": 9 if px >= 256 else 6},
                                       "data": {"crop_px": px, "batch_size": 1},
                                       "optim": {"steps_constant": 100, "steps_decay": 100}})
    ctx = _ctx(device, optimized, 200)
    return _prepare(build(p, ctx), ctx, optimized, device, compile_), p.data.batch_size


def dcgan_recipe(px: int, optimized: bool, device: torch.device, compile_: bool):
    from toonlab.models.dcgan.model import build
    from toonlab.models.dcgan.params import DCGANParams

    batch = 256 if device.type == "cuda" else 32  # the recipe's 256 on GPU, smaller on CPU
    p = DCGANParams.model_validate({"data": {"batch_size": batch}, "optim": {"g_every": 1}})
    ctx = _ctx(device, optimized, 100)
    return _prepare(build(p, ctx), ctx, optimized, device, compile_), batch


def _ugatit(variant: str):
    def make(px: int, optimized: bool, device: torch.device, compile_: bool):
        from toonlab.models.ugatit.model import build
        from toonlab.models.ugatit.params import UGATITParams

        # Reference settings: light ch 64 (U-GAT-IT) / light ch 32 with hourglass blocks
        # (Soft-AdaLIN). The face-ID network (1.2 M frozen parameters) needs weights that
        # are not on every machine: it is left out here (weight 0).
        ch = 64 if variant == "ugatit" else 32
        p = UGATITParams.model_validate({"model": {"variant": variant, "light": True, "ch": ch, "n_res": 4},
                                         "data": {"crop_px": px, "batch_size": 1},
                                         "optim": {"steps": 1000}})
        ctx = _ctx(device, optimized, 1000)
        return _prepare(build(p, ctx), ctx, optimized, device, compile_), 1
    return make


def whitebox_recipe(px: int, optimized: bool, device: torch.device, compile_: bool):
    """Reference sizes (ch 32, 4 blocks, SLIC 200 segments). Plain: superpixels computed
    in the training process, serialised with the step; optimized: two worker processes
    overlapped with the step. Batch 16 on GPU (the reference), 4 on CPU."""
    from toonlab.models.whitebox.model import build
    from toonlab.models.whitebox.params import WhiteboxParams

    batch = 16 if device.type == "cuda" else 4
    p = WhiteboxParams.model_validate({
        "model": {"vgg_weights": "random"},   # same cost as ImageNet weights
        "data": {"crop_px": px, "batch_size": batch}, "optim": {"steps": 1000},
        "pretrain": {"run_dir": ""}, "structure": {"workers": 2 if optimized else 0}})
    ctx = _ctx(device, optimized, 1000)
    return _prepare(build(p, ctx), ctx, optimized, device, compile_), batch


MODELS = {"cyclegan": (cyclegan_recipe, ("A", "B"), "G_total", None),
          "dcgan": (dcgan_recipe, ("real",), "G", [96]),
          "ugatit_light": (_ugatit("ugatit"), ("A", "B"), "G_total", None),
          "soft_adalin": (_ugatit("soft_adalin"), ("A", "B"), "G_total", None),
          "whitebox": (whitebox_recipe, ("photo", "cartoon"), "G_total", None)}


def measure(recipe, batch_size: int, px: int, device: torch.device, optimized: bool, steps: int,
            keys=("A", "B"), loss="G_total") -> tuple[float, float]:
    gen = torch.Generator().manual_seed(0)
    batch = {k: (torch.rand(batch_size, 3, px, px, generator=gen) * 2 - 1).to(device) for k in keys}
    if optimized and device.type == "cuda":
        batch = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
    for i in range(2):  # warm-up (allocations, autotuning, compilation)
        recipe.train_step(batch, i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(steps):
        losses = recipe.train_step(batch, i + 2)
    float(losses[loss])  # one sync at the end
    if device.type == "cuda":
        torch.cuda.synchronize()
    ms = 1000 * (time.perf_counter() - t0) / steps
    mem = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return ms, mem


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="crop sizes (all but DCGAN)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also torch.compile the optimized path")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"train-step benchmark on {device} ({torch.cuda.get_device_name(0) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"{args.steps} measured steps after 2 warm-up steps")
    print(f"{'model':<13}{'px':>5}{'plain ms':>11}{'opt ms':>10}{'plain img/s':>13}{'opt img/s':>11}"
          f"{'speed-up':>10}{'peak MiB':>10}")
    runs = [(m, px) for m in args.models for px in (MODELS[m][3] or args.sizes)]
    for model, px in runs:
        make, keys, loss, _ = MODELS[model]
        results, notes = [], []
        for optimized in (False, True):
            recipe, bs = make(px, optimized, device, args.compile)
            results.append(measure(recipe, bs, px, device, optimized, args.steps, keys, loss))
            timings = getattr(recipe, "timings", None)
            if timings and timings.get("steps"):
                n = timings["steps"]
                notes.append(f"{'opt' if optimized else 'plain'}: superpixels {1000 * timings['superpixel_work_total_s'] / n:.0f} ms "
                             f"of work, {1000 * timings['superpixel_wait_total_s'] / n:.0f} ms waited per step")
            close = getattr(recipe, "close", None)
            if close:
                close()
            del recipe
        (pm, _), (om, mem) = results
        print(f"{model:<13}{px:>5}{pm:>11.0f}{om:>10.0f}{1000 * bs / pm:>13.2f}{1000 * bs / om:>11.2f}"
              f"{pm / om:>9.2f}x{mem:>10.0f}  (batch {bs}){'; ' + '; '.join(notes) if notes else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
