"""Where training and inference run: the device from `runtime.device` (or a command's
--device), the torchrun process group, and the module under a DDP / torch.compile wrapper."""

from __future__ import annotations

import os

import torch

from toonlab.errors import UsageError


def resolve_device(requested: str, override: str | None, local_rank: int = 0) -> torch.device:
    want = override or requested
    if want == "cuda" and not torch.cuda.is_available():
        raise UsageError("CUDA was asked for (runtime.device: cuda) but no CUDA device is available here; "
                         "run with --device cpu (or set runtime.device: auto)")
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(f"cuda:{local_rank}") if want == "cuda" else torch.device("cpu")


def init_distributed() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return dist.get_rank(), world, local


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    module = getattr(module, "module", module)       # DDP
    return getattr(module, "_orig_mod", module)       # torch.compile

