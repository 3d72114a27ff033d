"""The `ugatit` params.yaml section (U-GAT-IT and the Soft-AdaLIN variant). Light: pydantic only."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from toonlab.models.data_params import UnpairedDataParams
from toonlab.schema import Section


def discriminator_output_px(px: int, n_layers: int) -> int:
    """Side of the discriminator's logit map for a px x px input (<= 0: input too small)."""
    s = px
    for _ in range(n_layers - 2):
        if s < 2:   # reflection padding 1 needs at least 2 pixels
            return 0
        s = (s + 2 - 4) // 2 + 1
    for _ in range(2):
        if s < 2:
            return 0
        s = s + 2 - 4 + 1
    return s


class UGATITModelParams(Section):
    # ugatit: Kim et al. 2020. soft_adalin: photo2cartoon (hourglass + Soft-AdaLIN decoder);
    # its reference settings: ch 32, n_res 4, light (see UGATITParams.for_variant).
    variant: Literal["ugatit", "soft_adalin"] = "ugatit"
    # light: gamma / beta MLP over the globally pooled CAM features (10.6 M parameters per G at
    # ch 64). false: the paper's full model, MLP over the flattened crop_px/4 map (279 M at 256 px).
    light: bool = True
    ch: Annotated[int, Field(ge=4, le=1024)] = 64           # base width; soft_adalin reference: 32
    n_res: Annotated[int, Field(ge=0, le=32)] = 4           # residual blocks in encoder and decoder
    n_dis_global: Annotated[int, Field(ge=3, le=10)] = 7    # layers of the global discriminators
    n_dis_local: Annotated[int, Field(ge=3, le=10)] = 5     # layers of the local discriminators
    # Ablation switches (the paper's section 4; defaults: the paper's model). norm: the
    # decoder residual blocks' normalisation: adalin | adain (with the MLP's gamma / beta) |
    # in | ln | gn (learned per-channel gamma / beta, no MLP); up-sampling keeps LIN.
    norm: Literal["adalin", "in", "ln", "adain", "gn"] = "adalin"
    cam_g: bool = True    # false: no generator attention (no CAM module, classifier or CAM loss)
    cam_d: bool = True    # false: no CAM branch in the discriminators (nor its loss terms)


class UGATITLossParams(Section):
    adv_weight: Annotated[float, Field(ge=0)] = 1.0
    cycle_weight: Annotated[float, Field(ge=0)] = 10.0      # soft_adalin reference: 50
    identity_weight: Annotated[float, Field(ge=0)] = 10.0
    cam_weight: Annotated[float, Field(ge=0)] = 1000.0
    # Face-identity loss (MobileFaceNet, needs model_mobilefacenet.pth); soft_adalin reference: 1.
    faceid_weight: Annotated[float, Field(ge=0)] = 0.0


class UGATITOptimParams(Section):
    lr: Annotated[float, Field(gt=0)] = 1e-4
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.5
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.999
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    # Total training steps (the reference: 1,000,000 iterations at batch 1).
    steps: Annotated[int, Field(ge=1)] = 1_000_000
    # The learning rate falls linearly from this step to 0 at the end; 0: half of the steps.
    decay_from: Annotated[int, Field(ge=0)] = 0


# photo2cartoon's train.py settings for the Soft-AdaLIN variant.
VARIANT_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "ugatit": {},
    "soft_adalin": {"model": {"variant": "soft_adalin", "ch": 32, "n_res": 4, "light": True},
                    "loss": {"adv_weight": 1.0, "cycle_weight": 50.0, "identity_weight": 10.0,
                             "cam_weight": 1000.0, "faceid_weight": 1.0},
                    # photo2cartoon trains on faces matted onto white.
                    "data": {"composite": "white"}},
}


class UGATITParams(Section):
    model: UGATITModelParams = UGATITModelParams()
    loss: UGATITLossParams = UGATITLossParams()
    optim: UGATITOptimParams = UGATITOptimParams()
    data: UnpairedDataParams = UnpairedDataParams()

    @model_validator(mode="after")
    def _check(self) -> UGATITParams:
        px, m = self.data.crop_px, self.model
        for name, n in (("n_dis_global", m.n_dis_global), ("n_dis_local", m.n_dis_local)):
            if discriminator_output_px(px, n) < 1:
                raise ValueError(f"model.{name} {n} is too deep for crop_px {px} "
                                 f"(needs crop_px >= {3 * 2 ** (n - 2)})")
        if m.variant == "soft_adalin":
            if m.norm != "adalin" or not m.cam_g:
                raise ValueError("soft_adalin: model.norm must be adalin and model.cam_g true (Soft-AdaLIN "
                                 "blends the CAM features into AdaLIN); model.cam_d may be false")
            if px % 16:
                raise ValueError(f"soft_adalin: crop_px must be a multiple of 16 (hourglass), got {px}")
            if m.ch % 4:
                raise ValueError(f"soft_adalin: model.ch must be a multiple of 4 (hourglass units), got {m.ch}")
        return self

    @classmethod
    def for_variant(cls, variant: str = "ugatit", **sections: dict[str, Any]) -> UGATITParams:
        """The reference settings of `variant` ("ugatit": the defaults; "soft_adalin":
        photo2cartoon's), with `sections` (e.g. data={"crop_px": 128}) merged on top."""
        if variant not in VARIANT_SETTINGS:
            raise ValueError(f"unknown variant {variant!r} ({', '.join(VARIANT_SETTINGS)})")
        raw: dict[str, dict[str, Any]] = {k: dict(v) for k, v in VARIANT_SETTINGS[variant].items()}
        for name, values in sections.items():
            raw.setdefault(name, {}).update(values)
        return cls.model_validate(raw, strict=True)

