"""U-GAT-IT networks (Kim et al. 2020, znxlwm/UGATIT-pytorch networks.py) and the
Soft-AdaLIN hourglass generator of minivision-ai/photo2cartoon (models/networks.py).

Module and attribute names follow the two references, so their state dicts load into
these classes (`UGATITGenerator` <- genA2B/genB2A, `UGATITDiscriminator` <- disGA/disLA,
`SoftAdaLINGenerator` <- photo2cartoon's genA2B). Differences from the references:

* Normalisation statistics use the variance over the reduced dimensions (the reference's
  current networks.py; its first release took a variance of variances).
* Normalisation is computed in float32 whatever autocast does (bf16 statistics drift).

Every generator returns ``(image, cam_logit, heatmap)``: the translated image in [-1, 1],
the N x 2 logits of the auxiliary classifier (global average / max pooling branches) and
the N x 1 x h x w attention map (sum over channels of the CAM-weighted features at 1/4
of the image size). Discriminators return ``(logits, cam_logit, heatmap)`` likewise.

Reference parameter counts: light generator (ch 64, 4 blocks) 10,589,888, full
generator 278,959,808 at 256 px and 77,633,216 at 128 px; global discriminator (7
layers, ch 64) 53,130,176, local (5 layers) 3,290,560. Soft-AdaLIN light generator at
ch 32: 3,831,079; discriminators at ch 32: 13,294,048 and 826,080.

Ablation switches (the paper's section 4 and its ablation table; the defaults are the
reference and build exactly its modules and state-dict keys):

* `UGATITGenerator(norm=...)`: the normalisation of the decoder's residual blocks, the
  place AdaLIN holds in the paper ("we apply AdaLIN only to the decoder"; the ablation
  swaps it for IN, LN, AdaIN and GN). "adalin": AdaLIN with the MLP's gamma / beta.
  "adain": instance norm with the MLP's gamma / beta (AdaLIN with rho fixed at 1: no rho
  parameters). "in" / "ln" / "gn": instance, layer (over C x H x W) and group norm
  (32 groups, Wu and He 2018; gcd(32, C) for narrow models) with a learned per-channel
  gamma (1) / beta (0) as LIN has, and no MLP at all: nothing in the decoder depends on
  the attention features then. The up-sampling blocks keep LIN in every variant: the
  paper's ablation is of AdaLIN, and LIN there is part of the architecture
  (its appendix table) that no variant names.
* `UGATITGenerator(cam=False)`: no attention module (no gap_fc / gmp_fc / conv1x1, no
  auxiliary classifier, so no CAM loss); the MLP reads the encoder features directly.
  `cam_logit` and `heatmap` are None.
* `UGATITDiscriminator(cam=False)`: no CAM branch; the last conv reads the encoder's
  features. `cam_logit` and `heatmap` are None.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toonlab.models.common import ReflectionPad2d

# ----------------------------------------------------------------------------- normalisation


def _lin_mix(x: Tensor, rho: Tensor, eps: float) -> Tensor:
    """rho * InstanceNorm(x) + (1 - rho) * LayerNorm(x), unbiased variances, in float32."""
    xf = x.float()
    in_var, in_mean = torch.var_mean(xf, dim=(2, 3), keepdim=True)
    ln_var, ln_mean = torch.var_mean(xf, dim=(1, 2, 3), keepdim=True)
    out_in = (xf - in_mean) * torch.rsqrt(in_var + eps)
    out_ln = (xf - ln_mean) * torch.rsqrt(ln_var + eps)
    r = rho.float()
    return r * out_in + (1.0 - r) * out_ln


class AdaLIN(nn.Module):
    """Adaptive Layer-Instance Normalisation: the rho-mix of IN and LN, scaled and shifted
    by per-sample gamma / beta (N x C). rho (1 x C x 1 x 1) starts at 0.9; the training
    recipe clips it to [0, 1] after every optimizer step."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.full((1, num_features, 1, 1), 0.9))

    def forward(self, x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        out = _lin_mix(x, self.rho, self.eps)
        out = out * gamma.float()[:, :, None, None] + beta.float()[:, :, None, None]
        return out.to(x.dtype)


class LIN(nn.Module):
    """Layer-Instance Normalisation with learned per-channel gamma (1), beta (0) and rho
    (starts at 0.0, i.e. pure layer norm, as in the reference's up-sampling blocks)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.gamma = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, num_features, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        out = _lin_mix(x, self.rho, self.eps) * self.gamma.float() + self.beta.float()
        return out.to(x.dtype)


class SoftAdaLIN(nn.Module):
    """photo2cartoon's Soft-AdaLIN: gamma / beta blended from content features (encoder,
    globally pooled; two-layer MLPs c_gamma / c_beta) and style features (the CAM MLP;
    linear s_gamma / s_beta) with learned per-channel weights w_gamma / w_beta that start
    at 0 (pure style) and are clipped to [0, 1] by the recipe, then AdaLIN."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        c = num_features
        self.norm = AdaLIN(c, eps)
        self.w_gamma = nn.Parameter(torch.zeros(1, c))
        self.w_beta = nn.Parameter(torch.zeros(1, c))
        self.c_gamma = nn.Sequential(nn.Linear(c, c), nn.ReLU(True), nn.Linear(c, c))
        self.c_beta = nn.Sequential(nn.Linear(c, c), nn.ReLU(True), nn.Linear(c, c))
        self.s_gamma = nn.Linear(c, c)
        self.s_beta = nn.Linear(c, c)

    def forward(self, x: Tensor, content: Tensor, style: Tensor) -> Tensor:
        gamma = (1.0 - self.w_gamma) * self.s_gamma(style) + self.w_gamma * self.c_gamma(content)
        beta = (1.0 - self.w_beta) * self.s_beta(style) + self.w_beta * self.c_beta(content)
        return self.norm(x, gamma, beta)


class AdaIN(nn.Module):
    """Adaptive Instance Normalisation (Huang and Belongie 2017): instance norm (unbiased
    variance, float32, as AdaLIN's IN part) scaled and shifted by per-sample gamma / beta
    (N x C). AdaLIN with rho fixed at 1; no parameters of its own."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, eps

    def forward(self, x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=(2, 3), keepdim=True)
        out = (xf - mean) * torch.rsqrt(var + self.eps)
        out = out * gamma.float()[:, :, None, None] + beta.float()[:, :, None, None]
        return out.to(x.dtype)


class GroupNormF32(nn.GroupNorm):
    """nn.GroupNorm (learned per-channel weight 1 / bias 0) computed in float32 whatever
    autocast does, like the other normalisations here. groups = C: instance norm; 1: layer
    norm over C x H x W."""

    def forward(self, x: Tensor) -> Tensor:
        out = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
        return out.to(x.dtype)


# The decoder residual-block normalisations of the ablation (`model.norm`); the adaptive
# ones take the MLP's gamma / beta.
DECODER_NORMS = ("adalin", "in", "ln", "adain", "gn")
ADAPTIVE_NORMS = ("adalin", "adain")
GN_GROUPS = 32


def decoder_norm(kind: str, num_features: int) -> nn.Module:
    """The normalisation layer `kind` (one of DECODER_NORMS) for `num_features` channels."""
    if kind == "adalin":
        return AdaLIN(num_features)
    if kind == "adain":
        return AdaIN(num_features)
    groups = {"in": num_features, "ln": 1, "gn": math.gcd(GN_GROUPS, num_features)}.get(kind)
    if groups is None:
        raise ValueError(f"unknown decoder norm {kind!r} ({', '.join(DECODER_NORMS)})")
    return GroupNormF32(groups, num_features)


@torch.no_grad()
def clip_mixing_weights(net: nn.Module) -> None:
    """Clamp every AdaLIN / LIN rho and every Soft-AdaLIN w_gamma / w_beta of `net` to
    [0, 1] in place (the references' RhoClipper(0, 1) and WClipper(0, 1))."""
    for m in net.modules():
        if isinstance(m, (AdaLIN, LIN)):
            m.rho.clamp_(0.0, 1.0)
        elif isinstance(m, SoftAdaLIN):
            m.w_gamma.clamp_(0.0, 1.0)
            m.w_beta.clamp_(0.0, 1.0)


# ----------------------------------------------------------------------------- blocks


class ResnetBlock(nn.Module):
    """x + [pad, conv3x3, IN, ReLU, pad, conv3x3, IN](x); reflection padding, no conv bias,
    instance norm without affine parameters."""

    def __init__(self, dim: int, use_bias: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(
            ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, 1, 0, bias=use_bias), nn.InstanceNorm2d(dim), nn.ReLU(True),
            ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, 1, 0, bias=use_bias), nn.InstanceNorm2d(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


class ResnetAdaLINBlock(nn.Module):
    """x + [pad, conv3x3, AdaLIN, ReLU, pad, conv3x3, AdaLIN](x) with shared gamma / beta.
    `norm` (DECODER_NORMS) replaces AdaLIN for the ablations; the non-adaptive ones take
    no gamma / beta."""

    def __init__(self, dim: int, use_bias: bool = False, norm: str = "adalin"):
        super().__init__()
        self.adaptive = norm in ADAPTIVE_NORMS
        self.pad1 = ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(dim, dim, 3, 1, 0, bias=use_bias)
        self.norm1 = decoder_norm(norm, dim)
        self.relu1 = nn.ReLU(True)
        self.pad2 = ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(dim, dim, 3, 1, 0, bias=use_bias)
        self.norm2 = decoder_norm(norm, dim)

    def forward(self, x: Tensor, gamma: Tensor | None = None, beta: Tensor | None = None) -> Tensor:
        if self.adaptive:
            out = self.relu1(self.norm1(self.conv1(self.pad1(x)), gamma, beta))
            out = self.norm2(self.conv2(self.pad2(out)), gamma, beta)
        else:
            out = self.relu1(self.norm1(self.conv1(self.pad1(x))))
            out = self.norm2(self.conv2(self.pad2(out)))
        return out + x


class ResnetSoftAdaLINBlock(nn.Module):
    """As ResnetAdaLINBlock with Soft-AdaLIN fed by content and style features."""

    def __init__(self, dim: int, use_bias: bool = False):
        super().__init__()
        self.pad1 = ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(dim, dim, 3, 1, 0, bias=use_bias)
        self.norm1 = SoftAdaLIN(dim)
        self.relu1 = nn.ReLU(True)
        self.pad2 = ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(dim, dim, 3, 1, 0, bias=use_bias)
        self.norm2 = SoftAdaLIN(dim)

    def forward(self, x: Tensor, content: Tensor, style: Tensor) -> Tensor:
        out = self.relu1(self.norm1(self.conv1(self.pad1(x)), content, style))
        out = self.norm2(self.conv2(self.pad2(out)), content, style)
        return out + x


class ConvBlock(nn.Module):
    """Hourglass residual unit: three pre-activation (IN, ReLU, pad, conv3x3) stages of
    dim_out/2, dim_out/4, dim_out/4 channels, concatenated, plus the input (through
    IN, ReLU, conv1x1 when the width changes)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.dim_out = dim_out
        half, quarter = dim_out // 2, dim_out // 4

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.InstanceNorm2d(cin), nn.ReLU(True), ReflectionPad2d(1),
                                 nn.Conv2d(cin, cout, 3, 1, bias=False))

        self.ConvBlock1 = stage(dim_in, half)
        self.ConvBlock2 = stage(half, quarter)
        self.ConvBlock3 = stage(quarter, quarter)
        self.ConvBlock4 = nn.Sequential(nn.InstanceNorm2d(dim_in), nn.ReLU(True),
                                        nn.Conv2d(dim_in, dim_out, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.ConvBlock1(x)
        x2 = self.ConvBlock2(x1)
        x3 = self.ConvBlock3(x2)
        residual = self.ConvBlock4(x) if x.shape[1] != self.dim_out else x
        return residual + torch.cat((x1, x2, x3), 1)


class HourGlassBlock(nn.Module):
    """Four-level hourglass of ConvBlocks: average-pool down, nearest up, skip additions.
    The input side must be a multiple of 16."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.ConvBlock1_1 = ConvBlock(dim_in, dim_out)
        self.ConvBlock1_2 = ConvBlock(dim_out, dim_out)
        for name in ("2_1", "2_2", "3_1", "3_2", "4_1", "4_2", "5", "6", "7", "8", "9"):
            setattr(self, f"ConvBlock{name}", ConvBlock(dim_out, dim_out))

    def forward(self, x: Tensor) -> Tensor:
        skip1 = self.ConvBlock1_1(x)
        down1 = self.ConvBlock1_2(F.avg_pool2d(x, 2))
        skip2 = self.ConvBlock2_1(down1)
        down2 = self.ConvBlock2_2(F.avg_pool2d(down1, 2))
        skip3 = self.ConvBlock3_1(down2)
        down3 = self.ConvBlock3_2(F.avg_pool2d(down2, 2))
        skip4 = self.ConvBlock4_1(down3)
        down4 = self.ConvBlock4_2(F.avg_pool2d(down3, 2))
        center = self.ConvBlock5(down4)
        up4 = skip4 + F.interpolate(self.ConvBlock6(center), scale_factor=2, mode="nearest")
        up3 = skip3 + F.interpolate(self.ConvBlock7(up4), scale_factor=2, mode="nearest")
        up2 = skip2 + F.interpolate(self.ConvBlock8(up3), scale_factor=2, mode="nearest")
        return skip1 + F.interpolate(self.ConvBlock9(up2), scale_factor=2, mode="nearest")


class HourGlass(nn.Module):
    """Hourglass module with an intermediate 3-channel prediction. With `use_res` the
    output is x + conv1x1(features) + conv1x1(prediction); without, the 3-channel
    prediction itself (the generator's last hourglass)."""

    def __init__(self, dim_in: int, dim_out: int, use_res: bool = True):
        super().__init__()
        self.use_res = use_res
        self.HG = nn.Sequential(HourGlassBlock(dim_in, dim_out), ConvBlock(dim_out, dim_out),
                                nn.Conv2d(dim_out, dim_out, 1, 1, bias=False), nn.InstanceNorm2d(dim_out),
                                nn.ReLU(True))
        self.Conv1 = nn.Conv2d(dim_out, 3, 1, 1)
        if use_res:
            self.Conv2 = nn.Conv2d(dim_out, dim_out, 1, 1)
            self.Conv3 = nn.Conv2d(3, dim_out, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        ll = self.HG(x)
        tmp = self.Conv1(ll)
        if not self.use_res:
            return tmp
        return x + self.Conv2(ll) + self.Conv3(tmp)


# ----------------------------------------------------------------------------- CAM


def _cam(x: Tensor, gap_fc: nn.Linear, gmp_fc: nn.Linear, conv1x1: nn.Conv2d,
         act: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
    """Class activation map of the references: logits of the global-average and global-max
    pooled features, the features weighted by each classifier's weight, concatenated and
    reduced by a 1x1 convolution. Returns (features, cam_logit N x 2, heatmap N x 1 x h x w).
    The feature weighting uses the first parameter of each classifier, as the references
    do (for spectral-normalised classifiers: the weight before normalisation)."""
    n = x.shape[0]
    gap_logit = gap_fc(F.adaptive_avg_pool2d(x, 1).view(n, -1))
    gmp_logit = gmp_fc(F.adaptive_max_pool2d(x, 1).view(n, -1))
    gap_w = next(gap_fc.parameters())
    gmp_w = next(gmp_fc.parameters())
    weighted = torch.cat([x * gap_w.to(x.dtype)[:, :, None, None], x * gmp_w.to(x.dtype)[:, :, None, None]], 1)
    feat = act(conv1x1(weighted))
    heatmap = feat.sum(dim=1, keepdim=True)
    return feat, torch.cat([gap_logit, gmp_logit], 1), heatmap


def _mlp(in_features: int, width: int, bias: bool) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, width, bias=bias), nn.ReLU(True),
                         nn.Linear(width, width, bias=bias), nn.ReLU(True))


# ----------------------------------------------------------------------------- generators


class UGATITGenerator(nn.Module):
    """U-GAT-IT generator: c7s1-ch, two stride-2 down-sampling convs, `n_blocks` residual
    blocks (IN), CAM, gamma / beta MLP (full: over the flattened img_size/4 feature map;
    light: over its global average), `n_blocks` AdaLIN residual blocks, two nearest
    up-sampling stages with LIN, c7s1-3 + tanh. No convolution biases except the CAM 1x1.
    Inputs N x 3 x img_size x img_size in [-1, 1] (the full MLP fixes the size).
    Ablations (module docstring): `norm` for the decoder's residual blocks (the
    non-adaptive ones build no MLP), `cam=False` builds no attention module."""

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 4,
                 img_size: int = 256, light: bool = True, norm: str = "adalin", cam: bool = True):
        super().__init__()
        if n_blocks < 0:
            raise ValueError("UGATITGenerator: n_blocks must be >= 0")
        if img_size % 4:
            raise ValueError(f"UGATITGenerator: img_size must be a multiple of 4, got {img_size}")
        if norm not in DECODER_NORMS:
            raise ValueError(f"UGATITGenerator: unknown norm {norm!r} ({', '.join(DECODER_NORMS)})")
        self.n_blocks, self.img_size, self.light = n_blocks, img_size, light
        self.norm, self.cam, self.adaptive = norm, cam, norm in ADAPTIVE_NORMS
        down: list[nn.Module] = [ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, 1, 0, bias=False),
                                 nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        for i in range(2):
            mult = 2 ** i
            down += [ReflectionPad2d(1), nn.Conv2d(ngf * mult, ngf * mult * 2, 3, 2, 0, bias=False),
                     nn.InstanceNorm2d(ngf * mult * 2), nn.ReLU(True)]
        dim = ngf * 4
        down += [ResnetBlock(dim) for _ in range(n_blocks)]
        self.DownBlock = nn.Sequential(*down)

        if cam:
            self.gap_fc = nn.Linear(dim, 1, bias=False)
            self.gmp_fc = nn.Linear(dim, 1, bias=False)
            self.conv1x1 = nn.Conv2d(dim * 2, dim, 1, 1, bias=True)
            self.relu = nn.ReLU(True)
        if self.adaptive:
            fc_in = dim if light else (img_size // 4) * (img_size // 4) * dim
            self.FC = _mlp(fc_in, dim, bias=False)
            self.gamma = nn.Linear(dim, dim, bias=False)
            self.beta = nn.Linear(dim, dim, bias=False)
        for i in range(n_blocks):
            setattr(self, f"UpBlock1_{i + 1}", ResnetAdaLINBlock(dim, norm=norm))
        up: list[nn.Module] = []
        for i in range(2):
            mult = 2 ** (2 - i)
            up += [nn.Upsample(scale_factor=2, mode="nearest"), ReflectionPad2d(1),
                   nn.Conv2d(ngf * mult, ngf * mult // 2, 3, 1, 0, bias=False), LIN(ngf * mult // 2), nn.ReLU(True)]
        up += [ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7, 1, 0, bias=False), nn.Tanh()]
        self.UpBlock2 = nn.Sequential(*up)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        x = self.DownBlock(x)
        cam_logit = heatmap = gamma = beta = None
        if self.cam:
            x, cam_logit, heatmap = _cam(x, self.gap_fc, self.gmp_fc, self.conv1x1, self.relu)
        if self.adaptive:
            if self.light:
                h = self.FC(F.adaptive_avg_pool2d(x, 1).flatten(1))
            else:
                h = self.FC(x.flatten(1))
            gamma, beta = self.gamma(h), self.beta(h)
        for i in range(self.n_blocks):
            x = getattr(self, f"UpBlock1_{i + 1}")(x, gamma, beta)
        return self.UpBlock2(x), cam_logit, heatmap


class SoftAdaLINGenerator(nn.Module):
    """photo2cartoon's generator: c7s1-ch, two hourglass modules, two stride-2 convs,
    `n_blocks` encoder residual blocks (their globally pooled outputs are the content
    features), CAM, style MLP (light / full as in U-GAT-IT; with biases), `n_blocks`
    Soft-AdaLIN decoder blocks (decoder block i takes the content features of encoder block
    n_blocks - 1 - i), two up-sampling stages with LIN, two hourglass modules (the last
    predicts 3 channels), c7s1-3 (3 -> 3) + tanh. img_size must be a multiple of 16."""

    def __init__(self, ngf: int = 32, n_blocks: int = 4, img_size: int = 256, light: bool = True):
        super().__init__()
        if n_blocks < 0:
            raise ValueError("SoftAdaLINGenerator: n_blocks must be >= 0")
        if img_size % 16:
            raise ValueError(f"SoftAdaLINGenerator: img_size must be a multiple of 16 (hourglass), got {img_size}")
        if ngf % 4:
            raise ValueError(f"SoftAdaLINGenerator: ngf must be a multiple of 4 (hourglass units), got {ngf}")
        self.n_blocks, self.img_size, self.light = n_blocks, img_size, light
        dim = ngf * 4
        self.ConvBlock1 = nn.Sequential(ReflectionPad2d(3), nn.Conv2d(3, ngf, 7, 1, 0, bias=False),
                                        nn.InstanceNorm2d(ngf), nn.ReLU(True))
        self.HourGlass1 = HourGlass(ngf, ngf)
        self.HourGlass2 = HourGlass(ngf, ngf)
        self.DownBlock1 = nn.Sequential(ReflectionPad2d(1), nn.Conv2d(ngf, ngf * 2, 3, 2, 0, bias=False),
                                        nn.InstanceNorm2d(ngf * 2), nn.ReLU(True))
        self.DownBlock2 = nn.Sequential(ReflectionPad2d(1), nn.Conv2d(ngf * 2, dim, 3, 2, 0, bias=False),
                                        nn.InstanceNorm2d(dim), nn.ReLU(True))
        for i in range(n_blocks):
            setattr(self, f"EncodeBlock{i + 1}", ResnetBlock(dim))
        self.gap_fc = nn.Linear(dim, 1)
        self.gmp_fc = nn.Linear(dim, 1)
        self.conv1x1 = nn.Conv2d(dim * 2, dim, 1, 1)
        self.relu = nn.ReLU(True)
        fc_in = dim if light else (img_size // 4) * (img_size // 4) * dim
        self.FC = _mlp(fc_in, dim, bias=True)
        for i in range(n_blocks):
            setattr(self, f"DecodeBlock{i + 1}", ResnetSoftAdaLINBlock(dim))
        self.UpBlock1 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), ReflectionPad2d(1),
                                      nn.Conv2d(dim, ngf * 2, 3, 1, 0, bias=False), LIN(ngf * 2), nn.ReLU(True))
        self.UpBlock2 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), ReflectionPad2d(1),
                                      nn.Conv2d(ngf * 2, ngf, 3, 1, 0, bias=False), LIN(ngf), nn.ReLU(True))
        self.HourGlass3 = HourGlass(ngf, ngf)
        self.HourGlass4 = HourGlass(ngf, ngf, use_res=False)
        self.ConvBlock2 = nn.Sequential(ReflectionPad2d(3), nn.Conv2d(3, 3, 7, 1, 0, bias=False), nn.Tanh())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.HourGlass2(self.HourGlass1(self.ConvBlock1(x)))
        x = self.DownBlock2(self.DownBlock1(x))
        content: list[Tensor] = []
        for i in range(self.n_blocks):
            x = getattr(self, f"EncodeBlock{i + 1}")(x)
            content.append(F.adaptive_avg_pool2d(x, 1).flatten(1))
        x, cam_logit, heatmap = _cam(x, self.gap_fc, self.gmp_fc, self.conv1x1, self.relu)
        if self.light:
            style = self.FC(F.adaptive_avg_pool2d(x, 1).flatten(1))
        else:
            style = self.FC(x.flatten(1))
        for i in range(self.n_blocks):
            x = getattr(self, f"DecodeBlock{i + 1}")(x, content[self.n_blocks - 1 - i], style)
        x = self.UpBlock2(self.UpBlock1(x))
        x = self.HourGlass4(self.HourGlass3(x))
        return self.ConvBlock2(x), cam_logit, heatmap


# ----------------------------------------------------------------------------- discriminator


def _sn(module: nn.Module) -> nn.Module:
    return nn.utils.spectral_norm(module)


class UGATITDiscriminator(nn.Module):
    """U-GAT-IT discriminator: `n_layers - 2` stride-2 4x4 convs (ch, 2ch, ...), one stride-1
    4x4 conv, CAM (spectral-normalised classifiers, LeakyReLU 0.2), and a 1-channel 4x4
    conv; reflection padding 1, spectral norm on every conv except the CAM 1x1. 7 layers:
    the global discriminator, 5: the local one. Input side >= 3 * 2**(n_layers - 2).
    `cam=False` (ablation): no CAM branch, the last conv reads the features directly."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 5, cam: bool = True):
        super().__init__()
        if n_layers < 3:
            raise ValueError(f"UGATITDiscriminator: n_layers must be >= 3, got {n_layers}")
        self.n_layers, self.cam = n_layers, cam
        model: list[nn.Module] = [ReflectionPad2d(1), _sn(nn.Conv2d(input_nc, ndf, 4, 2, 0, bias=True)),
                                  nn.LeakyReLU(0.2, True)]
        for i in range(1, n_layers - 2):
            mult = 2 ** (i - 1)
            model += [ReflectionPad2d(1), _sn(nn.Conv2d(ndf * mult, ndf * mult * 2, 4, 2, 0, bias=True)),
                      nn.LeakyReLU(0.2, True)]
        mult = 2 ** (n_layers - 3)
        model += [ReflectionPad2d(1), _sn(nn.Conv2d(ndf * mult, ndf * mult * 2, 4, 1, 0, bias=True)),
                  nn.LeakyReLU(0.2, True)]
        dim = ndf * 2 ** (n_layers - 2)
        if cam:
            self.gap_fc = _sn(nn.Linear(dim, 1, bias=False))
            self.gmp_fc = _sn(nn.Linear(dim, 1, bias=False))
            self.conv1x1 = nn.Conv2d(dim * 2, dim, 1, 1, bias=True)
            self.leaky_relu = nn.LeakyReLU(0.2, True)
        self.pad = ReflectionPad2d(1)
        self.conv = _sn(nn.Conv2d(dim, 1, 4, 1, 0, bias=False))
        self.model = nn.Sequential(*model)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        x = self.model(x)
        cam_logit = heatmap = None
        if self.cam:
            x, cam_logit, heatmap = _cam(x, self.gap_fc, self.gmp_fc, self.conv1x1, self.leaky_relu)
        return self.conv(self.pad(x)), cam_logit, heatmap


