"""The `cyclegan` params.yaml section. Light: pydantic only."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from toonlab.models.data_params import UnpairedDataParams
from toonlab.schema import Section


class CycleGANModelParams(Section):
    ngf: Annotated[int, Field(ge=1, le=1024)] = 64
    ndf: Annotated[int, Field(ge=1, le=1024)] = 64
    # 9 residual blocks at 256 px, 6 is the paper's choice at 128 px.
    n_blocks: Annotated[int, Field(ge=0, le=64)] = 9
    n_layers_d: Annotated[int, Field(ge=1, le=8)] = 3


class CycleGANLossParams(Section):
    gan_mode: Literal["lsgan", "vanilla", "bce_logits"] = "lsgan"
    cycle_weight: Annotated[float, Field(ge=0)] = 10.0
    # Multiplies cycle_weight (0.5 x 10 = 5). 0 disables the identity terms.
    identity_weight: Annotated[float, Field(ge=0)] = 0.5
    # L1 of VGG16 features between each input and its translation, both directions (A->B
    # and B->A, summed); 0 disables (the paper has none).
    perceptual_weight: Annotated[float, Field(ge=0)] = 0.0
    perceptual_layer: Literal["relu1_2", "relu2_2", "relu3_3", "relu4_3"] = "relu2_2"
    # imagenet: torchvision's vgg16-397923af.pth from the torch hub folder; random: smoke tests only.
    perceptual_weights: Literal["imagenet", "random"] = "imagenet"


class CycleGANOptimParams(Section):
    lr: Annotated[float, Field(gt=0)] = 2e-4
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.5
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.999
    # The paper's 100 + 100 epochs, in steps. Both 0: half of the run constant, half decaying.
    steps_constant: Annotated[int, Field(ge=0)] = 0
    steps_decay: Annotated[int, Field(ge=0)] = 0
    pool_size: Annotated[int, Field(ge=0, le=10000)] = 50


class CycleGANParams(Section):
    model: CycleGANModelParams = CycleGANModelParams()
    loss: CycleGANLossParams = CycleGANLossParams()
    optim: CycleGANOptimParams = CycleGANOptimParams()
    data: UnpairedDataParams = UnpairedDataParams()

