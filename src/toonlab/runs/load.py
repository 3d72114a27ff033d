"""Finding and loading a trained run: one resolver for every command that names a run.

A run is given the same way to `toonlab evaluate`, `cartoonize`, `export`, `serve` and
`generate` (`RUN` or `--run RUN`), as one of:

* a run name under `train.out_dir`: `cyclegan`, `ablations/cyclegan_perceptual`;
* a run folder: `models/ugatit`, `/elsewhere/my_run` (its latest checkpoint);
* a checkpoint file: `models/ugatit/checkpoints/step-00001000.pt`, `.../best.pt`.

A run's name (metrics file, page label) is its path under `train.out_dir` when it lies
there, else its folder's name. The family comes from the checkpoint itself, so a run
trained elsewhere loads as long as its family is registered.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toonlab import registry
from toonlab.errors import ToonlabError, UsageError
from toonlab.log import get_logger

if TYPE_CHECKING:
    import torch

    from toonlab.registry import Family
    from toonlab.runs.inference import Inference

log = get_logger(__name__)


@dataclass(frozen=True)
class RunRef:
    """A run as the user named it."""

    name: str                   # "cyclegan", "ablations/x", or the folder name of a run elsewhere
    run_dir: Path
    checkpoint: Path | None     # the chosen checkpoint file; None: the run's latest

    def checkpoint_path(self) -> Path:
        """The checkpoint to load: the chosen one, else the run's latest step; UsageError if none."""
        from toonlab.train import checkpoint as ckpt

        path = self.checkpoint or ckpt.latest(self.run_dir / "checkpoints")
        if path is None or not Path(path).is_file():
            raise UsageError(f"no checkpoint in {self.run_dir / 'checkpoints'}; train the run first "
                             f"(e.g. `toonlab train {self.run_dir.name}`)")
        return Path(path)


def resolve_run(run: str | Path, out_dir: str | Path, checkpoint: str | Path | None = None) -> RunRef:
    """The run named by `run` (name under `out_dir`, folder or checkpoint file), with an
    optional explicit checkpoint; UsageError when it names nothing."""
    p = Path(run)
    chosen: Path | None = None
    if p.is_file():
        run_dir, chosen = (p.parent.parent if p.parent.name == "checkpoints" else p.parent), p
    elif p.is_dir():
        run_dir = p
    elif (Path(out_dir) / p).is_dir():
        run_dir = Path(out_dir) / p
    else:
        raise UsageError(f"no run {str(run)!r}: not a checkpoint file, a run folder, or a run under {out_dir}/")
    if checkpoint is not None:
        chosen = Path(checkpoint)
        if not chosen.is_file():
            raise UsageError(f"--checkpoint {checkpoint}: no such file")
    try:
        name = run_dir.resolve().relative_to(Path(out_dir).resolve()).as_posix()
    except ValueError:
        name = run_dir.name
    return RunRef(name if name not in ("", ".") else run_dir.resolve().name, run_dir, chosen)


@dataclass
class LoadedRun:
    """A run's checkpoint, read: its family, the family's params, the networks' weights."""

    ref: RunRef
    family: Family
    params: Any
    state: dict[str, Any]
    checkpoint: Path
    precision: Any = None          # the inference precision chosen by `inference()`

    @property
    def step(self) -> int:
        return int(self.state.get("step", 0))

    @property
    def nets(self) -> dict[str, Any]:
        """The weights inference uses: the trained ones, with the generators' average in
        place of the generators where the run kept one (`train.ema`, `toonlab.train.ema`)."""
        return {**self.state["nets"], **self.state.get("ema", {})}

    def inference(self, device: torch.device | str = "cpu", cpu_precision: str = "fp32",
                  images: int | None = None) -> Inference:
        """The family's inference networks on `device`, in eval mode, in the precision
        `cpu_precision` (runtime.cpu_precision) gives on CPU for a job of `images` images
        (None: many); the choice is kept in `self.precision` (`toonlab.runs.precision`)."""
        nets = self.nets
        # An imported generator-only checkpoint (toonlab import-weights, e.g. photo2cartoon's
        # genA2B): the backward network is absent; it is built from G_A's weights only to
        # satisfy the family's constructor, then dropped (backward None: no cycle).
        absent = set(self.state.get("imported", {}).get("absent_nets", ()))
        no_backward = "G_B" in absent and "G_B" not in nets and "G_A" in nets
        if no_backward:
            nets["G_B"] = nets["G_A"]
        inf = self.family.inference(self.params, nets)
        if no_backward:
            inf = dataclasses.replace(inf, backward=None)
        for net in (inf.forward, inf.backward, inf.generate):
            if net is not None:
                net.to(device).eval()
        from toonlab.runs import precision as inference_precision

        inf, self.precision = inference_precision.choose(inf, cpu_precision, device, images)
        if self.precision.name != "fp32" or self.precision.probe:
            log.info("%s: inference precision %s (%s)", self.ref.name, self.precision.name, self.precision.reason)
        return inf


def read_run(ref: RunRef, *, need_inference: bool = True) -> LoadedRun:
    """Read the run's checkpoint (only tensors and plain data are unpickled) and its
    settings. ToonlabError for a checkpoint of an unknown family or another version."""
    from toonlab.train import checkpoint as ckpt

    path = ref.checkpoint_path()
    try:
        state = ckpt.load(path)
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file, reported with its cause
        raise ToonlabError(f"{path}: not a readable toonlab checkpoint ({type(exc).__name__}: {exc})") from None
    name = state.get("family", "")
    fam = registry.families().get(name)
    if fam is None:
        raise ToonlabError(f"{path}: unknown model family {name!r} (registered: {', '.join(registry.names())})")
    if need_inference and not fam.has_inference:
        raise UsageError(f"{ref.run_dir} is a {fam.name} run: it translates nothing (no inference)")
    try:
        params = fam.params_cls.model_validate_json(json.dumps(state["config"]["params"]))
    except Exception as exc:  # noqa: BLE001 - a checkpoint from another version
        raise ToonlabError(f"{path}: its settings do not match this version of toonlab ({exc})") from None
    return LoadedRun(ref, fam, params, state, path)


def load_run(run: RunRef | str | Path, device: torch.device | str = "cpu", out_dir: str | Path = ".",
             ) -> tuple[LoadedRun, Inference]:
    """(the read run, its inference networks on `device`) of a run given in any of the forms above."""
    ref = run if isinstance(run, RunRef) else resolve_run(run, out_dir)
    loaded = read_run(ref)
    return loaded, loaded.inference(device)
