"""Finding the trained runs under a folder: which of them translate photos, their family
and the step of their newest checkpoint (what `toonlab serve` offers).

A run's family comes from its `summary.json` when it has one (cheap: no checkpoint is
read), else from its checkpoint. A run without a checkpoint, with one that cannot be read,
of an unknown family or of a family that does not translate photos is passed over, with
the reason (`run_info`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from toonlab import registry
from toonlab.errors import UsageError
from toonlab.log import get_logger
from toonlab.runs.load import RunRef, resolve_run

log = get_logger(__name__)


@dataclass(frozen=True)
class RunInfo:
    """A trained run that translates photos."""

    ref: RunRef
    family: str
    step: int

    @property
    def name(self) -> str:          # what the page and the API call it: "cyclegan", "ablations/x"
        return self.ref.name

    def label(self) -> str:
        return f"{self.name} ({self.family}, step {self.step})"


def run_family(run_dir: Path, checkpoint: Path) -> str:
    """The family of a run: from its summary.json when it has one, else from the checkpoint."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            fam = json.loads(summary.read_text(encoding="utf-8")).get("family")
            if isinstance(fam, str) and fam:
                return fam
        except (OSError, ValueError, AttributeError):
            pass
    from toonlab.train import checkpoint as ckpt

    return str(ckpt.load(checkpoint).get("family", ""))


def run_info(ref: RunRef) -> tuple[RunInfo | None, str]:
    """(RunInfo, "") for a run that translates photos, else (None, why not)."""
    from toonlab.train import checkpoint as ckpt

    try:
        path = ref.checkpoint_path()
    except UsageError:
        return None, f"{ref.run_dir} has no checkpoint yet"
    try:
        family = run_family(ref.run_dir, path)
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint is skipped, with its reason
        return None, f"{path} cannot be read ({type(exc).__name__}: {exc})"
    fam = registry.families().get(family)
    if fam is None:
        return None, f"{ref.run_dir}: unknown model family {family!r}"
    if not fam.translates:
        return None, f"{ref.name} is a {family} run: it does not translate photos"
    found = ckpt.list_checkpoints(ref.run_dir / "checkpoints")
    step = next((s for s, p in found if p == path), 0)
    if ref.checkpoint is not None and step == 0:
        step = int(ckpt.load(path).get("step", 0))
    return RunInfo(ref, family, step), ""


def discover_runs(out_dir: str | Path) -> list[RunInfo]:
    """Every run under `out_dir` (one or two levels deep, e.g. cyclegan and
    ablations/cyclegan_base) with a checkpoint, whose family translates photos."""
    out_dir = Path(out_dir)
    runs = []
    for ck in sorted(out_dir.glob("*/checkpoints")) + sorted(out_dir.glob("*/*/checkpoints")):
        info, why = run_info(resolve_run(ck.parent, out_dir))
        if info is None:
            log.debug("skipping %s: %s", ck.parent, why)
        else:
            runs.append(info)
    return runs
