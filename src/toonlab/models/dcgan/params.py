"""The `dcgan` params.yaml section. Light: pydantic only."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from toonlab.schema import Section


class DCGANModelParams(Section):
    nz: Annotated[int, Field(ge=1, le=4096)] = 100
    ngf: Annotated[int, Field(ge=1, le=1024)] = 64
    ndf: Annotated[int, Field(ge=1, le=1024)] = 64
    # Weight init: normal (the DCGAN paper: conv ~ N(0, 0.02), batch-norm weight ~ N(1, 0.02))
    # or default (PyTorch's own init, as the anime-avatar recipe leaves it).
    init: Literal["normal", "default"] = "normal"


class DCGANOptimParams(Section):
    lr_g: Annotated[float, Field(gt=0)] = 2e-4
    lr_d: Annotated[float, Field(gt=0)] = 2e-4
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.5
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.999
    # D is updated on steps divisible by d_every, G on steps divisible by g_every (step from 0).
    d_every: Annotated[int, Field(ge=1)] = 1
    g_every: Annotated[int, Field(ge=1)] = 5
    # Total training steps: the reference's 200 epochs in steps (epochs x images / batch_size).
    steps: Annotated[int, Field(ge=1)] = 2000


class DCGANDataParams(Section):
    # The architecture is built for 96 px (5 layers, kernel 5 stride 3 at the image end).
    crop_px: Literal[96] = 96
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 256
    flip: bool = True
    domain: Annotated[str, Field(min_length=1)] = "anime"


class DCGANSampleParams(Section):
    # Noise of the sample grids and of `generate` (the reference's gen_mean / gen_std).
    noise_mean: float = 0.0
    noise_std: Annotated[float, Field(gt=0)] = 1.0


class DCGANParams(Section):
    model: DCGANModelParams = DCGANModelParams()
    optim: DCGANOptimParams = DCGANOptimParams()
    data: DCGANDataParams = DCGANDataParams()
    sample: DCGANSampleParams = DCGANSampleParams()

