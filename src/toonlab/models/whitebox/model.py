"""White-box cartoonization (Wang and Yu, "Learning to Cartoonize Using White-Box Cartoon
Representations", CVPR 2020), following the authors' TensorFlow code
(SystemErrorWang/White-box-Cartoonization, train_code/network.py, loss.py, pretrain.py,
train.py). The representations live in `toonlab.models.whitebox.ops`.

Networks
  * `UNetGenerator`: the reference's `unet_generator` (channel 32, 4 residual blocks:
    1,467,075 parameters). TF 'SAME' padding (stride-2 convolutions pad 0 before, 1 after
    on even sizes), LeakyReLU 0.2, TF1 `resize_bilinear` 2x upsampling (no half-pixel
    centres), skip additions, no output activation; Glorot-uniform init, zero biases.
    Its output is refined by a guided filter guided by the photo: r 1, eps 1e-2 in
    training, eps 5e-3 at inference (`Cartoonizer`).
  * `PatchDiscriminator`: the reference's `disc_sn`: 3 x [conv 3x3 stride 2, conv 3x3],
    widths 32, 64, 128, LeakyReLU 0.2, spectral norm on every conv, 1x1 patch output.
    287,137 parameters on the 3-channel surface images, 286,561 on the 1-channel texture
    images (the texture discriminator sees the colour-shifted grey image).
  * `VGG19Features`: torchvision's VGG19 up to conv4_4 before its ReLU (10,585,152
    parameters), ImageNet weights `vgg19-dcbb9e9d.pth` from the torch hub folder. Its input
    convention (`model.vgg_input`): "torchvision" (default), RGB in [0, 1] with ImageNet
    mean/std normalisation; "caffe" (the reference preset), the reference's: BGR in
    0..255 minus the Caffe mean [103.939, 116.779, 123.68] (its vgg19.py). The content and
    structure weights (200) are tuned to the Caffe feature scale: caffe inputs are about
    255 * std ~ 57 times larger than torchvision's, and with random (bias-free) weights
    conv4_4 features and hence those L1 terms grow by the same factor (56-57, measured; see
    README); with ImageNet weights the factor depends on the weights' biases. Note that
    torchvision's weights were trained on normalised RGB: under "caffe" input they are not
    the Caffe VGG19 (the reference's vgg19.npy), only its input convention and scale.

Training
  * Pretrain (`whitebox_pretrain`): pixel L1 between the photo and the raw generator output
    (no guided filter), Adam 2e-4 (0.5, 0.99), 50,000 steps (reference pretrain.py).
  * Adversarial (`whitebox`), from the pretrained generator: output = guided_filter(photo,
    G(photo), r 1, eps 1e-2), then
      G_total = tv * TV(out) + surface * LSGAN_G(D_surface(gf(out, out, r 5, eps 0.2)))
              + texture * LSGAN_G(D_texture(colour_shift(out)))
              + content * |VGG(photo) - VGG(out)| / size + structure * |VGG(sp(out)) - VGG(out)| / size
              [+ landmark * landmark_loss(out, photo)]
    and D_total = LSGAN_D surface + LSGAN_D texture on the cartoons' representations
    (one Adam for both discriminators), Adam 2e-4 (0.5, 0.99), 100,000 steps, batch 16,
    256 px, constant learning rate. Returned losses are the weighted terms.
  * Superpixels are segmented on the CPU while the device works: right after the
    generator's forward the detached output is copied to the host (as uint8) and submitted
    to a spawn-context process pool (`structure.workers`, one task per image); the
    adversarial, content, TV and landmark terms are queued meanwhile; then the labels are
    collected, the segments filled on the device and the structure term added.
    `recipe.timings` holds the seconds spent waiting for labels and the seconds of
    segmentation work. Processes rather than threads: scikit-image's SLIC holds the GIL for
    most of its run. Measured on 16 SLIC segmentations of 256 px images (2 cores shared
    with other jobs): 1 thread 1.7 s, 2 threads 1.6 s, 4 threads 1.8 s (CPU use stays
    below one core), 1 process 1.4 s, 2 processes 1.3 s; about 70 ms per image on one
    free core, so `workers` should be about batch_size * 0.07 s / step time.
  * Landmarks: with `loss.landmark` > 0 a trained landmarker (`loss.landmarker_run`) is
    loaded frozen and `landmark_loss(out, photo)` keeps facial keypoints in place.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toonlab.errors import ToonlabError
from toonlab.log import get_logger
from toonlab.models.common import Phases, RecipeBase, adam, count_params
from toonlab.models.losses import FrozenVGG, GANLoss
from toonlab.models.whitebox import ops
from toonlab.models.whitebox.params import WhiteboxParams
from toonlab.train.recipe import Context, DataSpec

log = get_logger(__name__)

VGG19_FILE = "vgg19-dcbb9e9d.pth"


# ----------------------------------------------------------------------------- networks


def same_padding(size: int, k: int, s: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) of one spatial dimension."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' zero padding (asymmetric for stride 2 on even sizes)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1):
        super().__init__(c_in, c_out, k, stride=stride, padding=k // 2 if stride == 1 else 0)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride[0] > 1:
            k, s = self.kernel_size[0], self.stride[0]
            ph, pw = same_padding(x.shape[-2], k, s), same_padding(x.shape[-1], k, s)
            x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        return super().forward(x)


def upsample2x_tf(x: Tensor) -> Tensor:
    """TF1 `resize_bilinear` to twice the size (align_corners and half_pixel_centers off):
    output pixel i samples input position i / 2, so even pixels copy the input and odd
    ones average two neighbours (the last repeats the edge)."""
    n, c, h, w = x.shape
    nxt = torch.cat([x[..., 1:], x[..., -1:]], dim=-1)
    x = torch.stack([x, 0.5 * (x + nxt)], dim=-1).reshape(n, c, h, 2 * w)
    nxt = torch.cat([x[..., 1:, :], x[..., -1:, :]], dim=-2)
    return torch.stack([x, 0.5 * (x + nxt)], dim=-2).reshape(n, c, 2 * h, 2 * w)


@torch.no_grad()
def glorot_init(net: nn.Module) -> nn.Module:
    """TF-slim's default init: Glorot-uniform weights, zero biases."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


class ResBlock(nn.Module):
    """x + conv(lrelu(conv(x))), 3x3 convolutions (the reference's `resblock`)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = Conv2dSame(ch, ch, 3)
        self.conv2 = Conv2dSame(ch, ch, 3)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(_lrelu(self.conv1(x)))


class UNetGenerator(nn.Module):
    """The reference's `unet_generator`; N x 3 x H x W in, unbounded N x 3 x H x W out
    (H, W multiples of 4). ch 32, n_res 4: 1,467,075 parameters."""

    def __init__(self, ch: int = 32, n_res: int = 4):
        super().__init__()
        self.conv0 = Conv2dSame(3, ch, 7)
        self.down1 = Conv2dSame(ch, ch, 3, stride=2)
        self.conv1 = Conv2dSame(ch, ch * 2, 3)
        self.down2 = Conv2dSame(ch * 2, ch * 2, 3, stride=2)
        self.conv2 = Conv2dSame(ch * 2, ch * 4, 3)
        self.blocks = nn.Sequential(*[ResBlock(ch * 4) for _ in range(n_res)])
        self.conv3 = Conv2dSame(ch * 4, ch * 2, 3)
        self.up1a = Conv2dSame(ch * 2, ch * 2, 3)
        self.up1b = Conv2dSame(ch * 2, ch, 3)
        self.up2a = Conv2dSame(ch, ch, 3)
        self.out = Conv2dSame(ch, 3, 7)
        glorot_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x0 = _lrelu(self.conv0(x))
        x1 = _lrelu(self.conv1(_lrelu(self.down1(x0))))
        x2 = _lrelu(self.conv2(_lrelu(self.down2(x1))))
        x2 = _lrelu(self.conv3(self.blocks(x2)))
        x3 = _lrelu(self.up1a(upsample2x_tf(x2) + x1))
        x3 = _lrelu(self.up1b(x3))
        x4 = _lrelu(self.up2a(upsample2x_tf(x3) + x0))
        return self.out(x4)


class PatchDiscriminator(nn.Module):
    """The reference's `disc_sn` (patch output): for widths ch, 2ch, 4ch a spectrally
    normalised 3x3 stride-2 conv and a 3x3 conv, each followed by LeakyReLU 0.2, then a
    1x1 conv to one logit per patch (input / 8 resolution). ch 32: 287,137 parameters
    with 3 input channels, 286,561 with 1."""

    def __init__(self, c_in: int = 3, ch: int = 32):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        layers: list[nn.Module] = []
        prev = c_in
        for i in range(3):
            width = ch * 2 ** i
            layers += [sn(glorot_init(Conv2dSame(prev, width, 3, stride=2))), nn.LeakyReLU(0.2),
                       sn(glorot_init(Conv2dSame(width, width, 3))), nn.LeakyReLU(0.2)]
            prev = width
        layers.append(sn(glorot_init(Conv2dSame(prev, 1, 1))))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


# torchvision's VGG19 ("E") feature stack up to conv4_4 (features index 25, before its ReLU).
_VGG19_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512)
VGG19_CONV4_4 = 25
# The Caffe VGG's input mean (B, G, R) in 0..255, as the reference's vgg19.py subtracts it.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


class VGG19Features(FrozenVGG):
    """Frozen VGG19 `features[:26]` (conv1_1 .. conv4_4, no final ReLU) of images in [-1, 1].

    weights "imagenet": torchvision's `vgg19-dcbb9e9d.pth` from the torch hub checkpoint
    folder (`toonlab.weights.require("vgg19")`; fetched when `runtime.fetch_weights` is auto,
    MissingWeightsError otherwise). "random": Kaiming init, meaningless as a loss (smoke tests only). Stays in
    eval mode; gradients flow to the input only.
    """

    def __init__(self, weights: Literal["imagenet", "random"] = "imagenet",
                 input: Literal["torchvision", "caffe"] = "torchvision"):
        super().__init__(_VGG19_CFG, VGG19_CONV4_4, weights, hub_name="vgg19", file_name=VGG19_FILE,
                         owner="VGG19Features", arch="VGG19", bad_file_error=ToonlabError, logger=log,
                         random_note="White-box VGG19 with random weights: content and structure losses "
                                     "are meaningless")
        if input not in ("torchvision", "caffe"):
            raise ValueError(f"VGG19Features: input must be 'torchvision' or 'caffe', got {input!r}")
        self.input = input
        if input == "caffe":
            # x in [-1, 1] RGB -> BGR, (x + 1) * 127.5 - mean == x * 127.5 + (127.5 - mean).
            # Non-persistent buffers: the state dict (and its keys) is the same either way.
            self.scale = torch.full((1, 3, 1, 1), 127.5)
            self.shift = 127.5 - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)

    def normalize(self, x: Tensor) -> Tensor:
        if self.input == "caffe":
            x = x.flip(1)   # RGB -> BGR
        return super().normalize(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.features_of(x)

    def content_loss(self, x: Tensor, y: Tensor) -> Tensor:
        """The reference's VGG loss between two images: L1 of conv4_4 features / their size."""
        return ops.feature_l1(self(x), self(y))


class Cartoonizer(nn.Module):
    """Inference: the generator refined by the guided filter (guide: the input photo),
    clamped to [-1, 1]."""

    def __init__(self, G: nn.Module, r: int = 1, eps: float = 5e-3):
        super().__init__()
        self.G, self.r, self.eps = G, r, eps

    def forward(self, x: Tensor) -> Tensor:
        return ops.guided_filter(x, self.G(x), self.r, self.eps).clamp(-1, 1)


# ----------------------------------------------------------------------------- params


# ----------------------------------------------------------------------------- recipes


class _Base(RecipeBase):
    """What both stages share: data spec and a constant learning rate."""

    def __init__(self, params: WhiteboxParams, ctx: Context, domains: dict[str, str]):
        super().__init__(ctx)
        self.params = params
        d = params.data
        self.data = DataSpec(domains=domains, crop_px=d.crop_px, batch_size=d.batch_size,
                             load_px=d.load_px or None, flip=d.flip)
        self.sched: dict[str, Any] = {}   # the reference keeps the learning rate constant


class WhiteboxPretrainRecipe(_Base):
    """Reconstruction pretraining of the generator (reference pretrain.py): L1 between the
    photo and the raw generator output. Loss: `recon`."""

    grid_rows = [["photo", "output"]]

    def __init__(self, params: WhiteboxParams, ctx: Context):
        super().__init__(params, ctx, {"photo": params.data.domain_photo})
        m, o = params.model, params.optim
        G = UNetGenerator(m.ch, m.n_res).to(self.device, memory_format=self.memory_format)
        self.nets: dict[str, nn.Module] = {"G": G}
        self.opt = {"G": adam(G.parameters(), params.pretrain.lr, (o.beta1, o.beta2), self.device)}

    def phases(self, batch: dict[str, Tensor], step: int) -> Phases:
        photo = self._to_device(batch["photo"])
        with self._autocast():
            out = self.nets["G"](photo)
        recon = F.l1_loss(out.float(), photo.float())
        yield "G", recon
        return {"recon": recon.detach()}

    @torch.no_grad()
    def sample(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        photo = self._to_device(batch["photo"])
        with self._autocast():
            out = self.nets["G"](photo)
        return {"photo": photo.float().contiguous(), "output": out.float().clamp(-1, 1).contiguous()}


def load_pretrained_generator(G: nn.Module, run_dir: str | Path) -> Path:
    """Load G from the latest `step-*.pt` of a whitebox_pretrain run; ToonlabError if none."""
    from toonlab.train import checkpoint as ckpt

    folder = Path(run_dir) / "checkpoints"
    path = ckpt.latest(folder)
    if path is None:
        raise ToonlabError(
            f"whitebox: no pretrained generator in {folder} (no step-*.pt checkpoint); run "
            f"`toonlab train whitebox_pretrain` first, or set whitebox.pretrain.run_dir to \"\" "
            f"to start from a random generator")
    state = ckpt.load(path)
    sd = state.get("nets", {}).get("G")
    if sd is None:
        raise ToonlabError(f"{path}: no generator (nets.G) in this checkpoint")
    try:
        G.load_state_dict(sd)
    except RuntimeError as exc:
        raise ToonlabError(f"{path}: the pretrained generator does not fit whitebox.model "
                           f"(ch / n_res changed since pretraining?): {str(exc).splitlines()[0]}") from None
    return path


def _landmarker_api():
    try:
        from toonlab.models.landmarker.model import heatmaps, landmark_loss, load_landmarker
    except ImportError as exc:
        raise ToonlabError(f"whitebox.loss.landmark > 0 needs the landmarker model family ({exc}); "
                           "set whitebox.loss.landmark to 0") from None
    return load_landmarker, landmark_loss, heatmaps


class WhiteboxRecipe(_Base):
    """The adversarial stage. Trainable networks in `self.nets`: G, D_surface (3 channels),
    D_texture (1 channel). The frozen VGG19 (`self.vgg`) and landmarker (`self.landmarker`)
    are not checkpointed. Losses: surface, texture, structure, content, tv, [landmark]
    (weighted), G_total, D_surface, D_texture, D_total."""

    ema_nets = ("G",)              # averaged under train.ema (toonlab.train.ema)

    def __init__(self, params: WhiteboxParams, ctx: Context):
        d = params.data
        super().__init__(params, ctx, {"photo": d.domain_photo, "cartoon": d.domain_cartoon})
        m, lp, o, s = params.model, params.loss, params.optim, params.structure
        G = UNetGenerator(m.ch, m.n_res)
        run_dir = params.pretrain.run_dir
        self.pretrained_from = load_pretrained_generator(G, run_dir) if run_dir else None
        nets: dict[str, nn.Module] = {"G": G, "D_surface": PatchDiscriminator(3, m.d_ch),
                                      "D_texture": PatchDiscriminator(1, m.d_ch)}
        for net in nets.values():
            net.to(self.device, memory_format=self.memory_format)
        self.nets = nets
        self.vgg = VGG19Features(m.vgg_weights, m.vgg_input).to(self.device, memory_format=self.memory_format)
        self.landmarker: nn.Module | None = None
        if lp.landmark > 0:
            load_landmarker, self._landmark_loss, self._heatmaps = _landmarker_api()
            self.landmarker = load_landmarker(lp.landmarker_run, self.device)
        self.grid_rows = [["photo", "output", "surface", "structure", "texture"]
                          + (["landmarks"] if self.landmarker is not None else [])]

        betas = (o.beta1, o.beta2)
        d_params = [*nets["D_surface"].parameters(), *nets["D_texture"].parameters()]
        self.opt = {"G": adam(G.parameters(), o.lr, betas, self.device), "D": adam(d_params, o.lr, betas, self.device)}
        self.gan = GANLoss("lsgan")
        self.segmenter = ops.Segmenter(s.method, s.segments, s.workers)
        # The colour shift's own generator (seeded from the trainer-seeded global RNG, checkpointed).
        self.shift_rng = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        self.timings: dict[str, float] = {"superpixel_wait_s": 0.0, "superpixel_work_s": 0.0,
                                          "superpixel_wait_total_s": 0.0, "superpixel_work_total_s": 0.0,
                                          "steps": 0}

    def _output(self, photo: Tensor, eps: float) -> Tensor:
        with self._autocast():
            raw = self.nets["G"](photo)
        return ops.guided_filter(photo, raw, self.params.model.gf_r, eps)

    def phases(self, batch: dict[str, Tensor], step: int) -> Phases:
        Ds, Dt = self.nets["D_surface"], self.nets["D_texture"]
        lp = self.params.loss
        photo, cartoon = self._to_device(batch["photo"]), self._to_device(batch["cartoon"])
        n_c = cartoon.shape[0]
        mf = self.memory_format

        # ---- generator
        self._set_requires_grad([Ds, Dt], False)
        out = self._output(photo, self.params.model.gf_eps).contiguous(memory_format=mf)
        pending = self.segmenter.submit(out.detach()) if lp.structure > 0 else None

        blur_fake = ops.surface(out, lp.surface_r, lp.surface_eps).contiguous(memory_format=mf)
        gray_fake, gray_real = ops.color_shift(out, cartoon, generator=self.shift_rng)
        losses: dict[str, Tensor] = {}
        zero = torch.zeros((), device=self.device)
        with self._autocast():
            pred_s = Ds(blur_fake)
            pred_t = Dt(gray_fake.contiguous(memory_format=mf))
            # VGG only for the terms that are on (weights 0 skip it, e.g. in tests).
            vgg_out = self.vgg(out) if (lp.content > 0 or pending is not None) else None
            if lp.content > 0:
                with torch.no_grad():
                    vgg_photo = self.vgg(photo)
            if self.landmarker is not None:
                lm = self._landmark_loss(self.landmarker, out, photo)
        losses["surface"] = lp.surface * self.gan(pred_s, True)
        losses["texture"] = lp.texture * self.gan(pred_t, True)
        losses["content"] = lp.content * ops.feature_l1(vgg_photo, vgg_out) if lp.content > 0 else zero
        losses["tv"] = lp.tv * ops.total_variation(out)
        if self.landmarker is not None:
            losses["landmark"] = lp.landmark * lm.float()
        if pending is not None:
            labels, waited, work = pending.result()
            self._time(waited, work)
            lab = torch.from_numpy(labels).to(self.device, non_blocking=True)
            with torch.no_grad():
                sp = ops.superpixel_fill(out.detach(), lab, self.params.structure.fill,
                                         num_labels=int(labels.max()) + 1)
                with self._autocast():
                    vgg_sp = self.vgg(sp.contiguous(memory_format=mf))
            losses["structure"] = lp.structure * ops.feature_l1(vgg_sp, vgg_out)
        else:
            losses["structure"] = zero
        g_total = sum(losses.values())
        yield "G", g_total

        # ---- discriminators (one Adam for both, as the reference)
        self._set_requires_grad([Ds, Dt], True)
        with torch.no_grad():
            blur_real = ops.surface(cartoon, lp.surface_r, lp.surface_eps)
        with self._autocast():
            ps = Ds(torch.cat([blur_real, blur_fake.detach()]).contiguous(memory_format=mf))
            pt = Dt(torch.cat([gray_real, gray_fake.detach()]).contiguous(memory_format=mf))
        d_s = 0.5 * (self.gan(ps[:n_c], True) + self.gan(ps[n_c:], False))
        d_t = 0.5 * (self.gan(pt[:n_c], True) + self.gan(pt[n_c:], False))
        d_total = d_s + d_t
        yield "D", d_total

        res = {k: v.detach() for k, v in losses.items()}
        res.update(G_total=g_total.detach(), D_surface=d_s.detach(), D_texture=d_t.detach(), D_total=d_total.detach())
        return res

    def _time(self, waited: float, work: float) -> None:
        t = self.timings
        t["superpixel_wait_s"], t["superpixel_work_s"] = waited, work
        t["superpixel_wait_total_s"] += waited
        t["superpixel_work_total_s"] += work
        t["steps"] += 1

    @torch.no_grad()
    def sample(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        lp = self.params.loss
        photo = self._to_device(batch["photo"])
        out = self._output(photo, self.params.model.gf_eps_test).float().clamp(-1, 1)
        labels = self.segmenter.labels(out)
        lab = torch.from_numpy(labels).to(self.device)
        images = {
            "photo": photo.float(),
            "output": out,
            "surface": ops.surface(out, lp.surface_r, lp.surface_eps),
            "structure": ops.superpixel_fill(out, lab, self.params.structure.fill, num_labels=int(labels.max()) + 1),
            # Fixed mean weights, so grids do not draw from the training RNG.
            "texture": ops.color_shift(out, weights=torch.tensor(ops.COLOR_SHIFT_MEAN))[0].repeat(1, 3, 1, 1),
        }
        if self.landmarker is not None:
            hm = self._heatmaps(self.landmarker, out).float()
            hm = F.interpolate(hm, size=out.shape[-2:], mode="bilinear", align_corners=False)
            images["landmarks"] = hm.amax(dim=1, keepdim=True).clamp(0, 1)
        return {k: v.float().contiguous() for k, v in images.items()}

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "shift_rng": self.shift_rng.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        if state.get("shift_rng") is not None:
            self.shift_rng.set_state(state["shift_rng"])

    def close(self) -> None:
        """Stop the segmentation workers (also done when the recipe is garbage collected)."""
        self.segmenter.close()


# ----------------------------------------------------------------------------- builders


def build_pretrain(params: WhiteboxParams, ctx: Context) -> WhiteboxPretrainRecipe:
    """The White-box reconstruction pretraining recipe for the generic trainer."""
    recipe = WhiteboxPretrainRecipe(params, ctx)
    log.info("White-box pretrain: G %d params (ch %d, %d res blocks), L1 reconstruction",
             count_params(recipe.nets["G"]), params.model.ch, params.model.n_res)
    return recipe


def build(params: WhiteboxParams, ctx: Context) -> WhiteboxRecipe:
    """The White-box adversarial recipe for the generic trainer."""
    t = time.perf_counter()
    recipe = WhiteboxRecipe(params, ctx)
    log.info("White-box: G %d params from %s, D_surface %d, D_texture %d params; superpixels %s/%d (%s fill, "
             "%d workers); built in %.1f s", count_params(recipe.nets["G"]),
             recipe.pretrained_from or "random init", count_params(recipe.nets["D_surface"]),
             count_params(recipe.nets["D_texture"]), params.structure.method, params.structure.segments,
             params.structure.fill, params.structure.workers, time.perf_counter() - t)
    return recipe


def inference(params: WhiteboxParams, nets: dict[str, Any]):
    """The generator with the test-time guided filter (photo -> cartoon)."""
    from toonlab.runs.inference import Inference

    m, d = params.model, params.data
    G = UNetGenerator(m.ch, m.n_res)
    G.load_state_dict(nets["G"])
    return Inference("whitebox", d.domain_photo, d.domain_cartoon, d.crop_px,
                     Cartoonizer(G.eval(), m.gf_r, m.gf_eps_test).eval())


