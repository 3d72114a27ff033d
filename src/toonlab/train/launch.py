"""`toonlab train <family>`: a registered family's section of params.yaml (or an
ablation variant of it) -> the generic trainer, on the chosen device, under torchrun or not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toonlab.errors import UsageError
from toonlab.eval.ablations import variant_params
from toonlab.log import get_logger
from toonlab.models import registry

log = get_logger(__name__)


def train_family(params: Any, name: str, *, variant: str | None = None, steps: int | None = None,
                 resume: str = "auto", run_dir: str | None = None, device: str | None = None,
                 restart: bool = False) -> dict[str, Any]:
    """Train family `name` into its run folder (default: the registry's, or
    `<train.out_dir>/<ablations.runs_subdir>/<variant>`); returns the last logged metrics."""
    from toonlab.train.device import init_distributed, resolve_device
    from toonlab.train.trainer import Trainer

    if steps is not None and steps < 1:
        raise UsageError("--steps must be at least 1")
    family = registry.get(name)
    fparams, default_dir = family.section_of(params), family.run_dir(params)
    if variant:
        spec, fparams = variant_params(params, variant)
        if spec.family != name:
            raise UsageError(f"ablation variant {variant} is a {spec.family} variant, not {name}")
        default_dir = str(Path(params.train.out_dir) / params.ablations.runs_subdir / variant)
        steps = steps if steps is not None else (spec.steps or None)
    run_dir = run_dir or default_dir
    _, _, local_rank = init_distributed()
    trainer = Trainer(family, fparams, params.train, device=resolve_device(params.runtime.device, device, local_rank),
                      packed_dir=params.pack.out_dir, run_dir=Path(run_dir), steps=steps)
    metrics = trainer.run(resume=resume, restart=restart)
    if metrics:
        log.info("%s: %s", name, ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())))
    return metrics
