"""The generic trainer. It knows nothing of a particular model: a family gives it a
`Recipe` (networks, optimizers, schedulers, one training step, samples) and it runs
the loop: data, device and precision, DDP, checkpoints and resume, logging, guards.

- Checkpoints every `train.ckpt_every` steps, at the end and on a stop signal, written
  atomically, holding only tensors and plain data; the last `keep_last` plus `best.pt`
  (by `train.best_metric`, lower is better) are kept: pruning is the only deletion.
  Resume restores step, networks, optimizers, schedulers, the recipe's extra state
  (image pools), the RNG states and the data position, so an interrupted run continues
  exactly; a damaged newest checkpoint falls back to the newest readable one.
- Settings changes (`toonlab.train.resume`): a longer or shorter run continues with its
  schedule recomputed; cadence, workers, compile and world-size changes continue; any
  other change refuses (exit 2) naming the keys, unless `--restart` / `train.on_change:
  restart` moves the old run aside. One trainer per run folder (`train.lock`), a
  `heartbeat.json` for watchers (`toonlab.train.runfolder`).
- Stops: SIGTERM (cluster time limits, preemption, scancel; sent to the whole process
  group, loader workers ignore it) or SIGINT finish the step, write a checkpoint and exit
  with status 75 (`EXIT_RESUMABLE`, sysexits' EX_TEMPFAIL): rerun the same command to
  continue. Under DDP the stop flag and the NaN guard are reduced across ranks, so every
  rank stops at the same step.
- Logging through DVCLive (`Live(dir, save_dvc_exp=False, dvcyaml=None)`): every
  loss, learning rates, step time and images/s at log steps; sample grids. Without a
  terminal, one progress line per log step (step/total, losses, images/s, ETA, peak
  memory); with one, a tqdm bar.
- Speed: channels_last, bf16 autocast on CUDA (fp32 on CPU), pinned memory, optional
  torch.compile, no host syncs in the hot loop except at log / checkpoint steps (and
  every `STOP_SYNC_EVERY` steps under DDP).
- Scale-out: under `torchrun`, DistributedDataParallel (NCCL on GPU, gloo on CPU),
  one data shard per rank, only rank 0 writes. The global batch (data.batch_size x
  processes at the run's start) is fixed for the run's life: resuming on another number
  of processes splits it anew (or refuses when it does not divide).
- Guards: a NaN/Inf loss stops the run naming the step and the loss, keeping the last
  good checkpoint; asking for CUDA without one fails unless `--device cpu`.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from toonlab.errors import ToonlabError, UsageError
from toonlab.log import bar_wanted, duration, get_logger, lines_wanted, progress
from toonlab.train import checkpoint as ckpt
from toonlab.train import compiling, precision, runfolder
from toonlab.train.data import BatchStream, ImageSource, SamplerState, UnpairedDataset
from toonlab.train.device import init_distributed, unwrap
from toonlab.train.params import TrainParams
from toonlab.train.recipe import Context, Recipe
from toonlab.train.resume import compare

if TYPE_CHECKING:
    from toonlab.models.registry import Family

log = get_logger(__name__)

EXIT_RESUMABLE = 75     # stopped by a signal with a checkpoint written: run the same command again
STOP_SYNC_EVERY = 10    # under DDP, ranks agree on stop / NaN at least this often (in steps)
_BIG = 2**62


class Stopped(ToonlabError):
    """A stop signal ended the run after a checkpoint: resumable (exit status 75)."""

    exit_code = EXIT_RESUMABLE


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
        # The precision is decided when the run starts (`_run`: a probe, or the checkpoint's).
        amp_dtype = torch.bfloat16 if (tparams.amp and device.type == "cuda") else None
        self.precision: precision.Precision | None = None
        self.compiled: compiling.Compile | None = None     # train.compile, decided after the precision
        self.compile_first_step_s: float | None = None
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
            recipe.nets[name] = net

    def _compile(self, recipe: Recipe) -> None:
        for name, net in list(recipe.nets.items()):
            if any(p.requires_grad for p in net.parameters()):
                recipe.nets[name] = torch.compile(net)

    def config(self) -> dict[str, Any]:
        """What defines the run (see `toonlab.train.resume`): auto-resume continues a run
        whose config differs at most in its length keys."""
        t = self.tp.model_dump(mode="json")
        keep = ("seed", "jitter", "source", "folders", "split")
        return {"family": self.family.name, "params": self.fparams.model_dump(mode="json"),
                "train": {k: t[k] for k in keep}, "data": getattr(self, "_data_fingerprint", {})}

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

    def _rank_states(self, recipe: Recipe) -> list[dict[str, Any]] | None:
        """Every rank's own state (image pools, RNG), gathered on rank 0 (None elsewhere):
        a collective, so every rank calls it at the same steps."""
        mine = {"extra": _to_cpu(recipe.extra_state()), "rng": ckpt.rng_state()}
        if self.world <= 1:
            return [mine]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world if self.rank == 0 else None
        dist.gather_object(mine, out, dst=0)
        return out

    def _state(self, recipe: Recipe, step: int, stream: BatchStream, metrics: dict[str, float],
               ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"step": step, "family": self.family.name, "config": self.config(),
                "nets": {k: unwrap(v).state_dict() for k, v in recipe.nets.items()},
                "optimizers": {k: o.state_dict() for k, o in recipe.optimizers().items()},
                "schedulers": {k: s.state_dict() for k, s in recipe.schedulers().items()},
                "extra": recipe.extra_state(), "rng": ckpt.rng_state(),
                "rank_states": ranks[1:] if ranks and len(ranks) > 1 else [],
                "data": {"epoch": stream.state.epoch, "position": stream.state.position,
                         "world": self.world, "global_batch": self.global_batch},
                "total_steps": self.total, "metrics": metrics,
                "precision": self.precision.record() if self.precision else None}

    def _restore(self, recipe: Recipe, state: dict[str, Any]) -> tuple[int, SamplerState]:
        if state.get("family") != self.family.name:
            raise UsageError(f"checkpoint is a {state.get('family')} run, not {self.family.name}")
        for k, sd in state["nets"].items():
            unwrap(recipe.nets[k]).load_state_dict(sd)
        for k, sd in state["optimizers"].items():
            recipe.optimizers()[k].load_state_dict(sd)
        for k, sd in state["schedulers"].items():
            recipe.schedulers()[k].load_state_dict(sd)
        for sched in recipe.schedulers().values():
            _recompute_lr(sched)
        # Rank r continues with rank r's own pools and RNG (rank r mod the old world size
        # when the number of processes changed).
        mine = ([{"extra": state["extra"], "rng": state["rng"]}] + list(state.get("rank_states", [])))
        own = mine[self.rank % len(mine)]
        recipe.load_extra_state(own["extra"])
        ckpt.set_rng_state(own["rng"])
        data = state["data"]
        old_world = int(data.get("world", state.get("config", {}).get("world", 1)))
        sampler = SamplerState(int(data["epoch"]), int(data["position"]))
        if old_world != self.world:
            log.info("resuming a run of %d process(es) on %d: global batch %d, %d per process, same data "
                     "position", old_world, self.world, self.global_batch, self.global_batch // self.world)
            sampler = sampler.for_world(old_world, self.world)
        return int(state["step"]), sampler

    def _global_batch(self, spec_batch: int, state: dict[str, Any] | None) -> int:
        """The run's global batch: fixed at its start (data.batch_size x processes)."""
        if state is None:
            return spec_batch * self.world
        data = state.get("data", {})
        old_world = int(data.get("world", state.get("config", {}).get("world", 1)))
        gb = int(data.get("global_batch", spec_batch * old_world))
        if gb % self.world:
            raise UsageError(
                f"{self.family.name}: the run in {self.run_dir} has a global batch of {gb} images per step "
                f"({gb // old_world} per process x {old_world} processes), which {self.world} processes "
                f"cannot share evenly; resume with a number of processes that divides {gb}, or start over "
                "with --restart")
        return gb

    def _on_signal(self, signum, frame) -> None:
        self._stop = signal.Signals(signum).name

    # -- resume decisions (rank 0 decides, every rank follows)
    def _on_rank0(self, fn):
        """Run `fn` on rank 0 and hand its (picklable) result to every rank; an error
        there ends every rank with the same exit status."""
        if self.world <= 1:
            return fn()
        import torch.distributed as dist

        payload: list[Any] = [None]
        if self.rank == 0:
            try:
                payload[0] = ("ok", fn())
            except Exception as exc:  # the other ranks must hear of it, or they wait forever
                payload[0] = ("error", str(exc), getattr(exc, "exit_code", 1))
                dist.broadcast_object_list(payload, src=0)
                raise
        dist.broadcast_object_list(payload, src=0)
        if payload[0][0] == "error":
            err = ToonlabError(f"rank 0 refused: {payload[0][1]}")
            err.exit_code = payload[0][2]
            raise err
        return payload[0][1]

    def _prepare(self, resume: str, restart: bool) -> str | None:
        """Rank 0: take the run's lock, move it aside when asked, pick the checkpoint to
        resume from (None: a new run). Keeps the loaded state in `self._loaded`."""
        self._loaded = None
        self._lock = runfolder.RunLock(self.run_dir)
        self._lock.acquire()
        if restart:
            self._move_aside()
        if resume == "auto":
            path, state = ckpt.newest_readable(self.ckpt_dir)
        elif resume in ("none", ""):
            path, state = None, None
            if ckpt.list_checkpoints(self.ckpt_dir):
                raise UsageError(f"--resume none: {self.ckpt_dir} already holds checkpoints, which a new run "
                                 "would overwrite; add --restart to move the run aside first, or use --run-dir")
        else:
            path = Path(resume)
            if not path.is_file():
                raise UsageError(f"--resume {resume}: no such checkpoint")
            state = ckpt.load(path)
        if path is None:
            return None
        changes = compare(state.get("config", {}), self.config(), self.family.length_keys,
                          defaults=_defaults(type(self.fparams)))
        section = self.family.params_section
        if changes.other and resume != "auto":
            log.warning("%s was written with other settings (%s); resuming from it anyway", path,
                        changes.describe(changes.other, section))
        elif changes.other:
            what = changes.describe(changes.other, section)
            if self.tp.on_change == "restart":
                log.warning("settings changed since %s: %s (train.on_change: restart)", path, what)
                self._move_aside()
                return None
            raise UsageError(
                f"{self.family.name}: the run in {self.run_dir} was trained with other settings: {what}. "
                f"Nothing was changed or deleted. To go on: `toonlab train {self.family.name} --restart` "
                f"(moves the run aside to {self.run_dir.name}.replaced-<time>/ and starts over), or train "
                "into a new folder with --run-dir (pipelines: set train.on_change: restart)")
        old_total = state.get("total_steps", state.get("config", {}).get("total_steps"))
        if changes.length or (old_total is not None and int(old_total) != self.total):
            what = changes.describe(changes.length, section) or f"steps {old_total} -> {self.total}"
            log.info("%s: length of training changed (%s): continuing from %s, learning-rate schedule "
                     "recomputed for %d steps", self.family.name, what, path.name, self.total)
        self._loaded = state
        return str(path)

    def _move_aside(self) -> None:
        self._lock.release()
        runfolder.move_aside(self.run_dir)
        self._lock = runfolder.RunLock(self.run_dir)
        self._lock.acquire()

    def _agree(self, stop: bool, bad: torch.Tensor) -> tuple[bool, int]:
        """(any rank stopping, earliest non-finite step or -1), the same on every rank."""
        first = int(bad) if self.world <= 1 else -1
        if self.world <= 1:
            return stop, first
        import torch.distributed as dist

        flag = torch.stack([torch.tensor(int(stop), device=self.device),
                            torch.where(bad >= 0, _BIG - bad, torch.zeros_like(bad))]).to(torch.long)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        stop_any, b = bool(flag[0] > 0), int(flag[1])
        return stop_any, (_BIG - b if b > 0 else -1)

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
        self._seed()
        recipe = self.family.build(self.fparams, self.ctx)
        sources = self._sources(recipe)
        self._data_fingerprint = self._fingerprint(recipe)
        resume_path = self._on_rank0(lambda: self._prepare(resume, restart))
        state = None
        if resume_path is not None:
            state = self._loaded if self.rank == 0 else ckpt.load(Path(resume_path))
        spec = recipe.data
        self.global_batch = self._global_batch(spec.batch_size, state)
        batch = self.global_batch // self.world
        start, sampler_state, metrics = 0, SamplerState(), {}
        if state is not None:
            start, sampler_state = self._restore(recipe, state)
            metrics = dict(state.get("metrics", {}))
            log.info("resumed from %s at step %d", resume_path, start)
        self._loaded = None
        stored_precision = (state or {}).get("precision")
        state = None
        self._wrap(recipe)
        if start >= self.total:
            if stored_precision:
                self.precision = precision.Precision(**stored_precision)
            log.info("%s: already trained for %d steps (target %d); nothing to do", self.family.name, start, self.total)
            self._write_summary(metrics)
            self._beat("finished", start)
            return metrics
        self._choose_precision(stored_precision)
        self._choose_compile(spec.crop_px, self.total - start)
        if self.compiled.on:
            self._compile(recipe)

        dataset = UnpairedDataset(sources, spec, self.tp.seed, self.tp.jitter, self.rank, self.world)
        stream = BatchStream(dataset, batch, self.tp.loader_workers,
                             pin_memory=self.device.type == "cuda", state=sampler_state)
        fixed = self._fixed_batch(sources, spec)
        live = self._live(resume_path is not None) if self.rank == 0 else None
        bad = torch.full((), -1, dtype=torch.long, device=self.device)
        t_log, n_log, t0 = time.perf_counter(), 0, time.perf_counter()
        lines = self.rank == 0 and lines_wanted()
        status, step = "running", start
        self._beat(status, start)
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            steps = range(start, self.total)
            bar = progress(steps, f"train {self.family.name}", total=self.total - start, unit="step") \
                if self.rank == 0 and bar_wanted() else steps
            for step0 in bar:
                step = step0 + 1
                batch_in = self._to_device(next(stream))
                t_step = time.perf_counter()
                losses = recipe.train_step(batch_in, step0)
                if step0 == start and self.compiled.on:
                    self._report_compile(losses, t_step)
                for s in recipe.schedulers().values():
                    s.step()
                finite = torch.stack([torch.isfinite(v.detach().float()).all() for v in losses.values()])
                bad = torch.where((bad < 0) & ~finite.all(), torch.tensor(step, device=self.device), bad)
                n_log += self.global_batch
                log_step = step % self.tp.log_every == 0 or step == self.total
                ckpt_step = step % self.tp.ckpt_every == 0
                stop = self._stop is not None
                if self.world > 1:   # ranks agree at a cadence, never each on its own
                    if log_step or ckpt_step or step % STOP_SYNC_EVERY == 0:
                        stop, first_bad = self._agree(stop, bad)
                        self._raise_non_finite(first_bad, losses, step)
                    else:
                        stop = False
                elif log_step or ckpt_step or stop:
                    self._raise_non_finite(int(bad), losses, step)
                last = step == self.total or stop
                if log_step or ckpt_step or last:
                    now = time.perf_counter()
                    metrics = {k: float(v) for k, v in losses.items()}
                    metrics.update({f"lr/{k}": o.param_groups[0]["lr"] for k, o in recipe.optimizers().items()})
                    metrics["step_time_s"] = (now - t_log) / max(1, n_log / self.global_batch)
                    metrics["images_per_s"] = n_log / max(now - t_log, 1e-9)
                    t_log, n_log = now, 0
                    if live is not None:
                        live.step = step
                        for k, v in metrics.items():
                            live.log_metric(f"train/{k}", v)
                        live.next_step()
                    if lines:
                        self._progress_line(step, start, t0, now, metrics)
                    elif bar is not steps:
                        bar.set_postfix_str(", ".join(f"{k} {v:.3g}" for k, v in losses.items()))
                    self._beat("running", step, metrics)
                if ckpt_step or last:
                    ranks = self._rank_states(recipe)
                    if self.rank == 0:
                        self._save(recipe, step, stream, metrics, ranks)
                if self.rank == 0 and ((self.tp.sample_every and step % self.tp.sample_every == 0) or last):
                    self._grid(recipe, fixed, step, live)
                if stop:
                    break
            self._check_ranks_in_sync(recipe)
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
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self._beat(status, step, metrics)
            if live is not None:
                live.end()
        if status == "stopped":
            where = ckpt.latest(self.ckpt_dir) if self.rank == 0 else None
            raise Stopped(f"{self.family.name}: {self._stop} at step {step}: checkpoint "
                          f"{where or f'of step {step} written by rank 0'}; run the same command to continue "
                          f"(exit status {EXIT_RESUMABLE}: interrupted, resumable)")
        return metrics

    def _beat(self, status: str, step: int, metrics: dict[str, float] | None = None) -> None:
        if self.rank == 0:
            extra = {"images_per_s": metrics["images_per_s"]} if metrics and "images_per_s" in metrics else {}
            runfolder.heartbeat(self.run_dir, status, step, self.total, family=self.family.name,
                                world_size=self.world, **extra)

    def _progress_line(self, step: int, start: int, t0: float, now: float, metrics: dict[str, float]) -> None:
        """One line per log step when there is no terminal: what a log file needs to tell
        a training run from a hung one."""
        per_step = (now - t0) / max(1, step - start)
        losses = " ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                          if not k.startswith("lr/") and k not in ("step_time_s", "images_per_s"))
        parts = [f"train {self.family.name}: step {step}/{self.total} ({100 * step // self.total}%)", losses,
                 f"{metrics['images_per_s']:.3g} img/s", f"{per_step:.3g} s/step",
                 f"ETA {duration(per_step * (self.total - step))}", _peak_memory(self.device)]
        log.info(" | ".join(p for p in parts if p))

    def _choose_precision(self, stored: dict[str, Any] | None) -> None:
        """`train.cpu_precision` / `train.amp` resolved (`toonlab.train.precision`): on rank
        0, then the same on every rank; a resumed auto run keeps its checkpoint's."""
        self.precision = self._on_rank0(lambda: precision.resolve(
            self.tp.cpu_precision, self.device, self.tp.amp, stored, self._throwaway_recipe))
        self.ctx.amp_dtype = self.precision.amp_dtype
        if self.rank == 0:
            log.info("%s: precision %s", self.family.name, self.precision.describe())

    def _choose_compile(self, px: int, remaining: int) -> None:
        """`train.compile` resolved (`toonlab.train.compiling`) on rank 0, the same on every
        rank; the eager step time it may need is the precision probe's or a short timing."""
        name = self.precision.name

        def step_s() -> float:
            figure = self.precision.probe.get(f"{name}_s")
            if figure:
                return float(figure)
            return precision.time_steps(self._throwaway_recipe, self.device, (name,))[f"{name}_s"]

        self.compiled = self._on_rank0(lambda: compiling.resolve(
            self.tp.compile, self.device, self.family.name, self.family.cpu_compile, name, px, remaining, step_s))
        if self.rank == 0:
            log.info("%s: torch.compile %s", self.family.name, self.compiled.describe())

    def _report_compile(self, losses: dict[str, torch.Tensor], t0: float) -> None:
        """The first compiled step holds the compilation: its time is what compiling cost."""
        for v in losses.values():
            float(v)
        self.compile_first_step_s = time.perf_counter() - t0
        if self.rank == 0:
            eager = self.compiled.estimate.get("step_s")
            log.info("%s: the first step, compiling, took %.1f s%s", self.family.name, self.compile_first_step_s,
                     f" (eager: {eager:.2f} s/step)" if eager else "")

    def _throwaway_recipe(self) -> Recipe:
        """A copy of the run's recipe for timing probes (its own Context)."""
        return self.family.build(self.fparams, dataclasses.replace(self.ctx, extra=dict(self.ctx.extra)))

    def _write_summary(self, metrics: dict[str, float]) -> None:
        """<run>/summary.json: the finished run (what the pipeline drivers wait for)."""
        if self.rank != 0:
            return
        from toonlab.util import fileio

        fileio.write_json(self.run_dir / "summary.json", {
            "family": self.family.name, "steps": self.total, "metrics": metrics,
            "checkpoint": str(ckpt.latest(self.ckpt_dir)), "world_size": self.world,
            "precision": self.precision.record() if self.precision else None,
            "compile": {**self.compiled.record(), "first_step_s": self.compile_first_step_s}
            if self.compiled else None})

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in batch.items():
            v = v.to(self.device, non_blocking=True)
            if v.dim() == 4 and self.channels_last:
                v = v.contiguous(memory_format=torch.channels_last)
            out[k] = v
        return out

    def _raise_non_finite(self, first: int, losses: dict[str, torch.Tensor], step: int) -> None:
        if first < 0:
            return
        culprit = [k for k, v in losses.items() if not bool(torch.isfinite(v.detach().float()).all())]
        last = ckpt.latest(self.ckpt_dir)
        raise ToonlabError(
            f"{self.family.name}: non-finite loss at step {first}"
            + (f" ({', '.join(culprit)} at step {step})" if culprit else "")
            + f"; stopped. Last good checkpoint: {last if last else 'none yet'}")

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


def _recompute_lr(sched: Any) -> None:
    """After loading a LambdaLR whose lambda was rebuilt for a new run length: the
    optimizer's learning rates as the new schedule gives them at the restored step (the
    same values when the length did not change)."""
    lambdas = getattr(sched, "lr_lambdas", None)
    if lambdas is None:
        return
    lrs = [base * fn(sched.last_epoch) for base, fn in zip(sched.base_lrs, lambdas)]
    for group, lr in zip(sched.optimizer.param_groups, lrs):
        group["lr"] = lr
    sched._last_lr = lrs


def _peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"peak mem {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    import resource

    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _defaults(cls: type) -> dict[str, Any] | None:
    """A params section's default values (None when it has required keys)."""
    try:
        return cls().model_dump(mode="json")
    except Exception:  # noqa: BLE001 - a section without full defaults: no key may be absent
        return None
