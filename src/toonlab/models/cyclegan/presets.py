"""Presets of the `cyclegan` params section (`toonlab preset <name> cyclegan`, see
`toonlab.presets`). Data only: no training code imports this module.

Reference: Zhu et al. 2017 and the authors' PyTorch implementation at its defaults.
Its schedule is 100 epochs at a constant learning rate plus 100 decaying to 0; an
epoch is max(|A|, |B|) steps at batch 1. In steps for selfie2anime (3,400 training
images per domain, the data set of the U-GAT-IT comparison): 340,000 + 340,000. For
N training photos use 100 x N each (`dvc exp run -S cyclegan.optim.steps_constant=...`).
"""

from __future__ import annotations

from typing import Any

EPOCH_STEPS = 3_400   # selfie2anime: 3,400 training images per domain, batch 1

ABOUT = {
    "demo": "small and fast: 64 px, ngf 32, 6 blocks, 100 + 100 steps",
    "reference": "the paper: 256 px (load 286, bicubic), ngf/ndf 64, 9 blocks, 100 + 100 epochs of 3,400 images",
}

PRESETS: dict[str, dict[str, Any]] = {
    "demo": {
        "model": {"ngf": 32, "ndf": 64, "n_blocks": 6, "n_layers_d": 3},
        "loss": {"gan_mode": "lsgan", "cycle_weight": 10.0, "identity_weight": 0.5, "perceptual_weight": 0.0},
        "optim": {"lr": 0.0002, "beta1": 0.5, "beta2": 0.999, "steps_constant": 100, "steps_decay": 100,
                  "pool_size": 50},
        "data": {"crop_px": 64, "load_px": 0, "load_auto": "scale", "resize": "bilinear", "composite": "",
                 "batch_size": 1, "flip": True},
    },
    "reference": {
        "model": {"ngf": 64, "ndf": 64, "n_blocks": 9, "n_layers_d": 3},
        # identity 0.5 multiplies the cycle weight: 5, as the reference's lambda_identity.
        "loss": {"gan_mode": "lsgan", "cycle_weight": 10.0, "identity_weight": 0.5, "perceptual_weight": 0.0},
        "optim": {"lr": 0.0002, "beta1": 0.5, "beta2": 0.999, "steps_constant": 100 * EPOCH_STEPS,
                  "steps_decay": 100 * EPOCH_STEPS, "pool_size": 50},
        # load_px 0: crop_px * 286/256 = 286, the reference's load_size, resized bicubically
        # (its transforms.Resize(..., Image.BICUBIC)).
        "data": {"crop_px": 256, "load_px": 0, "load_auto": "scale", "resize": "bicubic", "composite": "",
                 "batch_size": 1, "flip": True},
    },
}

# The smallest settings that train a step in a second on a CPU (family name -> values of its
# section): what the tests and the smoke benchmarks run (`toonlab.presets.smoke`).
SMOKE: dict[str, dict[str, Any]] = {
    "cyclegan": {"model": {"ngf": 8, "ndf": 8, "n_blocks": 1}, "data": {"crop_px": 32, "batch_size": 2}},
}

# The tiny end-to-end project of the driver tests (tests/tiny_project.py): params.yaml
# section -> values (a few steps at the smallest size; the drivers are under test there).
TINY: dict[str, dict[str, Any]] = {
    "cyclegan": {"model": {"ngf": 8, "ndf": 8, "n_blocks": 1, "n_layers_d": 2},
                 "data": {"crop_px": 32, "load_px": 36}, "optim": {"steps_constant": 2, "steps_decay": 2}},
}
