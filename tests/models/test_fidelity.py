"""Issue 17, section 4: the reference details the audit found, each an option whose default
keeps today's behaviour and which the family's reference preset switches on."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from conftest import REPO
from toonlab import presets
from toonlab.errors import UsageError
from toonlab.faces.pack import array_name
from toonlab.models.common import unpaired_spec
from toonlab.models.data_params import UnpairedDataParams, composite_rgb
from toonlab.params import load_params
from toonlab.train.data import Augment, ImageSource, UnpairedDataset
from toonlab.train.recipe import Context, DataSpec

CPU = Context(device=torch.device("cpu"), amp_dtype=None, channels_last=False, total_steps=10)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """params.yaml with every family on its reference preset, and ugatit on soft_adalin."""
    folder = tmp_path_factory.mktemp("fidelity")
    ref, soft = folder / "reference.yaml", folder / "soft.yaml"
    shutil.copy(REPO / "params.yaml", ref)
    presets.apply_preset(ref, ["all"], "reference")
    shutil.copy(ref, soft)
    presets.apply_preset(soft, ["ugatit"], "soft_adalin")
    return load_params(ref), load_params(soft)


# ----------------------------------------------------------------------------- 1. DCGAN init


def test_dcgan_init_normal_by_default_and_pytorch_default_in_the_reference(reference):
    from toonlab.models.dcgan.model import build
    from toonlab.models.dcgan.params import DCGANParams

    assert DCGANParams().model.init == "normal"
    ref = reference[0].dcgan
    assert (ref.model.init, ref.data.flip) == ("default", False)

    def nets(init: str) -> dict[str, nn.Module]:
        torch.manual_seed(0)
        return build(DCGANParams.model_validate({"model": {"ngf": 8, "ndf": 8, "init": init}}), CPU).nets

    normal, default = nets("normal"), nets("default")
    bn_n = normal["G"].main[1].weight
    bn_d = default["G"].main[1].weight
    assert torch.equal(bn_d, torch.ones_like(bn_d))              # PyTorch: batch-norm weight 1
    assert 0.005 < bn_n.std() < 0.05 and abs(bn_n.mean() - 1) < 0.01   # N(1, 0.02)
    conv_n, conv_d = normal["D"].main[0].weight, default["D"].main[0].weight
    assert abs(conv_n.std().item() - 0.02) < 0.002
    bound = 1 / np.sqrt(conv_d[0].numel())                       # Kaiming-uniform(a=sqrt(5))
    assert conv_d.abs().max() <= bound and conv_d.std() > 0.05
    assert set(normal["G"].state_dict()) == set(default["G"].state_dict())


# ----------------------------------------------------------------------------- 2. resize


def test_bicubic_and_bilinear_resize_differ():
    import cv2

    rgb = np.random.default_rng(0).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    out = {}
    for mode in ("bilinear", "bicubic"):
        spec = DataSpec(domains={"A": "photo"}, crop_px=72, batch_size=1, load_px=72, flip=False, resize=mode)
        out[mode], _ = Augment(spec)(rgb, None, seed=0)
    assert not np.array_equal(out["bilinear"], out["bicubic"])
    assert np.array_equal(out["bicubic"], cv2.resize(rgb, (72, 72), interpolation=cv2.INTER_CUBIC))
    assert np.array_equal(out["bilinear"], cv2.resize(rgb, (72, 72), interpolation=cv2.INTER_LINEAR))


def test_load_size_rules_and_reference_presets(reference):
    assert UnpairedDataParams(crop_px=128).resolved_load_px == 143
    assert UnpairedDataParams(crop_px=128, load_auto="plus30").resolved_load_px == 158
    assert UnpairedDataParams(crop_px=128, load_px=150, load_auto="plus30").resolved_load_px == 150
    ref, soft = reference
    assert unpaired_spec(UnpairedDataParams()).resize == "bilinear"
    assert (unpaired_spec(ref.cyclegan.data).resize, unpaired_spec(ref.cyclegan.data).load_px) == ("bicubic", 286)
    for u in (ref.ugatit, soft.ugatit):
        assert u.data.load_auto == "plus30" and u.data.resize == "bilinear"
        assert unpaired_spec(u.data).load_px == 286
        assert unpaired_spec(u.data.model_copy(update={"crop_px": 128})).load_px == 158


# ----------------------------------------------------------------------------- 4. composite


def _packed(tmp_path, rgb, alpha):
    folder = tmp_path / "photo"
    folder.mkdir()
    px = rgb.shape[1]
    np.save(folder / array_name("train", px, "rgb"), rgb)
    np.save(folder / array_name("train", px, "alpha"), alpha)
    np.save(folder / array_name("train", px, "five"), np.zeros((len(rgb), 5, 2), np.float32))
    return ImageSource.packed(tmp_path, "photo", "train", px)


def test_composite_onto_white_with_the_packed_matte(tmp_path, reference):
    rgb = np.full((2, 8, 8, 3), 40, np.uint8)
    alpha = np.zeros((2, 8, 8), np.uint8)
    alpha[:, :, :4] = 255   # left half face, right half background
    alpha[:, 0, 0] = 128
    source = _packed(tmp_path, rgb, alpha)
    assert source.alpha is not None
    spec = DataSpec(domains={"A": "photo"}, crop_px=8, batch_size=1, load_px=8, flip=False,
                    composite=composite_rgb("white"))
    item = UnpairedDataset({"A": source}, spec, seed=0)[0]["A"]
    px = item.numpy().astype(int)      # uint8 from the workers (made float on the device)
    assert (px[:, :, 4:] == 255).all() and (px[:, 1:, :4] == 40).all()
    assert (px[:, 0, 0] == round(40 * 128 / 255 + 255 * 127 / 255)).all()
    # Off (the default): the packed pixels as they are.
    plain = UnpairedDataset({"A": source}, DataSpec(domains={"A": "photo"}, crop_px=8, batch_size=1, load_px=8,
                                                   flip=False), seed=0)[0]["A"]
    assert plain.dtype == torch.uint8 and (plain.numpy() == 40).all()
    # Folders have no matte: a clear error.
    with pytest.raises(UsageError, match="composite"):
        UnpairedDataset({"A": ImageSource(None, None, [tmp_path / "x.png"])}, spec, seed=0)
    ref, soft = reference
    assert ref.ugatit.data.composite == "" and unpaired_spec(soft.ugatit.data).composite == (255, 255, 255)
    assert composite_rgb("#0a0B0c") == (10, 11, 12)
    with pytest.raises(ValueError):
        UnpairedDataParams(composite="ivory")


# ----------------------------------------------------------------------------- 5. Caffe VGG input


def test_caffe_vgg_input_conversion(reference):
    from toonlab.models.whitebox.model import CAFFE_MEAN_BGR, VGG19Features

    assert reference[0].whitebox.model.vgg_input == "caffe"
    tv, cf = VGG19Features("random"), VGG19Features("random", "caffe")
    assert tv.input == "torchvision" and list(tv.state_dict()) == list(cf.state_dict())
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    want = (x + 1) * 127.5
    want = want[:, [2, 1, 0]] - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    torch.testing.assert_close(cf.normalize(x), want)
    # torchvision: RGB, ImageNet mean/std
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(tv.normalize(x), ((x + 1) / 2 - mean) / std)
    # Same (bias-free random) weights: caffe features are ~57x larger.
    cf.load_state_dict(tv.state_dict())
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ratio = (cf(img).abs().mean() / tv(img).abs().mean()).item()
    assert 40 < ratio < 75


# ----------------------------------------------------------------------------- 3. CycleGAN perceptual


def test_cyclegan_perceptual_loss_is_both_directions():
    """As the docstring, params comment and README say: weight x (L1 of VGG features of
    G_A(A) vs A + G_B(B) vs B)."""
    import copy

    from toonlab.models.cyclegan.model import build
    from toonlab.models.cyclegan.params import CycleGANParams

    torch.manual_seed(0)
    params = CycleGANParams.model_validate(
        {"model": {"ngf": 8, "ndf": 8, "n_blocks": 1}, "data": {"crop_px": 32, "batch_size": 2},
         "loss": {"perceptual_weight": 2.0, "perceptual_weights": "random", "perceptual_layer": "relu1_2",
                  "identity_weight": 0.0}}, strict=True)
    recipe = build(params, CPU)
    G_A, G_B, vgg = (copy.deepcopy(recipe.nets[k]) for k in ("G_A", "G_B", "vgg"))
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    got = recipe.train_step({"A": a, "B": b}, step=0)["perceptual"]
    with torch.no_grad():
        want = 2.0 * (vgg(G_A(a), a) + vgg(G_B(b), b))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
