"""Training-step speed per model family: the plain eager fp32 path against the optimized
path (channels_last, bf16 autocast and fused Adam on CUDA, foreach Adam, optional
torch.compile), side by side in one run, with the peak memory.

    python benchmarks/train_step.py [--sizes 128 256] [--steps 3] [--compile]

On CUDA when present, on CPU otherwise. CycleGAN at batch 1 (as the paper); DCGAN at
batch 256 on GPU (the recipe) and 32 on CPU, with a G step every batch.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from toonlab.train.recipe import Context


def cyclegan_recipe(px: int, optimized: bool, device: torch.device, compile_: bool):
    from toonlab.models.cyclegan import CycleGANParams, build

    p = CycleGANParams.model_validate({"model": {"n_blocks": 9 if px >= 256 else 6},
                                       "data": {"crop_px": px, "batch_size": 1},
                                       "optim": {"steps_constant": 100, "steps_decay": 100}})
    cuda = device.type == "cuda"
    amp = torch.bfloat16 if (optimized and cuda) else None
    # channels_last pays off on GPUs; on CPU the trainer (and this benchmark) keep NCHW.
    ctx = Context(device=device, amp_dtype=amp, channels_last=optimized and cuda, total_steps=200)
    recipe = build(p, ctx)
    for k, net in recipe.nets.items():
        net.to(device)
        if ctx.channels_last:
            net.to(memory_format=torch.channels_last)
        if optimized:
            if compile_ and any(q.requires_grad for q in net.parameters()):
                recipe.nets[k] = torch.compile(net)
    if not optimized:  # the plain path: single-tensor Adam, as the reference implementation
        for opt in recipe.optimizers().values():
            for g in opt.param_groups:
                g["foreach"] = False
                g["fused"] = False
    return recipe, p.data.batch_size


def dcgan_recipe(px: int, optimized: bool, device: torch.device, compile_: bool):
    from toonlab.models.dcgan import DCGANParams, build

    batch = 256 if device.type == "cuda" else 32  # the recipe's 256 on GPU, smaller on CPU
    p = DCGANParams.model_validate({"data": {"batch_size": batch}, "optim": {"g_every": 1}})
    cuda = device.type == "cuda"
    ctx = Context(device=device, amp_dtype=torch.bfloat16 if (optimized and cuda) else None,
                  channels_last=optimized and cuda, total_steps=100)
    recipe = build(p, ctx)
    for k, net in recipe.nets.items():
        net.to(device)
        if ctx.channels_last:
            net.to(memory_format=torch.channels_last)
        if optimized and compile_:
            recipe.nets[k] = torch.compile(net)
    if not optimized:
        for opt in recipe.optimizers().values():
            for g in opt.param_groups:
                g["foreach"] = False
                g["fused"] = False
    return recipe, batch


MODELS = {"cyclegan": (cyclegan_recipe, ("A", "B"), "G_total"), "dcgan": (dcgan_recipe, ("real",), "G")}


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
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="CycleGAN crop sizes")
    ap.add_argument("--models", nargs="+", default=["cyclegan", "dcgan"], choices=sorted(MODELS))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also torch.compile the optimized path")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"train-step benchmark on {device} ({torch.cuda.get_device_name(0) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"{args.steps} measured steps after 2 warm-up steps")
    print(f"{'model':<10}{'px':>5}{'plain ms':>11}{'opt ms':>10}{'plain img/s':>13}{'opt img/s':>11}"
          f"{'speed-up':>10}{'peak MiB':>10}")
    runs = [(m, px) for m in args.models for px in (args.sizes if m == "cyclegan" else [96])]
    for model, px in runs:
        make, keys, loss = MODELS[model]
        results = []
        for optimized in (False, True):
            recipe, bs = make(px, optimized, device, args.compile)
            results.append(measure(recipe, bs, px, device, optimized, args.steps, keys, loss))
            del recipe
        (pm, _), (om, mem) = results
        print(f"{model:<10}{px:>5}{pm:>11.0f}{om:>10.0f}{1000 * bs / pm:>13.2f}{1000 * bs / om:>11.2f}"
              f"{pm / om:>9.2f}x{mem:>10.0f}  (batch {bs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
