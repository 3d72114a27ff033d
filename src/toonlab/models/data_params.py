"""Pieces of the families' params sections: the unpaired two-domain data section and the
crop check every data section makes. Light: pydantic only."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from toonlab.schema import Section


def check_crop(crop_px: int, load_px: int, multiple: int, why: str) -> None:
    """The data sections' shared check: crop_px a multiple of `multiple` (`why` says which
    down-sampling stages need it), load_px 0 (derived) or at least crop_px."""
    if crop_px % multiple:
        raise ValueError(f"crop_px must be a multiple of {multiple} ({why}), got {crop_px}")
    if load_px and load_px < crop_px:
        raise ValueError(f"load_px ({load_px}) must be 0 or >= crop_px ({crop_px})")


COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0)}


def composite_rgb(value: str) -> tuple[int, int, int] | None:
    """`data.composite` as an RGB triple: "" (off) -> None, "white" / "black" / "#rrggbb"."""
    if not value:
        return None
    if value in COLOURS:
        return COLOURS[value]
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
        raise ValueError(f"composite must be '', white, black or #rrggbb, got {value!r}")
    return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)


class UnpairedDataParams(Section):
    """The `data` section of the unpaired translation families (CycleGAN, U-GAT-IT):
    batches of domain_a and domain_b faces, optionally composited onto a colour with
    their packed matte, resized to load_px, randomly cropped to crop_px and flipped."""

    # 256 (the papers) or 128; a multiple of 4 (two stride-2 stages; U-GAT-IT's
    # soft_adalin needs 16, checked by its section). U-GAT-IT's full generator's MLP is
    # built for this size.
    crop_px: Annotated[int, Field(ge=16, le=4096)] = 256
    # Resize to this before the random crop; 0: derived by load_auto.
    load_px: Annotated[int, Field(ge=0, le=8192)] = 0
    # load_px 0 means: scale, crop_px * 286/256 (286 for 256, 143 for 128; CycleGAN's
    # load_size); plus30, crop_px + 30 (286 for 256, 158 for 128; U-GAT-IT's img_size + 30).
    load_auto: Literal["scale", "plus30"] = "scale"
    # Resize interpolation: bilinear (cv2.INTER_LINEAR) or bicubic (cv2.INTER_CUBIC, the
    # CycleGAN reference's transforms.Resize(..., BICUBIC)).
    resize: Literal["bilinear", "bicubic"] = "bilinear"
    # Composite the packed faces onto this colour with their packed matte before resizing
    # ("" off; white, black or #rrggbb). photo2cartoon trains on faces on white. Packed data
    # only: train.source folders has no matte (an error; decoding already composites
    # transparent files onto decode.background).
    composite: str = ""
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 1
    flip: bool = True
    domain_a: Annotated[str, Field(min_length=1)] = "photo"
    domain_b: Annotated[str, Field(min_length=1)] = "anime"

    @model_validator(mode="after")
    def _check(self) -> UnpairedDataParams:
        check_crop(self.crop_px, self.load_px, 4, "two stride-2 stages")
        return self

    @field_validator("composite")
    @classmethod
    def _check_composite(cls, value: str) -> str:
        composite_rgb(value)
        return value

    @property
    def resolved_load_px(self) -> int:
        if self.load_px:
            return self.load_px
        if self.load_auto == "plus30":
            return self.crop_px + 30
        return round(self.crop_px * 286 / 256)

