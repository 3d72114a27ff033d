"""CycleGAN family: architecture facts, losses, image pool, VGG perceptual loss, recipe."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from toonlab.errors import MissingWeightsError
from toonlab.models.cyclegan.model import (
    NLayerDiscriminator,
    ResnetGenerator,
    build,
    count_params,
    init_weights,
    linear_decay_lambda,
)
from toonlab.models.cyclegan.params import CycleGANParams
from toonlab.models.losses import GANLoss, ImagePool, VGGPerceptual
from toonlab.schema import Section
from toonlab.train.recipe import Context

LOSS_NAMES = {"G_adv_A", "G_adv_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "G_total", "D_A", "D_B"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: one intra-op thread is fastest, and it keeps the file quick
    when other processes busy the cores (OpenMP threads spin on a busy core)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_params(**over) -> CycleGANParams:
    raw = {"model": {"ngf": 8, "ndf": 8, "n_blocks": 1},
           "data": {"crop_px": 32, "batch_size": 2},
           "optim": {"steps_constant": 3, "steps_decay": 4, "pool_size": 3}}
    for section, values in over.items():
        raw.setdefault(section, {}).update(values)
    return CycleGANParams.model_validate(raw, strict=True)


def cpu_ctx(total_steps: int = 10) -> Context:
    return Context(device=torch.device("cpu"), amp_dtype=None, channels_last=False, total_steps=total_steps)


def batch(n: int = 2, px: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"A": torch.rand(n, 3, px, px, generator=g) * 2 - 1,
            "B": torch.rand(n, 3, px, px, generator=g) * 2 - 1}


# ----------------------------------------------------------------------------- networks


def test_parameter_counts_match_reference():
    assert count_params(ResnetGenerator(ngf=64, n_blocks=9)) == 11_378_179
    assert count_params(ResnetGenerator(ngf=64, n_blocks=6)) == 7_837_699
    assert count_params(NLayerDiscriminator(ndf=64, n_layers=3)) == 2_764_737
    assert count_params(ResnetGenerator()) == sum(p.numel() for p in ResnetGenerator().parameters())


@pytest.mark.parametrize("px, patches", [(128, 14), (256, 30)])
def test_output_shapes(px, patches):
    g = ResnetGenerator(ngf=8, n_blocks=2)   # shapes do not depend on the width
    d = NLayerDiscriminator(ndf=8, n_layers=3)
    x = torch.rand(1, 3, px, px) * 2 - 1
    with torch.no_grad():
        y = g(x)
        assert y.shape == (1, 3, px, px)
        assert y.abs().max() <= 1.0   # tanh
        assert d(x).shape == (1, 1, patches, patches)


def test_architecture_config():
    g = ResnetGenerator()
    norms = [m for m in g.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 3 + 2 * 9 + 2
    assert all(not m.affine and not m.track_running_stats for m in norms)
    assert not any(isinstance(m, (nn.Dropout, nn.BatchNorm2d)) for m in g.modules())
    convs = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert all(c.bias is not None for c in convs)
    assert sum(isinstance(m, nn.ReflectionPad2d) for m in g.modules()) == 2 + 2 * 9
    ups = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(ups) == 2 and all(u.kernel_size == (3, 3) and u.stride == (2, 2) and u.padding == (1, 1)
                                 and u.output_padding == (1, 1) for u in ups)
    assert isinstance(g.model[-1], nn.Tanh)
    # Reference layout: state dict keys like model.1.weight, model.10.conv_block.1.weight.
    keys = set(g.state_dict())
    assert "model.1.weight" in keys and "model.10.conv_block.5.weight" in keys

    d = NLayerDiscriminator()
    seq = list(d.model)
    assert isinstance(seq[0], nn.Conv2d) and isinstance(seq[1], nn.LeakyReLU)   # first layer: no norm
    assert seq[1].negative_slope == 0.2
    dconvs = [m for m in seq if isinstance(m, nn.Conv2d)]
    assert [c.stride[0] for c in dconvs] == [2, 2, 2, 1, 1]
    assert all(c.kernel_size == (4, 4) and c.padding == (1, 1) for c in dconvs)
    assert dconvs[-1].out_channels == 1
    assert all(isinstance(m, nn.InstanceNorm2d) and not m.affine for m in seq if "Norm" in type(m).__name__)


def test_init_statistics():
    torch.manual_seed(0)
    g = init_weights(ResnetGenerator(ngf=32, n_blocks=3))
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(w.mean().item()) < 1e-3
    assert w.std().item() == pytest.approx(0.02, rel=0.02)
    assert all(m.bias.abs().max() == 0 for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


# ----------------------------------------------------------------------------- GAN loss


def test_gan_loss_values():
    pred = torch.tensor([[0.0, 1.0, 2.0]])
    ls = GANLoss("lsgan")
    assert ls(pred, True).item() == pytest.approx((1 + 0 + 1) / 3)
    assert ls(pred, False).item() == pytest.approx((0 + 1 + 4) / 3)
    assert ls(pred, True).item() == pytest.approx(F.mse_loss(pred, torch.ones_like(pred)).item())
    for mode in ("bce_logits", "vanilla"):
        bce = GANLoss(mode)
        assert bce(torch.zeros(4), True).item() == pytest.approx(math.log(2))
        assert bce(pred, True).item() == pytest.approx(
            F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred)).item())
        assert bce(pred, False).item() == pytest.approx(
            F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred)).item())
    # Stable for large logits, label smoothing, lists of predictions, gradients flow.
    big = torch.tensor([100.0, -100.0], requires_grad=True)
    out = GANLoss("bce_logits")(big, True)
    assert torch.isfinite(out) and out.item() == pytest.approx(50.0)
    out.backward()
    assert torch.isfinite(big.grad).all()
    smooth = GANLoss("bce_logits", real_label=0.9)(pred, True)
    assert smooth.item() == pytest.approx(F.binary_cross_entropy_with_logits(pred, torch.full_like(pred, 0.9)).item())
    assert GANLoss("lsgan")([pred, pred * 0], True).item() == pytest.approx((2 / 3 + 1) / 2)
    with pytest.raises(ValueError):
        GANLoss("wgan")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- image pool


def _img(v: float) -> torch.Tensor:
    return torch.full((1, 3, 4, 4), float(v))


def test_image_pool_fills_then_swaps():
    pool = ImagePool(50, generator=torch.Generator().manual_seed(0))
    for i in range(50):
        assert torch.equal(pool.query(_img(i)), _img(i))
    assert len(pool) == 50
    stored = set(range(50))
    returned_old = 0
    for i in range(50, 250):
        out = pool.query(_img(i))
        v = int(out[0, 0, 0, 0].item())
        if v == i:
            continue
        returned_old += 1
        assert v in stored          # a previously stored image came back ...
        stored.remove(v)
        stored.add(i)               # ... and the new one took its place
    assert 70 < returned_old < 130  # probability 0.5
    assert len(pool) == 50


def test_image_pool_batches_and_disabled():
    pool = ImagePool(3, generator=torch.Generator().manual_seed(1))
    x = torch.cat([_img(i) for i in range(5)])
    out = pool.query(x)
    assert out.shape == x.shape
    assert torch.equal(out[:3], x[:3])       # the first three fill the pool
    assert len(pool) == 3
    off = ImagePool(0)
    assert torch.equal(off.query(x), x) and len(off) == 0
    with pytest.raises(ValueError):
        pool.query(torch.zeros(1, 3, 8, 8))   # other shape than the stored images


def test_image_pool_state_round_trip_own_generator():
    pool = ImagePool(5, generator=torch.Generator().manual_seed(2))
    for i in range(8):
        pool.query(_img(i))
    state = pool.state_dict()
    assert state["count"] == 5 and state["images"].shape == (5, 3, 4, 4)
    assert all(isinstance(v, (int, torch.Tensor)) for v in state.values())
    expected = [pool.query(_img(100 + i)) for i in range(20)]

    other = ImagePool(5, generator=torch.Generator().manual_seed(999))
    other.load_state_dict(state)
    got = [other.query(_img(100 + i)) for i in range(20)]
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    assert any(int(t[0, 0, 0, 0]) < 100 for t in got)   # some swaps happened


def test_image_pool_state_round_trip_global_rng():
    torch.manual_seed(3)
    pool = ImagePool(4)
    for i in range(6):
        pool.query(_img(i))
    state, rng = pool.state_dict(), torch.get_rng_state()
    expected = [pool.query(_img(50 + i)) for i in range(15)]

    torch.manual_seed(12345)           # a fresh process would have another RNG state ...
    resumed = ImagePool(4)
    resumed.load_state_dict(state)
    torch.set_rng_state(rng)           # ... which the trainer restores on resume
    got = [resumed.query(_img(50 + i)) for i in range(15)]
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    with pytest.raises(ValueError):
        ImagePool(7).load_state_dict(state)


# ----------------------------------------------------------------------------- VGG perceptual


@pytest.fixture(scope="module")
def fake_torch_home(tmp_path_factory):
    """$TORCH_HOME with a VGG16 file in torchvision's format (random weights, same keys)."""
    import torchvision

    home = tmp_path_factory.mktemp("torch_home")
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.manual_seed(0)
    state = torchvision.models.vgg16(weights=None).state_dict()
    torch.save(state, ckpt / "vgg16-397923af.pth")
    return home, state


def test_vgg_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="vgg16-397923af.pth") as err:
        VGGPerceptual("relu2_2", weights="imagenet")
    assert str(tmp_path) in str(err.value)


def test_vgg_loads_standard_file(fake_torch_home, monkeypatch):
    home, state = fake_torch_home
    monkeypatch.setenv("TORCH_HOME", str(home))
    vgg = VGGPerceptual("relu2_2", weights="imagenet")
    assert len(vgg.features) == 9   # only up to relu2_2 (features index 8)
    assert torch.equal(vgg.features[7].weight, state["features.7.weight"])
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    assert vgg(x, x.clone()).item() == 0.0
    xg = x.clone().requires_grad_(True)
    loss = vgg(xg, y)
    assert loss.item() > 0
    loss.backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0   # gradients reach the image
    deep = VGGPerceptual("relu4_3", weights="imagenet")
    assert len(deep.features) == 23


def test_vgg_random_weights_warns(caplog):
    import logging

    logging.getLogger("toonlab").propagate = True
    with caplog.at_level(logging.WARNING):
        vgg = VGGPerceptual("relu1_2", weights="random")
    assert "smoke tests only" in caplog.text
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert vgg(x, x).item() == 0.0
    with pytest.raises(ValueError):
        VGGPerceptual("relu5_3", weights="random")


# ----------------------------------------------------------------------------- params, recipe


def test_params_defaults_and_validation():
    p = CycleGANParams()
    assert isinstance(p, Section)
    assert (p.model.ngf, p.model.ndf, p.model.n_blocks, p.model.n_layers_d) == (64, 64, 9, 3)
    assert (p.loss.gan_mode, p.loss.cycle_weight, p.loss.identity_weight, p.loss.perceptual_weight) == \
        ("lsgan", 10.0, 0.5, 0.0)
    assert (p.optim.lr, p.optim.beta1, p.optim.beta2, p.optim.pool_size) == (2e-4, 0.5, 0.999, 50)
    assert (p.data.crop_px, p.data.resolved_load_px, p.data.batch_size, p.data.flip) == (256, 286, 1, True)
    assert CycleGANParams.model_validate({"data": {"crop_px": 128}}).data.resolved_load_px == 143
    from pydantic import ValidationError

    for bad in ({"model": {"ngf": 0}}, {"loss": {"cycle_weight": "ten"}}, {"loss": {"gan_mode": "wgan"}},
                {"optim": {"unknown": 1}}, {"data": {"crop_px": 30}}, {"data": {"crop_px": 256, "load_px": 200}}):
        with pytest.raises(ValidationError):
            CycleGANParams.model_validate(bad, strict=True)


def test_train_step_cpu():
    torch.manual_seed(0)
    recipe = build(tiny_params(), cpu_ctx())
    assert set(recipe.networks()) == {"G_A", "G_B", "D_A", "D_B"}
    assert set(recipe.optimizers()) == {"G", "D"} and set(recipe.schedulers()) == {"G", "D"}
    assert recipe.data.domains == {"A": "photo", "B": "anime"}
    assert (recipe.data.crop_px, recipe.data.load_px, recipe.data.batch_size) == (32, 36, 2)
    before = {k: v.clone() for k, v in recipe.nets["G_A"].state_dict().items()}
    d_before = {k: v.clone() for k, v in recipe.nets["D_B"].state_dict().items()}
    losses = recipe.train_step(batch(), step=0)
    assert set(losses) == LOSS_NAMES
    for name, v in losses.items():
        assert v.dim() == 0 and not v.requires_grad and torch.isfinite(v), name
    parts = sum(losses[k] for k in LOSS_NAMES - {"G_total", "D_A", "D_B"})
    assert losses["G_total"].item() == pytest.approx(parts.item(), rel=1e-5)
    after = recipe.nets["G_A"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(d_before[k], v) for k, v in recipe.nets["D_B"].state_dict().items())
    assert all(p.requires_grad for p in recipe.nets["D_A"].parameters())
    assert len(recipe.pools["A"]) == 2 and len(recipe.pools["B"]) == 2

    samples = recipe.sample(batch(seed=1))
    assert set(samples) == {n for row in recipe.grid_rows for n in row}
    assert all(v.shape == (2, 3, 32, 32) for v in samples.values())


def test_resume_reproduces_next_steps():
    """What the trainer checkpoints (networks, optimizers, schedulers, extra_state, RNG)
    is enough to replay the following steps exactly, image pools included."""
    torch.manual_seed(0)
    params = tiny_params(optim={"pool_size": 2})   # full after one step: later steps swap
    recipe = build(params, cpu_ctx())
    for step in range(2):
        recipe.train_step(batch(seed=step), step)
        for s in recipe.schedulers().values():
            s.step()
    ckpt = {
        "nets": {k: {n: t.clone() for n, t in v.state_dict().items()} for k, v in recipe.networks().items()},
        "opt": {k: copy.deepcopy(v.state_dict()) for k, v in recipe.optimizers().items()},
        "sched": {k: v.state_dict() for k, v in recipe.schedulers().items()},
        "extra": copy.deepcopy(recipe.extra_state()),
        "rng": torch.get_rng_state(),
    }
    assert ckpt["extra"]["pool_A"]["count"] == 2
    expected = [recipe.train_step(batch(seed=10 + i), 2 + i) for i in range(3)]

    torch.manual_seed(77)
    resumed = build(params, cpu_ctx())
    for k, v in resumed.networks().items():
        v.load_state_dict(ckpt["nets"][k])
    for k, v in resumed.optimizers().items():
        v.load_state_dict(ckpt["opt"][k])
    for k, v in resumed.schedulers().items():
        v.load_state_dict(ckpt["sched"][k])
    resumed.load_extra_state(ckpt["extra"])
    torch.set_rng_state(ckpt["rng"])
    got = [resumed.train_step(batch(seed=10 + i), 2 + i) for i in range(3)]
    for e, g in zip(expected, got):
        for name in LOSS_NAMES:
            assert torch.equal(e[name], g[name]), name


def test_train_step_perceptual_and_no_identity():
    torch.manual_seed(0)
    params = tiny_params(loss={"perceptual_weight": 1.0, "perceptual_weights": "random",
                               "perceptual_layer": "relu1_2", "identity_weight": 0.0})
    recipe = build(params, cpu_ctx())
    assert "vgg" in recipe.networks()
    losses = recipe.train_step(batch(), step=0)
    assert set(losses) == LOSS_NAMES | {"perceptual"}
    assert losses["perceptual"].item() > 0
    assert losses["idt_A"].item() == 0.0 and losses["idt_B"].item() == 0.0
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_lr_schedule():
    recipe = build(tiny_params(optim={"steps_constant": 3, "steps_decay": 4}), cpu_ctx())
    lrs = []
    for _ in range(9):
        lrs.append(recipe.optimizers()["G"].param_groups[0]["lr"])
        for s in recipe.schedulers().values():
            s.step()
    base = 2e-4
    assert lrs[:3] == [pytest.approx(base)] * 3                       # constant for 3 steps
    assert lrs[3:7] == [pytest.approx(base * f) for f in (0.8, 0.6, 0.4, 0.2)]   # linear ...
    assert lrs[7:] == [0.0, 0.0]                                       # ... to 0
    assert recipe.optimizers()["D"].param_groups[0]["lr"] == 0.0
    # Both 0: half of the run constant, half decaying.
    auto = build(tiny_params(optim={"steps_constant": 0, "steps_decay": 0}), cpu_ctx(total_steps=100))
    assert (auto.steps_constant, auto.steps_decay) == (50, 50)
    f = linear_decay_lambda(100, 100)
    assert f(0) == f(99) == 1.0 and f(100) == pytest.approx(1 - 1 / 101) and f(200) == 0.0


def test_train_step_bf16_autocast_channels_last():
    """The CUDA settings (bf16 autocast, channels_last) exercised on the CPU."""
    torch.manual_seed(0)
    ctx = Context(device=torch.device("cpu"), amp_dtype=torch.bfloat16, channels_last=True, total_steps=10)
    recipe = build(tiny_params(), ctx)
    assert recipe.nets["G_A"].model[1].weight.is_contiguous(memory_format=torch.channels_last)
    for step in range(2):
        losses = recipe.train_step(batch(seed=step), step)
    assert set(losses) == LOSS_NAMES
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    assert all(v.dtype == torch.float32 for v in recipe.sample(batch()).values())
