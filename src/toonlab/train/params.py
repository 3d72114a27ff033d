"""The params.yaml section of the generic trainer (`train`). Light: pydantic only."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from toonlab.schema import Section


class TrainParams(Section):
    out_dir: str = "models"                 # runs go to <out_dir>/<family>/
    log_every: Annotated[int, Field(ge=1)] = 50
    sample_every: Annotated[int, Field(ge=0)] = 500   # 0: only at the end
    ckpt_every: Annotated[int, Field(ge=1)] = 1000
    keep_last: Annotated[int, Field(ge=1)] = 3
    # What `toonlab train` does with a run folder trained with other settings (other than
    # its length): refuse (exit 2, naming the keys) or restart (move the run aside to
    # <run>.replaced-<time>/ and start a new one). Nothing is ever deleted.
    on_change: Literal["refuse", "restart"] = "refuse"
    best_metric: str = ""                    # a loss name, lower is better; "": the family's default
    # On CUDA: auto (bf16 on compute capability 8.0 and up, fp16 with loss scaling on 7.x,
    # fp32 before), bf16, fp16 or off (true / false: auto / off); toonlab.train.precision.
    amp: bool | Literal["auto", "bf16", "fp16", "off"] = "auto"
    # On CPU: auto (bf16 where the CPU has native bf16 and a probe at start finds it faster),
    # fp32, bf16 or fp16 (with loss scaling); a resumed auto run keeps its first choice.
    cpu_precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    clip_grad: Annotated[float, Field(ge=0)] = 0.0   # clip each optimizer's gradient norm to this (0: off)
    # Gradient accumulation: each optimizer step takes the mean gradient of this many
    # batches of data.batch_size (per process), so a step sees accumulate x batch_size x
    # processes images while memory holds one batch (toonlab.train.optimize).
    accumulate: Annotated[int, Field(ge=1, le=1024)] = 1
    # EMA of the generators' weights (toonlab.train.ema): decay per step, e.g. 0.999 (0: off);
    # samples and the run's inference (evaluate, cartoonize, serve, export) use the average.
    ema: Annotated[float, Field(ge=0, lt=1)] = 0.0
    channels_last: bool = True
    # torch.compile (inductor) the trainable networks: true, false, or auto (on CPU, only
    # where it is measured to pay back within a few hundred steps: toonlab.train.compiling).
    compile: bool | Literal["auto"] = "auto"
    loader_workers: Annotated[int, Field(ge=0, le=64)] = 2
    # Tasks (chunks of >= 16 samples in whole batches) each loader worker keeps ready ahead of
    # the step; the workers live for the whole run.
    loader_prefetch: Annotated[int, Field(ge=1, le=64)] = 2
    seed: Annotated[int, Field(ge=0)] = 0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.0   # colour jitter strength (albumentations)
    source: Literal["packed", "folders"] = "packed"
    folders: dict[str, str] = {}             # with source: folders, batch key -> folder, e.g. {A: ..., B: ...}
    split: Literal["train", "val", "test"] = "train"
    grid_images: Annotated[int, Field(ge=1, le=64)] = 4
    # Scale-out: with gpus x nodes > 1, `toonlab train` re-runs itself under torchrun
    # (`toonlab.train.torchrun`): gpus processes per node (one per GPU on CUDA, gloo
    # processes on CPU); nodes > 1 only inside a Slurm allocation (srun + torchrun, c10d
    # rendezvous on the allocation's first node at rdzv_port).
    gpus: Annotated[int, Field(ge=1, le=1024)] = 1
    nodes: Annotated[int, Field(ge=1, le=4096)] = 1
    rdzv_port: Annotated[int, Field(ge=1, le=65535)] = 29500

