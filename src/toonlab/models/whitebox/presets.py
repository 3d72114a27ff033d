"""Presets of the `whitebox` params section, shared by the `whitebox_pretrain` and
`whitebox` stages (`toonlab preset <name> whitebox`, see `toonlab.presets`). Data only:
no training code imports this module.

Reference: Wang and Yu 2020, the authors' TensorFlow training code (train_code/
pretrain.py and train.py at their defaults): U-Net generator ch 32 with 4 residual
blocks, spectral-norm patch discriminators ch 32, output guided filter r 1 / eps 1e-2
(5e-3 at inference), surface blur r 5 / eps 0.2, loss weights surface 0.1, texture 1,
structure 200, content 200, TV 1e4, SLIC with 200 segments filled with the mean colour
(its `simple_superpixel`), ImageNet VGG19 fed the Caffe input convention (BGR, 0..255
minus the mean: `model.vgg_input: caffe`, the scale its weights 200 are tuned to), batch 16 of 256 px without flipping, Adam
2e-4 (0.5, 0.99), 50,000 pretraining and 100,000 adversarial iterations, no schedule.
The landmark loss is this project's addition, so the reference sets it to 0; add it
back with `whitebox.loss.landmark: 1` (the `whitebox_landmark` ablation compares both).
"""

from __future__ import annotations

from typing import Any

ABOUT = {
    "demo": "small and short: ch 16, 2 blocks, 64 px, batch 4, random VGG19, landmark loss 1, 50 + 100 steps",
    "reference": "the paper: ch 32, 4 blocks, 256 px, batch 16, ImageNet VGG19, no landmark loss, "
                 "50,000 + 100,000 steps",
}

PRESETS: dict[str, dict[str, Any]] = {
    "demo": {
        "model": {"ch": 16, "n_res": 2, "d_ch": 16, "gf_r": 1, "gf_eps": 0.01, "gf_eps_test": 0.005,
                  "vgg_weights": "random", "vgg_input": "torchvision"},
        "loss": {"surface": 0.1, "texture": 1.0, "structure": 200.0, "content": 200.0, "tv": 10000.0,
                 "landmark": 1.0, "surface_r": 5, "surface_eps": 0.2},
        "structure": {"method": "slic", "segments": 50, "fill": "mean"},
        "pretrain": {"steps": 50, "lr": 0.0002},
        "optim": {"steps": 100, "lr": 0.0002, "beta1": 0.5, "beta2": 0.99},
        "data": {"crop_px": 64, "batch_size": 4, "flip": True, "load_px": 0},
    },
    "reference": {
        "model": {"ch": 32, "n_res": 4, "d_ch": 32, "gf_r": 1, "gf_eps": 0.01, "gf_eps_test": 0.005,
                  "vgg_weights": "imagenet", "vgg_input": "caffe"},
        "loss": {"surface": 0.1, "texture": 1.0, "structure": 200.0, "content": 200.0, "tv": 10000.0,
                 "landmark": 0.0, "surface_r": 5, "surface_eps": 0.2},
        "structure": {"method": "slic", "segments": 200, "fill": "mean"},
        "pretrain": {"steps": 50_000, "lr": 0.0002},
        "optim": {"steps": 100_000, "lr": 0.0002, "beta1": 0.5, "beta2": 0.99},
        "data": {"crop_px": 256, "batch_size": 16, "flip": False, "load_px": 0},
    },
}

# The smallest settings that train a step in a second on a CPU (family name -> values of its
# section): what the tests and the smoke benchmarks run (`toonlab.presets.smoke`).
SMOKE: dict[str, dict[str, Any]] = {
    "whitebox_pretrain": {"model": {"ch": 8, "n_res": 1, "vgg_weights": "random"},
                          "data": {"crop_px": 32, "batch_size": 2}, "pretrain": {"run_dir": ""},
                          "structure": {"workers": 0}},
    "whitebox": {"model": {"ch": 8, "n_res": 1, "d_ch": 8, "vgg_weights": "random"},
                 "data": {"crop_px": 32, "batch_size": 2}, "pretrain": {"run_dir": ""},
                 "structure": {"workers": 0, "segments": 16}, "loss": {"landmark": 0.0}},
}

# The tiny end-to-end project of the driver tests (tests/tiny_project.py): params.yaml
# section -> values (a few steps at the smallest size, both stages of the section; the
# pretraining run and the landmark loss stay as the pipeline wires them).
TINY: dict[str, dict[str, Any]] = {
    "whitebox": {"model": {"ch": 4, "n_res": 1, "d_ch": 4}, "data": {"crop_px": 32, "batch_size": 2},
                 "pretrain": {"steps": 2}, "optim": {"steps": 2}, "structure": {"segments": 10, "workers": 0}},
}
