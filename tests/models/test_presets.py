"""Presets (`toonlab preset`): each family's reference preset gives the reference
implementation's parameter counts and key hyperparameters (/work/shared/reference-facts.md),
the switch rewrites only its keys of params.yaml with every comment kept, and `demo`
restores the committed file byte for byte."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO
from toonlab import pipeline, presets, registry
from toonlab.cli import main
from toonlab.errors import ParamsError, UsageError
from toonlab.models.common import count_params
from toonlab.params import load_params
from toonlab.train.recipe import Context
from toonlab.util.keys import find

PARAMS = REPO / "params.yaml"

# The reference facts: parameter counts of the trainable networks, by the recipes' names.
COUNTS = {
    ("cyclegan", "reference"): {"G_A": 11_378_179, "G_B": 11_378_179, "D_A": 2_764_737, "D_B": 2_764_737},
    ("dcgan", "reference"): {"G": 3_578_432, "D": 2_767_296},
    ("ugatit", "reference"): {"G_A": 10_589_888, "G_B": 10_589_888, "D_GA": 53_130_176, "D_GB": 53_130_176,
                              "D_LA": 3_290_560, "D_LB": 3_290_560},
    ("ugatit", "reference_full"): {"G_A": 278_959_808, "D_GA": 53_130_176, "D_LA": 3_290_560},
    ("ugatit", "soft_adalin"): {"G_A": 3_831_079, "D_GA": 13_294_048, "D_LA": 826_080},
    ("whitebox_pretrain", "reference"): {"G": 1_467_075},
    ("whitebox", "reference"): {"G": 1_467_075, "D_surface": 287_137},
}


def switched(tmp_path: Path, preset: str, names: list[str]) -> tuple[Path, list[presets.Change]]:
    path = tmp_path / "params.yaml"
    if not path.exists():
        shutil.copy(PARAMS, path)
    return path, presets.apply_preset(path, names, preset)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The repository's params.yaml with every family switched to its reference preset."""
    path, changes = switched(tmp_path_factory.mktemp("reference"), "reference", ["all"])
    assert changes
    return load_params(path)


def build_on_meta(name: str, section):
    """The family's recipe built on the meta device (no memory, no weights files): the
    networks exactly as training builds them from the section."""
    if name == "whitebox":   # no pretrain run, ImageNet file or segmentation workers here
        section = section.model_copy(update={
            "pretrain": section.pretrain.model_copy(update={"run_dir": ""}),
            "model": section.model.model_copy(update={"vgg_weights": "random"}),
            "structure": section.structure.model_copy(update={"workers": 0})})
    if name == "ugatit" and section.loss.faceid_weight:   # the face-ID net needs its weights file
        section = section.model_copy(update={"loss": section.loss.model_copy(update={"faceid_weight": 0.0})})
    ctx = Context(device=torch.device("meta"), amp_dtype=None, channels_last=False, total_steps=10)
    fam = registry.get(name)
    recipe = fam.build(section, ctx)
    try:
        return {k: count_params(v) for k, v in recipe.nets.items()}
    finally:
        getattr(recipe, "close", lambda: None)()


# ----------------------------------------------------------------------------- the reference facts


@pytest.mark.parametrize("name", [family for family, preset in COUNTS if preset == "reference"])
def test_reference_preset_parameter_counts(reference, name):
    fam = registry.get(name)
    counts = build_on_meta(name, fam.section_of(reference))
    assert {k: counts[k] for k in COUNTS[(name, "reference")]} == COUNTS[(name, "reference")]


@pytest.mark.parametrize("preset", ["reference_full", "soft_adalin"])
def test_ugatit_variant_presets_parameter_counts(tmp_path, preset):
    path, _ = switched(tmp_path, preset, ["ugatit"])
    counts = build_on_meta("ugatit", load_params(path).ugatit)
    assert {k: counts[k] for k in COUNTS[("ugatit", preset)]} == COUNTS[("ugatit", preset)]


def test_reference_preset_hyperparameters(reference):
    from toonlab.models.ugatit.model import resolve_decay_from

    c = reference.cyclegan
    assert (c.model.ngf, c.model.ndf, c.model.n_blocks, c.model.n_layers_d) == (64, 64, 9, 3)
    assert (c.loss.gan_mode, c.loss.cycle_weight, c.loss.identity_weight * c.loss.cycle_weight) == ("lsgan", 10, 5)
    assert c.loss.perceptual_weight == 0
    assert (c.optim.lr, c.optim.beta1, c.optim.beta2, c.optim.pool_size) == (2e-4, 0.5, 0.999, 50)
    # 100 epochs constant + 100 decaying, an epoch = 3,400 steps (selfie2anime, batch 1).
    assert (c.optim.steps_constant, c.optim.steps_decay) == (340_000, 340_000)
    assert (c.data.crop_px, c.data.resolved_load_px, c.data.batch_size, c.data.flip) == (256, 286, 1, True)

    d = reference.dcgan
    assert (d.model.nz, d.model.ngf, d.model.ndf) == (100, 64, 64)
    assert (d.optim.lr_g, d.optim.lr_d, d.optim.beta1, d.optim.beta2) == (2e-4, 2e-4, 0.5, 0.999)
    assert (d.optim.d_every, d.optim.g_every) == (1, 5)
    assert d.optim.steps == 200 * (50_000 // 256)   # 200 epochs of ~50,000 faces, last batch dropped
    assert (d.data.crop_px, d.data.batch_size, d.data.flip) == (96, 256, False)

    u = reference.ugatit
    assert (u.model.variant, u.model.light, u.model.ch, u.model.n_res) == ("ugatit", True, 64, 4)
    assert (u.model.n_dis_global, u.model.n_dis_local) == (7, 5)
    assert (u.loss.adv_weight, u.loss.cycle_weight, u.loss.identity_weight, u.loss.cam_weight) == (1, 10, 10, 1000)
    assert u.loss.faceid_weight == 0
    assert (u.optim.lr, u.optim.beta1, u.optim.beta2, u.optim.weight_decay) == (1e-4, 0.5, 0.999, 1e-4)
    assert u.optim.steps == 1_000_000
    assert resolve_decay_from(u.optim, registry.get("ugatit").total_steps(u)) == 500_000
    assert (u.data.crop_px, u.data.resolved_load_px, u.data.batch_size, u.data.flip) == (256, 286, 1, True)

    w = reference.whitebox
    assert (w.model.ch, w.model.n_res, w.model.d_ch, w.model.vgg_weights) == (32, 4, 32, "imagenet")
    assert (w.model.gf_r, w.model.gf_eps, w.model.gf_eps_test) == (1, 1e-2, 5e-3)
    lw = w.loss
    assert (lw.tv, lw.surface, lw.texture, lw.content, lw.structure, lw.landmark) == (1e4, 0.1, 1, 200, 200, 0)
    assert (lw.surface_r, lw.surface_eps) == (5, 0.2)
    assert (w.structure.method, w.structure.segments, w.structure.fill) == ("slic", 200, "mean")
    assert (w.optim.lr, w.optim.beta1, w.optim.beta2, w.optim.steps) == (2e-4, 0.5, 0.99, 100_000)
    assert (w.pretrain.steps, w.pretrain.lr) == (50_000, 2e-4)
    assert (w.data.crop_px, w.data.batch_size, w.data.flip) == (256, 16, False)
    assert registry.get("whitebox_pretrain").total_steps(w) == 50_000

    # The landmarker has no paper: its reference is its params class's full-size defaults.
    lm = reference.landmarker
    assert lm == type(lm)()


def test_soft_adalin_preset_hyperparameters(tmp_path):
    path, _ = switched(tmp_path, "soft_adalin", ["ugatit"])
    u = load_params(path).ugatit
    assert (u.model.variant, u.model.light, u.model.ch, u.model.n_res) == ("soft_adalin", True, 32, 4)
    assert (u.loss.adv_weight, u.loss.cycle_weight, u.loss.identity_weight, u.loss.cam_weight,
            u.loss.faceid_weight) == (1, 50, 10, 1000, 1)
    assert (u.optim.lr, u.optim.weight_decay, u.optim.steps, u.data.crop_px, u.data.batch_size) == \
        (1e-4, 1e-4, 1_000_000, 256, 1)


# ----------------------------------------------------------------------------- the presets themselves


def test_every_family_with_presets_has_demo_and_reference_over_the_same_keys():
    """Presets are optional (a family folder may have no presets.py); where a family has
    them, demo and reference set the same keys, and params.yaml holds demo (written there by
    `toonlab preset demo <family>`: the values are typed once, in presets.py)."""
    known = presets.sections()
    assert set(known) <= {f.params_section for f in registry.FAMILIES}
    assert set(known) == {f.params_section for f in registry.FAMILIES if f.part("presets") is not None}
    committed = yaml.safe_load(PARAMS.read_text())
    for section, module in known.items():
        assert {"demo", "reference"} <= set(module.PRESETS), section
        keys = {name: set(presets.flatten(values)) for name, values in module.PRESETS.items()}
        assert all(k == keys["demo"] for k in keys.values()), f"{section}: presets set different keys"
        assert set(module.ABOUT) == set(module.PRESETS)
        # Every key exists in the params class, and the demo preset is what params.yaml holds.
        cls = registry.sections()[section]
        cls.model_validate({k: dict(v) for k, v in module.PRESETS["reference"].items()}, strict=True)
        for path, value in presets.flatten(module.PRESETS["demo"]).items():
            found, current = find(committed[section], path)
            assert found and presets._same(current, value), f"{section}.{'.'.join(path)}"


def test_committed_params_are_the_demo_preset():
    params = load_params(PARAMS)
    assert {s: presets.matching(params, s)[0] for s in presets.sections()} == {s: "demo" for s in presets.sections()}


def test_preset_data_is_no_stage_code():
    """Editing a preset changes no training stage: only params.yaml values do."""
    for fam in registry.FAMILIES:
        assert not [f for f in pipeline.code_deps(f"train_{fam.name}") if f.endswith("presets.py")]


# ----------------------------------------------------------------------------- rewriting params.yaml


def test_switch_keeps_comments_and_demo_restores_the_file(tmp_path):
    original = PARAMS.read_bytes()
    path, changes = switched(tmp_path, "reference", ["all"])
    new = path.read_bytes()
    assert new != original
    old_lines, new_lines = original.decode().splitlines(), new.decode().splitlines()
    assert len(old_lines) == len(new_lines)
    changed = [(a, b) for a, b in zip(old_lines, new_lines) if a != b]
    assert len(changed) == len(changes)
    for a, b in zip(old_lines, new_lines):
        if "#" in a:   # every comment survives, word for word
            assert b.partition("#")[2] == a.partition("#")[2]
    for a, b in changed:   # only the value changed, on its own line
        assert a.split(":")[0] == b.split(":")[0]
    assert "    ngf: 64               # demo; the paper: 64" in new_lines
    assert "    steps: 1000000        # demo; the paper: 1000000" in new_lines
    load_params(path)
    # Round trips through the other presets, then back: the committed bytes.
    for preset in ("reference_full", "soft_adalin", "reference"):
        presets.apply_preset(path, ["ugatit"], preset)
    assert presets.apply_preset(path, ["all"], "demo")
    assert path.read_bytes() == original
    assert presets.apply_preset(path, ["all"], "demo") == []


def test_missing_keys_are_added_only_where_the_default_differs(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\nugatit:\n  model:\n    ch: 16   # small\n    n_dis_global: 5\n"
                    "    n_dis_local: 4\n  data:\n    crop_px: 64\n# next section\nserve:\n  port: 8000\n")
    changes = presets.apply_preset(path, ["ugatit"], "demo")
    assert [(c.key, c.added) for c in changes] == [("ugatit.model.n_res", True), ("ugatit.optim.steps", True)]
    text = path.read_text()
    assert "    ch: 16   # small\n" in text and "  optim:\n    steps: 150\n# next section\n" in text
    assert presets.matching(load_params(path), "ugatit")[0] == "demo"
    presets.apply_preset(path, ["ugatit"], "reference")
    assert "    ch: 64   # small\n" in path.read_text()
    assert presets.matching(load_params(path), "ugatit")[0] == "reference"


SWITCHES = [(section, name) for section, module in presets.sections().items() for name in module.PRESETS
            if name != "demo"]


@pytest.mark.parametrize(("section", "preset"), SWITCHES)
def test_a_switch_touches_only_its_keys_and_back_gives_the_committed_bytes(tmp_path, section, preset):
    original = PARAMS.read_bytes()
    path, changes = switched(tmp_path, preset, [section])
    assert changes and all(c.key.startswith(f"{section}.") and not c.added for c in changes)
    old_lines, new_lines = original.decode().splitlines(True), path.read_bytes().decode().splitlines(True)
    assert len(new_lines) == len(old_lines)
    changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
    assert len(changed) == len(changes)
    for i in changed:   # the key and its comment stay; the rest of the file is the committed bytes
        assert new_lines[i].split(":")[0] == old_lines[i].split(":")[0]
        assert new_lines[i].partition("#")[2] == old_lines[i].partition("#")[2]
    # A flow list wrapped over two lines (which ruamel would join) is kept as it was.
    assert ("    ugatit_paper: [ugatit_adalin, ugatit_in, ugatit_ln, ugatit_adain, ugatit_gn, ugatit_no_cam,\n"
            "                   ugatit_no_g_cam, ugatit_no_d_cam, cyclegan_base]\n") in "".join(new_lines)
    assert presets.matching(load_params(path), section)[0] == preset
    assert {c.key for c in presets.apply_preset(path, [section], "demo")} == {c.key for c in changes}
    assert path.read_bytes() == original


TRICKY = """# a header comment, then an explicit document start
---
seed: 0
ugatit:
    model:
        variant: 'ugatit'      # single-quoted
        ch: 16    #   odd   spacing
        n_res: 2
        n_dis_global: 5
        n_dis_local: 4
    # a comment line between two mappings
    optim: {steps: 150, lr: 0.0001}     # a flow mapping
    data:
        crop_px: 64
        load_auto: "scale"   # double-quoted
        composite: ''
        resize: bilinear       # """ + "a long comment, not to be wrapped " * 5 + """
evaluate:
    runs: [cyclegan, ugatit, whitebox,
           dcgan]   # a flow list over two lines
    metrics_dir: metrics
"""


def test_a_tricky_layout_round_trips_byte_for_byte(tmp_path):
    """Four-space indentation, CRLF line ends, quotes of both kinds, a flow mapping, a long
    comment and a wrapped flow list: all kept, and the switch back gives the bytes (which it
    cannot once keys missing from the file were added, as soft_adalin's loss weights are)."""
    path = tmp_path / "params.yaml"
    original = TRICKY.replace("\n", "\r\n").encode()
    path.write_bytes(original)
    changes = presets.apply_preset(path, ["ugatit"], "reference")
    assert {c.key for c in changes} == {"ugatit.model.ch", "ugatit.model.n_res", "ugatit.model.n_dis_global",
                                        "ugatit.model.n_dis_local", "ugatit.optim.steps", "ugatit.data.crop_px",
                                        "ugatit.data.load_auto"}
    new = path.read_bytes().decode()
    assert "\n" not in new.replace("\r\n", "")
    lines = new.split("\r\n")
    for line in ("        ch: 64    #   odd   spacing", "        n_dis_local: 5",
                 "    optim: {steps: 1000000, lr: 0.0001} # a flow mapping",
                 '        load_auto: "plus30"  # double-quoted', "        variant: 'ugatit'      # single-quoted",
                 TRICKY.splitlines()[16], "    runs: [cyclegan, ugatit, whitebox,"):
        assert line in lines
    assert presets.matching(load_params(path), "ugatit")[0] == "reference"
    presets.apply_preset(path, ["ugatit"], "demo")
    assert path.read_bytes() == original
    # Soft-AdaLIN: a string into single quotes, and a missing mapping added in the file's indentation.
    changes = presets.apply_preset(path, ["ugatit"], "soft_adalin")
    assert [c.key for c in changes if c.added] == ["ugatit.loss.cycle_weight", "ugatit.loss.faceid_weight"]
    new = path.read_bytes().decode()
    assert "        variant: 'soft_adalin' # single-quoted\r\n" in new
    assert "        composite: 'white'\r\n" in new
    assert "\r\n    loss:\r\n        cycle_weight: 50.0\r\n        faceid_weight: 1.0\r\nevaluate:\r\n" in new
    assert presets.matching(load_params(path), "ugatit")[0] == "soft_adalin"


def test_a_missing_section_goes_at_the_end_of_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    text = "seed: 0\nserve:\n  port: 8000   # a comment\n\n# the last comment"
    path.write_text(text)
    changes = presets.apply_preset(path, ["landmarker"], "demo")
    assert changes and all(c.added for c in changes)
    new = path.read_text()
    assert new.startswith(text + "\nlandmarker:\n  model:\n    ch: 16\n")
    assert presets.matching(load_params(path), "landmarker")[0] == "demo"


def test_a_duplicate_key_is_a_usage_error(tmp_path):
    """PyYAML reads the last of two equal keys, ruamel refuses them: the switch names the key."""
    path = tmp_path / "params.yaml"
    path.write_text("ugatit:\n  model:\n    ch: 16\n    ch: 32\n")
    with pytest.raises(UsageError, match='params.yaml: found duplicate key "ch" .*; remove one'):
        presets.apply_preset(path, ["ugatit"], "reference")
    assert path.read_text() == "ugatit:\n  model:\n    ch: 16\n    ch: 32\n"


def test_an_invalid_result_is_not_written(tmp_path):
    """An ablation variant that no longer fits the reference sizes: nothing is written."""
    data = PARAMS.read_text().replace("overrides: {model.light: false, model.variant: \"ugatit\"}",
                                      "overrides: {model.light: false, data.crop_px: 64}")
    path = tmp_path / "params.yaml"
    path.write_text(data)
    load_params(path)
    with pytest.raises(ParamsError, match=r"(?s)with the reference preset \(nothing written\):"
                       r".*ablations\.variants\.ugatit_full\.overrides: .*too deep for crop_px 64"):
        presets.apply_preset(path, ["ugatit"], "reference")
    assert path.read_text() == data


def test_unknown_family_or_preset_is_a_usage_error(tmp_path):
    path = tmp_path / "params.yaml"
    shutil.copy(PARAMS, path)
    with pytest.raises(UsageError, match="no presets for 'stylegan'; families with presets: cyclegan"):
        presets.apply_preset(path, ["stylegan"], "reference")
    with pytest.raises(UsageError, match="no preset 'paper' for ugatit; its presets: demo, reference"):
        presets.apply_preset(path, ["ugatit"], "paper")
    with pytest.raises(UsageError, match="no preset 'soft_adalin' for cyclegan"):
        presets.apply_preset(path, ["all"], "soft_adalin")
    assert path.read_bytes() == PARAMS.read_bytes()


# ----------------------------------------------------------------------------- the command line


def toonlab(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toonlab", *args], cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=120)


def test_cli_switch_status_and_errors(tmp_path):
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    proc = toonlab(tmp_path, "preset", "reference", "ugatit")
    assert proc.returncode == 0, proc.stderr
    assert "ugatit.model.ch: 16 -> 64" in proc.stdout and "ugatit.optim.steps: 150 -> 1000000" in proc.stdout
    assert "git commit" in proc.stderr
    proc = toonlab(tmp_path, "preset")
    assert proc.returncode == 0, proc.stderr
    assert "ugatit: reference\n" in proc.stdout and "cyclegan: demo\n" in proc.stdout
    for args, message in ((["preset", "reference", "stylegan"], "no presets for 'stylegan'"),
                          (["preset", "paper", "ugatit"], "no preset 'paper' for ugatit"),
                          (["preset", "reference"], "name the families to switch")):
        proc = toonlab(tmp_path, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith(f"toonlab: error: {message}") and "Traceback" not in proc.stderr


def test_cli_dry_run_and_dvc_exp_write_nothing_and_load_no_torch(tmp_path):
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    script = ("import sys\nfrom toonlab.cli import main\n"
              "assert main(['preset', 'reference', 'whitebox', '--dry-run']) == 0\n"
              "assert main(['preset', 'reference', 'dcgan', '--dvc-exp']) == 0\n"
              "assert main(['preset']) == 0\n"
              "print('HEAVY', sorted(m for m in ('torch', 'cv2') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    assert "whitebox.model.vgg_weights: random -> imagenet" in proc.stdout
    assert "whitebox.loss.landmark: 1.0 -> 0.0" in proc.stdout
    assert ("dvc exp run -S dcgan.model.ngf=64 -S dcgan.model.ndf=64 -S dcgan.model.init=default "
            "-S dcgan.optim.steps=39000") in proc.stdout
    assert (tmp_path / "params.yaml").read_bytes() == PARAMS.read_bytes()


def test_preset_command_in_process(tmp_path, capsys):
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    p = str(tmp_path / "params.yaml")
    assert main(["preset", "reference", "cyclegan", "--params", p]) == 0
    assert "cyclegan.optim.steps_constant: 100 -> 340000" in capsys.readouterr().out
    assert main(["--params", p, "preset", "demo", "cyclegan"]) == 0
    assert (tmp_path / "params.yaml").read_bytes() == PARAMS.read_bytes()
