"""What a training run shows the people watching it (rank 0 only; the other ranks compute
the metrics and show nothing):

- DVCLive (`Live(dir, save_dvc_exp=False, dvcyaml=None)`, in `<run>/dvclive`): every
  loss, the learning rates, step time and images/s at each log step; sample grids.
- Without a terminal, one progress line per log step (step/total, losses, images/s, ETA,
  peak memory); with one, a tqdm bar.
- `<run>/heartbeat.json` (`toonlab.train.runfolder`): the run's status for watchers.
- `<run>/samples/step-<step>.png` and `latest.png`: the sample grids.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable

import torch

from toonlab.log import bar_wanted, duration, get_logger, lines_wanted, progress
from toonlab.train import runfolder
from toonlab.train.recipe import Recipe

log = get_logger(__name__)


class Monitor:
    """The run's logging: `start` it with the loop, `log` at log steps, `end` it after."""

    def __init__(self, run_dir: Path, name: str, total: int, world: int, device: torch.device, lead: bool):
        self.run_dir, self.name, self.total, self.world, self.device, self.lead = \
            run_dir, name, total, world, device, lead
        self.live = None
        self.lines = False
        self.bar = None
        self.start_step = 0
        self.t0 = self.t_log = 0.0
        self.images = 0          # images trained since the last log step (all ranks)

    def beat(self, status: str, step: int, metrics: dict[str, float] | None = None) -> None:
        """The heartbeat (rank 0): status, step, images/s."""
        if self.lead:
            extra = {"images_per_s": metrics["images_per_s"]} if metrics and "images_per_s" in metrics else {}
            runfolder.heartbeat(self.run_dir, status, step, self.total, family=self.name,
                                world_size=self.world, **extra)

    def start(self, start: int, resuming: bool) -> None:
        """Open DVCLive (rank 0; continuing its files when the run resumes) and start the
        clocks at step `start`."""
        self.live = _live(self.run_dir, resuming) if self.lead else None
        self.t_log, self.images, self.t0 = time.perf_counter(), 0, time.perf_counter()
        self.lines = self.lead and lines_wanted()
        self.start_step, self.bar = start, None

    def steps(self) -> Iterable[int]:
        """The steps left (0-based), through a progress bar on rank 0 at a terminal."""
        steps = range(self.start_step, self.total)
        if self.lead and bar_wanted():
            self.bar = progress(steps, f"train {self.name}", total=self.total - self.start_step, unit="step")
            return self.bar
        return steps

    def log(self, step: int, losses: dict[str, torch.Tensor], recipe: Recipe, global_batch: int) -> dict[str, float]:
        """The metrics of log step `step` (losses read: a host sync), logged and shown."""
        now = time.perf_counter()
        metrics = {k: float(v) for k, v in losses.items()}
        metrics.update({f"lr/{k}": o.param_groups[0]["lr"] for k, o in recipe.optimizers().items()})
        metrics["step_time_s"] = (now - self.t_log) / max(1, self.images / global_batch)
        metrics["images_per_s"] = self.images / max(now - self.t_log, 1e-9)
        self.t_log, self.images = now, 0
        if self.live is not None:
            self.live.step = step
            for k, v in metrics.items():
                self.live.log_metric(f"train/{k}", v)
            self.live.next_step()
        if self.lines:
            self._progress_line(step, now, metrics)
        elif self.bar is not None:
            self.bar.set_postfix_str(", ".join(f"{k} {v:.3g}" for k, v in losses.items()))
        return metrics

    def _progress_line(self, step: int, now: float, metrics: dict[str, float]) -> None:
        """One line per log step when there is no terminal: what a log file needs to tell
        a training run from a hung one."""
        per_step = (now - self.t0) / max(1, step - self.start_step)
        losses = " ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                          if not k.startswith("lr/") and k not in ("step_time_s", "images_per_s"))
        parts = [f"train {self.name}: step {step}/{self.total} ({100 * step // self.total}%)", losses,
                 f"{metrics['images_per_s']:.3g} img/s", f"{per_step:.3g} s/step",
                 f"ETA {duration(per_step * (self.total - step))}", _peak_memory(self.device)]
        log.info(" | ".join(p for p in parts if p))

    def grid(self, recipe: Recipe, fixed: dict[str, torch.Tensor], step: int) -> None:
        """The recipe's samples of the fixed batch, in eval mode: a grid in `<run>/samples`
        and DVCLive."""
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
        if self.live is not None:
            self.live.log_image("grid.png", img)

    def end(self) -> None:
        if self.live is not None:
            self.live.end()


def _live(run_dir: Path, resuming: bool):
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

    return _Live(dir=str(run_dir / "dvclive"), save_dvc_exp=False, dvcyaml=None, resume=resuming, report=None)


def _peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"peak mem {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    import resource

    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
