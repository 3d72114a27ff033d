"""The Inception-v3 feature network of FID, as in pytorch-fid (mseitzer/pytorch-fid).

FID (Heusel et al. 2017) is defined on the pool3 features (2048 values) of the
TensorFlow Inception graph ``inception-2015-12-05``. pytorch-fid ports those weights to
PyTorch (``pt_inception-2015-12-05-6726825d.pth``) and builds torchvision's Inception-v3
(1008 classes, no auxiliary head) with four kinds of blocks patched to match the TF graph:

* the average pools inside Mixed_5b/5c/5d (InceptionA), Mixed_6b..6e (InceptionC) and
  Mixed_7b (InceptionE) do not count the zero padding (``count_include_pad=False``);
* Mixed_7c's pooling branch uses a 3x3 max pool (stride 1, padding 1) instead of the
  average pool.

The parameter layout is torchvision's, so the state dict keys are those of
``torchvision.models.inception_v3(num_classes=1008, aux_logits=False)`` and the standard
file loads strictly. Input handling follows pytorch-fid: bilinear resize to 299x299
(``align_corners=False``), then the [-1, 1] range the network was trained on.

The file is looked up in torch.hub's checkpoint folder and fetched (checked against the
hash in its name) when `runtime.fetch_weights` is auto
(``toonlab.weights.require("inception_fid")``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import inception as tv_inception

from toonlab import weights as weight_files
from toonlab.errors import MissingWeightsError, ToonlabError

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_INPUT_PX = 299
FEATURE_DIM = 2048
PixelRange = Literal["[-1,1]", "[0,1]"]


def _avg_pool_tf(x: Tensor) -> Tensor:
    """TF's 3x3/1 SAME average pool: padded zeros are not part of the mean."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool_3x3(x: Tensor) -> Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class FIDInceptionA(tv_inception.InceptionA):
    """torchvision InceptionA with the TF average pool."""

    def _forward(self, x: Tensor) -> list[Tensor]:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_tf(x))]


class FIDInceptionC(tv_inception.InceptionC):
    """torchvision InceptionC with the TF average pool."""

    def _forward(self, x: Tensor) -> list[Tensor]:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = conv(bd)
        return [self.branch1x1(x), b7, bd, self.branch_pool(_avg_pool_tf(x))]


class _FIDInceptionE(tv_inception.InceptionE):
    """torchvision InceptionE with a replaceable pooling branch."""

    @staticmethod
    def _pool(x: Tensor) -> Tensor:
        raise NotImplementedError

    def _forward(self, x: Tensor) -> list[Tensor]:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        return [self.branch1x1(x), b3, bd, self.branch_pool(self._pool(x))]


class FIDInceptionE_1(_FIDInceptionE):
    """Mixed_7b: InceptionE with the TF average pool."""

    _pool = staticmethod(_avg_pool_tf)


class FIDInceptionE_2(_FIDInceptionE):
    """Mixed_7c: InceptionE whose pooling branch is a 3x3 max pool (as in the TF graph)."""

    _pool = staticmethod(_max_pool_3x3)


def fid_inception_v3() -> tv_inception.Inception3:
    """The FID Inception-v3 architecture with torchvision's default (untrained) parameters."""
    net = tv_inception.inception_v3(weights=None, init_weights=False, aux_logits=False, num_classes=1008)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net


_STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1",
         "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2",
         "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
         "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool")


class FIDInception(nn.Module):
    """Frozen FID Inception returning N x 2048 pool3 features.

    Input: float images N x 3 x H x W, any H and W (resized to 299x299 bilinearly), with
    values in [-1, 1] (`pixel_range="[-1,1]"`, the range of ToonLab's tensors) or in
    [0, 1] (`"[0,1]"`, pytorch-fid's convention; mapped by 2x - 1). Values outside the
    declared range (by more than 1e-3) are a ValueError. The forward runs in float32
    with autocast off, whatever the caller's autocast state.

    The submodules carry torchvision's names (``Conv2d_1a_3x3``, ``Mixed_5b``, ..., ``fc``),
    so ``state_dict()`` has exactly the keys of the standard weights file; the classifier
    ``fc`` is kept only for that and is never run. Parameters are random until weights
    are loaded: use :func:`load_fid_inception`.
    """

    def __init__(self, pixel_range: PixelRange = "[-1,1]"):
        super().__init__()
        if pixel_range not in ("[-1,1]", "[0,1]"):
            raise ValueError(f"FIDInception: pixel_range must be '[-1,1]' or '[0,1]', got {pixel_range!r}")
        self.pixel_range: PixelRange = pixel_range
        for name, module in fid_inception_v3().named_children():
            self.add_module(name, module)
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FIDInception:
        return super().train(False)   # always frozen (batch norm uses its running statistics)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"FIDInception: expected N x 3 x H x W images, got shape {tuple(x.shape)}")
        lo = -1.0 if self.pixel_range == "[-1,1]" else 0.0
        if x.numel() and (float(x.min()) < lo - 1e-3 or float(x.max()) > 1.0 + 1e-3):
            raise ValueError(f"FIDInception: values outside {self.pixel_range} "
                             f"(min {float(x.min()):.3f}, max {float(x.max()):.3f}); "
                             "set pixel_range to the range of the images")
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            x = F.interpolate(x, size=(FID_INPUT_PX, FID_INPUT_PX), mode="bilinear", align_corners=False)
            if self.pixel_range == "[0,1]":
                x = 2 * x - 1
            for name in _STEM:
                x = getattr(self, name)(x)
            return torch.flatten(x, 1)

    @torch.no_grad()
    def features(self, images: Tensor, batch_size: int = 50) -> np.ndarray:
        """pool3 features of `images` as float64 numpy N x 2048, computed `batch_size` images
        at a time on this module's device."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = next(self.parameters()).device
        out = [self(images[i:i + batch_size].to(device)).double().cpu().numpy()
               for i in range(0, images.shape[0], batch_size)]
        return np.concatenate(out, 0) if out else np.zeros((0, FEATURE_DIM), np.float64)


def fid_inception_available() -> tuple[bool, str]:
    """(True, "") when the standard weights file is on disk, else (False, why and how to fix)."""
    try:
        weight_files.require("inception_fid")
    except MissingWeightsError as exc:
        return False, str(exc)
    return True, ""


def load_fid_inception(device: torch.device | str | None = None,
                       pixel_range: PixelRange = "[-1,1]") -> FIDInception:
    """FIDInception with the standard pytorch-fid weights, on `device` (default CPU).

    Raises MissingWeightsError when ``pt_inception-2015-12-05-6726825d.pth`` is not in
    torch.hub's checkpoint folder, and ToonlabError when the file is not that network's
    state dict (the keys must match exactly).
    """
    path = weight_files.require("inception_fid") / FID_WEIGHTS_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
        raise ToonlabError(f"{path}: cannot be read as a PyTorch state dict ({exc})") from exc
    model = FIDInception(pixel_range)
    if not isinstance(state, dict):
        raise ToonlabError(f"{path}: expected a state dict, found {type(state).__name__}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ToonlabError(f"{path}: not the pytorch-fid Inception-v3 state dict ({str(exc)[:400]})") from exc
    return model.to(device if device is not None else "cpu")
