"""U-GAT-IT (Kim et al. 2020), faithful to the authors' PyTorch implementation
(znxlwm/UGATIT-pytorch), with the Soft-AdaLIN variant of minivision-ai/photo2cartoon.

Networks (`toonlab.models.ugatit.nets`): two generators with a CAM attention module and
AdaLIN decoder (G_A: A -> B, G_B: B -> A), and per domain a global (7-layer) and a local
(5-layer) spectral-normalised discriminator with their own CAM branch (D_GA, D_LA judge
domain A; D_GB, D_LB domain B). PyTorch's default initialisation, as the reference.

Training, per step (the reference's order): the discriminators are updated on detached
translations, then the generators against the updated discriminators (the translations
are computed once, before the D update, with the same generator weights the reference
recomputes them with), then every AdaLIN / LIN rho (and Soft-AdaLIN w_gamma / w_beta) is
clipped to [0, 1]. Losses: LSGAN on the discriminators' outputs and CAM logits
(adversarial weight 1), L1 cycle x10, L1 identity x10 (G_A(B) vs B), generator CAM loss
x1000 (BCE with logits: the source image's CAM logits -> 1, the target-domain image's ->
0). Adam 1e-4, betas (0.5, 0.999), weight decay 1e-4, batch 1; the learning rate falls
linearly to 0 over the second half of the steps. Data: 256 px, random flip, resize to 286
and random crop.

Variant `model.variant: soft_adalin` (photo2cartoon): hourglass modules around the
encoder / decoder, decoder gamma / beta blended from encoder content features and the CAM
style features (Soft-AdaLIN), and the face-identity loss (cosine distance of MobileFaceNet
embeddings of input and translation, both directions; `toonlab.models.ugatit.faceid`, weights from
``model_mobilefacenet.pth``). The reference settings for this variant are ch 32, n_res 4,
light, weights adversarial 1, cycle 50, identity 10, CAM 1000, face-id 1 (lr, Adam and
discriminators as U-GAT-IT): `UGATITParams.for_variant("soft_adalin")`. The params
defaults are U-GAT-IT's (cycle 10, face-id 0).

Ablations (Kim et al. 2020, section 4 and its ablation table), switched in
`ugatit.model` and named in params.yaml (`ablations.sets.ugatit_paper`):
`norm` is the normalisation of the decoder's residual blocks, where the paper puts
AdaLIN and what its ablation replaces: adalin (the paper), in, ln, gn (no gamma / beta
from the MLP: the MLP is not built; learned per-channel gamma / beta instead), adain
(instance norm with the MLP's gamma / beta). Our reading of the paper: "only using IN /
LN / AdaIN / GN in the decoder" replaces AdaLIN, which the paper applies to the decoder's
residual blocks; the up-sampling blocks keep their LIN (an architecture detail of the
appendix table that the ablation does not name), so the variants differ from the
baseline in one place. `cam_g: false` builds no generator attention (no CAM 1x1, no
auxiliary classifier, no G_cam losses; the MLP reads the encoder features);
`cam_d: false` builds no discriminator CAM branch and drops the LSGAN terms on its logits
(in both the D and the G step). "No CAM" is both off. The defaults build the reference's
modules with its state-dict keys; the others only drop or swap modules (parameter counts
in tests/models/test_ugatit_ablations.py). Soft-AdaLIN needs norm adalin and cam_g.

Not copied from the reference: its D step lets gradients reach the generators (here the
translations are detached), its samples build graphs (here under no_grad), and it uses
`iterator.next()`.

Names. Returned losses are weighted terms, grouped by generator: G_adv_A (adversarial
terms of G_A: outputs and CAM logits of D_GB and D_LB on G_A(A)), G_cam_A (G_A's CAM
loss), cycle_A = |G_B(G_A(A)) - A|, identity_A = |G_A(B) - B|, likewise for B; faceid
(both directions) when its weight is > 0; G_total their sum; D_A / D_B (the discriminators
of domain A / B, outputs and CAM logits, real -> 1, fake -> 0) and D_total. Without the
generator's CAM (`cam_g: false`) there are no G_cam_A / G_cam_B; without the
discriminators' (`cam_d: false`) the adversarial terms are the outputs' alone.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toonlab.log import get_logger
from toonlab.models.common import Phases, RecipeBase, adam, count_params, unpaired_spec
from toonlab.models.losses import GANLoss
from toonlab.models.ugatit.nets import SoftAdaLINGenerator, UGATITDiscriminator, UGATITGenerator, clip_mixing_weights
from toonlab.models.ugatit.params import UGATITModelParams, UGATITOptimParams, UGATITParams
from toonlab.train.recipe import Context

log = get_logger(__name__)

D_NAMES = ("D_GA", "D_LA", "D_GB", "D_LB")


# ----------------------------------------------------------------------------- params


# ----------------------------------------------------------------------------- schedule


def decay_lambda(total_steps: int, decay_from: int):
    """LR factor per step (0-based), the reference's decay_flag: 1 up to step decay_from,
    then falling by 1/(total - decay_from) per step, 0 at the last step."""
    span = total_steps - decay_from

    def factor(step: int) -> float:
        if span <= 0:
            return 1.0
        return max(0.0, 1.0 - max(0, step + 1 - decay_from) / span)

    return factor


def resolve_decay_from(optim: UGATITOptimParams, total_steps: int) -> int:
    return optim.decay_from if optim.decay_from else max(total_steps, 0) // 2


# ----------------------------------------------------------------------------- helpers


def build_generator(m: UGATITModelParams, img_size: int) -> nn.Module:
    if m.variant == "soft_adalin":
        return SoftAdaLINGenerator(ngf=m.ch, n_blocks=m.n_res, img_size=img_size, light=m.light)
    return UGATITGenerator(ngf=m.ch, n_blocks=m.n_res, img_size=img_size, light=m.light, norm=m.norm, cam=m.cam_g)


def build_discriminator(m: UGATITModelParams, n_layers: int) -> UGATITDiscriminator:
    return UGATITDiscriminator(ndf=m.ch, n_layers=n_layers, cam=m.cam_d)


def sample_grid_rows(cam_g: bool = True, cam_d: bool = True) -> list[list[str]]:
    """Sample-grid rows: real | generator CAM | fake | global / local D CAM | reconstruction,
    without the heatmaps of the attention modules the ablation removed."""
    def row(src: str, dst: str) -> list[str]:
        return [f"real_{src}", *([f"cam_G_{src}"] if cam_g else []), f"fake_{dst}",
                *([f"cam_DG_{dst}", f"cam_DL_{dst}"] if cam_d else []), f"rec_{src}"]

    return [row("A", "B"), row("B", "A")]


def heatmap_image(heatmap: Tensor, px: int) -> Tensor:
    """N x 1 x h x w attention -> N x 1 x px x px in [0, 1]: per-image min-max scaling (as
    the reference's `cam()`), bilinear up-sampling."""
    h = heatmap.float()
    lo = h.amin(dim=(1, 2, 3), keepdim=True)
    hi = h.amax(dim=(1, 2, 3), keepdim=True)
    h = (h - lo) / (hi - lo).clamp_min(1e-12)
    return F.interpolate(h, size=(px, px), mode="bilinear", align_corners=False).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- recipe


class UGATITRecipe(RecipeBase):
    """The Recipe protocol (toonlab.train.recipe) for U-GAT-IT and its Soft-AdaLIN variant.
    Networks live in `self.nets` (G_A, G_B, D_GA, D_LA, D_GB, D_LB, and `faceid` when the
    face-identity loss is on) so the trainer can swap entries for wrapped modules; the
    rho clipping works on the unwrapped generators kept in `self.generators`."""

    grid_rows = sample_grid_rows()   # per recipe: without the heatmaps of ablated CAM modules
    ema_nets = ("G_A", "G_B")      # averaged under train.ema (toonlab.train.ema)

    def __init__(self, params: UGATITParams, ctx: Context):
        super().__init__(ctx)
        self.params = params
        m, lp, o, d = params.model, params.loss, params.optim, params.data
        self.data = unpaired_spec(d)
        self.cam_g = m.cam_g   # soft_adalin: always true (params validation)
        self.cam_d = m.cam_d
        self.grid_rows = sample_grid_rows(self.cam_g, self.cam_d)

        nets: dict[str, nn.Module] = {
            "G_A": build_generator(m, d.crop_px),
            "G_B": build_generator(m, d.crop_px),
            "D_GA": build_discriminator(m, m.n_dis_global),
            "D_LA": build_discriminator(m, m.n_dis_local),
            "D_GB": build_discriminator(m, m.n_dis_global),
            "D_LB": build_discriminator(m, m.n_dis_local),
        }
        if lp.faceid_weight > 0:
            from toonlab.models.ugatit.faceid import FaceIDLoss

            nets["faceid"] = FaceIDLoss()   # MissingWeightsError without model_mobilefacenet.pth
        for net in nets.values():
            net.to(self.device, memory_format=self.memory_format)
        self.nets = nets
        self.generators = (nets["G_A"], nets["G_B"])   # unwrapped: DDP / compile share the parameters

        g_params = [*nets["G_A"].parameters(), *nets["G_B"].parameters()]
        d_params = [p for k in D_NAMES for p in nets[k].parameters()]
        betas = (o.beta1, o.beta2)
        self.opt = {"G": adam(g_params, o.lr, betas, self.device, weight_decay=o.weight_decay),
                    "D": adam(d_params, o.lr, betas, self.device, weight_decay=o.weight_decay)}
        self.decay_from = resolve_decay_from(o, ctx.total_steps)
        lam = decay_lambda(ctx.total_steps, self.decay_from)
        self.sched = {k: torch.optim.lr_scheduler.LambdaLR(v, lr_lambda=lam) for k, v in self.opt.items()}

        self.lsgan = GANLoss("lsgan")
        self.bce = GANLoss("bce_logits")
        self.w = lp

    def _inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return self._to_device(batch["A"]), self._to_device(batch["B"])

    # -- the three parts of a step

    def generate(self, real_A: Tensor, real_B: Tensor) -> dict[str, Tensor]:
        """Translations with their graphs: A2B = G_A(A), B2B = G_A(B) (identity), B2A, A2A,
        the reconstructions A2B2A, B2A2B, and the generators' CAM logits of each."""
        G_A, G_B = self.nets["G_A"], self.nets["G_B"]
        n_a, n_b = real_A.shape[0], real_B.shape[0]
        with self._autocast():
            # IN, LIN and AdaLIN act per sample: one call on [source; target] is two calls' work.
            out_a, cam_a, _ = G_A(torch.cat([real_A, real_B]))
            out_b, cam_b, _ = G_B(torch.cat([real_B, real_A]))
            A2B, B2B = out_a[:n_a], out_a[n_a:]
            B2A, A2A = out_b[:n_b], out_b[n_b:]
            A2B2A = G_B(A2B)[0]
            B2A2B = G_A(B2A)[0]
        gen = {"A2B": A2B, "B2B": B2B, "B2A": B2A, "A2A": A2A, "A2B2A": A2B2A, "B2A2B": B2A2B}
        if self.cam_g:
            gen.update({"A2B_cam": cam_a[:n_a], "B2B_cam": cam_a[n_a:], "B2A_cam": cam_b[:n_b],
                        "A2A_cam": cam_b[n_b:]})
        return gen

    def _d_terms(self, name: str, real: Tensor, fake: Tensor) -> Tensor:
        """LSGAN of one discriminator on [real; fake]: outputs and CAM logits (without
        the CAM branch: outputs only)."""
        n = real.shape[0]
        out, cam, _ = self.nets[name](torch.cat([real, fake]))
        loss = self.lsgan(out[:n], True) + self.lsgan(out[n:], False)
        if self.cam_d:
            loss = loss + self.lsgan(cam[:n], True) + self.lsgan(cam[n:], False)
        return loss

    def update_discriminators(self, real_A: Tensor, real_B: Tensor, gen: dict[str, Tensor]) -> Phases:
        """The D phase, on the detached translations (no gradient reaches the generators)."""
        self._set_requires_grad([self.nets[k] for k in D_NAMES], True)
        mf = self.memory_format
        fake_A = gen["B2A"].detach().to(real_A.dtype).contiguous(memory_format=mf)
        fake_B = gen["A2B"].detach().to(real_B.dtype).contiguous(memory_format=mf)
        with self._autocast():
            d_a = self.w.adv_weight * (self._d_terms("D_GA", real_A, fake_A) + self._d_terms("D_LA", real_A, fake_A))
            d_b = self.w.adv_weight * (self._d_terms("D_GB", real_B, fake_B) + self._d_terms("D_LB", real_B, fake_B))
        d_total = d_a + d_b
        yield "D", d_total
        return {"D_A": d_a.detach(), "D_B": d_b.detach(), "D_total": d_total.detach()}

    def _g_adv(self, fake: Tensor, d_global: str, d_local: str) -> Tensor:
        total = torch.zeros((), device=fake.device)
        for name in (d_global, d_local):
            out, cam, _ = self.nets[name](fake)
            total = total + self.lsgan(out, True)
            if self.cam_d:
                total = total + self.lsgan(cam, True)
        return total

    def update_generators(self, real_A: Tensor, real_B: Tensor, gen: dict[str, Tensor]) -> Phases:
        """The G phase against the (updated) discriminators, then the [0, 1] clipping."""
        w = self.w
        l1 = F.l1_loss
        ds = [self.nets[k] for k in D_NAMES]
        self._set_requires_grad(ds, False)
        losses: dict[str, Tensor] = {}
        with self._autocast():
            adv_a = self._g_adv(gen["A2B"], "D_GB", "D_LB")
            adv_b = self._g_adv(gen["B2A"], "D_GA", "D_LA")
            if w.faceid_weight > 0:
                face = self.nets["faceid"]
                faceid = face(gen["A2B"], real_A) + face(gen["B2A"], real_B)
        losses["G_adv_A"] = w.adv_weight * adv_a
        losses["G_adv_B"] = w.adv_weight * adv_b
        if self.cam_g:
            losses["G_cam_A"] = w.cam_weight * (self.bce(gen["A2B_cam"], True) + self.bce(gen["B2B_cam"], False))
            losses["G_cam_B"] = w.cam_weight * (self.bce(gen["B2A_cam"], True) + self.bce(gen["A2A_cam"], False))
        losses["cycle_A"] = w.cycle_weight * l1(gen["A2B2A"].float(), real_A.float())
        losses["cycle_B"] = w.cycle_weight * l1(gen["B2A2B"].float(), real_B.float())
        losses["identity_A"] = w.identity_weight * l1(gen["B2B"].float(), real_B.float())
        losses["identity_B"] = w.identity_weight * l1(gen["A2A"].float(), real_A.float())
        if w.faceid_weight > 0:
            losses["faceid"] = w.faceid_weight * faceid.float()
        g_total = sum(losses.values())
        yield "G", g_total
        for g in self.generators:
            clip_mixing_weights(g)
        self._set_requires_grad(ds, True)
        out = {k: v.detach() for k, v in losses.items()}
        out["G_total"] = g_total.detach()
        return out

    def phases(self, batch: dict[str, Tensor], step: int) -> Phases:
        real_A, real_B = self._inputs(batch)
        # The D phase's translations keep their graph for the G phase (the generators do
        # not change in between). Accumulating, each micro-batch would hold its graph
        # across the D step: they are made without one, and made again for the G phase
        # (as the reference implementation does every step), the same values.
        accumulating = self.ctx.extra.get("accumulate", 1) > 1
        with torch.no_grad() if accumulating else contextlib.nullcontext():
            gen = self.generate(real_A, real_B)
        d_losses = yield from self.update_discriminators(real_A, real_B, gen)
        if accumulating:
            gen = self.generate(real_A, real_B)
        g_losses = yield from self.update_generators(real_A, real_B, gen)
        return {**g_losses, **d_losses}

    @torch.no_grad()
    def sample(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """real, translation, reconstruction and attention maps: the generator's CAM on its
        input and the two discriminators' CAMs on the translation, N x 1 x px x px in [0, 1]
        (those of the CAM modules that are built)."""
        real_A, real_B = self._inputs(batch)
        px = real_A.shape[-1]
        modes = {k: n.training for k, n in self.nets.items()}
        for n in self.nets.values():   # spectral norm must not iterate on sample batches
            n.eval()
        try:
            with self._autocast():
                A2B, _, h_ga = self.nets["G_A"](real_A)
                A2B2A = self.nets["G_B"](A2B)[0]
                B2A, _, h_gb = self.nets["G_B"](real_B)
                B2A2B = self.nets["G_A"](B2A)[0]
                h_dgb = self.nets["D_GB"](A2B)[2]
                h_dlb = self.nets["D_LB"](A2B)[2]
                h_dga = self.nets["D_GA"](B2A)[2]
                h_dla = self.nets["D_LA"](B2A)[2]
        finally:
            for k, n in self.nets.items():
                n.train(modes[k])
        images = {"real_A": real_A, "fake_B": A2B, "rec_A": A2B2A,
                  "real_B": real_B, "fake_A": B2A, "rec_B": B2A2B}
        out = {k: v.float().contiguous() for k, v in images.items()}
        for name, h in (("cam_G_A", h_ga), ("cam_DG_B", h_dgb), ("cam_DL_B", h_dlb),
                        ("cam_G_B", h_gb), ("cam_DG_A", h_dga), ("cam_DL_A", h_dla)):
            if h is not None:
                out[name] = heatmap_image(h, px).contiguous()
        return out


def build(params: UGATITParams, ctx: Context) -> UGATITRecipe:
    """The U-GAT-IT recipe for the generic trainer."""
    recipe = UGATITRecipe(params, ctx)
    m = params.model
    ablated = [f"norm {m.norm}"] if m.norm != "adalin" else []
    ablated += [f"no {n}" for n, on in (("G_CAM", m.cam_g), ("D_CAM", m.cam_d)) if not on]
    log.info("U-GAT-IT (%s%s%s): G %d params x2 (ch %d, %d blocks), global D %d x2, local D %d x2; "
             "LR decays from step %d of %d", m.variant, ", light" if m.light else "",
             "".join(f", {a}" for a in ablated),
             count_params(recipe.nets["G_A"]), m.ch, m.n_res, count_params(recipe.nets["D_GA"]),
             count_params(recipe.nets["D_LA"]), recipe.decay_from, ctx.total_steps)
    return recipe


class ImageOnly(nn.Module):
    """A generator's translated image alone (drops the CAM logits and heatmap), for
    evaluation and export. `generator` keeps the state-dict keys of the wrapped network."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        return self.generator(x)[0]


def inference(params: UGATITParams, nets: dict[str, Any]):
    """G_A (A -> B) forward, G_B (B -> A) backward, images only, for evaluation and cartoonizing."""
    from toonlab.runs.inference import Inference

    d = params.data
    G_A, G_B = build_generator(params.model, d.crop_px), build_generator(params.model, d.crop_px)
    G_A.load_state_dict(nets["G_A"])
    G_B.load_state_dict(nets["G_B"])
    return Inference("ugatit", d.domain_a, d.domain_b, d.crop_px, ImageOnly(G_A).eval(), ImageOnly(G_B).eval())


