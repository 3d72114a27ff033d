"""The params.yaml sections of evaluation and the report. Light: pydantic only."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from toonlab import registry
from toonlab.schema import Section


class EvaluateParams(Section):
    # Runs evaluated by the pipeline: folder names under train.out_dir; empty (the default):
    # every registered family with inference (`registry.with_inference()`), read as that list.
    runs: list[str] = Field(default_factory=registry.with_inference)
    metrics_dir: str = "metrics"        # <metrics_dir>/<run>.json
    out_dir: str = "reports/eval"       # <out_dir>/<run>/: fixed-input translations
    split: Literal["train", "val", "test"] = "test"
    max_images: Annotated[int, Field(ge=0)] = 0        # 0: the whole split
    fixed_inputs: Annotated[int, Field(ge=1, le=64)] = 8
    generated: Annotated[int, Field(ge=1, le=100000)] = 256  # images drawn from unconditional runs
    kid_subsets: Annotated[int, Field(ge=1, le=1000)] = 100
    kid_subset_px: Annotated[int, Field(ge=2)] = 1000   # KID subset size (clipped to the smaller set)
    detect_px: Annotated[int, Field(ge=64, le=2048)] = 256  # outputs upscaled to this for detection
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 16
    seed: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="before")
    @classmethod
    def _every_family_when_empty(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("runs") == []:
            return {**data, "runs": registry.with_inference()}
        return data


class ReportParams(Section):
    out: str = "reports/index.html"
    curve_points: Annotated[int, Field(ge=10, le=10000)] = 400   # points per loss curve (thinned evenly)

