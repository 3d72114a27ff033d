"""Presets of the `landmarker` params section (`toonlab preset <name> landmarker`, see
`toonlab.presets`). Data only: no training code imports this module.

The landmark heatmap network is this project's own (no paper): its reference preset is
the full-size setting of its params class (ch 32, 128 px, batch 16 per domain, 2,000
steps with cosine decay).
"""

from __future__ import annotations

from typing import Any

ABOUT = {
    "demo": "small and short: ch 16, 64 px, batch 8, 200 steps",
    "reference": "the project's full-size setting (no paper): ch 32, 128 px, batch 16, 2,000 steps",
}

PRESETS: dict[str, dict[str, Any]] = {
    "demo": {
        "model": {"ch": 16, "n_blocks": 2, "stride": 4, "sigma": 1.5},
        "loss": {"heat_weight": 1.0, "coord_weight": 1.0},
        "optim": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "steps": 200, "lr_decay": "cosine"},
        "data": {"crop_px": 64, "load_px": 0, "batch_size": 8, "flip": True},
    },
    "reference": {
        "model": {"ch": 32, "n_blocks": 2, "stride": 4, "sigma": 1.5},
        "loss": {"heat_weight": 1.0, "coord_weight": 1.0},
        "optim": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "steps": 2000, "lr_decay": "cosine"},
        "data": {"crop_px": 128, "load_px": 0, "batch_size": 16, "flip": True},
    },
}

# The smallest settings that train a step in a second on a CPU (family name -> values of its
# section): what the tests and the smoke benchmarks run (`toonlab.presets.smoke`).
SMOKE: dict[str, dict[str, Any]] = {
    "landmarker": {"model": {"ch": 8, "n_blocks": 1}, "data": {"crop_px": 32, "batch_size": 2}},
}

# The tiny end-to-end project of the driver tests (tests/tiny_project.py): params.yaml
# section -> values (a few steps at the smallest size; the drivers are under test there).
TINY: dict[str, dict[str, Any]] = {
    "landmarker": {"model": {"ch": 4, "n_blocks": 0}, "data": {"crop_px": 32, "batch_size": 2},
                   "optim": {"steps": 2}},
}
