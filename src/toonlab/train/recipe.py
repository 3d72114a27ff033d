"""What a model family gives the generic trainer.

The trainer knows nothing of a particular model: it builds the data, moves the
recipe's networks to the device (DDP-wrapped when distributed), runs `train_step`
with autocast, writes checkpoints (networks, optimizers, schedulers, `extra_state`,
RNG states), logs the returned losses and renders `sample` into grids.

A family's model module defines `build(params, ctx) -> Recipe` (and `inference(params,
nets) -> toonlab.runs.inference.Inference`); the family is one entry of `toonlab.registry.FAMILIES`.
Adding a family never touches the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn


@dataclass(frozen=True)
class DataSpec:
    """What batches the recipe wants. `domains` maps batch keys to dataset domains,
    e.g. {"A": "photo", "B": "anime"} (unpaired, each drawn independently) or
    {"real": "anime"}. Images arrive as float tensors in [-1, 1], N x 3 x px x px."""

    domains: dict[str, str]
    crop_px: int
    batch_size: int
    load_px: int | None = None   # resize to this, then random crop to crop_px (e.g. 286 -> 256)
    flip: bool = True            # random horizontal flip
    with_landmarks: bool = False  # also deliver "<key>_five" (N x 5 x 2, in crop pixels)
    resize: str = "bilinear"     # resize interpolation: bilinear | bicubic
    # Composite each image onto this RGB colour with its packed matte before augmenting
    # (None: as packed). Needs packed data (the matte); folders of images have none.
    composite: tuple[int, int, int] | None = None


@dataclass
class Context:
    """Run-time facts the recipe may need."""

    device: torch.device
    amp_dtype: torch.dtype | None   # autocast dtype (bf16 on CUDA), None for fp32
    channels_last: bool
    total_steps: int
    distributed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Recipe(Protocol):
    data: DataSpec
    grid_rows: list[list[str]]   # rows of image names for sample grids, e.g. [["real_A", "fake_B", "rec_A"], ...]
    # Every network by name. The trainer moves them to the device and may replace an entry
    # with a DDP- or torch.compile-wrapped module, so the recipe must always call them
    # through this dict. Checkpointed by name.
    nets: dict[str, nn.Module]

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        ...

    def schedulers(self) -> dict[str, Any]:
        """LR schedulers stepped once per training step by the trainer."""

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """One optimisation step (all networks). Returns detached scalar losses; never
        calls .item() (the trainer syncs only at log steps). A recipe built on
        `toonlab.models.common.RecipeBase` writes `phases(batch, step)` instead (a generator
        yielding each phase's losses for the loop to step: `toonlab.train.optimize`), which
        also gives it `train.accumulate`; one that steps its optimizers here itself trains
        without accumulation."""

    @torch.no_grad()
    def sample(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Images (N x 3 x H x W in [-1, 1], or N x 1 x H x W heatmaps in [0, 1]) by name, for grids."""

    def extra_state(self) -> dict[str, Any]:
        """Anything else to checkpoint (tensors and plain data only), e.g. image pools."""

    def load_extra_state(self, state: dict[str, Any]) -> None:
        ...
