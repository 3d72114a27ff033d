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
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from toonlab.errors import ToonlabError, UsageError
from toonlab.log import get_logger, progress
from toonlab.train import checkpoint as ckpt
from toonlab.train.data import BatchStream, ImageSource, SamplerState, UnpairedDataset
from toonlab.train.device import init_distributed, unwrap
from toonlab.train.params import TrainParams
from toonlab.train.recipe import Context, Recipe

if TYPE_CHECKING:
    from toonlab.models.registry import Family

log = get_logger(__name__)


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
        from toonlab.util import fileio

        fileio.write_json(self.run_dir / "summary.json", {
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
        from toonlab.util import fileio

        fileio.write_bytes(self.run_dir / "samples" / "latest.png", path.read_bytes())
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
