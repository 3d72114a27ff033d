"""Presets of the `dcgan` params section (`toonlab preset <name> dcgan`, see
`toonlab.presets`). Data only: no training code imports this module.

Reference: the 96 px anime-avatar recipe (DCGAN, Radford et al. 2016): nz 100, ngf/ndf
64, PyTorch's default weight init (`model.init: default`), Adam 2e-4 for both (beta1 0.5),
batch 256, D every batch and G every 5th, resize and centre crop without flipping, 200 epochs. Its data set is a crawl of about 50,000 anime
faces and its loader drops the last partial batch: 50,000 // 256 = 195 steps per epoch,
so 200 epochs = 39,000 steps. For N images use 200 x (N // 256).
"""

from __future__ import annotations

from typing import Any

EPOCH_STEPS = 50_000 // 256   # about 50,000 faces, batch 256, last partial batch dropped

ABOUT = {
    "demo": "small and short: ngf/ndf 32, batch 8, 200 steps",
    "reference": "the recipe: ngf/ndf 64, PyTorch default init, batch 256, no flip, 200 epochs of ~50,000 faces",
}

PRESETS: dict[str, dict[str, Any]] = {
    "demo": {
        "model": {"nz": 100, "ngf": 32, "ndf": 32, "init": "normal"},
        "optim": {"lr_g": 0.0002, "lr_d": 0.0002, "beta1": 0.5, "beta2": 0.999, "d_every": 1, "g_every": 5,
                  "steps": 200},
        "data": {"crop_px": 96, "batch_size": 8, "flip": True},
    },
    "reference": {
        # The recipe keeps PyTorch's default init (no N(0, 0.02) re-init) and does not flip.
        "model": {"nz": 100, "ngf": 64, "ndf": 64, "init": "default"},
        "optim": {"lr_g": 0.0002, "lr_d": 0.0002, "beta1": 0.5, "beta2": 0.999, "d_every": 1, "g_every": 5,
                  "steps": 200 * EPOCH_STEPS},
        "data": {"crop_px": 96, "batch_size": 256, "flip": False},
    },
}

# The smallest settings that train a step in a second on a CPU (family name -> values of its
# section): what the tests and the smoke benchmarks run (`toonlab.presets.smoke`).
SMOKE: dict[str, dict[str, Any]] = {
    "dcgan": {"model": {"nz": 8, "ngf": 8, "ndf": 8}, "data": {"batch_size": 4}, "optim": {"g_every": 1}},
}

# The tiny end-to-end project of the driver tests (tests/tiny_project.py): params.yaml
# section -> values (a few steps at the smallest size; the drivers are under test there).
TINY: dict[str, dict[str, Any]] = {
    "dcgan": {"model": {"nz": 8, "ngf": 8, "ndf": 8}, "optim": {"steps": 3}, "data": {"batch_size": 2}},
}
