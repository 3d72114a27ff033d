"""The generic trainer. It knows nothing of a particular model: a family gives it a
`Recipe` (networks, optimizers, schedulers, one training step, samples) and it runs
the loop: data, device and precision, DDP, checkpoints and resume, logging, guards.

- Checkpoints every `train.ckpt_every` steps, at the end and on SIGINT/SIGTERM,
  written atomically, holding only tensors and plain data; the last `keep_last` plus
  `best.pt` (by `train.best_metric`, lower is better) are kept. Resume restores step,
  networks, optimizers, schedulers, the recipe's extra state (image pools), the RNG
  states and the data position, so an interrupted run continues exactly.
- Logging through DVCLive (`Live(dir, save_dvc_exp=False, dvcyaml=None)`): every
  loss, learning rates, step time and images/s at log steps; sample grids.
- Speed: channels_last, bf16 autocast on CUDA (fp32 on CPU), pinned memory, optional
  torch.compile, no host syncs in the hot loop except at log / checkpoint steps.
- Scale-out: under `torchrun`, DistributedDataParallel (NCCL on GPU, gloo on CPU),
  one data shard per rank, only rank 0 writes.
- Guards: a NaN/Inf loss stops the run naming the step and the loss, keeping the last
  good checkpoint; asking for CUDA without one fails unless `--device cpu`.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

import numpy as np
import torch
from pydantic import Field

from toonlab.errors import ToonlabError, UsageError
from toonlab.log import get_logger, progress
from toonlab.schema import Section
from toonlab.train import checkpoint as ckpt
from toonlab.train.data import BatchStream, ImageSource, SamplerState, UnpairedDataset
from toonlab.train.recipe import Context, Recipe

log = get_logger(__name__)


class TrainParams(Section):
    out_dir: str = "models"                 # runs go to <out_dir>/<family>/
    log_every: Annotated[int, Field(ge=1)] = 50
    sample_every: Annotated[int, Field(ge=0)] = 500   # 0: only at the end
    ckpt_every: Annotated[int, Field(ge=1)] = 1000
    keep_last: Annotated[int, Field(ge=1)] = 3
    best_metric: str = ""                    # a loss name, lower is better; "": the family's default
    amp: bool = True                         # bf16 autocast on CUDA; CPU always runs fp32
    channels_last: bool = True
    compile: bool = False                    # torch.compile the trainable networks
    loader_workers: Annotated[int, Field(ge=0, le=64)] = 2
    seed: Annotated[int, Field(ge=0)] = 0
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.0   # colour jitter strength (albumentations)
    source: Literal["packed", "folders"] = "packed"
    folders: dict[str, str] = {}             # with source: folders, batch key -> folder, e.g. {A: ..., B: ...}
    split: Literal["train", "val", "test"] = "train"
    grid_images: Annotated[int, Field(ge=1, le=64)] = 4


@dataclass
class Family:
    """A registered model family: its name (run folder, `toonlab train <name>`), params
    class and builder. `section` names its params.yaml section when it is not `name`
    (e.g. the White-box pretrain stage reads the `whitebox` section)."""

    name: str
    params_cls: type
    build: Callable[[Any, Context], Recipe]
    total_steps: Callable[[Any], int]
    best_metric: str = "G_total"
    section: str = ""
    # (params, nets state dicts by name) -> Inference, for evaluation / cartoonize / export;
    # None for families that translate nothing (e.g. the landmarker).
    inference: Callable[[Any, dict[str, Any]], Any] | None = None
    # False for unconditional families (their Inference generates from noise): nothing to
    # cartoonize, so `toonlab serve` does not offer their runs.
    translates: bool = True

    @property
    def params_section(self) -> str:
        return self.section or self.name


# ----------------------------------------------------------------------------- device / DDP


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


# ----------------------------------------------------------------------------- trainer


class Trainer:
    def __init__(self, family: Family, fparams: Any, tparams: TrainParams, *, device: torch.device,
                 packed_dir: str, run_dir: Path | None = None, steps: int | None = None):
        self.family, self.fparams, self.tp = family, fparams, tparams
        self.rank, self.world, self.local_rank = init_distributed()
        self.device = device
        self.run_dir = Path(run_dir or Path(tparams.out_dir) / family.name)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.total = steps if steps is not None else family.total_steps(fparams)
        amp_dtype = torch.bfloat16 if (tparams.amp and device.type == "cuda") else None
        # channels_last pays off on GPUs; on CPU it is slower (benchmarks/train_step.py), so NCHW there.
        self.channels_last = tparams.channels_last and device.type == "cuda"
        self.ctx = Context(device=device, amp_dtype=amp_dtype, channels_last=self.channels_last,
                           total_steps=self.total, distributed=self.world > 1)
        self.packed_dir = packed_dir
        self._stop: str | None = None

    # -- setup
    def _seed(self) -> None:
        import random

        random.seed(self.tp.seed)
        np.random.seed(self.tp.seed % 2**32)
        torch.manual_seed(self.tp.seed)

    def _sources(self, recipe: Recipe) -> dict[str, ImageSource]:
        spec = recipe.data
        if self.tp.source == "folders":
            missing = [k for k in spec.domains if k not in self.tp.folders]
            if missing:
                raise UsageError(f"train.folders needs a folder for {', '.join(missing)} "
                                 f"(batch keys of this model: {', '.join(spec.domains)})")
            return {k: ImageSource.folder(self.tp.folders[k]) for k in spec.domains}
        px = 128 if spec.crop_px <= 128 else 256
        return {k: ImageSource.packed(self.packed_dir, d, self.tp.split, px) for k, d in spec.domains.items()}

    def _wrap(self, recipe: Recipe) -> None:
        for name, net in list(recipe.nets.items()):
            net.to(self.device)
            if self.channels_last:
                net.to(memory_format=torch.channels_last)
            trainable = any(p.requires_grad for p in net.parameters())
            if trainable and self.world > 1:
                from torch.nn.parallel import DistributedDataParallel as DDP

                net = DDP(net, device_ids=[self.local_rank] if self.device.type == "cuda" else None,
                          broadcast_buffers=False)
            if trainable and self.tp.compile:
                net = torch.compile(net)
            recipe.nets[name] = net

    def config(self) -> dict[str, Any]:
        """What defines the run: auto-resume only continues a run with the same config."""
        t = self.tp.model_dump(mode="json")
        keep = ("seed", "jitter", "source", "folders", "split", "amp", "channels_last")
        return {"family": self.family.name, "params": self.fparams.model_dump(mode="json"),
                "total_steps": self.total, "train": {k: t[k] for k in keep}, "world": self.world,
                "data": getattr(self, "_data_fingerprint", {})}

    def _fingerprint(self, recipe: Recipe) -> dict[str, str]:
        """What the training images are: the packed index of each domain (or the folder's
        file list), so a run on changed data starts over instead of resuming."""
        import hashlib

        out = {}
        for key, domain in sorted(recipe.data.domains.items()):
            h = hashlib.sha256()
            if self.tp.source == "folders":
                folder = Path(self.tp.folders.get(key, ""))
                for f in sorted(folder.rglob("*")) if folder.is_dir() else []:
                    if f.is_file():
                        st = f.stat()
                        h.update(f"{f.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            else:
                index = Path(self.packed_dir) / domain / "index.json"
                h.update(index.read_bytes() if index.is_file() else b"")
            out[key] = h.hexdigest()[:16]
        return out

    def _state(self, recipe: Recipe, step: int, stream: BatchStream, metrics: dict[str, float]) -> dict[str, Any]:
        return {"step": step, "family": self.family.name, "config": self.config(),
                "nets": {k: unwrap(v).state_dict() for k, v in recipe.nets.items()},
                "optimizers": {k: o.state_dict() for k, o in recipe.optimizers().items()},
                "schedulers": {k: s.state_dict() for k, s in recipe.schedulers().items()},
                "extra": recipe.extra_state(), "rng": ckpt.rng_state(),
                "data": {"epoch": stream.state.epoch, "position": stream.state.position},
                "metrics": metrics}

    def _restore(self, recipe: Recipe, state: dict[str, Any]) -> tuple[int, SamplerState]:
        if state.get("family") != self.family.name:
            raise UsageError(f"checkpoint is a {state.get('family')} run, not {self.family.name}")
        for k, sd in state["nets"].items():
            unwrap(recipe.nets[k]).load_state_dict(sd)
        for k, sd in state["optimizers"].items():
            recipe.optimizers()[k].load_state_dict(sd)
        for k, sd in state["schedulers"].items():
            recipe.schedulers()[k].load_state_dict(sd)
        recipe.load_extra_state(state["extra"])
        ckpt.set_rng_state(state["rng"])
        return int(state["step"]), SamplerState(int(state["data"]["epoch"]), int(state["data"]["position"]))

    def _on_signal(self, signum, frame) -> None:
        self._stop = signal.Signals(signum).name

    # -- the loop
    def run(self, resume: str = "auto") -> dict[str, Any]:
        self._seed()
        recipe = self.family.build(self.fparams, self.ctx)
        sources = self._sources(recipe)
        self._data_fingerprint = self._fingerprint(recipe)
        start, sampler_state, metrics = 0, SamplerState(), {}
        resume_path = None
        if resume == "auto":
            resume_path = ckpt.latest(self.ckpt_dir)
        elif resume not in ("none", ""):
            resume_path = Path(resume)
            if not resume_path.is_file():
                raise UsageError(f"--resume {resume}: no such checkpoint")
        if resume_path is not None:
            state = ckpt.load(resume_path)
            if state.get("config") != self.config():
                if resume != "auto":
                    log.warning("%s was written with other settings; resuming from it anyway", resume_path)
                else:
                    log.warning("settings changed since %s: starting a new run (old checkpoints removed)",
                                resume_path)
                    if self.rank == 0:
                        for _, old in ckpt.list_checkpoints(self.ckpt_dir):
                            old.unlink(missing_ok=True)
                        for name in ("best.pt", "best.json"):
                            (self.ckpt_dir / name).unlink(missing_ok=True)
                    resume_path, state = None, None
        if resume_path is not None:
            start, sampler_state = self._restore(recipe, state)
            metrics = dict(state.get("metrics", {}))
            log.info("resumed from %s at step %d", resume_path, start)
        self._wrap(recipe)
        if start >= self.total:
            log.info("%s: already trained for %d steps (target %d); nothing to do", self.family.name, start, self.total)
            self._write_summary(metrics)
            return metrics

        spec = recipe.data
        dataset = UnpairedDataset(sources, spec, self.tp.seed, self.tp.jitter, self.rank, self.world)
        stream = BatchStream(dataset, spec.batch_size, self.tp.loader_workers,
                             pin_memory=self.device.type == "cuda", state=sampler_state)
        fixed = self._fixed_batch(sources, spec)
        live = self._live(resume_path is not None) if self.rank == 0 else None
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bad = torch.full((), -1, dtype=torch.long, device=self.device)
        names: list[str] = []
        t_log, n_log = time.perf_counter(), 0
        try:
            bar = progress(range(start, self.total), f"train {self.family.name}", total=self.total - start,
                           unit="step")
            for step0 in bar:
                step = step0 + 1
                batch = self._to_device(next(stream))
                losses = recipe.train_step(batch, step0)
                for s in recipe.schedulers().values():
                    s.step()
                if not names:
                    names = list(losses)
                finite = torch.stack([torch.isfinite(v.detach().float()).all() for v in losses.values()])
                bad = torch.where((bad < 0) & ~finite.all(), torch.tensor(step, device=self.device), bad)
                n_log += spec.batch_size * self.world
                last = step == self.total or self._stop is not None
                if step % self.tp.log_every == 0 or last or step % self.tp.ckpt_every == 0:
                    self._check_finite(bad, losses, step)
                    now = time.perf_counter()
                    metrics = {k: float(v) for k, v in losses.items()}
                    metrics.update({f"lr/{k}": o.param_groups[0]["lr"] for k, o in recipe.optimizers().items()})
                    metrics["step_time_s"] = (now - t_log) / max(1, n_log / (spec.batch_size * self.world))
                    metrics["images_per_s"] = n_log / max(now - t_log, 1e-9)
                    t_log, n_log = now, 0
                    if live is not None:
                        live.step = step
                        for k, v in metrics.items():
                            live.log_metric(f"train/{k}", v)
                        live.next_step()
                if self.rank == 0 and (step % self.tp.ckpt_every == 0 or last):
                    self._save(recipe, step, stream, metrics)
                if self.rank == 0 and ((self.tp.sample_every and step % self.tp.sample_every == 0) or last):
                    self._grid(recipe, fixed, step, live)
                if self._stop is not None:
                    log.warning("%s received at step %d: checkpoint saved, stopping", self._stop, step)
                    break
            self._check_ranks_in_sync(recipe)
            if self._stop is None:
                self._write_summary(metrics)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if live is not None:
                live.end()
        if self._stop == "SIGINT":
            raise KeyboardInterrupt
        return metrics

    def _write_summary(self, metrics: dict[str, float]) -> None:
        """<run>/summary.json: the finished run (what the pipeline drivers wait for)."""
        if self.rank != 0:
            return
        from toonlab import io as tio

        tio.write_json(self.run_dir / "summary.json", {
            "family": self.family.name, "steps": self.total, "metrics": metrics,
            "checkpoint": str(ckpt.latest(self.ckpt_dir)), "world_size": self.world})

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in batch.items():
            v = v.to(self.device, non_blocking=True)
            if v.dim() == 4 and self.channels_last:
                v = v.contiguous(memory_format=torch.channels_last)
            out[k] = v
        return out

    def _check_finite(self, bad: torch.Tensor, losses: dict[str, torch.Tensor], step: int) -> None:
        first = int(bad)
        if first < 0:
            return
        culprit = [k for k, v in losses.items() if not bool(torch.isfinite(v.detach().float()).all())]
        last = ckpt.latest(self.ckpt_dir)
        raise ToonlabError(
            f"{self.family.name}: non-finite loss at step {first}"
            + (f" ({', '.join(culprit)} at step {step})" if culprit else "")
            + f"; stopped. Last good checkpoint: {last if last else 'none yet'}")

    def _save(self, recipe: Recipe, step: int, stream: BatchStream, metrics: dict[str, float]) -> None:
        state = self._state(recipe, step, stream, metrics)
        ckpt.save(self.ckpt_dir / f"step-{step:08d}.pt", state)
        ckpt.prune(self.ckpt_dir, self.tp.keep_last)
        metric = self.tp.best_metric or self.family.best_metric
        value = metrics.get(metric)
        if value is not None and math.isfinite(value):
            best = ckpt.best_value(self.ckpt_dir)
            if best is None or value < best:
                ckpt.write_best(self.ckpt_dir, state, metric, value)

    def _live(self, resuming: bool):
        from dvclive import Live
        from scmrepo.exceptions import SCMError

        class _Live(Live):
            def _init_dvc(self):
                # DVCLive 3.x raises from its Git lookup in a repository without a commit
                # (`git init` just done); the metrics and plots files need none of it.
                try:
                    super()._init_dvc()
                except SCMError as exc:
                    log.warning("DVCLive: %s (no commit yet): logging metrics and plots without "
                                "DVC experiment tracking", exc)
                    self._dvc_repo = None
                    self._dvc_file = self._init_dvc_file()

        return _Live(dir=str(self.run_dir / "dvclive"), save_dvc_exp=False, dvcyaml=None, resume=resuming,
                     report=None)

    def _fixed_batch(self, sources: dict[str, ImageSource], spec) -> dict[str, torch.Tensor]:
        """The same few images at every sample step, so progress can be watched."""
        ds = UnpairedDataset(sources, spec, self.tp.seed + 12345)
        n = min(self.tp.grid_images, len(ds))
        items = [ds[i] for i in range(n)]
        return self._to_device({k: torch.stack([it[k] for it in items]) for k in items[0]})

    def _grid(self, recipe: Recipe, fixed: dict[str, torch.Tensor], step: int, live) -> None:
        from toonlab.train.grid import save_grid

        for net in recipe.nets.values():
            net.eval()
        try:
            with torch.no_grad():
                images = recipe.sample(fixed)
        finally:
            for net in recipe.nets.values():
                net.train()
        path = self.run_dir / "samples" / f"step-{step:08d}.png"
        img = save_grid(images, recipe.grid_rows, path)
        from toonlab import io as tio

        tio.write_bytes(self.run_dir / "samples" / "latest.png", path.read_bytes())
        if live is not None:
            live.log_image("grid.png", img)

    def _check_ranks_in_sync(self, recipe: Recipe) -> None:
        if self.world <= 1:
            return
        import torch.distributed as dist

        sums = torch.stack([torch.cat([p.detach().double().flatten() for p in unwrap(n).parameters()]).sum()
                            for n in recipe.nets.values()]).to(self.device)
        gathered = [torch.zeros_like(sums) for _ in range(self.world)]
        dist.all_gather(gathered, sums)
        if any(not torch.equal(g, gathered[0]) for g in gathered):
            raise ToonlabError("DDP ranks diverged: network weights differ across ranks")
        log.info("weights identical on all %d ranks", self.world)
