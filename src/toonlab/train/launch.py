"""`toonlab train <family>`: a registered family's section of params.yaml (or the settings
given, e.g. an ablation variant's, resolved by the command line with `toonlab.ablations`) ->
the generic trainer, on the chosen device, under torchrun or not.
With `train.gpus` x `train.nodes` > 1, outside a torchrun worker, the command re-runs
itself under torchrun (`toonlab.train.torchrun`) and waits for it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from toonlab import registry
from toonlab.errors import ToonlabError, UsageError
from toonlab.log import get_logger
from toonlab.train import torchrun

log = get_logger(__name__)


def _resolve(params: Any, name: str, fparams: Any, steps: int | None,
             run_dir: str | None) -> tuple[Any, Any, str, int | None]:
    """(family, its params, run folder, steps) of `toonlab train name`: `fparams` and
    `run_dir` when given (a variant's), else the family's section and run folder."""
    if steps is not None and steps < 1:
        raise UsageError("--steps must be at least 1")
    family = registry.get(name)
    return (family, fparams if fparams is not None else family.section_of(params),
            run_dir or family.run_dir(params), steps)


def train_family(params: Any, name: str, *, fparams: Any = None, steps: int | None = None,
                 resume: str = "auto", run_dir: str | None = None, device: str | None = None,
                 restart: bool = False) -> dict[str, Any]:
    """Train family `name` (with its section of `params`, or `fparams`) into its run folder
    (default: the registry's) in this process (one rank of a torchrun job when started by
    torchrun); returns the last logged metrics."""
    from toonlab.train.device import init_distributed, resolve_device
    from toonlab.train.trainer import Trainer

    family, fparams, run_dir, steps = _resolve(params, name, fparams, steps, run_dir)
    rank, _, local_rank = init_distributed()
    trainer = Trainer(family, fparams, params.train, device=resolve_device(params.runtime.device, device, local_rank),
                      packed_dir=params.pack.out_dir, run_dir=Path(run_dir), steps=steps)
    metrics = trainer.run(resume=resume, restart=restart)
    if metrics and rank == 0:
        log.info("%s: %s", name, ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())))
    return metrics


def wants_torchrun(params: Any) -> bool:
    """True when `toonlab train` should re-run itself under torchrun: more than one
    process asked for (train.gpus x train.nodes) and not already a torchrun worker."""
    return params.train.gpus * params.train.nodes > 1 and not torchrun.in_worker()


def cli_argv(args: argparse.Namespace) -> list[str]:
    """The `toonlab` arguments of a parsed `toonlab train ...` (what each worker runs)."""
    out: list[str] = []
    if getattr(args, "params", None):
        out += ["--params", args.params]
    level = getattr(args, "log_level", None)
    out += {"DEBUG": ["-v"], "WARNING": ["-q"]}.get(level or "", [])
    if getattr(args, "debug", False):
        out.append("--debug")
    if getattr(args, "workers", None) is not None:   # a common option (Snakemake passes {threads})
        out += ["--workers", str(args.workers)]
    out += ["train", args.model]
    for flag, value in (("--device", args.device), ("--steps", args.steps), ("--run-dir", args.run_dir),
                        ("--variant", args.variant)):
        if value is not None:
            out += [flag, str(value)]
    if args.resume != "auto":
        out += ["--resume", args.resume]
    if args.restart:
        out.append("--restart")
    return out


def _worker_env(params: Any, device: str | None) -> dict[str, str]:
    """The workers' environment; checks that CUDA has a GPU for each process per node."""
    env = dict(os.environ)
    want = device or params.runtime.device
    gpus = params.train.gpus
    if want == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""   # gloo on CPU even on a GPU machine
        return env
    import torch

    n = torch.cuda.device_count()
    if want == "cuda" and n == 0:
        raise UsageError("CUDA was asked for (runtime.device: cuda) but no CUDA device is available here; "
                         "run with --device cpu (or set runtime.device: auto)")
    if 0 < n < gpus:
        raise UsageError(f"train.gpus is {gpus} (processes per node, one per GPU) but only {n} CUDA device(s) "
                         f"are visible here; set train.gpus: {n} or fewer, or run on CPU with --device cpu")
    return env


def train_under_torchrun(params: Any, name: str, argv: list[str], *, steps: int | None = None,
                         run_dir: str | None = None, device: str | None = None) -> int:
    """Run `toonlab <argv>` (a `toonlab train` command line) under torchrun with
    train.gpus processes per node on train.nodes nodes; 0 when it finished, else a
    ToonlabError with the run's exit status (75: stopped with a checkpoint, resumable)."""
    _, _, folder, _ = _resolve(params, name, None, steps, run_dir)
    t = params.train
    rdzv = torchrun.slurm_rendezvous(t.nodes, t.rdzv_port) if t.nodes > 1 else None
    env = _worker_env(params, device)
    cmd = torchrun.torchrun_argv(argv, gpus=t.gpus, nodes=t.nodes, rendezvous=rdzv, torchrun=torchrun.torchrun_exe())
    rc = torchrun.run_launcher(cmd, Path(folder), env)
    if rc == 0:
        return 0
    what = f"{t.nodes} node(s) x {t.gpus} process(es)"
    if rc == torchrun.EXIT_RESUMABLE:
        err = ToonlabError(f"{name}: the run in {folder} ({what}) stopped after writing a checkpoint; run the "
                           f"same command to continue (exit status {rc}: interrupted, resumable)")
    else:
        err = ToonlabError(f"{name}: the torchrun launch ({what}) ended with exit status {rc}; the workers' "
                           "messages are above")
    err.exit_code = rc
    raise err
