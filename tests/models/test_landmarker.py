"""Landmarker family: Gaussian targets, soft-argmax, the network, params, the recipe, a
learning test on synthetic faces with known landmarks (packed data through the Trainer),
loading a trained run and the landmark-consistency loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from conftest import BF16_TWIN_STEPS, NATIVE_BF16, bf16_twin, write_packed
from toonlab.errors import ToonlabError, UsageError
from toonlab.models.landmarker import model as lm
from toonlab.models.landmarker.model import (
    HeatmapNet,
    gaussian_targets,
    heatmaps,
    landmark_loss,
    load_landmarker,
    soft_argmax,
)
from toonlab.models.landmarker.params import LandmarkerParams
from toonlab.registry import get as _family
from toonlab.train import checkpoint as ckpt
from toonlab.train.data import Augment
from toonlab.train.params import TrainParams
from toonlab.train.recipe import Context, DataSpec
from toonlab.train.trainer import Trainer

FAMILY = _family("landmarker")

PX = 128     # packed array size (the trainer reads 128 px arrays for crops <= 128)
CROP = 64    # training / test resolution
# Template landmarks at 128 px: eye_left, eye_right, nose, mouth_left, mouth_right.
TEMPLATE = np.array([[46, 54], [82, 54], [64, 74], [51, 92], [77, 92]], np.float64)


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- synthetic faces


def face_points(rng: np.random.Generator) -> np.ndarray:
    """Template moved by a random scale, translation and per-point jitter (128 px)."""
    centre = np.array([64.0, 72.0])
    s = rng.uniform(0.85, 1.15)
    t = rng.uniform(-12, 12, 2)
    return (centre + (TEMPLATE - centre) * s + t + rng.normal(0, 1.2, (5, 2))).astype(np.float32)


def background(rng: np.random.Generator, style: str) -> np.ndarray:
    """PX x PX x 3 float image in [0, 1]: smooth colour noise + grain (photo), or flat (anime)."""
    import cv2

    if style == "photo":
        low = rng.uniform(0.2, 0.8, (4, 4, 3)).astype(np.float32)
        img = cv2.resize(low, (PX, PX), interpolation=cv2.INTER_CUBIC)
        return np.clip(img + rng.normal(0, 0.06, img.shape), 0, 1)
    colour = rng.uniform(0.6, 0.95, 3)
    return np.broadcast_to(colour, (PX, PX, 3)).copy()


def _disc(yy, xx, c, rx, ry=None):
    ry = rx if ry is None else ry
    d = np.sqrt(((xx - c[0]) / rx) ** 2 + ((yy - c[1]) / ry) ** 2)
    return np.clip((1.0 - d) * min(rx, ry) + 0.5, 0, 1)   # soft edge about one pixel wide


def _segment(yy, xx, a, b, r):
    ab = b - a
    t = np.clip(((xx - a[0]) * ab[0] + (yy - a[1]) * ab[1]) / max(float(ab @ ab), 1e-6), 0, 1)
    d = np.hypot(xx - (a[0] + t * ab[0]), yy - (a[1] + t * ab[1]))
    return np.clip(r + 0.5 - d, 0, 1)


def paint_face(img: np.ndarray, pts: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """Face oval, two eyes centred on points 0 and 1, a nose dot on 2, a mouth from 3 to 4."""
    img = img.copy()
    yy, xx = np.mgrid[0:PX, 0:PX].astype(np.float64)
    iod = float(np.linalg.norm(pts[1] - pts[0]))
    centre = pts.mean(axis=0)

    def over(alpha, colour):
        img[:] = img * (1 - alpha[..., None]) + np.asarray(colour) * alpha[..., None]

    skin = (0.85, 0.65, 0.5) if style == "photo" else (1.0, 0.9, 0.82)
    over(_disc(yy, xx, centre, 1.25 * iod, 1.6 * iod), np.clip(np.asarray(skin) + rng.normal(0, 0.04, 3), 0, 1))
    if style == "photo":
        for p in pts[:2]:
            over(_disc(yy, xx, p, 5.0, 3.5), (0.95, 0.95, 0.95))
            over(_disc(yy, xx, p, 2.5), (0.15, 0.1, 0.05))
        over(_disc(yy, xx, pts[2], 3.0), (0.6, 0.35, 0.3))
        over(_segment(yy, xx, pts[3], pts[4], 2.0), (0.7, 0.2, 0.2))
        img += rng.normal(0, 0.03, img.shape)
    else:
        for p in pts[:2]:
            over(_disc(yy, xx, p, 6.0, 8.0), (0.1, 0.1, 0.3))
            over(_disc(yy, xx, p + np.array([-2.0, -3.0]), 2.0), (1.0, 1.0, 1.0))
        over(_disc(yy, xx, pts[2], 1.5), (0.5, 0.3, 0.3))
        over(_segment(yy, xx, pts[3], pts[4], 1.0), (0.4, 0.1, 0.1))
    return np.clip(img, 0, 1)


def synthetic(seed: int, n: int, style: str) -> tuple[np.ndarray, np.ndarray]:
    """n faces as (n, PX, PX, 3) uint8 and their landmarks (n, 5, 2) float32 at PX."""
    rng = np.random.default_rng(seed)
    imgs, pts = [], []
    for _ in range(n):
        p = face_points(rng)
        imgs.append((paint_face(background(rng, style), p, style, rng) * 255 + 0.5).astype(np.uint8))
        pts.append(p)
    return np.stack(imgs), np.stack(pts)


def to_crop(rgb: np.ndarray, five: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """What training sees (resize 128 -> 64, no flip): N x 3 x 64 x 64 in [-1, 1], N x 5 x 2."""
    aug = Augment(DataSpec(domains={}, crop_px=CROP, batch_size=1, load_px=CROP, flip=False))
    xs, ps = [], []
    for img, p in zip(rgb, five):
        out, q = aug(img, p, 0)
        xs.append(torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).float() / 127.5 - 1)
        ps.append(torch.from_numpy(q))
    return torch.stack(xs), torch.stack(ps)


STEPS = 300
TRAIN_PARAMS = {"model": {"ch": 16, "n_blocks": 2, "stride": 4, "sigma": 1.5},
                "data": {"crop_px": CROP, "load_px": CROP, "batch_size": 8},
                "optim": {"lr": 2e-3, "steps": STEPS}}


def train_landmarker(root, cpu_precision: str = "fp32", steps: int | None = None) -> dict:
    """A landmarker trained through the Trainer on synthetic packed photo + anime faces (for
    `steps` steps, logging each, instead of STEPS when given)."""
    for domain, seed in (("photo", 1), ("anime", 2)):
        write_packed(root / "packed", domain, *synthetic(seed, 48, domain), splits=("train",))
    params = LandmarkerParams.model_validate(TRAIN_PARAMS, strict=True)
    tp = TrainParams(source="packed", out_dir=str(root / "models"), loader_workers=0,
                     log_every=50 if steps is None else 1, ckpt_every=10_000, sample_every=0, seed=0,
                     cpu_precision=cpu_precision)
    torch.manual_seed(0)
    trainer = Trainer(FAMILY, params, tp, device=torch.device("cpu"), packed_dir=str(root / "packed"), steps=steps)
    metrics = trainer.run(resume="none")
    assert trainer.precision.name == cpu_precision
    run_dir = root / "models" / "landmarker"
    return {"root": root, "run_dir": run_dir, "params": params, "metrics": metrics, "trainer": trainer,
            "net": load_landmarker(run_dir, "cpu")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_landmarker(tmp_path_factory.mktemp("landmarker"))


def cpu_ctx(total_steps: int = 10, amp=None, channels_last=False) -> Context:
    return Context(device=torch.device("cpu"), amp_dtype=amp, channels_last=channels_last, total_steps=total_steps)


# ----------------------------------------------------------------------------- targets and soft-argmax


def test_gaussian_target_peak():
    stride, sigma = 4, 1.5
    # Cell (row 3, col 5) is centred on input pixel ((5 + 0.5) * 4 - 0.5, (3 + 0.5) * 4 - 0.5).
    pts = torch.tensor([[[21.5, 13.5], [1.5, 61.5]]])
    t = gaussian_targets(pts, 16, 16, stride, sigma)
    assert t.shape == (1, 2, 16, 16)
    assert t[0, 0, 3, 5].item() == pytest.approx(1.0)
    assert torch.argmax(t[0, 0]).item() == 3 * 16 + 5
    assert torch.argmax(t[0, 1]).item() == 15 * 16 + 0
    assert t[0, 0, 3, 6].item() == pytest.approx(np.exp(-1 / (2 * sigma**2)))
    assert t[0, 0, 4, 5].item() == pytest.approx(t[0, 0, 2, 5].item())
    assert t.min() >= 0 and t.max() <= 1
    # A point between cells: both neighbours equal and below 1.
    mid = gaussian_targets(torch.tensor([[[23.5, 13.5]]]), 16, 16, stride, sigma)
    assert mid[0, 0, 3, 5].item() == pytest.approx(mid[0, 0, 3, 6].item()) and mid.max() < 1
    with pytest.raises(ValueError):
        gaussian_targets(torch.zeros(2, 5), 16, 16, stride, sigma)


@pytest.mark.parametrize("stride, h", [(4, 16), (1, 48)])
def test_soft_argmax_recovers_points(stride, h):
    g = torch.Generator().manual_seed(0)
    px = h * stride
    pts = 0.3 * px + torch.rand(6, 5, 2, generator=g) * 0.4 * px   # away from the borders
    got = soft_argmax(gaussian_targets(pts, h, h, stride, 1.5), stride)
    assert got.shape == (6, 5, 2)
    assert (got - pts).abs().max().item() < 0.5
    # Differentiable: a gradient flows from the points to the maps.
    hm = gaussian_targets(pts, h, h, stride, 1.5).requires_grad_(True)
    soft_argmax(hm, stride).sum().backward()
    assert hm.grad is not None and hm.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- network


@pytest.mark.parametrize("stride", [1, 2, 4, 8])
def test_heatmap_net_shapes(stride):
    net = HeatmapNet(ch=8, n_blocks=1, stride=stride)
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    with torch.no_grad():
        assert net(x).shape == (2, 5, 64 // stride, 48 // stride)
        hm = heatmaps(net, x)
    assert hm.min() >= 0 and hm.max() <= 1
    assert torch.allclose(hm.amax(dim=(2, 3)), torch.ones(2, 5))   # each map peaks at 1
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.zeros(1, 3, 60, 64))


def test_default_size_and_norm():
    net = HeatmapNet()
    assert (net.ch, net.n_blocks, net.stride, net.n_points) == (32, 2, 4, 5)
    assert 100_000 < lm.count_params(net) < 1_000_000
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(net.train()(x), net.eval()(x))   # instance norm: same in both modes


# ----------------------------------------------------------------------------- params, recipe


def test_params_defaults_and_validation():
    p = LandmarkerParams()
    assert (p.model.ch, p.model.n_blocks, p.model.stride, p.model.sigma) == (32, 2, 4, 1.5)
    assert (p.optim.lr, p.optim.beta1, p.optim.beta2, p.optim.steps) == (1e-3, 0.9, 0.999, 2000)
    assert (p.data.crop_px, p.data.load_px, p.data.resolved_load_px, p.data.batch_size) == (128, 0, 128, 16)
    assert (p.data.domain_photo, p.data.domain_anime) == ("photo", "anime")
    assert (p.loss.heat_weight, p.loss.coord_weight) == (1.0, 1.0)
    assert FAMILY.name == "landmarker" and FAMILY.best_metric == "loss" and FAMILY.total_steps(p) == 2000
    for bad in ({"data": {"crop_px": 60}}, {"data": {"crop_px": 64, "load_px": 32}}, {"model": {"stride": 3}},
                {"model": {"sigma": 0.0}}, {"model": {"ch": "16"}}, {"optim": {"unknown": 1}},
                {"loss": {"heat_weight": 0.0, "coord_weight": 0.0}}):
        with pytest.raises(ValidationError):
            LandmarkerParams.model_validate(bad, strict=True)


def _batch(n=2, seed=0):
    photo = synthetic(seed, n, "photo")
    anime = synthetic(seed + 100, n, "anime")
    x_p, p_p = to_crop(*photo)
    x_a, p_a = to_crop(*anime)
    return {"photo": x_p, "anime": x_a, "photo_five": p_p, "anime_five": p_a}


def test_train_step_and_sample():
    torch.manual_seed(0)
    params = LandmarkerParams.model_validate({**TRAIN_PARAMS, "data": {"crop_px": CROP, "batch_size": 2}})
    recipe = FAMILY.build(params, cpu_ctx())
    assert recipe.data.domains == {"photo": "photo", "anime": "anime"} and recipe.data.with_landmarks
    assert (recipe.data.crop_px, recipe.data.load_px, recipe.data.batch_size) == (CROP, CROP, 2)
    assert set(recipe.nets) == {"net"} and set(recipe.optimizers()) == {"net"}
    batch = _batch()
    before = {k: v.clone() for k, v in recipe.nets["net"].state_dict().items()}
    losses = recipe.train_step(batch, 0)
    assert set(losses) == set(lm.LOSS_NAMES)
    for name, v in losses.items():
        assert v.dim() == 0 and not v.requires_grad and torch.isfinite(v), name
    assert losses["loss"].item() == pytest.approx(losses["heat"].item() + losses["coord"].item(), rel=1e-5)
    assert any(not torch.equal(before[k], v) for k, v in recipe.nets["net"].state_dict().items())
    samples = recipe.sample(batch)
    assert set(samples) == {n for row in recipe.grid_rows for n in row}
    assert samples["photo"].shape == (2, 3, CROP, CROP)
    for key in ("photo_heat", "anime_heat"):
        assert samples[key].shape == (2, 1, CROP, CROP)
        assert samples[key].min() >= 0 and samples[key].max() <= 1
    # bf16 autocast + channels_last (the CUDA settings) on the CPU.
    fast = FAMILY.build(params, cpu_ctx(amp=torch.bfloat16, channels_last=True))
    out = fast.train_step(batch, 0)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in out.values())


def test_train_step_needs_landmarks():
    recipe = FAMILY.build(LandmarkerParams.model_validate({**TRAIN_PARAMS, "data": {"crop_px": CROP, "batch_size": 2}}),
                          cpu_ctx())
    batch = _batch()
    del batch["photo_five"], batch["anime_five"]
    with pytest.raises(UsageError, match="train.source: packed"):
        recipe.train_step(batch, 0)


def test_nme_values():
    true = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [5.0, 5.0], [2.0, 8.0], [8.0, 8.0]]])
    assert lm.nme(true, true).item() == 0.0
    assert lm.nme(true + torch.tensor([3.0, 4.0]), true).item() == pytest.approx(0.5)   # 5 px / 10 px


def test_cosine_schedule():
    f = lm.cosine_lambda(100)
    assert f(0) == 1.0 and f(50) == pytest.approx(0.5) and f(100) == pytest.approx(0.0) and f(150) == 0.0


# ----------------------------------------------------------------------------- loading


def test_load_landmarker_missing_run(tmp_path):
    with pytest.raises(ToonlabError, match="toonlab train landmarker") as err:
        load_landmarker(tmp_path / "models" / "landmarker", "cpu")
    assert "snakemake -c2 train_landmarker" in str(err.value)
    assert str(tmp_path / "models" / "landmarker" / "checkpoints") in str(err.value)


def test_load_landmarker_foreign_checkpoint(tmp_path):
    ckpt.save(tmp_path / "checkpoints" / "step-00000001.pt", {"family": "cyclegan", "nets": {}})
    with pytest.raises(ToonlabError, match="not a landmarker run"):
        load_landmarker(tmp_path, "cpu")


# ----------------------------------------------------------------------------- learning (trained fixture)


@pytest.mark.slow  # a learning run: not in `make test-fast`
def test_learning_synthetic_landmarks(trained):
    """Held-out synthetic faces (both styles): the trained net's points are much closer to
    the true ones than the mean training template is. Fails if targets, the loss, the
    update step or the data's landmark handling are broken."""
    assert_learned(trained)


@pytest.mark.slow  # a learning run: not in `make test-fast`
def test_learning_synthetic_landmarks_in_bf16(tmp_path):
    """The same training in bf16 autocast (train.cpu_precision: bf16) meets the same bars. On
    a CPU that emulates bf16: these settings for a few steps beside fp32, which bf16 must
    track (conftest.bf16_twin)."""
    if not NATIVE_BF16:
        bf16_twin(lambda precision, out: train_landmarker(out, precision, BF16_TWIN_STEPS)["run_dir"], tmp_path)
        return
    run = train_landmarker(tmp_path, "bf16")
    assert run["trainer"].precision.name == "bf16"
    assert_learned(run)


def assert_learned(trained: dict) -> None:
    net = trained["net"]
    train_pts = torch.cat([to_crop(*synthetic(s, 48, d))[1] for d, s in (("photo", 1), ("anime", 2))])
    template = train_pts.mean(dim=0, keepdim=True)
    for style, seed in (("photo", 11), ("anime", 12)):
        x, true = to_crop(*synthetic(seed, 16, style))
        with torch.no_grad():
            pred = lm.predict_points(net, x)
        err = lm.nme(pred, true).item()
        base = lm.nme(template.expand_as(true), true).item()
        assert base > 0.1, base                # the faces really move
        assert err < 0.5 * base and err < 0.15, (style, err, base)   # about 0.3 x and 0.08 here
    assert trained["metrics"]["nme"] < 0.2
    assert (trained["run_dir"] / "samples" / "latest.png").is_file()   # grid rendered with the heat maps


def test_load_landmarker_round_trip(trained):
    net = trained["net"]
    assert isinstance(net, HeatmapNet) and not net.training
    assert (net.ch, net.n_blocks, net.stride) == (16, 2, 4)    # the run's settings, not the defaults
    assert not any(p.requires_grad for p in net.parameters())
    state = ckpt.load(ckpt.latest(trained["run_dir"] / "checkpoints"))
    assert state["step"] == STEPS
    ref = HeatmapNet(ch=16, n_blocks=2, stride=4)
    ref.load_state_dict(state["nets"]["net"])
    x, _ = to_crop(*synthetic(21, 3, "photo"))
    with torch.no_grad():
        assert torch.equal(net(x), ref.eval()(x))


# ----------------------------------------------------------------------------- landmark loss


def _shifted_faces(shifts, style="photo"):
    """One face on one background, moved right by each shift (64 px units)."""
    rng = np.random.default_rng(5)
    pts = face_points(rng)
    bg = background(rng, style)
    imgs = [(paint_face(bg, pts + np.array([2.0 * s, 0.0]), style, np.random.default_rng(6)) * 255 + 0.5)
            .astype(np.uint8) for s in shifts]
    x, _ = to_crop(np.stack(imgs), np.repeat(pts[None], len(shifts), axis=0))
    return x


def test_landmark_loss_zero_and_monotonic(trained):
    net = trained["net"]
    shifts = [0, 2, 4, 8, 12]
    x = _shifted_faces(shifts)
    real = x[:1]
    with torch.no_grad():
        losses = [landmark_loss(net, x[i:i + 1], real).item() for i in range(len(shifts))]
    assert losses[0] == 0.0
    assert all(a < b for a, b in zip(losses, losses[1:])), losses
    assert landmark_loss(net, x[1:3], x[1:3].clone()).item() == 0.0
    with pytest.raises(ValueError):
        landmark_loss(net, x[:1], x[:2])


def test_landmark_loss_gradient_reaches_fake_only(trained):
    net = trained["net"]
    x = _shifted_faces([0, 6])
    fake = x[1:].clone().requires_grad_(True)
    real = x[:1].clone().requires_grad_(True)
    loss = landmark_loss(net, fake, real)
    assert loss.requires_grad and loss.dim() == 0 and loss.item() > 0
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert real.grad is None
    assert all(p.grad is None for p in net.parameters())
    # A small step against the gradient moves the fake's landmarks towards the real ones.
    with torch.no_grad():
        stepped = fake - 0.03 * fake.grad / fake.grad.abs().max()
        assert landmark_loss(net, stepped, real).item() < loss.item()
