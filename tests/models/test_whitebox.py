"""White-box cartoonization: representations (guided filter, superpixels, colour shift, TV,
VGG content), reference network sizes, recipes, the process-pool segmentation path and a
learning run (pretrain, then adversarial)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from conftest import BF16_TWIN_STEPS, NATIVE_BF16, bf16_twin
from toonlab import registry
from toonlab.errors import MissingWeightsError, ToonlabError
from toonlab.models.common import count_params
from toonlab.models.whitebox import model as wb
from toonlab.models.whitebox import ops
from toonlab.train import checkpoint as ckpt
from toonlab.train.params import TrainParams
from toonlab.train.recipe import Context
from toonlab.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**over) -> wb.WhiteboxParams:
    raw = {"model": {"ch": 8, "n_res": 1, "d_ch": 8, "vgg_weights": "random"},
           "data": {"crop_px": 32, "batch_size": 4},
           "structure": {"workers": 0, "segments": 16},
           "pretrain": {"run_dir": ""}}
    for section, values in over.items():
        raw.setdefault(section, {}).update(values)
    return wb.WhiteboxParams.model_validate(raw, strict=True)


def cpu_ctx(total: int = 10) -> Context:
    return Context(device=torch.device("cpu"), amp_dtype=None, channels_last=False, total_steps=total)


def blob_images(rng: np.random.Generator, n: int, px: int = 32) -> np.ndarray:
    """Smooth dark colour blobs, N x px x px x 3 in [0, 0.5]."""
    out = []
    for _ in range(n):
        small = (rng.uniform(0, 0.5, (4, 4, 3)) * 255).astype(np.uint8)
        out.append(np.asarray(Image.fromarray(small).resize((px, px), Image.BICUBIC)) / 255.0)
    return np.stack(out)


def noisy_photos(rng, n, px=32):
    """'Photos': blobs with fine noise texture."""
    return np.clip(blob_images(rng, n, px) + rng.normal(0, 0.08, (n, px, px, 3)), 0, 1)


def flat_cartoons(rng, n, px=32):
    """'Cartoons': blobs posterised to flat colour levels, no texture."""
    return np.round(blob_images(rng, n, px) * 8) / 8


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2) * 2 - 1


def write_folder(folder: Path, images: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(folder / f"{i:03d}.png")


def windows(values: list[float], n: int = 5) -> list[float]:
    w = len(values) // n
    return [float(np.mean(values[i * w:(i + 1) * w])) for i in range(n)]


# ----------------------------------------------------------------------------- guided filter


def naive_guided_filter(x: np.ndarray, y: np.ndarray, r: int, eps: float) -> np.ndarray:
    """Per pixel, per channel, over the part of the (2r+1)^2 window inside the image."""
    n, c, h, w = x.shape

    def box(a):
        out = np.zeros_like(a)
        for i in range(h):
            for j in range(w):
                win = a[:, :, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1]
                out[:, :, i, j] = win.mean(axis=(2, 3))
        return out

    mx, my = box(x), box(y)
    a = (box(x * y) - mx * my) / (box(x * x) - mx * mx + eps)
    b = my - a * mx
    return box(a) * x + box(b)


@pytest.mark.parametrize("r, eps, h, w", [(1, 1e-2, 7, 9), (2, 5e-3, 6, 5), (5, 0.2, 8, 8)])
def test_guided_filter_equals_naive_reference(r, eps, h, w):
    g = torch.Generator().manual_seed(r)
    x = torch.rand(2, 3, h, w, generator=g, dtype=torch.float64) * 2 - 1
    y = torch.rand(2, 3, h, w, generator=g, dtype=torch.float64) * 2 - 1
    out = ops.guided_filter(x, y, r, eps)
    assert out.dtype == torch.float64 and out.shape == y.shape
    ref = naive_guided_filter(x.numpy(), y.numpy(), r, eps)
    assert np.abs(out.numpy() - ref).max() < 1e-5
    assert np.allclose(ops.surface(x, r, eps).numpy(), naive_guided_filter(x.numpy(), x.numpy(), r, eps), atol=1e-5)


def test_surface_smooths_texture_and_keeps_edges():
    g = torch.Generator().manual_seed(0)
    step = torch.full((1, 3, 32, 32), -0.6)
    step[..., 16:] = 0.6
    noisy = step + 0.05 * torch.randn(1, 3, 32, 32, generator=g)
    smooth = ops.surface(noisy)
    inner = (slice(None), slice(None), slice(4, 28))
    assert (smooth - step)[..., 4:28, 2:10].std() < 0.5 * (noisy - step)[..., 4:28, 2:10].std()   # noise reduced
    # Across the edge the guided filter keeps most of the step; a box blur of the same radius does not.
    box = ops.box_mean(noisy, 5)
    jump = (smooth[inner][..., 16] - smooth[inner][..., 15]).mean()
    assert jump > 0.5 * 1.2 and jump > 3 * (box[inner][..., 16] - box[inner][..., 15]).mean()
    const = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(ops.surface(const), const, atol=1e-6)


# ----------------------------------------------------------------------------- structure


def test_superpixel_fill_keeps_segment_means():
    x = to_tensor(noisy_photos(np.random.default_rng(0), 2))
    for labels in (torch.from_numpy(ops.Segmenter("slic", 16).labels(x)),
                   torch.randint(0, 7, (2, 32, 32), generator=torch.Generator().manual_seed(1))):
        filled = ops.superpixel_fill(x, labels, "mean")
        assert filled.shape == x.shape
        for n in range(2):
            for k in labels[n].unique():
                m = labels[n] == k
                seg_in, seg_out = x[n][:, m], filled[n][:, m]
                assert torch.allclose(seg_out.mean(1), seg_in.mean(1), atol=1e-5)
                assert torch.allclose(seg_out, seg_out[:, :1].expand_as(seg_out), atol=1e-6)   # one colour
    with pytest.raises(ValueError):
        ops.superpixel_fill(x, torch.zeros(2, 16, 16, dtype=torch.long))


def test_adaptive_fill_follows_reference_mix():
    """Segments whose std (0..255 scale) is below 20, between 20 and 40, above 40 get the
    mean, the average of mean and median, the median (reference label2rgb 'mix')."""
    rng = np.random.default_rng(3)
    x = np.zeros((1, 3, 12, 12))
    labels = np.repeat(np.arange(3), 48).reshape(12, 12)
    for k, spread in enumerate((0.08, 0.24, 0.5)):     # skewed; std in 255 units ~ 10, 31, 64
        vals = spread * (rng.exponential(1.0, (3, 48)) - 1) + 0.1 * k
        x[0][:, labels == k] = vals
    xt, lt = torch.from_numpy(x), torch.from_numpy(labels)[None]
    out = ops.superpixel_fill(xt, lt, "adaptive").double().numpy()
    for k in range(3):
        seg = x[0][:, labels == k]
        std = np.std((seg + 1) * 127.5)
        mean, median = seg.mean(1), np.median(seg, 1)
        want = mean if std < 20 else (0.5 * (mean + median) if std <= 40 else median)
        assert [std < 20, 20 <= std <= 40, std > 40][k]      # the three regimes are covered
        assert np.allclose(out[0][:, labels == k][:, 0], want, atol=1e-5), k
        assert not np.allclose(mean, median, atol=1e-3)     # the regimes are distinguishable


@pytest.mark.parametrize("method", ["slic", "felzenszwalb", "selective"])
def test_segment_methods_give_contiguous_labels(method):
    img = (noisy_photos(np.random.default_rng(5), 1, 48)[0] * 255).astype(np.uint8)
    labels = ops.segment(img, method, 12)
    assert labels.shape == (48, 48) and labels.dtype == np.int32
    k = labels.max() + 1
    assert set(np.unique(labels)) == set(range(k)) and k >= 2
    if method == "selective":
        assert k == 12
    if method == "felzenszwalb":
        assert k <= 12
    with pytest.raises(ValueError):
        ops.segment(img, "watershed", 12)  # type: ignore[arg-type]


def test_merge_regions_joins_similar_colours_first():
    img = np.zeros((24, 24, 3), np.uint8)
    img[:, :12] = (200, 30, 30)
    img[:, 12:] = (30, 30, 200)
    img[:, 10:12] = (190, 35, 35)        # close to the red half
    grid = np.arange(36).reshape(6, 6).repeat(4, 0).repeat(4, 1)   # 36 tiles, none crossing x=12
    from skimage import color

    merged = ops.merge_regions(grid, color.rgb2lab(img / 255.0), 2)
    assert merged.max() == 1
    assert len(np.unique(merged[:, :12])) == 1 and len(np.unique(merged[:, 12:])) == 1
    assert merged[0, 0] != merged[0, 23]


def test_segmenter_pool_equals_in_process_and_recipe_timings():
    x = to_tensor(noisy_photos(np.random.default_rng(7), 3))
    recipe = wb.build(tiny(structure={"workers": 1}), cpu_ctx())
    try:
        recipe.train_step({"photo": x[:2], "cartoon": x[1:]}, 0)
        t = recipe.timings
        assert t["steps"] == 1 and t["superpixel_work_s"] > 0 and t["superpixel_wait_s"] >= 0
        assert recipe.segmenter._pool is not None          # the labels came from the worker process
        for method in ("slic", "selective"):
            recipe.segmenter.method = method
            local = ops.Segmenter(method, 16, workers=0).labels(x)
            pooled = recipe.segmenter.labels(x)
            assert pooled.dtype == local.dtype and np.array_equal(pooled, local)
    finally:
        recipe.close()
    assert recipe.segmenter._pool is None


# ----------------------------------------------------------------------------- texture, TV


def test_color_shift_single_channel_and_seeded():
    x = to_tensor(blob_images(np.random.default_rng(0), 2))
    a1, = ops.color_shift(x, generator=torch.Generator().manual_seed(4))
    a2, = ops.color_shift(x, generator=torch.Generator().manual_seed(4))
    b, = ops.color_shift(x, generator=torch.Generator().manual_seed(5))
    assert a1.shape == (2, 1, 32, 32)
    assert torch.equal(a1, a2) and not torch.allclose(a1, b)
    # One draw shared by all images of a call; weights in the reference's ranges, normalised.
    p, q = ops.color_shift(x, x.clone(), generator=torch.Generator().manual_seed(9))
    assert torch.equal(p, q)
    w = ops.color_shift_weights(torch.Generator().manual_seed(9))
    assert torch.allclose(p, (x * (w / w.sum()).view(1, 3, 1, 1)).sum(1, keepdim=True), atol=1e-6)
    draws = torch.stack([ops.color_shift_weights(torch.Generator().manual_seed(s)) for s in range(200)])
    for c, (lo, hi) in enumerate(ops.COLOR_SHIFT_RANGES):
        assert draws[:, c].min() >= lo and draws[:, c].max() <= hi and draws[:, c].std() > 0.03
    grey, = ops.color_shift(torch.full((1, 3, 4, 4), 0.25), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(grey, torch.full((1, 1, 4, 4), 0.25))


def test_total_variation_reference_definition():
    assert ops.total_variation(torch.full((2, 3, 16, 16), 0.7)).item() == 0.0
    assert ops.total_variation(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))).item() > 0
    ramp = (torch.arange(8.0) * 0.1).view(1, 1, 8, 1).expand(1, 3, 8, 8)    # vertical steps of 0.1
    assert ops.total_variation(ramp).item() == pytest.approx(0.01 / (3 * 8 * 8), rel=1e-5)


# ----------------------------------------------------------------------------- networks


def test_reference_parameter_counts_and_shapes():
    G = wb.UNetGenerator()
    assert count_params(G) == 1_467_075
    assert count_params(wb.PatchDiscriminator(3, 32)) == 287_137       # surface D (colour)
    assert count_params(wb.PatchDiscriminator(1, 32)) == 286_561       # texture D (grey)
    d = wb.PatchDiscriminator(3, 8)
    assert all(nn.utils.parametrize.is_parametrized(m, "weight") for m in d.modules() if isinstance(m, nn.Conv2d))
    x = torch.rand(1, 3, 64, 48) * 2 - 1
    with torch.no_grad():
        assert wb.UNetGenerator(8, 1)(x).shape == x.shape
        assert d(x).shape == (1, 1, 8, 6)
        assert wb.PatchDiscriminator(1, 8)(x[:, :1]).shape == (1, 1, 8, 6)


def test_tf_same_padding_and_legacy_resize():
    torch.manual_seed(0)
    conv = wb.Conv2dSame(2, 3, 3, stride=2)
    x = torch.rand(1, 2, 8, 6)
    want = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, stride=2)   # TF: pad after on even sizes
    assert torch.allclose(conv(x), want, atol=1e-6) and conv(x).shape == (1, 3, 4, 3)
    odd = torch.rand(1, 2, 7, 7)
    assert torch.allclose(conv(odd), F.conv2d(odd, conv.weight, conv.bias, stride=2, padding=1), atol=1e-6)
    c1 = wb.Conv2dSame(2, 3, 7)
    assert torch.allclose(c1(x), F.conv2d(x, c1.weight, c1.bias, padding=3), atol=1e-6)
    up = wb.upsample2x_tf(torch.tensor([[[[0.0, 2.0], [4.0, 6.0]]]]))
    assert up[0, 0].tolist() == [[0, 1, 2, 2], [2, 3, 4, 4], [4, 5, 6, 6], [4, 5, 6, 6]]


def test_vgg19_to_conv4_4_weights_and_content_loss(tmp_path, monkeypatch):
    vgg = wb.VGG19Features("random")
    assert count_params(vgg) == 10_585_152
    assert isinstance(vgg.features[-1], nn.Conv2d) and vgg.features[-1].out_channels == 512   # conv4_4, no ReLU
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert vgg(x).shape == (2, 512, 4, 4)
    assert vgg.content_loss(x, x.clone()).item() == 0.0
    assert vgg.content_loss(x, x.flip(-1)).item() > 0
    # Missing file: a clear error naming the file and the folder searched.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingWeightsError) as err:
        wb.VGG19Features("imagenet")
    msg = str(err.value)
    assert "vgg19-dcbb9e9d.pth" in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    with pytest.raises(MissingWeightsError):
        wb.build(tiny(model={"vgg_weights": "imagenet"}), cpu_ctx())
    # A torchvision-style file (features.* plus the classifier) loads into the truncated stack.
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    state = {k: v.clone() for k, v in vgg.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    torch.save(state, folder / "vgg19-dcbb9e9d.pth")
    loaded = wb.VGG19Features("imagenet")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), vgg.state_dict().values()))


# ----------------------------------------------------------------------------- params, families


def test_params_defaults_families_and_validation():
    p = wb.WhiteboxParams()
    assert (p.loss.tv, p.loss.surface, p.loss.texture, p.loss.structure, p.loss.content, p.loss.landmark) == \
        (1e4, 0.1, 1.0, 200.0, 200.0, 0.0)
    assert (p.model.ch, p.model.n_res, p.model.d_ch, p.model.gf_r, p.model.gf_eps, p.model.gf_eps_test) == \
        (32, 4, 32, 1, 1e-2, 5e-3)
    assert (p.loss.surface_r, p.loss.surface_eps, p.loss.landmarker_run) == (5, 0.2, "models/landmarker")
    assert (p.optim.steps, p.optim.lr, p.optim.beta1, p.optim.beta2) == (100000, 2e-4, 0.5, 0.99)
    assert (p.pretrain.steps, p.pretrain.lr, p.pretrain.run_dir) == (50000, 2e-4, "models/whitebox_pretrain")
    assert (p.data.crop_px, p.data.batch_size, p.data.domain_photo, p.data.domain_cartoon) == \
        (256, 16, "photo", "anime")
    assert (p.structure.method, p.structure.segments, p.structure.fill, p.structure.workers) == ("slic", 200, "mean", 2)
    assert registry.get("whitebox").name == "whitebox" and registry.get("whitebox").total_steps(p) == 100000 and registry.get("whitebox").best_metric == "G_total"
    assert registry.get("whitebox_pretrain").name == "whitebox_pretrain" and registry.get("whitebox_pretrain").params_section == "whitebox"
    assert registry.get("whitebox_pretrain").total_steps(p) == 50000 and registry.get("whitebox_pretrain").best_metric == "recon"
    for bad in ({"data": {"crop_px": 30}}, {"data": {"crop_px": 64, "load_px": 32}}, {"loss": {"tv": -1.0}},
                {"structure": {"method": "watershed"}}, {"model": {"colour": 1}}):
        with pytest.raises(ValueError):
            tiny(**bad)


def test_missing_pretrain_run_is_a_clear_error(tmp_path):
    with pytest.raises(ToonlabError) as err:
        wb.build(tiny(pretrain={"run_dir": str(tmp_path / "nowhere")}), cpu_ctx())
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "checkpoints") in msg and "toonlab train whitebox_pretrain" in msg
    assert 'run_dir to ""' in msg


# ----------------------------------------------------------------------------- recipes


def test_pretrain_step_reduces_reconstruction_on_a_fixed_batch():
    torch.manual_seed(0)
    recipe = wb.build_pretrain(tiny(pretrain={"lr": 2e-3}), cpu_ctx())
    assert set(recipe.data.domains) == {"photo"} and recipe.grid_rows == [["photo", "output"]]
    batch = {"photo": to_tensor(blob_images(np.random.default_rng(2), 4))}
    recon = [recipe.train_step(batch, i)["recon"].item() for i in range(30)]
    assert np.mean(recon[-5:]) < 0.5 * np.mean(recon[:5]), recon
    images = recipe.sample(batch)
    assert images["output"].shape == (4, 3, 32, 32) and images["output"].abs().max() <= 1


# weight, steps (the VGG terms are slower per step and descend faster)
TERMS = {"content": (2e3, 12), "structure": (2e3, 12), "tv": (1e4, 24), "surface": (1.0, 24), "texture": (1.0, 24)}


@pytest.mark.parametrize("term", list(TERMS))
def test_each_representation_loss_descends_for_fixed_discriminators(term):
    """Only `term` on, discriminators frozen (learning rate 0): G descends that loss, so its
    gradient reaches the generator through the representation."""
    g = torch.Generator().manual_seed(0)
    blobs = torch.rand(4, 3, 8, 8, generator=g).repeat_interleave(4, 2).repeat_interleave(4, 3) * 2 - 1
    batch = {"photo": (blobs + 0.2 * torch.randn(4, 3, 32, 32, generator=g)).clamp(-1, 1),
             "cartoon": torch.rand(4, 3, 32, 32, generator=g) * 2 - 1}
    torch.manual_seed(0)
    recipe = wb.build(tiny(loss={k: (w if k == term else 0.0) for k, (w, _) in TERMS.items()}, optim={"lr": 1e-3}),
                      cpu_ctx())
    for group in recipe.opt["D"].param_groups:
        group["lr"] = 0.0
    values = []
    for i in range(TERMS[term][1]):
        losses = recipe.train_step(batch, i)
        assert all(v.item() == 0 for k, v in losses.items() if k in TERMS and k != term)
        values.append(losses[term].item())
    assert np.mean(values[-4:]) < 0.7 * np.mean(values[:4]), values


def test_sample_images_and_inference():
    recipe = wb.build(tiny(), cpu_ctx())
    assert recipe.grid_rows == [["photo", "output", "surface", "structure", "texture"]]
    assert set(recipe.nets) == {"G", "D_surface", "D_texture"}
    x = to_tensor(noisy_photos(np.random.default_rng(1), 2))
    images = recipe.sample({"photo": x, "cartoon": x})
    assert set(images) == set(recipe.grid_rows[0])
    for v in images.values():
        assert v.shape == (2, 3, 32, 32) and v.min() >= -1 and v.max() <= 1
    inf = wb.inference(tiny(), {"G": recipe.nets["G"].state_dict()})
    with torch.no_grad():
        want = ops.guided_filter(x, recipe.nets["G"](x), 1, 5e-3).clamp(-1, 1)
        assert torch.allclose(inf.forward(x), want, atol=1e-6)
    assert (inf.source, inf.target, inf.px) == ("photo", "anime", 32)


# ----------------------------------------------------------------------------- learning


@pytest.mark.slow  # a learning run: not in `make test-fast`
@pytest.mark.parametrize("cpu_precision", ["fp32", "bf16"])
def test_learning_pretrain_then_adversarial(tmp_path, cpu_precision):
    """Noisy 'photos' to flat 'cartoons'. Pretrain (L1) brings G near the identity; the
    adversarial run, initialised from it, then: G_total falls; the surface and texture G
    terms fall (G learns to fool the discriminators) while the discriminators' losses fall
    (they learn too); content, structure and TV, kicked up by the first adversarial steps,
    are pulled back down. Held-out outputs end smoother and flatter than the photos and
    keep their own photo's content. On a CPU that emulates bf16, the bf16 case runs both
    stages for a few steps beside fp32 and must track it (conftest.bf16_twin)."""
    rng = np.random.default_rng(1)
    write_folder(tmp_path / "photo", noisy_photos(rng, 32))
    write_folder(tmp_path / "cartoon", flat_cartoons(rng, 32))

    def settings(out: Path, precision: str) -> tuple[wb.WhiteboxParams, TrainParams]:
        fp = tiny(pretrain={"run_dir": str(out / "whitebox_pretrain"), "steps": 60, "lr": 2e-3},
                  optim={"steps": 80}, loss={"content": 2e3, "structure": 2e4})
        tp = TrainParams(source="folders", folders={"photo": str(tmp_path / "photo"),
                                                    "cartoon": str(tmp_path / "cartoon")},
                         out_dir=str(out), loader_workers=0, log_every=1, ckpt_every=1000,
                         sample_every=0, cpu_precision=precision)
        return fp, tp

    if cpu_precision == "bf16" and not NATIVE_BF16:
        def short(precision: str, out: Path) -> list[Path]:
            fp, tp = settings(out, precision)
            runs = [Trainer(registry.get(name), fp, tp, device=torch.device("cpu"), packed_dir="unused",
                            steps=BF16_TWIN_STEPS) for name in ("whitebox_pretrain", "whitebox")]
            for t in runs:
                t.run(resume="none")
                assert t.precision.name == precision
            return [t.run_dir for t in runs]
        bf16_twin(short, tmp_path)
        return
    fp, tp = settings(tmp_path / "models", cpu_precision)

    def series(run: str, name: str) -> list[float]:
        lines = (tmp_path / "models" / run / "dvclive/plots/metrics/train" / f"{name}.tsv").read_text().splitlines()
        return [float(line.split("\t")[1]) for line in lines[1:]]

    Trainer(registry.get("whitebox_pretrain"), fp, tp, device=torch.device("cpu"), packed_dir="unused").run(resume="none")
    recon = windows(series("whitebox_pretrain", "recon"))
    assert recon[-1] < 0.5 * recon[0], recon

    trainer = Trainer(registry.get("whitebox"), fp, tp, device=torch.device("cpu"), packed_dir="unused")
    trainer.run(resume="none")
    w = {k: windows(series("whitebox", k)) for k in
         ("G_total", "surface", "texture", "D_total", "content", "structure", "tv")}
    assert w["G_total"][-1] < 0.7 * w["G_total"][0], w["G_total"]
    for k in ("surface", "texture"):
        assert w[k][-1] < 0.7 * w[k][0], (k, w[k])
    assert w["D_total"][-1] < 0.8 * w["D_total"][0], w["D_total"]
    for k in ("content", "structure", "tv"):
        assert w[k][-1] < 0.6 * max(w[k]), (k, w[k])
    grid = Image.open(tmp_path / "models/whitebox/samples/step-00000080.png")
    assert grid.width >= 5 * 32

    state = ckpt.load(ckpt.latest(tmp_path / "models/whitebox/checkpoints"))
    assert set(state["nets"]) == {"G", "D_surface", "D_texture"}
    recipe = wb.build(tiny(), trainer.ctx)
    recipe.nets["G"].load_state_dict(state["nets"]["G"])
    held = np.random.default_rng(99)
    x = to_tensor(noisy_photos(held, 16))
    with torch.no_grad():
        y = recipe._output(x, 5e-3)
        fx, fy = recipe.vgg(x), recipe.vgg(y)
        assert ops.total_variation(y) < 0.2 * ops.total_variation(x)
        sx = ops.superpixel_fill(x, torch.from_numpy(recipe.segmenter.labels(x)))
        sy = ops.superpixel_fill(y, torch.from_numpy(recipe.segmenter.labels(y)))
        assert ops.feature_l1(recipe.vgg(sy), fy) < 0.5 * ops.feature_l1(recipe.vgg(sx), fx)
        own = np.mean([ops.feature_l1(fx[i:i + 1], fy[i:i + 1]).item() for i in range(16)])
        other = np.mean([ops.feature_l1(fx[i:i + 1], fy[(i + 1) % 16:(i + 1) % 16 + 1]).item() for i in range(16)])
        assert own < other, (own, other)


def test_resume_equals_uninterrupted_run(tmp_path):
    """Discriminators' spectral-norm state and the colour-shift generator are checkpointed:
    continuing from step 2 gives the same networks at step 4 as one run."""
    rng = np.random.default_rng(0)
    write_folder(tmp_path / "photo", noisy_photos(rng, 8))
    write_folder(tmp_path / "cartoon", flat_cartoons(rng, 8))
    fp = tiny(optim={"steps": 4}, data={"batch_size": 2})

    def run(out: str, resume: str) -> dict:
        tp = TrainParams(source="folders", folders={"photo": str(tmp_path / "photo"),
                                                    "cartoon": str(tmp_path / "cartoon")},
                         out_dir=str(tmp_path / out), loader_workers=0, log_every=1, ckpt_every=2, sample_every=0)
        Trainer(registry.get("whitebox"), fp, tp, device=torch.device("cpu"), packed_dir="unused").run(resume=resume)
        return ckpt.load(ckpt.latest(tmp_path / out / "whitebox/checkpoints"))

    whole = run("a", "none")
    (tmp_path / "b/whitebox/checkpoints").mkdir(parents=True)
    (tmp_path / "b/whitebox/checkpoints/step-00000002.pt").write_bytes(
        (tmp_path / "a/whitebox/checkpoints/step-00000002.pt").read_bytes())
    resumed = run("b", "auto")
    assert whole["step"] == resumed["step"] == 4
    assert "shift_rng" in resumed["extra"]
    for net, sd in whole["nets"].items():
        assert all(torch.equal(v, resumed["nets"][net][k]) for k, v in sd.items()), net


# ----------------------------------------------------------------------------- landmarks


def test_landmark_weight_without_landmarker_run_is_a_clear_error(tmp_path):
    with pytest.raises(ToonlabError) as err:
        wb.build(tiny(loss={"landmark": 1.0, "landmarker_run": str(tmp_path / "no_landmarker")}), cpu_ctx())
    assert "landmarker" in str(err.value) and str(tmp_path / "no_landmarker") in str(err.value)


def test_landmark_loss_hook_with_a_landmarker_run(tmp_path):
    """A (random) landmarker checkpoint: the landmark term is computed, reaches G, and the
    grid gets a landmarks heatmap row."""
    from toonlab.models.landmarker.model import HeatmapNet

    torch.manual_seed(0)
    net = HeatmapNet(ch=4, n_blocks=0, stride=4)
    ckpt.save(tmp_path / "lm/checkpoints/step-00000001.pt", {
        "family": "landmarker", "step": 1, "nets": {"net": net.state_dict()},
        "config": {"params": {"model": {"ch": 4, "n_blocks": 0, "stride": 4, "sigma": 1.5}}}})
    zero = {k: 0.0 for k in TERMS}
    recipe = wb.build(tiny(loss={**zero, "landmark": 10.0, "landmarker_run": str(tmp_path / "lm")}), cpu_ctx())
    assert recipe.grid_rows == [["photo", "output", "surface", "structure", "texture", "landmarks"]]
    assert not any(p.requires_grad for p in recipe.landmarker.parameters())
    x = to_tensor(noisy_photos(np.random.default_rng(2), 2))
    before = [p.detach().clone() for p in recipe.nets["G"].parameters()]
    losses = recipe.train_step({"photo": x, "cartoon": x}, 0)
    assert torch.isfinite(losses["landmark"]) and losses["landmark"].item() > 0
    assert losses["G_total"].item() == pytest.approx(losses["landmark"].item())
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, recipe.nets["G"].parameters()))
    images = recipe.sample({"photo": x, "cartoon": x})
    hm = images["landmarks"]
    assert hm.shape == (2, 1, 32, 32) and hm.min() >= 0 and hm.max() <= 1 and hm.max() > 0.5
