"""The generic trainer's loop. It knows nothing of a particular model: a family gives it
a `Recipe` (networks, optimizers, schedulers, one training step, samples) and `Trainer.run`
builds the run, resumes it, loops over the steps, logs and checkpoints:

- Build: seeds, the recipe's networks on the device (channels_last on CUDA, NCHW on
  CPU), DDP under `torchrun` (NCCL on GPU, gloo on CPU), one data shard per rank, only
  rank 0 writes; the precision and torch.compile decided (`toonlab.train.decide`).
- Resume (`toonlab.train.resume`): step, networks, optimizers, schedulers, the recipe's
  extra state (image pools), the RNG states and the data position come back, so an
  interrupted run continues exactly; a damaged newest checkpoint falls back to the newest
  readable one. A longer or shorter run continues with its schedule recomputed; cadence,
  workers, compile and world-size changes continue; any other change refuses (exit 2)
  naming the keys, unless `--restart` / `train.on_change: restart` moves the old run
  aside. One trainer per run folder (`train.lock`, `toonlab.train.runfolder`). The global
  batch (data.batch_size x processes at the run's start) is fixed for the run's life.
- Checkpoints every `train.ckpt_every` steps, at the end and on a stop signal, written
  atomically, holding only tensors and plain data; the last `keep_last` plus `best.pt`
  (by `train.best_metric`, lower is better) are kept: pruning is the only deletion.
- Logging (`toonlab.train.monitor`): DVCLive metrics and sample grids, a progress line
  or bar, the heartbeat. No host syncs in the hot loop except at log / checkpoint steps
  (and every `STOP_SYNC_EVERY` steps under DDP).
- Stops: SIGTERM (cluster time limits, preemption, scancel; sent to the whole process
  group, loader workers ignore it) or SIGINT finish the step, write a checkpoint and exit
  with status 75 (`EXIT_RESUMABLE`, sysexits' EX_TEMPFAIL): rerun the same command to
  continue. Under DDP the ranks agree on stopping and on the NaN guard
  (`toonlab.train.ranks`), so every rank stops at the same step.
- Guards: a NaN/Inf loss stops the run naming the step and the loss, keeping the last
  good checkpoint; asking for CUDA without one fails unless `--device cpu`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from toonlab.errors import ToonlabError, UsageError
from toonlab.log import get_logger
from toonlab.train import checkpoint as ckpt
from toonlab.train import compiling, decide, optimize, precision, runfolder
from toonlab.train import resume as resuming
from toonlab.train.data import BatchStream, ImageSource, SamplerState, UnpairedDataset, to_device
from toonlab.train.device import unwrap
from toonlab.train.ema import EMA
from toonlab.train.monitor import Monitor
from toonlab.train.params import TrainParams
from toonlab.train.ranks import Ranks
from toonlab.train.recipe import Context, Recipe

if TYPE_CHECKING:
    from toonlab.registry import Family

log = get_logger(__name__)

EXIT_RESUMABLE = 75     # stopped by a signal with a checkpoint written: run the same command again


class Stopped(ToonlabError):
    """A stop signal ended the run after a checkpoint: resumable (exit status 75)."""

    exit_code = EXIT_RESUMABLE


class Trainer:
    """One training run of `family` into `run_dir`: `run()` trains it to `steps` (default:
    the family's length)."""

    def __init__(self, family: Family, fparams: Any, tparams: TrainParams, *, device: torch.device,
                 packed_dir: str, run_dir: Path | None = None, steps: int | None = None):
        self.family, self.fparams, self.tp = family, fparams, tparams
        self.ranks = Ranks.join(device)
        self.device = device
        self.run_dir = Path(run_dir or Path(tparams.out_dir) / family.name)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.total = steps if steps is not None else family.total_steps(fparams)
        # The precision is decided when the run starts (`_run`: a probe, or the checkpoint's).
        amp_dtype = None
        self.precision: precision.Precision | None = None
        self.compiled: compiling.Compile | None = None     # train.compile, decided after the precision
        self.compile_first_step_s: float | None = None
        # channels_last pays off on GPUs; on CPU it is slower (benchmarks/train_step.py), so NCHW there.
        self.channels_last = tparams.channels_last and device.type == "cuda"
        self.ctx = Context(device=device, amp_dtype=amp_dtype, channels_last=self.channels_last,
                           total_steps=self.total, distributed=self.ranks.world > 1,
                           extra={**({"clip_grad": tparams.clip_grad} if tparams.clip_grad else {}),
                                  **({"accumulate": tparams.accumulate} if tparams.accumulate > 1 else {})})
        self.ema: EMA | None = None     # train.ema: the generators' average (toonlab.train.ema)
        self.packed_dir = packed_dir
        self.monitor = Monitor(self.run_dir, family.name, self.total, self.ranks.world, device,
                               lead=self.ranks.rank == 0)
        self._stop: str | None = None

    # -- build
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
            if trainable and self.ranks.world > 1:
                from torch.nn.parallel import DistributedDataParallel as DDP

                net = DDP(net, device_ids=[self.ranks.local] if self.device.type == "cuda" else None,
                          broadcast_buffers=False)
            recipe.nets[name] = net

    def _throwaway_recipe(self) -> Recipe:
        """A copy of the run's recipe for timing probes (its own Context)."""
        return self.family.build(self.fparams, dataclasses.replace(self.ctx, extra=dict(self.ctx.extra)))

    def _fixed_batch(self, sources: dict[str, ImageSource], spec) -> dict[str, torch.Tensor]:
        """The same few images at every sample step, so progress can be watched."""
        ds = UnpairedDataset(sources, spec, self.tp.seed + 12345)
        n = min(self.tp.grid_images, len(ds))
        items = [ds[i] for i in range(n)]
        return self._to_device({k: torch.stack([it[k] for it in items]) for k in items[0]})

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return to_device(batch, self.device, self.channels_last)

    # -- resume (rank 0 picks, every rank follows)
    def config(self) -> dict[str, Any]:
        """What defines the run (see `toonlab.train.resume`): auto-resume continues a run
        whose config differs at most in its length keys."""
        return resuming.identity(self.family.name, self.fparams, self.tp, getattr(self, "_data_fingerprint", {}))

    def _prepare(self, resume: str, restart: bool) -> str | None:
        """Rank 0: take the run's lock and pick the checkpoint to resume from (None: a new
        run). Keeps the loaded state in `self._loaded`."""
        self._loaded = None
        self._lock = runfolder.RunLock(self.run_dir)
        self._lock.acquire()
        path, self._loaded = resuming.pick(resume, restart, self._lock, self.ckpt_dir, self.config(), self.family,
                                           self.fparams, self.total, self.tp.on_change)
        return path

    # -- the loop
    def run(self, resume: str = "auto", restart: bool = False) -> dict[str, Any]:
        """Train to the target step; `Stopped` (exit 75) after a stop signal's checkpoint."""
        self._lock = None
        try:
            return self._run(resume, restart)
        finally:
            if self._lock is not None:
                self._lock.release()

    def _run(self, resume: str, restart: bool) -> dict[str, Any]:
        rank, world = self.ranks.rank, self.ranks.world
        self._seed()
        recipe = self.family.build(self.fparams, self.ctx)
        optimize.check_accumulate(recipe, self.tp.accumulate, self.family.name)
        sources = self._sources(recipe)
        self._data_fingerprint = resuming.fingerprint(recipe.data.domains, self.tp, self.packed_dir)
        resume_path = self.ranks.on_rank0(lambda: self._prepare(resume, restart))
        state = None
        if resume_path is not None:
            state = self._loaded if rank == 0 else ckpt.load(Path(resume_path))
        spec = recipe.data
        self.global_batch = resuming.global_batch(spec.batch_size, state, world, self.family.name, self.run_dir)
        batch = self.global_batch // world
        start, sampler_state, metrics = 0, SamplerState(), {}
        if state is not None:
            start, sampler_state = resuming.restore(recipe, state, self.family.name, rank, world, self.global_batch)
            metrics = dict(state.get("metrics", {}))
            log.info("resumed from %s at step %d", resume_path, start)
        self._loaded = None
        stored_precision = (state or {}).get("precision")
        stored_ema = (state or {}).get("ema")
        state = None
        self._wrap(recipe)
        ema_nets = tuple(getattr(recipe, "ema_nets", ()))
        if self.tp.ema > 0 and ema_nets:
            self.ema = EMA(recipe.nets, ema_nets, self.tp.ema)
            if stored_ema:
                self.ema.load_state_dict(stored_ema)
        elif self.tp.ema > 0:
            log.warning("%s: train.ema is set but the family names no generators to average (ema_nets)",
                        self.family.name)
        if start >= self.total:
            if stored_precision:
                self.precision = precision.Precision(**stored_precision)
            log.info("%s: already trained for %d steps (target %d); nothing to do", self.family.name, start, self.total)
            self._write_summary(metrics)
            self.monitor.beat("finished", start)
            return metrics
        self.precision = decide.choose_precision(self.tp, self.ranks, self.family.name, stored_precision,
                                                 self._throwaway_recipe)
        self.ctx.amp_dtype = self.precision.amp_dtype
        self.compiled = decide.choose_compile(self.tp, self.ranks, self.family, self.precision, spec.crop_px,
                                              self.total - start, self._throwaway_recipe)
        if self.compiled.on:
            decide.compile_nets(recipe)

        dataset = UnpairedDataset(sources, spec, self.tp.seed, self.tp.jitter, rank, world)
        stream = BatchStream(dataset, batch, self.tp.loader_workers, pin_memory=self.device.type == "cuda",
                             state=sampler_state, prefetch=self.tp.loader_prefetch)
        fixed = self._fixed_batch(sources, spec)
        self.monitor.start(start, resuming=resume_path is not None)
        bad = torch.full((), -1, dtype=torch.long, device=self.device)
        status, step = "running", start
        self.monitor.beat(status, start)
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for step0 in self.monitor.steps():
                step = step0 + 1
                batches = [self._to_device(next(stream)) for _ in range(self.tp.accumulate)]
                t_step = time.perf_counter()
                losses = optimize.train_step(recipe, batches, step0)
                if self.ema is not None:
                    self.ema.update(recipe.nets)
                if step0 == start and self.compiled.on:
                    self.compile_first_step_s = decide.first_step_s(losses, t_step, self.compiled, self.ranks,
                                                                    self.family.name)
                for s in recipe.schedulers().values():
                    s.step()
                finite = torch.stack([torch.isfinite(v.detach().float()).all() for v in losses.values()])
                bad = torch.where((bad < 0) & ~finite.all(), torch.tensor(step, device=self.device), bad)
                self.monitor.images += self.global_batch * self.tp.accumulate
                log_step = step % self.tp.log_every == 0 or step == self.total
                ckpt_step = step % self.tp.ckpt_every == 0
                stop, first_bad = self.ranks.agree(self._stop is not None, bad, step, log_step or ckpt_step)
                self._raise_non_finite(first_bad, losses, step)
                last = step == self.total or stop
                if log_step or ckpt_step or last:
                    metrics = self.monitor.log(step, losses, recipe, self.global_batch * self.tp.accumulate)
                    self._log_scaling(recipe, step)
                    self.monitor.beat("running", step, metrics)
                if ckpt_step or last:
                    # every rank's own image pools and RNG, for the checkpoint rank 0 writes
                    ranks = self.ranks.gather({"extra": recipe.extra_state(), "rng": ckpt.rng_state()})
                    if rank == 0:
                        self._save(recipe, step, stream, metrics, ranks)
                if rank == 0 and ((self.tp.sample_every and step % self.tp.sample_every == 0) or last):
                    with self.ema.applied(recipe.nets) if self.ema is not None else contextlib.nullcontext():
                        self.monitor.grid(recipe, fixed, step)
                if stop:
                    break
            self.ranks.check_in_sync(recipe.nets.values())
            if self._stop is None and step < self.total:   # another rank was stopped
                self._stop = "a stop signal on another rank"
            if self._stop is None:
                self._write_summary(metrics)
                status = "finished"
            else:
                status = "stopped"
        except BaseException:
            status = "failed"
            raise
        finally:
            stream.close()      # the loader's workers, ended now: they ignore SIGTERM (see BatchStream.close)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.monitor.beat(status, step, metrics)
            self.monitor.end()
        if status == "stopped":
            where = ckpt.latest(self.ckpt_dir) if rank == 0 else None
            raise Stopped(f"{self.family.name}: {self._stop} at step {step}: checkpoint "
                          f"{where or f'of step {step} written by rank 0'}; run the same command to continue "
                          f"(exit status {EXIT_RESUMABLE}: interrupted, resumable)")
        return metrics

    def _log_scaling(self, recipe: Recipe, step: int) -> None:
        """fp16: the loss scale and the overflowing steps skipped so far, per optimizer."""
        stepper = getattr(recipe, "steps", None)
        if stepper is None or not stepper.scaler.is_enabled() or self.ranks.rank != 0:
            return
        skipped = ", ".join(f"{k} {v}" for k, v in stepper.skipped.items())
        log.info("%s: step %d: fp16 loss scale %g; overflowing steps skipped: %s", self.family.name, step,
                 stepper.scale, skipped)

    def _on_signal(self, signum, frame) -> None:
        self._stop = signal.Signals(signum).name

    def _raise_non_finite(self, first: int, losses: dict[str, torch.Tensor], step: int) -> None:
        if first < 0:
            return
        culprit = [k for k, v in losses.items() if not bool(torch.isfinite(v.detach().float()).all())]
        last = ckpt.latest(self.ckpt_dir)
        raise ToonlabError(
            f"{self.family.name}: non-finite loss at step {first}"
            + (f" ({', '.join(culprit)} at step {step})" if culprit else "")
            + f"; stopped. Last good checkpoint: {last if last else 'none yet'}")

    # -- checkpoint
    def _state(self, recipe: Recipe, step: int, stream: BatchStream, metrics: dict[str, float],
               ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"step": step, "family": self.family.name, "config": self.config(),
                "nets": {k: unwrap(v).state_dict() for k, v in recipe.nets.items()},
                "optimizers": {k: o.state_dict() for k, o in recipe.optimizers().items()},
                "schedulers": {k: s.state_dict() for k, s in recipe.schedulers().items()},
                "extra": recipe.extra_state(), "rng": ckpt.rng_state(),
                "rank_states": ranks[1:] if ranks and len(ranks) > 1 else [],
                "data": {"epoch": stream.state.epoch, "position": stream.state.position,
                         "world": self.ranks.world, "global_batch": self.global_batch},
                "total_steps": self.total, "metrics": metrics,
                "precision": self.precision.record() if self.precision else None,
                **({"ema": self.ema.state_dict()} if self.ema is not None else {})}

    def _save(self, recipe: Recipe, step: int, stream: BatchStream, metrics: dict[str, float],
              ranks: list[dict[str, Any]] | None = None) -> None:
        state = self._state(recipe, step, stream, metrics, ranks)
        ckpt.save(self.ckpt_dir / f"step-{step:08d}.pt", state)
        ckpt.prune(self.ckpt_dir, self.tp.keep_last)
        metric = self.tp.best_metric or self.family.best_metric
        value = metrics.get(metric)
        if value is not None and math.isfinite(value):
            best = ckpt.best_value(self.ckpt_dir)
            if best is None or value < best:
                ckpt.write_best(self.ckpt_dir, state, metric, value)

    def _write_summary(self, metrics: dict[str, float]) -> None:
        """<run>/summary.json: the finished run (what the pipeline drivers wait for)."""
        if self.ranks.rank != 0:
            return
        from toonlab.util import fileio

        fileio.write_json(self.run_dir / "summary.json", {
            "family": self.family.name, "steps": self.total, "metrics": metrics,
            "checkpoint": str(ckpt.latest(self.ckpt_dir)), "world_size": self.ranks.world,
            "precision": self.precision.record() if self.precision else None,
            **({"ema": self.tp.ema} if self.ema is not None else {}),
            "compile": {**self.compiled.record(), "first_step_s": self.compile_first_step_s}
            if self.compiled else None})
