"""The `landmarker` params.yaml section. Light: pydantic only."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from toonlab.models.data_params import check_crop
from toonlab.schema import Section


class LandmarkerModelParams(Section):
    ch: Annotated[int, Field(ge=4, le=512)] = 32
    n_blocks: Annotated[int, Field(ge=0, le=16)] = 2
    # Input pixels per heatmap cell.
    stride: Literal[1, 2, 4, 8] = 4
    # Width of the Gaussian targets, in heatmap cells.
    sigma: Annotated[float, Field(gt=0, le=16)] = 1.5


class LandmarkerLossParams(Section):
    # MSE between heatmaps and Gaussian targets, summed over each map, mean over maps.
    heat_weight: Annotated[float, Field(ge=0)] = 1.0
    # L1 between soft-argmax points and the true points, in heatmap cells.
    coord_weight: Annotated[float, Field(ge=0)] = 1.0

    @model_validator(mode="after")
    def _check(self) -> LandmarkerLossParams:
        if self.heat_weight == 0 and self.coord_weight == 0:
            raise ValueError("heat_weight and coord_weight are both 0: nothing to train")
        return self


class LandmarkerOptimParams(Section):
    lr: Annotated[float, Field(gt=0)] = 1e-3
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.999
    steps: Annotated[int, Field(ge=1)] = 2000
    # constant, or cosine decay to 0 over the run.
    lr_decay: Literal["constant", "cosine"] = "cosine"


class LandmarkerDataParams(Section):
    crop_px: Annotated[int, Field(ge=16, le=1024)] = 128
    # Resize to this before the random crop; 0: crop_px (no crop).
    load_px: Annotated[int, Field(ge=0, le=2048)] = 0
    # Per domain: each step sees batch_size photos and batch_size anime faces.
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 16
    flip: bool = True
    domain_photo: Annotated[str, Field(min_length=1)] = "photo"
    domain_anime: Annotated[str, Field(min_length=1)] = "anime"

    @model_validator(mode="after")
    def _check(self) -> LandmarkerDataParams:
        check_crop(self.crop_px, self.load_px, 8, "three stride-2 stages")
        return self

    @property
    def resolved_load_px(self) -> int:
        return self.load_px or self.crop_px


class LandmarkerParams(Section):
    model: LandmarkerModelParams = LandmarkerModelParams()
    loss: LandmarkerLossParams = LandmarkerLossParams()
    optim: LandmarkerOptimParams = LandmarkerOptimParams()
    data: LandmarkerDataParams = LandmarkerDataParams()

