"""CycleGAN (Zhu et al. 2017), faithful to the authors' PyTorch implementation.

Networks: a ResNet generator (9 residual blocks at 256 px, 6 at 128 px) and a 70x70
PatchGAN discriminator, instance normalisation without affine parameters or running
statistics, N(0, 0.02) initialisation. Module layout (``model.<i>...``) matches the
reference, so its generator/discriminator state dicts load into these classes.

Training: LSGAN, cycle L1 x10 each way, identity L1 x0.5*10, image pools of 50 fakes,
Adam 2e-4 (0.5, 0.999), constant learning rate then linear decay to 0. Optional extra
(`loss.perceptual_weight > 0`): the perceptual loss, an L1 between VGG16 features of each
input and its translation in both directions, weight x (|VGG(G_A(A)) - VGG(A)| +
|VGG(G_B(B)) - VGG(B)|), logged as `perceptual`.

Naming. The brief and this module name discriminators by the domain they judge: D_A
judges domain A images (real A vs G_B's fakes), D_B judges domain B (real B vs G_A's
fakes). The reference names them the other way round (its netD_A judges G_A's outputs).
Loss names: G_adv_A / G_adv_B are the adversarial terms of G_A / G_B, idt_A = |G_A(B) - B|
and idt_B = |G_B(A) - A| (as in the reference), cycle_A = |G_B(G_A(A)) - A| and
cycle_B = |G_A(G_B(B)) - B|. Returned losses are the weighted terms, G_total their sum.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from toonlab.log import get_logger
from toonlab.models.common import Phases, RecipeBase, ReflectionPad2d, adam, count_params, init_weights, unpaired_spec
from toonlab.models.cyclegan.params import CycleGANOptimParams, CycleGANParams
from toonlab.models.losses import GANLoss, ImagePool, VGGPerceptual
from toonlab.train.recipe import Context

log = get_logger(__name__)


# ----------------------------------------------------------------------------- networks


def _norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """x + [pad, conv3x3, IN, ReLU, pad, conv3x3, IN](x), reflection padding, no dropout."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, padding=0, bias=True), _norm(dim), nn.ReLU(True),
            ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, padding=0, bias=True), _norm(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d2ngf, d4ngf, n_blocks x R4ngf, u2ngf, u1ngf, c7s1-3 + tanh.

    Inputs and outputs are N x 3 x H x W in [-1, 1]; H and W must be multiples of 4.
    ngf 64: 11,378,179 parameters with 9 blocks, 7,837,699 with 6.
    """

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9):
        super().__init__()
        if n_blocks < 0:
            raise ValueError("ResnetGenerator: n_blocks must be >= 0")
        layers: list[nn.Module] = [
            ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, padding=0, bias=True), _norm(ngf), nn.ReLU(True),
        ]
        n_down = 2
        for i in range(n_down):
            mult = 2 ** i
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=True),
                       _norm(ngf * mult * 2), nn.ReLU(True)]
        mult = 2 ** n_down
        layers += [ResnetBlock(ngf * mult) for _ in range(n_blocks)]
        for i in range(n_down):
            mult = 2 ** (n_down - i)
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1,
                                          output_padding=1, bias=True),
                       _norm(ngf * mult // 2), nn.ReLU(True)]
        layers += [ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """PatchGAN: C64 (no norm), C128, C256 (stride 2), C512 (stride 1), 1-channel conv.

    4x4 convolutions, padding 1, LeakyReLU 0.2. With n_layers 3 each output logit sees a
    70x70 patch; a 256 px input gives 30x30 logits. ndf 64: 2,764,737 parameters.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        kw, padw = 4, 1
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, kw, stride=2, padding=padw, bias=True),
                       _norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, kw, stride=1, padding=padw, bias=True),
                   _norm(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, kw, stride=1, padding=padw)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


# ----------------------------------------------------------------------------- params


# ----------------------------------------------------------------------------- schedule


def linear_decay_lambda(steps_constant: int, steps_decay: int):
    """LR factor per step (the reference's 'linear' policy in steps): 1 for the first
    `steps_constant` steps, then falling linearly by 1/(steps_decay + 1) per step, 0 from
    step steps_constant + steps_decay on."""

    def factor(step: int) -> float:
        return max(0.0, 1.0 - max(0, step + 1 - steps_constant) / float(steps_decay + 1))

    return factor


def resolve_schedule(optim: CycleGANOptimParams, total_steps: int) -> tuple[int, int]:
    if optim.steps_constant or optim.steps_decay:
        return optim.steps_constant, optim.steps_decay
    half = max(total_steps, 0) // 2
    return half, max(total_steps, 0) - half


# ----------------------------------------------------------------------------- recipe


def _adam(params: list[nn.Parameter], o: CycleGANOptimParams, device: torch.device) -> torch.optim.Adam:
    return adam(params, o.lr, (o.beta1, o.beta2), device)


class CycleGANRecipe(RecipeBase):
    """The Recipe protocol (toonlab.train.recipe) for CycleGAN. Networks live in `self.nets`
    (G_A: A->B, G_B: B->A, D_A, D_B, and `vgg` when the perceptual loss is on) so the
    trainer can swap entries for DDP-wrapped modules."""

    grid_rows = [["real_A", "fake_B", "rec_A"], ["real_B", "fake_A", "rec_B"]]
    ema_nets = ("G_A", "G_B")      # averaged under train.ema (toonlab.train.ema)

    def __init__(self, params: CycleGANParams, ctx: Context):
        super().__init__(ctx)
        self.params = params
        m, lp, o, d = params.model, params.loss, params.optim, params.data
        self.data = unpaired_spec(d)

        nets: dict[str, nn.Module] = {
            "G_A": init_weights(ResnetGenerator(ngf=m.ngf, n_blocks=m.n_blocks)),
            "G_B": init_weights(ResnetGenerator(ngf=m.ngf, n_blocks=m.n_blocks)),
            "D_A": init_weights(NLayerDiscriminator(ndf=m.ndf, n_layers=m.n_layers_d)),
            "D_B": init_weights(NLayerDiscriminator(ndf=m.ndf, n_layers=m.n_layers_d)),
        }
        self.perceptual_weight = lp.perceptual_weight
        if lp.perceptual_weight > 0:
            nets["vgg"] = VGGPerceptual(lp.perceptual_layer, lp.perceptual_weights)
        for net in nets.values():
            net.to(self.device, memory_format=self.memory_format)
        self.nets = nets

        # Parameters are gathered before any DDP wrapping: DDP shares the same tensors.
        g_params = [*nets["G_A"].parameters(), *nets["G_B"].parameters()]
        d_params = [*nets["D_A"].parameters(), *nets["D_B"].parameters()]
        self.opt = {"G": _adam(g_params, o, self.device), "D": _adam(d_params, o, self.device)}
        self.steps_constant, self.steps_decay = resolve_schedule(o, ctx.total_steps)
        lam = linear_decay_lambda(self.steps_constant, self.steps_decay)
        self.sched = {k: torch.optim.lr_scheduler.LambdaLR(v, lr_lambda=lam) for k, v in self.opt.items()}

        self.gan_loss = GANLoss(lp.gan_mode)
        self.lambda_cycle = lp.cycle_weight
        self.lambda_idt = lp.identity_weight * lp.cycle_weight
        # Global torch RNG: the trainer restores it on resume, so the pools replay exactly.
        self.pools = {"A": ImagePool(o.pool_size), "B": ImagePool(o.pool_size)}

    def _inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return self._to_device(batch["A"]), self._to_device(batch["B"])

    def phases(self, batch: dict[str, Tensor], step: int) -> Phases:
        G_A, G_B, D_A, D_B = (self.nets[k] for k in ("G_A", "G_B", "D_A", "D_B"))
        real_A, real_B = self._inputs(batch)
        n_a, n_b = real_A.shape[0], real_B.shape[0]
        use_idt = self.lambda_idt > 0
        l1 = nn.functional.l1_loss

        # ---- generators
        self._set_requires_grad([D_A, D_B], False)
        with self._autocast():
            # Instance norm and convolutions act per sample, so running the identity inputs
            # in the same batch as the translation is the same computation in fewer calls.
            if use_idt:
                out_a = G_A(torch.cat([real_A, real_B]))
                fake_B, idt_A = out_a[:n_a], out_a[n_a:]
                out_b = G_B(torch.cat([real_B, real_A]))
                fake_A, idt_B = out_b[:n_b], out_b[n_b:]
            else:
                fake_B, fake_A = G_A(real_A), G_B(real_B)
            rec_A = G_B(fake_B)
            rec_B = G_A(fake_A)
            pred_fake_B = D_B(fake_B)
            pred_fake_A = D_A(fake_A)
            if self.perceptual_weight > 0:
                vgg = self.nets["vgg"]
                perceptual = self.perceptual_weight * (vgg(fake_B, real_A) + vgg(fake_A, real_B))
        losses: dict[str, Tensor] = {}
        losses["G_adv_A"] = self.gan_loss(pred_fake_B, True)
        losses["G_adv_B"] = self.gan_loss(pred_fake_A, True)
        losses["cycle_A"] = self.lambda_cycle * l1(rec_A.float(), real_A.float())
        losses["cycle_B"] = self.lambda_cycle * l1(rec_B.float(), real_B.float())
        if use_idt:
            losses["idt_A"] = self.lambda_idt * l1(idt_A.float(), real_B.float())
            losses["idt_B"] = self.lambda_idt * l1(idt_B.float(), real_A.float())
        else:
            zero = torch.zeros((), device=self.device)
            losses["idt_A"], losses["idt_B"] = zero, zero
        if self.perceptual_weight > 0:
            losses["perceptual"] = perceptual.float()
        g_total = sum(losses.values())
        yield "G", g_total

        # ---- discriminators (each judges its own domain; fakes detached, from the pools)
        self._set_requires_grad([D_A, D_B], True)
        mf = self.memory_format
        pool_A = self.pools["A"].query(fake_A.detach()).to(real_A.dtype).contiguous(memory_format=mf)
        pool_B = self.pools["B"].query(fake_B.detach()).to(real_B.dtype).contiguous(memory_format=mf)
        with self._autocast():
            # One call per discriminator on [real; fake] (per-sample norm: same as two calls).
            pred_A = D_A(torch.cat([real_A, pool_A]))
            pred_B = D_B(torch.cat([real_B, pool_B]))
        loss_D_A = 0.5 * (self.gan_loss(pred_A[:n_a], True) + self.gan_loss(pred_A[n_a:], False))
        loss_D_B = 0.5 * (self.gan_loss(pred_B[:n_b], True) + self.gan_loss(pred_B[n_b:], False))
        yield "D", loss_D_A + loss_D_B

        out = {k: v.detach() for k, v in losses.items()}
        out["G_total"] = g_total.detach()
        out["D_A"] = loss_D_A.detach()
        out["D_B"] = loss_D_B.detach()
        return out

    @torch.no_grad()
    def sample(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        G_A, G_B = self.nets["G_A"], self.nets["G_B"]
        real_A, real_B = self._inputs(batch)
        with self._autocast():
            fake_B = G_A(real_A)
            rec_A = G_B(fake_B)
            fake_A = G_B(real_B)
            rec_B = G_A(fake_A)
        images = {"real_A": real_A, "fake_B": fake_B, "rec_A": rec_A,
                  "real_B": real_B, "fake_A": fake_A, "rec_B": rec_B}
        return {k: v.float().contiguous() for k, v in images.items()}

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "pool_A": self.pools["A"].state_dict(),
                "pool_B": self.pools["B"].state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.pools["A"].load_state_dict(state["pool_A"])
        self.pools["B"].load_state_dict(state["pool_B"])


def build(params: CycleGANParams, ctx: Context) -> CycleGANRecipe:
    """The CycleGAN recipe for the generic trainer."""
    recipe = CycleGANRecipe(params, ctx)
    m = params.model
    log.info("CycleGAN: G %d params x2 (ngf %d, %d blocks), D %d params x2; LR constant %d steps, "
             "decay %d steps", count_params(recipe.nets["G_A"]), m.ngf, m.n_blocks,
             count_params(recipe.nets["D_A"]), recipe.steps_constant, recipe.steps_decay)
    return recipe


def inference(params: CycleGANParams, nets: dict[str, Any]):
    """G_A (A -> B) forward, G_B (B -> A) backward, for evaluation and cartoonizing."""
    from toonlab.runs.inference import Inference

    m, d = params.model, params.data
    G_A, G_B = ResnetGenerator(ngf=m.ngf, n_blocks=m.n_blocks), ResnetGenerator(ngf=m.ngf, n_blocks=m.n_blocks)
    G_A.load_state_dict(nets["G_A"])
    G_B.load_state_dict(nets["G_B"])
    return Inference("cyclegan", d.domain_a, d.domain_b, d.crop_px, G_A.eval(), G_B.eval())
