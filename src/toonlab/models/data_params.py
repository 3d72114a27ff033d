"""Pieces of the families' params sections: the unpaired two-domain data section and the
crop check every data section makes. Light: pydantic only."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from toonlab.schema import Section


def check_crop(crop_px: int, load_px: int, multiple: int, why: str) -> None:
    """The data sections' shared check: crop_px a multiple of `multiple` (`why` says which
    down-sampling stages need it), load_px 0 (derived) or at least crop_px."""
    if crop_px % multiple:
        raise ValueError(f"crop_px must be a multiple of {multiple} ({why}), got {crop_px}")
    if load_px and load_px < crop_px:
        raise ValueError(f"load_px ({load_px}) must be 0 or >= crop_px ({crop_px})")


class UnpairedDataParams(Section):
    """The `data` section of the unpaired translation families (CycleGAN, U-GAT-IT):
    batches of domain_a and domain_b faces, resized to load_px, randomly cropped to
    crop_px and flipped."""

    # 256 (the papers) or 128; a multiple of 4 (two stride-2 stages; U-GAT-IT's
    # soft_adalin needs 16, checked by its section). U-GAT-IT's full generator's MLP is
    # built for this size.
    crop_px: Annotated[int, Field(ge=16, le=4096)] = 256
    # Resize to this before the random crop; 0: crop_px * 286/256 (286 for 256, 143 for 128).
    load_px: Annotated[int, Field(ge=0, le=8192)] = 0
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 1
    flip: bool = True
    domain_a: Annotated[str, Field(min_length=1)] = "photo"
    domain_b: Annotated[str, Field(min_length=1)] = "anime"

    @model_validator(mode="after")
    def _check(self) -> UnpairedDataParams:
        check_crop(self.crop_px, self.load_px, 4, "two stride-2 stages")
        return self

    @property
    def resolved_load_px(self) -> int:
        return self.load_px or round(self.crop_px * 286 / 256)

    def spec(self):
        """The trainer's DataSpec: domains A and B."""
        from toonlab.train.recipe import DataSpec

        return DataSpec(domains={"A": self.domain_a, "B": self.domain_b}, crop_px=self.crop_px,
                        batch_size=self.batch_size, load_px=self.resolved_load_px, flip=self.flip)

