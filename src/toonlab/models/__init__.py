"""Model families: each a small module with its networks, losses and a training recipe.

`FAMILIES` maps the name used by `toonlab train <name>` and the params section of the
same name to the family's params class, builder and step count. Adding a family means
adding its module and one entry here; the trainer is not touched.
"""

from __future__ import annotations

from toonlab.errors import UsageError
from toonlab.train.trainer import Family


def _scheduled_steps(name: str):
    """Total steps of families whose schedule is `optim.steps_constant + optim.steps_decay`."""

    def total(p) -> int:
        steps = p.optim.steps_constant + p.optim.steps_decay
        if steps <= 0:
            raise UsageError(f"{name}.optim.steps_constant + steps_decay is 0: set them in params.yaml "
                             "or pass --steps")
        return steps

    return total


def families() -> dict[str, Family]:
    from toonlab.models import cyclegan, dcgan, landmarker, ugatit, whitebox

    found = [
        Family("cyclegan", cyclegan.CycleGANParams, cyclegan.build, _scheduled_steps("cyclegan"),
               inference=cyclegan.inference),
        Family("dcgan", dcgan.DCGANParams, dcgan.build, lambda p: p.optim.steps, best_metric="G",
               inference=dcgan.inference, translates=False),
        ugatit.FAMILY,
        landmarker.FAMILY,
        whitebox.PRETRAIN_FAMILY,
        whitebox.FAMILY,
    ]
    return {f.name: f for f in found}
