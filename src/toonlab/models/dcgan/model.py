"""DCGAN (Radford et al. 2016) for 96 px anime avatars, faithful to the well-known recipe.

Networks (the DCGAN design rules: strided (transposed) convolutions instead of pooling,
batch norm in both nets except G's output and D's input layer, ReLU in G with a tanh
output, LeakyReLU 0.2 in D, no fully connected layers, no convolution biases):

* `NetG`: noise N x nz x 1 x 1 -> 4x4 (ngf*8) -> 8x8 (ngf*4) -> 16x16 (ngf*2) -> 32x32 (ngf)
  -> 96x96 x 3 (kernel 5, stride 3, padding 1), tanh. nz 100, ngf 64: 3,578,432 parameters.
* `NetD`: 96x96 x 3 -> 32x32 (ndf, kernel 5, stride 3, padding 1) -> 16x16 (ndf*2) -> 8x8
  (ndf*4) -> 4x4 (ndf*8) -> 1x1 (kernel 4, stride 1, padding 0). ndf 64: 2,767,296 parameters.
  `forward(x)` returns the probability of "real" per image (shape N), as the reference's
  sigmoid layer does; `forward(x, logits=True)` the pre-sigmoid value.

Initialisation (`model.init`): "normal", the DCGAN paper's convolution weights ~ N(0, 0.02),
batch-norm weights ~ N(1, 0.02), biases 0; or "default", PyTorch's own init (Kaiming-uniform
convolutions, batch-norm weight 1, bias 0), which the anime-avatar recipe leaves in place
(its reference preset sets it, together with no flipping).

Training (the reference): binary cross-entropy, Adam 2e-4 for both nets, betas (0.5, 0.999),
batch 256, 200 epochs, the discriminator updated on every batch and the generator on every
5th. The D step is the reference's: BCE of D(real) against 1, backward; BCE of D(G(z))
against 0 on a fresh noise batch with the fakes detached, backward; one optimizer step. The
G step draws fresh noise and takes the BCE of D(G(z)) against 1.

Numerical note: the reference applies BCELoss to sigmoid probabilities. Here the same loss
is computed as BCE-with-logits on D's pre-sigmoid output (`GANLoss("bce_logits")`):
mathematically identical, but it neither saturates (log(0) once D is confident) nor loses
gradient under bf16 autocast. The module's plain forward still returns probabilities, and
the logged D_x / D_G_z are probabilities.

Total training length is `optim.steps` (the reference's 200 epochs expressed in steps for
the data at hand); the learning rate is constant (no schedulers).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from toonlab.log import get_logger
from toonlab.models.common import Phases, RecipeBase, adam, count_params, init_weights  # noqa: F401 (re-exported)
from toonlab.models.dcgan.params import DCGANOptimParams, DCGANParams
from toonlab.models.losses import GANLoss
from toonlab.train.device import unwrap
from toonlab.train.recipe import Context, DataSpec
from toonlab.util import codec

log = get_logger(__name__)

IMAGE_PX = 96
FIXED_NOISE = 64   # noise vectors kept for the sample grids (train.grid_images is at most 64)
LOSS_NAMES = ("D_real", "D_fake", "D_total", "G", "D_x", "D_G_z")


# ----------------------------------------------------------------------------- networks


class NetG(nn.Module):
    """Generator: N x nz x 1 x 1 noise -> N x 3 x 96 x 96 images in [-1, 1]."""

    def __init__(self, nz: int = 100, ngf: int = 64):
        super().__init__()
        self.nz = nz
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),        # 1 -> 4
            nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),   # 4 -> 8
            nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),   # 8 -> 16
            nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),       # 16 -> 32
            nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, 3, 5, 3, 1, bias=False),             # 32 -> 96
            nn.Tanh(),
        )

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        return self.main(z)


class NetD(nn.Module):
    """Discriminator: N x 3 x 96 x 96 -> N probabilities of "real" (or logits)."""

    def __init__(self, ndf: int = 64):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(3, ndf, 5, 3, 1, bias=False),                      # 96 -> 32
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),                # 32 -> 16
            nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),            # 16 -> 8
            nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),            # 8 -> 4
            nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),                  # 4 -> 1
        )

    def forward(self, x: Tensor, logits: bool = False) -> Tensor:
        """Probabilities (the reference's sigmoid output), or with `logits=True` the
        pre-sigmoid values, for BCE-with-logits. A keyword rather than a second method so
        that it also works through DDP / torch.compile wrappers."""
        out = self.main(x).flatten()
        return out if logits else torch.sigmoid(out)


# ----------------------------------------------------------------------------- params


# ----------------------------------------------------------------------------- recipe


def _adam(params: list[nn.Parameter], lr: float, o: DCGANOptimParams, device: torch.device) -> torch.optim.Adam:
    return adam(params, lr, (o.beta1, o.beta2), device)


def fixed_noise(n: int, nz: int, mean: float = 0.0, std: float = 1.0, seed: int = 0) -> Tensor:
    """n x nz x 1 x 1 normal noise from a CPU generator seeded `seed` (device independent)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, nz, 1, 1, generator=g) * std + mean


class DCGANRecipe(RecipeBase):
    """The Recipe protocol (toonlab.train.recipe) for DCGAN. Networks live in `self.nets`
    (G, D) and are always called through it, so the trainer can swap in DDP- or
    torch.compile-wrapped modules. `d_steps` / `g_steps` count optimizer steps taken."""

    grid_rows = [["fake"]]
    ema_nets = ("G",)              # averaged under train.ema (toonlab.train.ema)

    def __init__(self, params: DCGANParams, ctx: Context):
        super().__init__(ctx)
        self.params = params
        m, o, d, s = params.model, params.optim, params.data, params.sample
        self.nz = m.nz
        self.d_every, self.g_every = o.d_every, o.g_every
        self.data = DataSpec(domains={"real": d.domain}, crop_px=IMAGE_PX, load_px=IMAGE_PX,
                             batch_size=d.batch_size, flip=d.flip)

        init = init_weights if m.init == "normal" else (lambda net: net)   # "default": PyTorch's
        nets: dict[str, nn.Module] = {"G": init(NetG(m.nz, m.ngf)), "D": init(NetD(m.ndf))}
        for net in nets.values():
            net.to(self.device, memory_format=self.memory_format)
        self.nets = nets
        # Parameters are gathered before any DDP wrapping: DDP shares the same tensors.
        self.opt = {"G": _adam(list(nets["G"].parameters()), o.lr_g, o, self.device),
                    "D": _adam(list(nets["D"].parameters()), o.lr_d, o, self.device)}
        self.sched: dict[str, Any] = {}   # constant learning rate
        self.gan_loss = GANLoss("bce_logits")

        # The grid's noise: fixed for the whole run, so the samples' evolution can be watched.
        self.fixed_noise = fixed_noise(FIXED_NOISE, m.nz, s.noise_mean, s.noise_std, seed=0).to(self.device)
        # Last computed value of every loss, returned on steps where its net is not updated.
        self.last = {k: torch.zeros((), device=self.device) for k in LOSS_NAMES}
        self.d_steps = 0
        self.g_steps = 0
        self._counted = {"D": -1, "G": -1}   # the step each was last counted at (once per step, not per micro-batch)

    def _noise(self, n: int) -> Tensor:
        # torch's global RNG on the device: the trainer checkpoints and restores it.
        return torch.randn(n, self.nz, 1, 1, device=self.device)

    def phases(self, batch: dict[str, Tensor], step: int) -> Phases:
        G, D = self.nets["G"], self.nets["D"]
        real = self._to_device(batch["real"])
        n = real.shape[0]
        last = dict(self.last)   # a phase not run this step logs its last value

        if step % self.d_every == 0:
            self._set_requires_grad([D], True)
            with self._autocast():
                out_real = D(real, logits=True)
            loss_real = self.gan_loss(out_real, True)
            # Fakes detached: generated without a graph (also keeps a DDP-wrapped G from
            # expecting a backward it never gets). Both losses go back in turn, real first.
            with torch.no_grad(), self._autocast():
                fake = G(self._noise(n))
            fake = fake.contiguous(memory_format=self.memory_format)
            with self._autocast():
                out_fake = D(fake, logits=True)
            loss_fake = self.gan_loss(out_fake, False)
            yield "D", (loss_real, loss_fake)
            if self._counted["D"] != step:
                self.d_steps, self._counted["D"] = self.d_steps + 1, step
            last["D_real"] = loss_real.detach()
            last["D_fake"] = loss_fake.detach()
            last["D_total"] = (loss_real + loss_fake).detach()
            last["D_x"] = torch.sigmoid(out_real.detach().float()).mean()
            last["D_G_z"] = torch.sigmoid(out_fake.detach().float()).mean()

        if step % self.g_every == 0:
            self._set_requires_grad([D], False)
            with self._autocast():
                out = D(G(self._noise(n)).contiguous(memory_format=self.memory_format), logits=True)
            loss_g = self.gan_loss(out, True)
            yield "G", loss_g
            if self._counted["G"] != step:
                self.g_steps, self._counted["G"] = self.g_steps + 1, step
            self._set_requires_grad([D], True)
            last["G"] = loss_g.detach()

        self.last = last
        return dict(last)

    @torch.no_grad()
    def sample(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """G applied to the fixed noise, as many images as the batch (the trainer's fixed
        batch) has."""
        n = next(iter(batch.values())).shape[0] if batch else FIXED_NOISE
        if n > self.fixed_noise.shape[0]:
            s = self.params.sample
            self.fixed_noise = fixed_noise(n, self.nz, s.noise_mean, s.noise_std, seed=0).to(self.device)
        with self._autocast():
            fake = self.nets["G"](self.fixed_noise[:n].to(self.device))
        return {"fake": fake.float().contiguous()}

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "fixed_noise": self.fixed_noise.detach().cpu(), "d_steps": self.d_steps,
                "g_steps": self.g_steps, "last": {k: v.detach().cpu() for k, v in self.last.items()}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.fixed_noise = state["fixed_noise"].to(self.device)
        self.d_steps = int(state["d_steps"])
        self.g_steps = int(state["g_steps"])
        for k, v in state.get("last", {}).items():
            self.last[k] = v.to(self.device)


def build(params: DCGANParams, ctx: Context) -> DCGANRecipe:
    """The DCGAN recipe for the generic trainer."""
    recipe = DCGANRecipe(params, ctx)
    m, o = params.model, params.optim
    log.info("DCGAN: G %d params (nz %d, ngf %d), D %d params (ndf %d); D every %d steps, G every %d",
             count_params(recipe.nets["G"]), m.nz, m.ngf, count_params(recipe.nets["D"]), m.ndf,
             o.d_every, o.g_every)
    return recipe


# ----------------------------------------------------------------------------- generation


@torch.no_grad()
def generate(G: nn.Module, D: nn.Module, num: int = 64, search: int = 512, mean: float = 0.0,
             std: float = 1.0, seed: int = 0, device: torch.device | str = "cpu",
             chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The reference's generation: draw `search` noise vectors ~ N(mean, std) from a
    generator seeded `seed`, generate them all (in chunks of `chunk`, eval mode, no grad),
    score each with D and keep the `num` best, highest score first.

    Returns (images, scores): N x 96 x 96 x 3 uint8 and N float32 probabilities D(G(z)).
    Ranking uses D's logits (same order as the probabilities, without ties where the
    sigmoid saturates); ties keep the draw order. Deterministic for a given seed: the
    noise comes from a CPU generator, so it is the same on every device.
    """
    if not 1 <= num <= search:
        raise ValueError(f"generate: need 1 <= num <= search, got num {num}, search {search}")
    if chunk < 1:
        raise ValueError(f"generate: chunk must be >= 1, got {chunk}")
    device = torch.device(device)
    nz = unwrap(G).nz
    z = fixed_noise(search, nz, mean, std, seed)
    modes = (G.training, D.training)
    G.eval()
    D.eval()
    try:
        images, logits = [], []
        for i in range(0, search, chunk):
            fake = G(z[i:i + chunk].to(device)).float()
            logits.append(D(fake, logits=True).float().cpu())
            images.append(fake.cpu())
    finally:
        G.train(modes[0])
        D.train(modes[1])
    all_logits = torch.cat(logits)
    order = torch.sort(all_logits, descending=True, stable=True).indices[:num]
    best = torch.cat(images)[order]
    scores = torch.sigmoid(all_logits[order])
    return codec.to_uint8(best), scores.numpy().astype(np.float32)


def best_samples(params: DCGANParams, nets: dict[str, Any], *, num: int, search: int, mean: float, std: float,
                 seed: int, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """`toonlab generate`: the `num` images of `search` draws that D scores highest
    (see `generate`), from a checkpoint's networks."""
    m = params.model
    if "D" not in nets:
        from toonlab.errors import UsageError

        raise UsageError("this DCGAN run has no discriminator (imported from a netg_<epoch>.pth alone): "
                         "`toonlab generate` ranks samples with D; import netd_<epoch>.pth with it "
                         "(`toonlab import-weights dcgan netg_N.pth netd_N.pth --out ...`)")
    G, D = NetG(m.nz, m.ngf).to(device), NetD(m.ndf).to(device)
    G.load_state_dict(nets["G"])
    D.load_state_dict(nets["D"])
    return generate(G, D, num, search, mean, std, seed, device)


def inference(params: DCGANParams, nets: dict[str, Any]):
    """The generator (noise -> 96 px images of the data domain), for evaluation."""
    from toonlab.runs.inference import Inference

    G = NetG(params.model.nz, params.model.ngf)
    G.load_state_dict(nets["G"])
    return Inference("dcgan", None, params.data.domain, params.data.crop_px, None, generate=G.eval(),
                     nz=params.model.nz)
