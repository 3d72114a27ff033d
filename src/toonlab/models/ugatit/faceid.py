"""Face-identity loss of photo2cartoon (minivision-ai/photo2cartoon, models/face_features.py):
the cosine distance between MobileFaceNet embeddings of the input photo and of its
translation.

`MobileFaceNet` is the 512-d face-recognition network of Chen et al. 2018 in the layout of
the InsightFace_Pytorch port that photo2cartoon uses (module names match, so its
``model_mobilefacenet.pth`` state dict loads unchanged): 1,200,512 parameters, input
N x 3 x 112 x 112 in [-1, 1], output L2-normalised embeddings.

`FaceIDLoss` crops the face region the way photo2cartoon does for its aligned portraits
(rows h/2.1*0.47 .. h - h/2.1*0.3, a centred square), resizes it to 112 px (bilinear,
align_corners=True) and returns mean(1 - cos(e(x), e(y))). The network is frozen: no
parameter requires grad and it stays in eval mode; gradients still reach the images.
Weights come from a local file (`toonlab.weights.require("mobilefacenet")`:
``model_mobilefacenet.pth`` in $TOONLAB_WEIGHTS, default ~/.cache/toonlab; photo2cartoon
publishes no direct link, so only a mirror can fetch it) and a missing file raises
MissingWeightsError.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toonlab.errors import ToonlabError

WEIGHTS_NAME = "mobilefacenet"
WEIGHTS_FILE = "model_mobilefacenet.pth"
EMBEDDING = 512
INPUT_PX = 112


# ----------------------------------------------------------------------------- network


class ConvBlock(nn.Module):
    """conv (no bias), batch norm, PReLU."""

    def __init__(self, in_c: int, out_c: int, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)
        self.prelu = nn.PReLU(out_c)

    def forward(self, x: Tensor) -> Tensor:
        return self.prelu(self.bn(self.conv(x)))


class LinearBlock(nn.Module):
    """conv (no bias), batch norm, no activation."""

    def __init__(self, in_c: int, out_c: int, kernel=(1, 1), stride=(1, 1), padding=(0, 0), groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expansion to `groups` channels, depthwise 3x3, linear 1x1
    projection; with `residual` the input is added."""

    def __init__(self, in_c: int, out_c: int, residual: bool = False, kernel=(3, 3), stride=(2, 2),
                 padding=(1, 1), groups: int = 1):
        super().__init__()
        self.conv = ConvBlock(in_c, groups)
        self.conv_dw = ConvBlock(groups, groups, kernel, stride, padding, groups=groups)
        self.project = LinearBlock(groups, out_c)
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.conv_dw(self.conv(x)))
        return x + out if self.residual else out


class Residual(nn.Module):
    def __init__(self, c: int, num_block: int, groups: int):
        super().__init__()
        self.model = nn.Sequential(*[DepthWise(c, c, residual=True, stride=(1, 1), groups=groups)
                                     for _ in range(num_block)])

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class MobileFaceNet(nn.Module):
    """MobileFaceNet: 112 px face -> L2-normalised `embedding_size` vector (7x7 global
    depthwise conv, linear, batch norm)."""

    def __init__(self, embedding_size: int = EMBEDDING):
        super().__init__()
        self.conv1 = ConvBlock(3, 64, (3, 3), (2, 2), (1, 1))
        self.conv2_dw = ConvBlock(64, 64, (3, 3), (1, 1), (1, 1), groups=64)
        self.conv_23 = DepthWise(64, 64, groups=128)
        self.conv_3 = Residual(64, num_block=4, groups=128)
        self.conv_34 = DepthWise(64, 128, groups=256)
        self.conv_4 = Residual(128, num_block=6, groups=256)
        self.conv_45 = DepthWise(128, 128, groups=512)
        self.conv_5 = Residual(128, num_block=2, groups=256)
        self.conv_6_sep = ConvBlock(128, 512)
        self.conv_6_dw = LinearBlock(512, 512, (7, 7), groups=512)
        self.linear = nn.Linear(512, embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(embedding_size)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_23(self.conv2_dw(self.conv1(x)))
        out = self.conv_34(self.conv_3(out))
        out = self.conv_45(self.conv_4(out))
        out = self.conv_6_dw(self.conv_6_sep(self.conv_5(out)))
        out = self.bn(self.linear(out.flatten(1)))
        return F.normalize(out.float(), dim=1)


# ----------------------------------------------------------------------------- loading


def load_mobilefacenet(path: str | Path | None = None) -> MobileFaceNet:
    """A frozen, eval-mode MobileFaceNet with the weights of `path` (default: the
    registered ``model_mobilefacenet.pth``; MissingWeightsError when it is absent). The
    file must be a state dict of this architecture in torch's format (a ``module.``
    prefix from DataParallel is accepted)."""
    from toonlab import weights as weight_files

    if path is None:
        path = weight_files.require(WEIGHTS_NAME) / WEIGHTS_FILE
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise ToonlabError(f"{path}: cannot read as a torch state dict ({exc.__class__.__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(state, dict):
        raise ToonlabError(f"{path}: expected a MobileFaceNet state dict, found {type(state).__name__}")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    net = MobileFaceNet(EMBEDDING)
    expected = set(net.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        detail = ", ".join([f"missing {sorted(missing)[:3]}"] * bool(missing)
                           + [f"unexpected {sorted(unexpected)[:3]}"] * bool(unexpected))
        raise ToonlabError(f"{path}: not a 512-d MobileFaceNet state dict ({detail})")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ToonlabError(f"{path}: not a 512-d MobileFaceNet state dict ({str(exc).splitlines()[-1].strip()})") \
            from None
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


# ----------------------------------------------------------------------------- loss


def face_crop(x: Tensor) -> Tensor:
    """photo2cartoon's face window of an aligned portrait, resized to 112 x 112."""
    h, w = x.shape[2:]
    top = int(h / 2.1 * (0.8 - 0.33))
    bottom = int(h - (h / 2.1 * 0.3))
    side = bottom - top
    left = int(w / 2 - side / 2)
    crop = x[:, :, top:bottom, max(left, 0):left + side]
    return F.interpolate(crop, size=(INPUT_PX, INPUT_PX), mode="bilinear", align_corners=True)


class FaceIDLoss(nn.Module):
    """mean(1 - cos(MobileFaceNet(crop(x)), MobileFaceNet(crop(y)))) for images in [-1, 1].
    `net` defaults to the registered pretrained file (see `load_mobilefacenet`)."""

    def __init__(self, net: MobileFaceNet | None = None):
        super().__init__()
        self.net = net if net is not None else load_mobilefacenet()
        for p in self.net.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FaceIDLoss:
        return super().train(False)   # always frozen (batch norm in eval mode)

    def embed(self, x: Tensor) -> Tensor:
        return self.net(face_crop(x))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Cosine distance averaged over the batch. No graph is kept for an input that does
        not require grad."""
        def emb(t: Tensor) -> Tensor:
            if t.requires_grad:
                return self.embed(t)
            with torch.no_grad():
                return self.embed(t)

        return (1.0 - F.cosine_similarity(emb(x).float(), emb(y).float(), dim=1)).mean()
