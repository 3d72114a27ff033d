"""Losses and training helpers shared by the model families.

* `GANLoss`: adversarial loss against the real / fake target (LSGAN or BCE on logits),
  computed in closed form so that no target tensor is allocated per call.
* `ImagePool`: the history buffer of generated images (Shrivastava et al. 2017), as used
  by CycleGAN: 50 images, return the new one or swap it with a stored one at random.
* `VGGPerceptual`: L1 between frozen VGG16 features of two images, built only up to the
  requested layer, with ImageNet weights read from torch.hub's cache folder (never
  downloaded).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toonlab.log import get_logger

log = get_logger(__name__)

GanMode = Literal["lsgan", "vanilla", "bce_logits"]


# ----------------------------------------------------------------------------- GAN loss


class GANLoss(nn.Module):
    """Adversarial loss of discriminator outputs against the real or the fake label.

    Modes:

    * ``"lsgan"``: least squares, ``mean((pred - label)^2)`` (Mao et al. 2017; CycleGAN's
      default).
    * ``"bce_logits"``: binary cross-entropy on logits, i.e. ``BCEWithLogitsLoss`` against
      a constant target, computed as ``t*softplus(-x) + (1-t)*softplus(x)``.
    * ``"vanilla"``: the same as ``"bce_logits"`` (the name the CycleGAN/pix2pix reference
      gives it: the discriminator outputs logits, there is no sigmoid layer).

    Both are evaluated in closed form, so a call allocates no target tensor at all (the
    equivalent of ``torch.ones_like``/``zeros_like`` is folded into the arithmetic), and in
    float32 whatever autocast produced. `pred` may be one tensor or a sequence of them
    (multi-scale discriminators): the losses are averaged.
    """

    def __init__(self, mode: GanMode = "lsgan", real_label: float = 1.0, fake_label: float = 0.0):
        super().__init__()
        if mode not in ("lsgan", "vanilla", "bce_logits"):
            raise ValueError(f"GANLoss: unknown mode {mode!r} (lsgan, vanilla, bce_logits)")
        self.mode = mode
        self.real_label = float(real_label)
        self.fake_label = float(fake_label)

    def _one(self, pred: Tensor, target: float) -> Tensor:
        x = pred.float()
        if self.mode == "lsgan":
            return (x - target).square().mean()
        # BCE with logits against a constant target t, numerically stable via softplus.
        if target == 1.0:
            return F.softplus(-x).mean()
        if target == 0.0:
            return F.softplus(x).mean()
        return (target * F.softplus(-x) + (1.0 - target) * F.softplus(x)).mean()

    def forward(self, pred: Tensor | Sequence[Tensor], target_is_real: bool) -> Tensor:
        target = self.real_label if target_is_real else self.fake_label
        if isinstance(pred, Tensor):
            return self._one(pred, target)
        losses = [self._one(p, target) for p in pred]
        return torch.stack(losses).mean()

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, real_label={self.real_label}, fake_label={self.fake_label}"


# ----------------------------------------------------------------------------- image pool


class ImagePool:
    """History of generated images fed to the discriminator (CycleGAN's image buffer).

    While fewer than `size` images are stored, every incoming image is stored and returned
    unchanged. Once full, each incoming image is, with probability 0.5, returned as is;
    otherwise a uniformly chosen stored image is returned in its place and the new image
    is stored in that slot. ``size == 0`` disables the pool (images pass through).

    Randomness: drawn from `generator` (a CPU ``torch.Generator``) when one is given, else
    from torch's global CPU RNG. The draws happen on the CPU, so querying GPU images never
    synchronises the device. With the global RNG, resuming is reproducible when the trainer
    restores ``torch.get_rng_state()`` (it does); with an own generator, its state is part
    of `state_dict()`.

    State (`state_dict`/`load_state_dict`) is plain data and CPU tensors: the pool size,
    the number stored, the stored images stacked in one tensor, and the generator state.
    """

    def __init__(self, size: int = 50, generator: torch.Generator | None = None):
        if size < 0:
            raise ValueError(f"ImagePool: size must be >= 0, got {size}")
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("ImagePool: the generator must be a CPU torch.Generator")
        self.pool_size = int(size)
        self.generator = generator
        self.count = 0
        self._buf: Tensor | None = None   # pool_size x C x H x W, allocated on first use

    def __len__(self) -> int:
        return self.count

    def _buffer_for(self, images: Tensor) -> Tensor:
        shape = (self.pool_size, *images.shape[1:])
        if self._buf is None:
            self._buf = torch.empty(shape, dtype=images.dtype, device=images.device)
        elif tuple(self._buf.shape) != shape:
            raise ValueError(f"ImagePool: images of shape {tuple(images.shape[1:])} do not match "
                             f"the stored ones {tuple(self._buf.shape[1:])}")
        elif self._buf.device != images.device:   # e.g. after loading a checkpoint
            self._buf = self._buf.to(images.device)
        return self._buf

    @torch.no_grad()
    def query(self, images: Tensor) -> Tensor:
        """Return a batch of the same shape: each image is the new one or a stored one."""
        images = images.detach()
        if self.pool_size == 0:
            return images
        buf = self._buffer_for(images)
        images = images.to(buf.dtype)
        n = images.shape[0]
        n_fill = min(max(self.pool_size - self.count, 0), n)
        n_draw = n - n_fill
        if n_draw:
            coins = torch.rand(n_draw, generator=self.generator).tolist()
            slots = torch.randint(0, self.pool_size, (n_draw,), generator=self.generator).tolist()
        out: list[Tensor] = []
        for i in range(n):
            img = images[i]
            if i < n_fill:
                buf[self.count].copy_(img)
                self.count += 1
                out.append(img)
                continue
            k = i - n_fill
            if coins[k] > 0.5:
                j = slots[k]
                old = buf[j].clone()
                buf[j].copy_(img)
                out.append(old)
            else:
                out.append(img)
        return torch.stack(out, 0)

    __call__ = query

    def state_dict(self) -> dict[str, Any]:
        stored = (self._buf[: self.count].detach().to("cpu", copy=True) if self._buf is not None
                  else torch.empty(0))
        return {
            "pool_size": self.pool_size,
            "count": self.count,
            "images": stored,
            "generator": self.generator.get_state() if self.generator is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        size = int(state["pool_size"])
        if size != self.pool_size:
            raise ValueError(f"ImagePool: checkpoint pool has size {size}, this pool {self.pool_size}")
        count = int(state["count"])
        images: Tensor = state["images"]
        if count > 0:
            if images.shape[0] != count:
                raise ValueError("ImagePool: stored images do not match the stored count")
            self._buf = torch.empty((self.pool_size, *images.shape[1:]), dtype=images.dtype)
            self._buf[:count].copy_(images)
        else:
            self._buf = None
        self.count = count
        if self.generator is not None and state.get("generator") is not None:
            self.generator.set_state(state["generator"])


# ----------------------------------------------------------------------------- VGG perceptual

# torchvision's VGG16 ("D" configuration) feature stack; indices into `features`.
_VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                     512, 512, 512, "M", 512, 512, 512, "M")
VGG16_LAYERS: dict[str, int] = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
VGG16_FILE = "vgg16-397923af.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _vgg_features(cfg: Sequence[int | str], last: int) -> nn.Sequential:
    """torchvision's `vgg*().features[: last + 1]` for the configuration `cfg`, same module
    indices (so the state dict keys `features.<i>.weight` match), without building the rest."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.Conv2d(c_in, int(v), kernel_size=3, padding=1))
            layers.append(nn.ReLU(inplace=True))
            c_in = int(v)
        if len(layers) > last:
            break
    return nn.Sequential(*layers[: last + 1])


class FrozenVGG(nn.Module):
    """A frozen torchvision VGG feature stack `features[: last + 1]` (configuration `cfg`)
    of images in [-1, 1], ImageNet normalisation inside; the base of `VGGPerceptual`
    (VGG16) and the white-box `VGG19Features`.

    `weights="imagenet"` loads `file_name` from torch.hub's checkpoint folder
    (``toonlab.weights.require(hub_name)``; fetched when `runtime.fetch_weights` is auto (`toonlab.weights`), else a missing file raises
    MissingWeightsError, a file without the expected keys `bad_file_error`).
    `weights="random"`: Kaiming init and a warning (`random_note`, to `logger`), meaningless
    as a loss, for smoke tests only. Parameters do not require grad and the module stays in
    eval mode even when a parent calls ``.train()``; gradients still flow to the input
    images. `owner` (the class) and `arch` (the network) name them in messages.
    """

    def __init__(self, cfg: Sequence[int | str], last: int, weights: Literal["imagenet", "random"], *,
                 hub_name: str, file_name: str, owner: str, arch: str, random_note: str,
                 bad_file_error: type[Exception] = ValueError, logger: logging.Logger | None = None):
        super().__init__()
        if weights not in ("imagenet", "random"):
            raise ValueError(f"{owner}: weights must be 'imagenet' or 'random', got {weights!r}")
        self.weights = weights
        self.features = _vgg_features(cfg, last)
        if weights == "imagenet":
            self._load_imagenet(hub_name, file_name, arch, bad_file_error)
        else:
            (logger or log).warning("%s (smoke tests only); put %s in the torch hub folder for real training",
                                    random_note, file_name)
            for m in self.features.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        # x in [-1, 1] -> ((x + 1) / 2 - mean) / std == x * scale + shift
        self.register_buffer("scale", 0.5 / std, persistent=False)
        self.register_buffer("shift", (0.5 - mean) / std, persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def _load_imagenet(self, hub_name: str, file_name: str, arch: str, bad_file_error: type[Exception]) -> None:
        from toonlab import weights as weight_files

        path = weight_files.require(hub_name) / file_name
        # mmap: only the tensors actually used are read from the (500+ MB) file. Files in the
        # legacy (pre-zip) serialisation cannot be mapped: read those whole.
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
        wanted = {k: v for k, v in state.items()
                  if k.startswith("features.") and int(k.split(".")[1]) < len(self.features)}
        missing = set(self.state_dict()) - set(wanted)
        if missing:
            raise bad_file_error(f"{path}: not a torchvision {arch} state dict (missing {sorted(missing)[:3]})")
        self.load_state_dict(wanted, strict=True)

    def train(self, mode: bool = True) -> FrozenVGG:
        return super().train(False)   # always frozen

    def normalize(self, x: Tensor) -> Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)

    def features_of(self, x: Tensor) -> Tensor:
        return self.features(self.normalize(x))


class VGGPerceptual(FrozenVGG):
    """L1 distance between frozen VGG16 features of two images in [-1, 1].

    `layer` is one of relu1_2, relu2_2, relu3_3, relu4_3 (features indices 3, 8, 15, 22);
    only the layers up to it are built. `weights="imagenet"` loads torchvision's ImageNet
    file ``vgg16-397923af.pth`` from torch.hub's checkpoint folder (see
    ``toonlab.weights.require("vgg16")``; fetched when `runtime.fetch_weights` is auto (`toonlab.weights`), else a missing file raises
    MissingWeightsError). `weights="random"` keeps a random initialisation: meaningless
    as a loss, for smoke tests only.

    The module is frozen: parameters do not require grad and it stays in eval mode even
    when a parent calls ``.train()``. Gradients still flow to the *input* images.
    """

    def __init__(self, layer: str = "relu2_2", weights: Literal["imagenet", "random"] = "imagenet"):
        if layer not in VGG16_LAYERS:
            raise ValueError(f"VGGPerceptual: unknown layer {layer!r} (one of {', '.join(VGG16_LAYERS)})")
        super().__init__(_VGG16_CFG, VGG16_LAYERS[layer], weights, hub_name="vgg16", file_name=VGG16_FILE,
                         owner="VGGPerceptual", arch="VGG16",
                         random_note="VGGPerceptual with random weights: the perceptual loss is meaningless")
        self.layer = layer

    def forward(self, x: Tensor, target: Tensor) -> Tensor:
        """Mean absolute difference of the features of `x` and `target`. No graph is kept
        for `target` when it does not require grad."""
        fx = self.features_of(x)
        if target.requires_grad:
            ft = self.features_of(target)
        else:
            with torch.no_grad():
                ft = self.features_of(target)
        return F.l1_loss(fx.float(), ft.float())
