"""Presets of the `ugatit` params section (`toonlab preset <name> ugatit`, see
`toonlab.presets`). Data only: no training code imports this module.

reference: Kim et al. 2020 and the authors' PyTorch implementation, light model (the
variant whose counts the reference facts give: G 10,589,888 at ch 64): ch 64, 4
residual blocks, 7-layer global and 5-layer local discriminators, weights adv 1, cycle
10, identity 10, CAM 1000, Adam 1e-4 (0.5, 0.999) with weight decay 1e-4, 1,000,000
iterations at batch 1, the learning rate decaying linearly from iteration 500,000
(`decay_from: 0` is half of the steps, the reference's iteration // 2), 256 px crops of
crop + 30 = 286 px bilinear resizes (`load_auto: plus30`), flipped.
reference_full: the same with the full generator (MLP over the flattened feature map,
279 M parameters per generator at 256 px), the reference implementation's default.
soft_adalin: photo2cartoon's train.py for the Soft-AdaLIN variant: ch 32, light, cycle
50, face-ID 1 (needs model_mobilefacenet.pth), faces composited onto white with their
packed mattes (`data.composite: white`, as photo2cartoon's data), otherwise as the reference.
Every preset sets the ablation switches to the paper's model (norm adalin, G and D
CAM); the ablation variants are in params.yaml (`ablations.sets.ugatit_paper`).
"""

from __future__ import annotations

import copy
from typing import Any

from toonlab.models.ugatit.params import VARIANT_SETTINGS
from toonlab.util import keys

ABOUT = {
    "demo": "small and short: light, ch 16, 2 blocks, 64 px, 150 steps",
    "reference": "the paper, light: ch 64, 4 blocks, D 7/5 layers, 256 px (load 286), 1,000,000 steps (decay from 500,000)",
    "reference_full": "the paper's full generator (279 M parameters at 256 px), otherwise as reference",
    "soft_adalin": "photo2cartoon's Soft-AdaLIN variant: ch 32, light, cycle 50, face-ID 1, faces on white, "
                   "otherwise as reference",
}

_DEMO: dict[str, Any] = {
    "model": {"variant": "ugatit", "light": True, "ch": 16, "n_res": 2, "n_dis_global": 5, "n_dis_local": 4,
              "norm": "adalin", "cam_g": True, "cam_d": True},
    "loss": {"adv_weight": 1.0, "cycle_weight": 10.0, "identity_weight": 10.0, "cam_weight": 1000.0,
             "faceid_weight": 0.0},
    "optim": {"lr": 0.0001, "beta1": 0.5, "beta2": 0.999, "weight_decay": 0.0001, "steps": 150, "decay_from": 0},
    "data": {"crop_px": 64, "load_px": 0, "load_auto": "scale", "resize": "bilinear", "composite": "",
             "batch_size": 1, "flip": True},
}

_REFERENCE: dict[str, Any] = {
    "model": {"variant": "ugatit", "light": True, "ch": 64, "n_res": 4, "n_dis_global": 7, "n_dis_local": 5,
              "norm": "adalin", "cam_g": True, "cam_d": True},
    "loss": {"adv_weight": 1.0, "cycle_weight": 10.0, "identity_weight": 10.0, "cam_weight": 1000.0,
             "faceid_weight": 0.0},
    # decay_from 0: linear decay over the second half (from 500,000 of 1,000,000).
    "optim": {"lr": 0.0001, "beta1": 0.5, "beta2": 0.999, "weight_decay": 0.0001, "steps": 1_000_000,
              "decay_from": 0},
    # load_px 0 with load_auto plus30: crop_px + 30 (286 at 256, 158 at 128), the reference's
    # Resize((img_size + 30, img_size + 30)) (bilinear, torchvision's default).
    "data": {"crop_px": 256, "load_px": 0, "load_auto": "plus30", "resize": "bilinear", "composite": "",
             "batch_size": 1, "flip": True},
}


def _merged(base: dict[str, Any], **sections: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(keys.merge(base, sections))


PRESETS: dict[str, dict[str, Any]] = {
    "demo": _DEMO,
    "reference": _REFERENCE,
    "reference_full": _merged(_REFERENCE, model={"light": False}),
    "soft_adalin": _merged(_REFERENCE, **VARIANT_SETTINGS["soft_adalin"]),
}

# The smallest settings that train a step in a second on a CPU (family name -> values of its
# section): what the tests and the smoke benchmarks run (`toonlab.presets.smoke`).
SMOKE: dict[str, dict[str, Any]] = {
    "ugatit": {"model": {"ch": 8, "n_res": 1, "n_dis_global": 4, "n_dis_local": 3},
               "data": {"crop_px": 32, "batch_size": 2}},
}
# Variants of the family that the tests cover at smoke size too (family -> case name -> values).
SMOKE_VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "ugatit": {"soft_adalin": {"model": {"variant": "soft_adalin", "ch": 8, "n_res": 1, "n_dis_global": 4,
                                         "n_dis_local": 3}, "data": {"crop_px": 32, "batch_size": 2}}},
}

# The tiny end-to-end project of the driver tests (tests/tiny_project.py): params.yaml
# section -> values (a few steps at the smallest size; the drivers are under test there).
TINY: dict[str, dict[str, Any]] = {
    "ugatit": {"model": {"ch": 4, "n_res": 1, "n_dis_global": 3, "n_dis_local": 3},
               "data": {"crop_px": 32, "load_px": 36}, "optim": {"steps": 2}},
}
