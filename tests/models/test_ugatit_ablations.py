"""U-GAT-IT ablation switches (Kim et al. 2020, section 4 and its ablation table):
`ugatit.model.norm` (the decoder residual blocks' normalisation), `cam_g` / `cam_d`
(attention modules built or not), the named variants and sets in params.yaml, and a few
training steps of every variant through the Trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError
from snakemake.utils import update_config
from test_ugatit import batch, cpu_ctx, make_trainer, tiny_params

from conftest import REPO, blobs, invert, write_folder
from toonlab import registry
from toonlab.ablations import AblationsParams, variant_params
from toonlab.models.common import count_params
from toonlab.models.ugatit.model import build, sample_grid_rows
from toonlab.models.ugatit.nets import LIN, AdaIN, AdaLIN, GroupNormF32, UGATITDiscriminator, UGATITGenerator
from toonlab.models.ugatit.params import UGATITParams
from toonlab.models.ugatit.presets import PRESETS
from toonlab.params import load_params
from toonlab.train import checkpoint as ckpt
from toonlab.train.recipe import Context

pytestmark = pytest.mark.usefixtures("one_thread")

PAPER = ["ugatit_adalin", "ugatit_in", "ugatit_ln", "ugatit_adain", "ugatit_gn", "ugatit_no_cam",
         "ugatit_no_g_cam", "ugatit_no_d_cam"]
SWITCHES = {   # variant -> (norm, cam_g, cam_d)
    "ugatit_adalin": ("adalin", True, True), "ugatit_in": ("in", True, True), "ugatit_ln": ("ln", True, True),
    "ugatit_adain": ("adain", True, True), "ugatit_gn": ("gn", True, True),
    "ugatit_no_cam": ("adalin", False, False), "ugatit_no_g_cam": ("adalin", False, True),
    "ugatit_no_d_cam": ("adalin", True, False)}

# ----------------------------------------------------------------------------- the counts
# The reference (light, ch 64, 4 blocks, D 7 / 5 layers) and what each switch drops. The
# decoder is C = 4 x 64 = 256 wide, with 4 blocks x 2 = 8 normalisation layers.
G_REF, DG_REF, DL_REF = 10_589_888, 53_130_176, 3_290_560
RHO = 8 * 256                               # AdaLIN's rho per layer: 2,048 (AdaIN has none)
MLP = 2 * 256 * 256 + 2 * 256 * 256         # FC (two bias-free 256 x 256) + gamma + beta: 262,144
AFFINE = 8 * 2 * 256                        # IN / LN / GN: learned per-channel gamma and beta: 4,096
G_CAM = 256 + 256 + 2 * 256 * 256 + 256     # gap_fc, gmp_fc (bias-free 256 -> 1), conv1x1 512 -> 256: 131,840
DG_CAM = 2048 + 2048 + 2 * 2048 * 2048 + 2048   # global D, 64 x 2**5 = 2,048 channels: 8,394,752
DL_CAM = 512 + 512 + 2 * 512 * 512 + 512        # local D, 64 x 2**3 = 512 channels: 525,824
G_STATIC = G_REF - RHO - MLP + AFFINE
COUNTS = {   # variant -> (G, global D, local D)
    "ugatit_adalin": (10_589_888, 53_130_176, 3_290_560),
    "ugatit_in": (10_329_792, 53_130_176, 3_290_560),
    "ugatit_ln": (10_329_792, 53_130_176, 3_290_560),
    "ugatit_gn": (10_329_792, 53_130_176, 3_290_560),
    "ugatit_adain": (10_587_840, 53_130_176, 3_290_560),
    "ugatit_no_cam": (10_458_048, 44_735_424, 2_764_736),
    "ugatit_no_g_cam": (10_458_048, 53_130_176, 3_290_560),
    "ugatit_no_d_cam": (10_589_888, 44_735_424, 2_764_736),
}


def test_expected_counts_follow_from_the_dropped_modules():
    assert (RHO, MLP, AFFINE, G_CAM, DG_CAM, DL_CAM) == (2_048, 262_144, 4_096, 131_840, 8_394_752, 525_824)
    assert COUNTS["ugatit_adalin"] == (G_REF, DG_REF, DL_REF)
    assert COUNTS["ugatit_in"][0] == COUNTS["ugatit_ln"][0] == COUNTS["ugatit_gn"][0] == G_STATIC
    assert COUNTS["ugatit_adain"][0] == G_REF - RHO
    assert COUNTS["ugatit_no_g_cam"][0] == G_REF - G_CAM
    assert COUNTS["ugatit_no_d_cam"][1:] == (DG_REF - DG_CAM, DL_REF - DL_CAM)
    assert COUNTS["ugatit_no_cam"] == (G_REF - G_CAM, DG_REF - DG_CAM, DL_REF - DL_CAM)


@pytest.fixture(scope="module")
def repo_params():
    return load_params(REPO / "params.yaml")


@pytest.mark.parametrize("name", PAPER)
def test_variant_parameter_counts_at_reference_sizes(repo_params, name):
    """Each named variant over the reference preset, built as training builds it (on the
    meta device): the counts drop by exactly the modules the switch removes."""
    reference = UGATITParams.model_validate(PRESETS["reference"], strict=True)
    spec = repo_params.ablations.variants[name]
    params = repo_params.model_copy(update={"ugatit": reference})
    _, section = variant_params(params, name)
    assert (section.model.norm, section.model.cam_g, section.model.cam_d) == SWITCHES[name]
    assert spec.family == "ugatit" and section.model.ch == 64 and section.data.crop_px == 256
    ctx = Context(device=torch.device("meta"), amp_dtype=None, channels_last=False, total_steps=10)
    nets = registry.get("ugatit").build(section, ctx).nets
    counts = {k: count_params(v) for k, v in nets.items()}
    g, dg, dl = COUNTS[name]
    assert counts == {"G_A": g, "G_B": g, "D_GA": dg, "D_GB": dg, "D_LA": dl, "D_LB": dl}


def test_switches_drop_modules_and_keep_the_reference_keys():
    # The reference's names (znxlwm/UGATIT-pytorch) for the defaults, in its order.
    ref_g = ["DownBlock.1.weight", "DownBlock.5.weight", "DownBlock.9.weight", "DownBlock.12.conv_block.1.weight",
             "DownBlock.12.conv_block.5.weight", "gap_fc.weight", "gmp_fc.weight", "conv1x1.weight", "conv1x1.bias",
             "FC.0.weight", "FC.2.weight", "gamma.weight", "beta.weight", "UpBlock1_1.conv1.weight",
             "UpBlock1_1.norm1.rho", "UpBlock1_1.conv2.weight", "UpBlock1_1.norm2.rho", "UpBlock2.2.weight",
             "UpBlock2.3.rho", "UpBlock2.3.gamma", "UpBlock2.3.beta", "UpBlock2.7.weight", "UpBlock2.8.rho",
             "UpBlock2.8.gamma", "UpBlock2.8.beta", "UpBlock2.11.weight"]
    ref_d = ["gap_fc.weight_orig", "gap_fc.weight_u", "gap_fc.weight_v", "gmp_fc.weight_orig", "gmp_fc.weight_u",
             "gmp_fc.weight_v", "conv1x1.weight", "conv1x1.bias", "conv.weight_orig", "conv.weight_u",
             "conv.weight_v", "model.1.bias", "model.1.weight_orig", "model.1.weight_u", "model.1.weight_v",
             "model.4.bias", "model.4.weight_orig", "model.4.weight_u", "model.4.weight_v"]
    assert list(UGATITGenerator(ngf=8, n_blocks=1, img_size=32).state_dict()) == ref_g
    assert list(UGATITGenerator(ngf=8, n_blocks=1, img_size=32, norm="adalin", cam=True).state_dict()) == ref_g
    assert list(UGATITDiscriminator(ndf=8, n_layers=3).state_dict()) == ref_d
    # The defaults give the same weights and outputs as the explicit switches (same seed).
    x = batch(n=2)["A"]
    torch.manual_seed(3)
    a = UGATITGenerator(ngf=8, n_blocks=1, img_size=32)
    torch.manual_seed(3)
    b = UGATITGenerator(ngf=8, n_blocks=1, img_size=32, norm="adalin", cam=True)
    with torch.no_grad():
        assert all(torch.equal(u, v) for u, v in zip(a(x), b(x)))

    cam_keys = {"gap_fc.weight", "gmp_fc.weight", "conv1x1.weight", "conv1x1.bias"}
    mlp_keys = {"FC.0.weight", "FC.2.weight", "gamma.weight", "beta.weight"}
    no_cam = set(UGATITGenerator(ngf=8, n_blocks=1, img_size=32, cam=False).state_dict())
    assert no_cam == set(ref_g) - cam_keys
    adain = set(UGATITGenerator(ngf=8, n_blocks=1, img_size=32, norm="adain").state_dict())
    assert adain == set(ref_g) - {"UpBlock1_1.norm1.rho", "UpBlock1_1.norm2.rho"}
    for norm in ("in", "ln", "gn"):
        g = UGATITGenerator(ngf=8, n_blocks=1, img_size=32, norm=norm)
        keys = set(g.state_dict())
        assert keys == (set(ref_g) - mlp_keys - {"UpBlock1_1.norm1.rho", "UpBlock1_1.norm2.rho"}
                        | {f"UpBlock1_1.norm{i}.{p}" for i in (1, 2) for p in ("weight", "bias")}), norm
        assert len([m for m in g.modules() if isinstance(m, LIN)]) == 2   # up-sampling keeps LIN
        groups = {m.num_groups for m in g.modules() if isinstance(m, GroupNormF32)}
        assert groups == {"in": {32}, "ln": {1}, "gn": {32}}[norm]   # C = 32: 32 groups of 1 (GN: gcd(32, C))
    assert {m.num_groups for m in UGATITGenerator(ngf=64, n_blocks=1, norm="gn").modules()
            if isinstance(m, GroupNormF32)} == {32}
    d = set(UGATITDiscriminator(ndf=8, n_layers=3, cam=False).state_dict())
    assert d == set(ref_d) - {k for k in ref_d if k.startswith(("gap_fc.", "gmp_fc.", "conv1x1."))}
    with pytest.raises(ValueError, match="unknown norm 'bn'"):
        UGATITGenerator(ngf=8, n_blocks=1, img_size=32, norm="bn")


def test_norm_layers():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 6) * 3 + 1
    gamma, beta = torch.randn(2, 8), torch.randn(2, 8)
    ada = AdaLIN(8)
    with torch.no_grad():
        ada.rho.fill_(1.0)
        torch.testing.assert_close(AdaIN(8)(x, gamma, beta), ada(x, gamma, beta))   # AdaLIN at rho 1
    # Static ones: the usual definitions (biased variance), gamma 1 / beta 0 at the start.
    for groups, dims in ((8, (2, 3)), (1, (1, 2, 3))):
        ref = (x - x.mean(dims, keepdim=True)) / torch.sqrt(x.var(dims, keepdim=True, unbiased=False) + 1e-5)
        torch.testing.assert_close(GroupNormF32(groups, 8)(x), ref, rtol=1e-4, atol=1e-5)
    # Computed in float32 under bf16 autocast, returned in the input's dtype.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = GroupNormF32(4, 8)(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), GroupNormF32(4, 8)(x), rtol=0.02, atol=0.02)


# ----------------------------------------------------------------------------- params


def test_params_switches_and_validation():
    m = UGATITParams().model
    assert (m.norm, m.cam_g, m.cam_d) == ("adalin", True, True)
    assert all((p["model"]["norm"], p["model"]["cam_g"], p["model"]["cam_d"]) == ("adalin", True, True)
               for p in PRESETS.values())
    for bad in ({"model": {"norm": "bn"}}, {"model": {"cam_g": "no"}},
                {"model": {"variant": "soft_adalin", "norm": "in"}},
                {"model": {"variant": "soft_adalin", "cam_g": False}}):
        with pytest.raises(ValidationError):
            UGATITParams.model_validate(bad, strict=True)
    UGATITParams.model_validate({"model": {"variant": "soft_adalin", "cam_d": False}}, strict=True)


def test_named_variants_and_sets_in_params_yaml(repo_params):
    ab = repo_params.ablations
    assert ab.set == "" and "ugatit_adalin" not in ab.selected()   # the demo runs its own short list
    assert ab.sets["ugatit_ablation"] == PAPER
    assert ab.sets["ugatit_vs_cyclegan"] == ["ugatit_adalin", "cyclegan_base"]
    assert ab.sets["ugatit_paper"] == [*PAPER, "cyclegan_base"]
    assert ab.variants["cyclegan_base"].family == "cyclegan" and ab.variants["cyclegan_base"].overrides == {}
    for name in PAPER:
        _, section = variant_params(repo_params, name)
        assert (section.model.norm, section.model.cam_g, section.model.cam_d) == SWITCHES[name]
        # everything else is the ugatit section's: the variants differ in the switches only
        assert section.model_dump(exclude={"model"}) == repo_params.ugatit.model_dump(exclude={"model"})
    # The DVC experiment of a variant: `dvc exp run --queue -S ...` over train_ugatit.
    assert ab.variants["ugatit_no_d_cam"].dvc_set_args() == [
        'ugatit.model.variant="ugatit"', 'ugatit.model.norm="adalin"', "ugatit.model.cam_g=True",
        "ugatit.model.cam_d=False"]
    assert [yaml.safe_load(a.split("=", 1)[1]) for a in ab.variants["ugatit_in"].dvc_set_args()] == \
        ["ugatit", "in", True, True]

    selected = ab.model_copy(update={"set": "ugatit_paper"})
    assert selected.selected() == [*PAPER, "cyclegan_base"]
    raw = ab.model_dump(mode="json")
    for bad, msg in (({"set": "paper"}, "not in sets"), ({"sets": {"x": ["nope"]}}, "unknown variants"),
                     ({"sets": {"x": []}}, "empty")):
        with pytest.raises(ValidationError, match=msg):
            AblationsParams.model_validate({**raw, **bad})


def test_snakemake_config_selects_a_set(repo_params, tmp_path, monkeypatch):
    """`snakemake -c2 ablations --config ablations='{set: ugatit_paper}'`: Snakemake merges
    the override into params.yaml's values; the `ablations` rule asks for the set's
    metrics (`TL.params.ablations.selected()`)."""
    from toonlab.snake import prepare

    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load((REPO / "params.yaml").read_text())
    update_config(config, {"ablations": {"set": "ugatit_paper"}})
    tl = prepare(config, params_path=str(REPO / "params.yaml"))
    assert tl.params.ablations.selected() == [*PAPER, "cyclegan_base"]
    assert tl.params.ablations.variants == repo_params.ablations.variants
    update_config(config, {"ablations": {"set": "", "run": ["ugatit_in", "ugatit_gn"]}})
    assert prepare(config, params_path=str(REPO / "params.yaml")).params.ablations.selected() == \
        ["ugatit_in", "ugatit_gn"]


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("name", ["ugatit_in", "ugatit_no_cam"])
def test_train_step_losses_and_samples(name):
    norm, cam_g, cam_d = SWITCHES[name]
    torch.manual_seed(0)
    recipe = build(tiny_params(model={"norm": norm, "cam_g": cam_g, "cam_d": cam_d}), cpu_ctx())
    before = {k: [p.detach().clone() for p in n.parameters()] for k, n in recipe.nets.items()}
    losses = recipe.train_step(batch(), step=0)
    g_terms = {"G_adv_A", "G_adv_B", "cycle_A", "cycle_B", "identity_A", "identity_B"}
    assert set(losses) == g_terms | {"G_total", "D_A", "D_B", "D_total"} | ({"G_cam_A", "G_cam_B"} if cam_g else set())
    assert all(torch.isfinite(v) for v in losses.values())
    for k, net in recipe.nets.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[k], net.parameters())), k
    samples = recipe.sample(batch(n=1))
    assert recipe.grid_rows == sample_grid_rows(cam_g, cam_d)
    assert set(samples) == {n for row in recipe.grid_rows for n in row}
    assert ("cam_G_A" in samples) == cam_g and ("cam_DG_B" in samples) == cam_d
    # With the D CAM off the discriminator's loss is its outputs' LSGAN alone.
    b = batch()
    real, fake = b["A"], b["B"]
    recipe.nets["D_GA"].eval()   # spectral norm: no power iteration between the two calls
    with torch.no_grad():
        out, cam, _ = recipe.nets["D_GA"](torch.cat([real, fake]))
        expected = recipe.lsgan(out[:2], True) + recipe.lsgan(out[2:], False)
        if cam_d:
            expected = expected + recipe.lsgan(cam[:2], True) + recipe.lsgan(cam[2:], False)
        torch.testing.assert_close(recipe._d_terms("D_GA", real, fake), expected)
    assert (cam is None) == (not cam_d)


@pytest.mark.parametrize("name", PAPER)
def test_variants_train_through_the_trainer(repo_params, tmp_path, name):
    """Every named variant, from params.yaml at tiny sizes, trains a few steps through the
    Trainer: checkpoints with exactly the built modules, and the sample grid."""
    tiny = tiny_params(optim={"steps": 2}, data={"load_px": 36})
    _, section = variant_params(repo_params.model_copy(update={"ugatit": tiny}), name)
    norm, cam_g, cam_d = SWITCHES[name]
    rng = np.random.default_rng(0)
    write_folder(tmp_path / "A", blobs(rng, 4, 40))
    write_folder(tmp_path / "B", blobs(rng, 4, 40, invert))
    metrics = make_trainer(tmp_path, section).run(resume="none")
    assert ("G_cam_A" in metrics) == cam_g and all(np.isfinite(v) for v in metrics.values())
    state = ckpt.load(ckpt.latest(tmp_path / "models/ugatit/checkpoints"))
    g_keys, d_keys = set(state["nets"]["G_A"]), set(state["nets"]["D_GA"])
    assert ("gap_fc.weight" in g_keys) == cam_g and ("gap_fc.weight_orig" in d_keys) == cam_d
    assert ("FC.0.weight" in g_keys) == (norm in ("adalin", "adain"))
    assert ("UpBlock1_1.norm1.rho" in g_keys) == (norm == "adalin")
    assert (tmp_path / "models/ugatit/samples/latest.png").is_file()
    # The checkpoint loads into the family's inference networks built from the same section.
    inf = registry.get("ugatit").inference(section, state["nets"])
    with torch.no_grad():
        assert inf.forward(batch(n=1)["A"]).shape == (1, 3, 32, 32)


def test_report_puts_a_cross_family_set_in_one_table(repo_params, tmp_path):
    """ugatit_vs_cyclegan: both variants in one table (each also in its family's table)."""
    import json

    from toonlab.eval.report import build_report

    p = repo_params
    params = p.model_copy(update={
        "train": p.train.model_copy(update={"out_dir": str(tmp_path / "models")}),
        "evaluate": p.evaluate.model_copy(update={"metrics_dir": str(tmp_path / "metrics"),
                                                  "out_dir": str(tmp_path / "eval")}),
        "curate": p.curate.model_copy(update={"report_dir": str(tmp_path / "curation")}),
        "report": p.report.model_copy(update={"out": str(tmp_path / "index.html")})})
    metrics = tmp_path / "metrics/ablations"
    metrics.mkdir(parents=True)
    for name, family, kid in (("ugatit_adalin", "ugatit", 11.6), ("cyclegan_base", "cyclegan", 13.1),
                              ("ugatit_in", "ugatit", 13.6)):
        (metrics / f"{name}.json").write_text(json.dumps({"family": family, "step": 2, "kid_x100": kid}))
    text = build_report(params).read_text()
    assert "<h3>set ugatit_vs_cyclegan</h3>" in text and "<h3>set ugatit_paper</h3>" in text
    assert "<h3>set ugatit_ablation</h3>" not in text   # one family: its own table has it
    table = text.split("<h3>set ugatit_vs_cyclegan</h3>")[1].split("</table>")[0]
    assert "ugatit_adalin" in table and "cyclegan_base" in table and "ugatit_in" not in table
