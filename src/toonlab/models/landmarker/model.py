"""Landmarker: a small heatmap network for the five face landmarks, trained on the
curated photo and anime crops with the points the face pipeline stored, and the
landmark-consistency loss that other families (White-box) add to keep a face's
landmarks in place through a translation.

Follows the usual heatmap-regression recipe (Newell et al. 2016; Xiao et al. 2018,
"Simple Baselines"): Gaussian target maps at a reduced resolution, MSE between
predicted and target maps; plus integral regression (Sun et al. 2018): the
soft-argmax of the spatially normalised map gives differentiable sub-pixel points,
trained with an L1 term on the coordinates.

Conventions:

* Points are (x, y) in pixels of the network input, pixel centres at integer
  coordinates (as in toonlab.faces.pack). Heatmap cell (i, j) of a stride-s network covers
  input pixels around ((j + 0.5) s - 0.5, (i + 0.5) s - 0.5).
* `HeatmapNet` returns logits. `heatmaps(net, x)` = exp(logits - max over the map):
  the spatial softmax rescaled so that each map peaks at exactly 1, so it lies in
  [0, 1] and is compared directly with Gaussian targets of peak 1; normalised to sum
  1 it is the softmax whose expectation `soft_argmax` returns.
* `sigma` (of `gaussian_targets` and `model.sigma`) is in heatmap cells.
* K = 5 maps in `FIVE_POINT_NAMES` order (eye_left, eye_right, nose, mouth_left,
  mouth_right), image-left / image-right as the data pipeline keeps them under flips.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toonlab.errors import ToonlabError, UsageError
from toonlab.faces.base import FIVE_POINT_NAMES
from toonlab.log import get_logger
from toonlab.models.common import Phases, RecipeBase, adam, count_params
from toonlab.models.landmarker.params import LandmarkerModelParams, LandmarkerParams
from toonlab.train.device import unwrap
from toonlab.train.recipe import Context, DataSpec

log = get_logger(__name__)

N_POINTS = len(FIVE_POINT_NAMES)
FAMILY_NAME = "landmarker"
LOSS_NAMES = ("loss", "heat", "coord", "nme")


# ----------------------------------------------------------------------------- network


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    """x + [conv3x3, IN, ReLU, conv3x3, IN](x)."""

    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.InstanceNorm2d(dim, affine=True), nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 3, padding=1, bias=False), nn.InstanceNorm2d(dim, affine=True))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class HeatmapNet(nn.Module):
    """Fully convolutional heatmap regressor.

    Encoder: three stride-2 3x3 convolutions (ch, 2ch, 2ch channels, at 1/2, 1/4, 1/8),
    `n_blocks` residual blocks at 1/8; decoder: 2x bilinear upsampling, plus a 1x1
    lateral projection of the encoder feature of that scale when there is one, and a
    3x3 convolution, until 1/`stride`; a 1x1 head gives K logit maps. Instance
    normalisation (affine), so training and eval mode compute the same thing.

    Input N x 3 x H x W in [-1, 1], H and W multiples of 8; output N x K x H/stride x
    W/stride logits. ch 32, 2 blocks, stride 4: 245,925 parameters.
    """

    def __init__(self, ch: int = 32, n_blocks: int = 2, stride: int = 4, n_points: int = N_POINTS):
        super().__init__()
        if stride not in (1, 2, 4, 8):
            raise ValueError(f"HeatmapNet: stride must be 1, 2, 4 or 8, got {stride}")
        if ch < 1 or n_blocks < 0 or n_points < 1:
            raise ValueError("HeatmapNet: ch and n_points must be >= 1, n_blocks >= 0")
        self.ch, self.n_blocks, self.stride, self.n_points = ch, n_blocks, stride, n_points
        width = 2 * ch
        self.down = nn.ModuleList([_conv(3, ch, 2), _conv(ch, width, 2), _conv(width, width, 2)])
        self.blocks = nn.Sequential(*[_Residual(width) for _ in range(n_blocks)])
        n_up = int(math.log2(8 // stride))
        # Lateral projections of the encoder features at 1/4 (2ch) and 1/2 (ch); full size has none.
        enc_ch = {4: width, 2: ch}
        self.lateral = nn.ModuleList()
        self.up = nn.ModuleList()
        scale = 8
        for _ in range(n_up):
            scale //= 2
            self.lateral.append(nn.Conv2d(enc_ch[scale], width, 1) if scale in enc_ch else nn.Identity())
            self.up.append(_conv(width, width))
        self.head = nn.Conv2d(width, n_points, 1)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"HeatmapNet expects N x 3 x H x W images, got shape {tuple(x.shape)}")
        if x.shape[2] % 8 or x.shape[3] % 8:
            raise ValueError(f"HeatmapNet needs H and W multiples of 8, got {x.shape[2]}x{x.shape[3]}")
        feats = {}
        y = x
        for i, layer in enumerate(self.down):
            y = layer(y)
            feats[2 ** (i + 1)] = y
        y = self.blocks(y)
        scale = 8
        for lateral, conv in zip(self.lateral, self.up):
            scale //= 2
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            if scale in feats and not isinstance(lateral, nn.Identity):
                y = y + lateral(feats[scale])
            y = conv(y)
        return self.head(y)

    def config(self) -> dict[str, int]:
        return {"ch": self.ch, "n_blocks": self.n_blocks, "stride": self.stride, "n_points": self.n_points}


# ----------------------------------------------------------------------------- maps and points


def logits_to_heatmaps(logits: Tensor) -> Tensor:
    """exp(logits - max over each map), in float32: N x K x h x w in [0, 1], peak 1."""
    logits = logits.float()
    return torch.exp(logits - logits.amax(dim=(2, 3), keepdim=True))


def heatmaps(net: nn.Module, x: Tensor) -> Tensor:
    """N x K x h x w maps in [0, 1] (each peaking at 1) of images x (N x 3 x H x W in [-1, 1]).
    The map is the spatial softmax of the logits divided by its maximum."""
    return logits_to_heatmaps(net(x))


def _grid_expectation(hm: Tensor) -> Tensor:
    """Expected (x, y) in heatmap cells of hm normalised to sum 1 per map: N x K x 2."""
    if hm.dim() != 4:
        raise ValueError(f"expected N x K x h x w heatmaps, got shape {tuple(hm.shape)}")
    hm = hm.float()
    h, w = hm.shape[2:]
    total = hm.sum(dim=(2, 3)).clamp_min(1e-12)
    xs = torch.arange(w, device=hm.device, dtype=hm.dtype)
    ys = torch.arange(h, device=hm.device, dtype=hm.dtype)
    x = (hm.sum(dim=2) * xs).sum(dim=-1) / total
    y = (hm.sum(dim=3) * ys).sum(dim=-1) / total
    return torch.stack([x, y], dim=-1)


def soft_argmax(hm: Tensor, stride: int = 1) -> Tensor:
    """Differentiable landmark positions, N x K x 2 (x, y), from N x K x h x w maps >= 0:
    the mean cell position under each map normalised to sum 1, mapped to input pixels
    of a stride-`stride` network, (cell + 0.5) * stride - 0.5. Pass `net.stride` to get
    input pixels; with the default 1 the result is in heatmap cells."""
    return (_grid_expectation(hm) + 0.5) * stride - 0.5


def gaussian_targets(points: Tensor, h: int, w: int, stride: int, sigma: float) -> Tensor:
    """N x K x h x w Gaussian maps of peak 1 centred on points (N x K x 2, input pixels,
    pixel centres at integers) seen by a stride-`stride` network; `sigma` in cells."""
    if points.dim() != 3 or points.shape[-1] != 2:
        raise ValueError(f"expected N x K x 2 points, got shape {tuple(points.shape)}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    c = (points.float() + 0.5) / stride - 0.5          # centres in cells
    xs = torch.arange(w, device=points.device, dtype=torch.float32)
    ys = torch.arange(h, device=points.device, dtype=torch.float32)
    dx2 = (xs.view(1, 1, 1, w) - c[..., 0, None, None]) ** 2
    dy2 = (ys.view(1, 1, h, 1) - c[..., 1, None, None]) ** 2
    return torch.exp(-(dx2 + dy2) / (2.0 * sigma * sigma))


def predict_points(net: nn.Module, x: Tensor) -> Tensor:
    """Landmarks of images x, N x K x 2 in input pixels (soft-argmax of the heatmaps)."""
    return soft_argmax(heatmaps(net, x), int(unwrap(net).stride))


def heatmap_image(hm: Tensor, h: int, w: int) -> Tensor:
    """Maximum over keypoints, resized to h x w: N x 1 x h x w in [0, 1] (for grids)."""
    top = hm.float().amax(dim=1, keepdim=True)
    return F.interpolate(top, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


def landmark_loss(net: nn.Module, fake: Tensor, real: Tensor) -> Tensor:
    """Landmark consistency: mean squared distance between the soft-argmax landmarks of
    `fake` and of `real`, in coordinates normalised to [-1, 1] across the image
    (so 0.01 is a shift of 5 % of the image side along one axis of every point).

    `real` is the target (no gradient); the gradient reaches `fake` through `net`,
    which should be frozen (as `load_landmarker` returns it). Exactly 0 when fake and
    real are equal: both go through the network separately, identically."""
    if fake.shape != real.shape:
        raise ValueError(f"landmark_loss: fake {tuple(fake.shape)} and real {tuple(real.shape)} differ in shape")
    with torch.no_grad():
        target = _grid_expectation(heatmaps(net, real.detach()))
    hm = heatmaps(net, fake)
    pred = _grid_expectation(hm)
    h, w = hm.shape[2], hm.shape[3]
    scale = torch.tensor([2.0 / w, 2.0 / h], device=pred.device)
    return (((pred - target) * scale) ** 2).sum(dim=-1).mean()


def nme(pred: Tensor, true: Tensor, visible: Tensor | None = None) -> Tensor:
    """Mean point error normalised by the true inter-ocular distance (points 0 and 1),
    averaged over visible points, then images. Scalar tensor."""
    err = (pred.float() - true.float()).norm(dim=-1)                      # N x K
    iod = (true[:, 0].float() - true[:, 1].float()).norm(dim=-1).clamp_min(1.0)   # N
    if visible is None:
        visible = torch.ones_like(err, dtype=torch.bool)
    vis = visible.float()
    per_image = (err * vis).sum(dim=1) / vis.sum(dim=1).clamp_min(1.0)
    return (per_image / iod).mean()


# ----------------------------------------------------------------------------- params


# ----------------------------------------------------------------------------- recipe


def cosine_lambda(total_steps: int):
    """LR factor 0.5 (1 + cos(pi t / T)): 1 at the first step, 0 at step T."""
    total = max(1, total_steps)

    def factor(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    return factor


class LandmarkerRecipe(RecipeBase):
    """The Recipe protocol for the landmarker: one network `net`, photo and anime crops
    concatenated each step, heatmap MSE + coordinate L1."""

    grid_rows = [["photo", "photo_heat"], ["anime", "anime_heat"]]

    def __init__(self, params: LandmarkerParams, ctx: Context):
        super().__init__(ctx)
        self.params = params
        m, o, d = params.model, params.optim, params.data
        self.data = DataSpec(domains={"photo": d.domain_photo, "anime": d.domain_anime}, crop_px=d.crop_px,
                             batch_size=d.batch_size, load_px=d.resolved_load_px, flip=d.flip,
                             with_landmarks=True)
        net = HeatmapNet(ch=m.ch, n_blocks=m.n_blocks, stride=m.stride)
        net.to(self.device, memory_format=self.memory_format)
        self.nets: dict[str, nn.Module] = {"net": net}
        self.stride, self.sigma = m.stride, m.sigma
        self.opt = {"net": adam(net.parameters(), o.lr, (o.beta1, o.beta2), self.device)}
        self.sched: dict[str, Any] = {}
        if o.lr_decay == "cosine":
            self.sched["net"] = torch.optim.lr_scheduler.LambdaLR(self.opt["net"], cosine_lambda(ctx.total_steps))

    def _images(self, batch: dict[str, Tensor], key: str) -> Tensor:
        return self._to_device(batch[key])

    def _points(self, batch: dict[str, Tensor], key: str) -> Tensor:
        if f"{key}_five" not in batch:
            raise UsageError(f"landmarker: the batches carry no landmarks for '{key}'; it trains on packed "
                             "crops (train.source: packed), not on image folders")
        return batch[f"{key}_five"].to(self.device, non_blocking=True).float()

    def phases(self, batch: dict[str, Tensor], step: int) -> Phases:
        net = self.nets["net"]
        pts = torch.cat([self._points(batch, "photo"), self._points(batch, "anime")])
        x = torch.cat([self._images(batch, "photo"), self._images(batch, "anime")])
        hpx, wpx = x.shape[2], x.shape[3]
        # Points outside the crop (possible after a random crop) take no part.
        visible = ((pts[..., 0] >= -0.5) & (pts[..., 0] <= wpx - 0.5)
                   & (pts[..., 1] >= -0.5) & (pts[..., 1] <= hpx - 0.5))
        vis = visible.float()
        n_vis = vis.sum().clamp_min(1.0)
        with self._autocast():
            logits = net(x)
        hm = logits_to_heatmaps(logits)
        h, w = hm.shape[2], hm.shape[3]
        target = gaussian_targets(pts, h, w, self.stride, self.sigma)
        heat = (((hm - target) ** 2).sum(dim=(2, 3)) * vis).sum() / n_vis
        pred = soft_argmax(hm, self.stride)
        coord = (((pred - pts).abs().sum(dim=-1) / self.stride) * vis).sum() / n_vis
        lp = self.params.loss
        loss = lp.heat_weight * heat + lp.coord_weight * coord
        yield "net", loss
        return {"loss": loss.detach(), "heat": heat.detach(), "coord": coord.detach(),
                "nme": nme(pred.detach(), pts, visible)}

    @torch.no_grad()
    def sample(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        net = self.nets["net"]
        out: dict[str, Tensor] = {}
        for key in ("photo", "anime"):
            x = self._images(batch, key)
            with self._autocast():
                logits = net(x)
            out[key] = x.float().contiguous()
            out[f"{key}_heat"] = heatmap_image(logits_to_heatmaps(logits), x.shape[2], x.shape[3]).contiguous()
        return out


def build(params: LandmarkerParams, ctx: Context) -> LandmarkerRecipe:
    """The landmarker recipe for the generic trainer."""
    recipe = LandmarkerRecipe(params, ctx)
    m = params.model
    log.info("landmarker: HeatmapNet %d params (ch %d, %d blocks, stride %d, sigma %.2f cells)",
             count_params(recipe.nets["net"]), m.ch, m.n_blocks, m.stride, m.sigma)
    return recipe


# ----------------------------------------------------------------------------- loading a trained run


def load_landmarker(run_dir: str | Path, device: torch.device | str = "cpu") -> HeatmapNet:
    """The network of the latest checkpoint of a landmarker run (`<run_dir>/checkpoints/
    step-*.pt`), built with the run's own model settings, frozen and in eval mode."""
    from toonlab.train import checkpoint as ckpt

    run_dir = Path(run_dir)
    path = ckpt.latest(run_dir / "checkpoints")
    if path is None:
        raise ToonlabError(f"no landmarker checkpoint in {run_dir / 'checkpoints'}; train it first: "
                           "`toonlab train landmarker` / `snakemake -c2 train_landmarker`")
    try:
        state = ckpt.load(path)
    except Exception as exc:  # a truncated or foreign file
        raise ToonlabError(f"cannot read landmarker checkpoint {path}: {exc}") from None
    if state.get("family") != FAMILY_NAME:
        raise ToonlabError(f"{path} is a {state.get('family')!r} checkpoint, not a landmarker run")
    try:
        raw = state["config"]["params"]["model"]
        weights = state["nets"]["net"]
    except (KeyError, TypeError):
        raise ToonlabError(f"{path} lacks the landmarker model settings or weights") from None
    try:
        m = LandmarkerModelParams.model_validate(raw, strict=False)
    except ValueError as exc:
        raise ToonlabError(f"{path}: unreadable landmarker model settings ({exc})") from None
    net = HeatmapNet(ch=m.ch, n_blocks=m.n_blocks, stride=m.stride)
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:
        raise ToonlabError(f"{path}: weights do not fit the stored architecture ({exc})") from None
    net.to(torch.device(device))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
