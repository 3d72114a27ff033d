"""The `whitebox` params.yaml section (pretrain and adversarial stages). Light: pydantic only."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from toonlab.models.data_params import check_crop
from toonlab.schema import Section


class WhiteboxModelParams(Section):
    ch: Annotated[int, Field(ge=1, le=1024)] = 32
    n_res: Annotated[int, Field(ge=0, le=64)] = 4
    d_ch: Annotated[int, Field(ge=1, le=1024)] = 32
    # Guided filter on the generator output (guide: the photo): r, eps in training, eps at inference.
    gf_r: Annotated[int, Field(ge=0, le=64)] = 1
    gf_eps: Annotated[float, Field(gt=0)] = 1e-2
    gf_eps_test: Annotated[float, Field(gt=0)] = 5e-3
    # imagenet: torchvision's vgg19-dcbb9e9d.pth in the torch hub folder; random: smoke tests only.
    vgg_weights: Literal["imagenet", "random"] = "imagenet"
    # VGG19 input convention: torchvision (RGB, ImageNet mean/std) or caffe (the reference's:
    # BGR 0..255 minus the Caffe mean; its content/structure weights 200 are tuned to that
    # scale, ~57x larger features). torchvision's weights stay torchvision's either way.
    vgg_input: Literal["torchvision", "caffe"] = "torchvision"


class WhiteboxLossParams(Section):
    surface: Annotated[float, Field(ge=0)] = 0.1
    texture: Annotated[float, Field(ge=0)] = 1.0
    structure: Annotated[float, Field(ge=0)] = 200.0
    content: Annotated[float, Field(ge=0)] = 200.0
    tv: Annotated[float, Field(ge=0)] = 1e4
    # > 0 needs a trained landmarker in landmarker_run.
    landmark: Annotated[float, Field(ge=0)] = 0.0
    surface_r: Annotated[int, Field(ge=1, le=64)] = 5
    surface_eps: Annotated[float, Field(gt=0)] = 0.2
    landmarker_run: str = "models/landmarker"


class WhiteboxStructureParams(Section):
    method: Literal["slic", "felzenszwalb", "selective"] = "slic"
    segments: Annotated[int, Field(ge=2, le=100000)] = 200
    fill: Literal["mean", "adaptive"] = "mean"
    # Segmentation processes; 0: in the training process, serialised (tests only).
    workers: Annotated[int, Field(ge=0, le=64)] = 2


class WhiteboxPretrainParams(Section):
    steps: Annotated[int, Field(ge=1)] = 50000
    lr: Annotated[float, Field(gt=0)] = 2e-4
    # The pretrain run whose latest checkpoint initialises G; "": random init.
    run_dir: str = "models/whitebox_pretrain"


class WhiteboxOptimParams(Section):
    steps: Annotated[int, Field(ge=1)] = 100000
    lr: Annotated[float, Field(gt=0)] = 2e-4
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.5
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.99


class WhiteboxDataParams(Section):
    crop_px: Annotated[int, Field(ge=16, le=4096)] = 256
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 16
    flip: bool = True
    domain_photo: Annotated[str, Field(min_length=1)] = "photo"
    domain_cartoon: Annotated[str, Field(min_length=1)] = "anime"
    # Resize to this before the random crop; 0: no resize (images used at crop_px).
    load_px: Annotated[int, Field(ge=0, le=8192)] = 0

    @model_validator(mode="after")
    def _check(self) -> WhiteboxDataParams:
        check_crop(self.crop_px, self.load_px, 4, "two stride-2 stages")
        return self


class WhiteboxParams(Section):
    model: WhiteboxModelParams = WhiteboxModelParams()
    loss: WhiteboxLossParams = WhiteboxLossParams()
    structure: WhiteboxStructureParams = WhiteboxStructureParams()
    pretrain: WhiteboxPretrainParams = WhiteboxPretrainParams()
    optim: WhiteboxOptimParams = WhiteboxOptimParams()
    data: WhiteboxDataParams = WhiteboxDataParams()

