"""`toonlab import-weights`: files in each reference implementation's format (ToonLab's own
networks at small sizes, their state-dict keys renamed to the reference's, random values)
become runs whose networks hold exactly the source tensors; mismatches are listed and
write nothing; the White-box mapping (HWIO -> OIHW, BGR -> RGB) on synthetic arrays; an
imported run exports (with its parity check) and cartoonizes."""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from toonlab import registry
from toonlab.apps import import_weights as iw
from toonlab.cli import build_parser, main
from toonlab.models.cyclegan import model as cg
from toonlab.models.dcgan import model as dc
from toonlab.models.importing import WeightsMismatchError
from toonlab.models.ugatit import model as ug
from toonlab.models.ugatit.importer import UGATIT_NETS
from toonlab.models.ugatit.params import UGATITModelParams
from toonlab.models.whitebox import model as wb
from toonlab.models.whitebox.importer import WHITEBOX_LAYERS, whitebox_state_dict
from toonlab.runs.load import load_run, resolve_run
from toonlab.train import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("one_thread")


def _random(sd: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if v.is_floating_point():
            out[k] = torch.randn(v.shape, generator=g) * 0.05 + (1.0 if k.endswith("running_var") else 0.0)
        else:
            out[k] = torch.randint(0, 100, v.shape, generator=g, dtype=v.dtype)
    return out


def _cli(tmp_path: Path, *args: str) -> int:
    params = tmp_path / "params.yaml"
    if not params.exists():
        params.write_text(f"train:\n  out_dir: {tmp_path / 'models'}\n")
    return main(["import-weights", "--params", str(params), *args])


def _nets(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    path = ckpt.latest(run / "checkpoints")
    assert path is not None
    state = torch.load(path, weights_only=True)
    return state["nets"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


# ----------------------------------------------------------------------------- the formats


def test_formats_come_from_the_families_importers():
    """Each family folder with an importer.py declares its formats; the command's choices are them."""
    found = iw.formats()
    # The reference implementations' formats that the tests below read, each for its family.
    assert {"cyclegan": "cyclegan", "dcgan": "dcgan", "ugatit": "ugatit", "photo2cartoon": "ugatit",
            "whitebox": "whitebox"}.items() <= {name: f.family for name, f in found.items()}.items()
    for name, f in found.items():   # every format found is its family folder's, declared there
        assert registry.get(f.family).part("importer").FORMATS[name] is f
        assert f.help and "\n" not in f.help
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    fmt = next(a for a in sub.choices["import-weights"]._actions if a.dest == "format")
    assert list(fmt.choices) == list(found)


# ----------------------------------------------------------------------------- CycleGAN


def _cyclegan_files(folder: Path, *, ngf=8, n_blocks=2, ndf=8, stats=True) -> dict[str, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    refs = {"G_A": _random(cg.ResnetGenerator(ngf=ngf, n_blocks=n_blocks).state_dict(), 1),
            "G_B": _random(cg.ResnetGenerator(ngf=ngf, n_blocks=n_blocks).state_dict(), 2),
            "D_A": _random(cg.NLayerDiscriminator(ndf=ndf, n_layers=3).state_dict(), 3),
            "D_B": _random(cg.NLayerDiscriminator(ndf=ndf, n_layers=3).state_dict(), 4)}
    for name, sd in refs.items():
        saved = dict(sd)
        if stats:   # an older file: InstanceNorm running statistics on every norm layer
            norm, c = ("model.2", ngf) if name.startswith("G") else ("model.3", 2 * ndf)
            saved |= {f"{norm}.running_mean": torch.zeros(c), f"{norm}.running_var": torch.ones(c),
                      f"{norm}.num_batches_tracked": torch.tensor(0)}
        torch.save(saved, folder / f"latest_net_{name}.pth")
    return refs


def test_cyclegan_generators_discriminators_swapped_stats_dropped(tmp_path):
    refs = _cyclegan_files(tmp_path / "ref")
    files = [str(tmp_path / "ref" / f"latest_net_{n}.pth") for n in ("G_A", "G_B", "D_A", "D_B")]
    out = tmp_path / "imported"
    assert _cli(tmp_path, "cyclegan", *files, "--out", str(out), "--set", "data.crop_px=32") == 0
    nets = _nets(out)
    _same(nets["G_A"], refs["G_A"])
    _same(nets["G_B"], refs["G_B"])
    _same(nets["D_B"], refs["D_A"])   # the reference's D_A judges domain B
    _same(nets["D_A"], refs["D_B"])
    state = torch.load(ckpt.latest(out / "checkpoints"), weights_only=True)
    assert state["family"] == "cyclegan"
    model = state["config"]["params"]["model"]
    assert {k: model[k] for k in ("ngf", "ndf", "n_blocks", "n_layers_d")} == \
        {"ngf": 8, "ndf": 8, "n_blocks": 2, "n_layers_d": 3}
    assert state["config"]["params"]["data"]["crop_px"] == 32
    summary = json.loads((out / "summary.json").read_text())
    assert summary["family"] == "cyclegan" and summary["imported"]["format"] == "cyclegan"
    assert json.loads((out / "config.json").read_text())["family"] == "cyclegan"
    # The run loads like a trained one; the generators hold the source tensors.
    _, inf = load_run(out)
    _same(inf.forward.state_dict(), refs["G_A"])
    assert inf.backward is not None


@pytest.mark.parametrize("fault", ["missing", "extra", "shape"])
def test_mismatches_are_listed_and_nothing_written(tmp_path, capsys, fault):
    refs = _cyclegan_files(tmp_path / "ref", stats=False)
    g = dict(refs["G_A"])
    if fault == "missing":
        del g["model.1.bias"]
    elif fault == "extra":
        g["model.99.weight"] = torch.zeros(3)
    else:
        g["model.1.bias"] = torch.zeros(5)
    torch.save(g, tmp_path / "ref" / "latest_net_G_A.pth")
    out = tmp_path / "imported"
    files = [str(tmp_path / "ref" / f"latest_net_{n}.pth") for n in ("G_A", "G_B")]
    assert _cli(tmp_path, "cyclegan", *files, "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "latest_net_G_A.pth" in err
    expect = {"missing": "1 missing: model.1.bias", "extra": "1 unexpected: model.99.weight",
              "shape": "model.1.bias (5,) (expected (8,))"}[fault]
    assert expect in err, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".imported")]


def test_out_must_be_new_or_empty(tmp_path, capsys):
    _cyclegan_files(tmp_path / "ref")
    files = [str(tmp_path / "ref" / f"latest_net_{n}.pth") for n in ("G_A", "G_B")]
    out = tmp_path / "imported"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "step-00000001.pt").write_bytes(b"x")
    assert _cli(tmp_path, "cyclegan", *files, "--out", str(out)) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "checkpoints" / "step-00000001.pt").read_bytes() == b"x"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli(tmp_path, "cyclegan", *files, "--out", str(empty), "--set", "data.crop_px=32") == 0
    assert ckpt.latest(empty / "checkpoints") is not None


# ----------------------------------------------------------------------------- U-GAT-IT, photo2cartoon


def _ugatit_dict(m: UGATITModelParams, px: int, seed: int = 0) -> dict[str, dict]:
    out = {"genA2B": ug.build_generator(m, px), "genB2A": ug.build_generator(m, px),
           "disGA": ug.build_discriminator(m, m.n_dis_global), "disGB": ug.build_discriminator(m, m.n_dis_global),
           "disLA": ug.build_discriminator(m, m.n_dis_local), "disLB": ug.build_discriminator(m, m.n_dis_local)}
    return {k: _random(v.state_dict(), seed + i) for i, (k, v) in enumerate(out.items())}


@pytest.mark.parametrize("light", [True, False])
def test_ugatit_shapes_inferred(tmp_path, light):
    m = UGATITModelParams(ch=8, n_res=2, light=light, n_dis_global=4, n_dis_local=3)
    ref = _ugatit_dict(m, 32)
    path = tmp_path / "selfie2anime_params_0012000.pt"
    torch.save(ref, path)
    out = tmp_path / "imported"
    extra = ["--set", "data.crop_px=32"] if light else []   # full: the size comes from the MLP
    assert _cli(tmp_path, "ugatit", str(path), "--out", str(out), *extra) == 0
    state = torch.load(ckpt.latest(out / "checkpoints"), weights_only=True)
    assert state["step"] == 12000
    p = state["config"]["params"]
    assert (p["model"]["ch"], p["model"]["n_res"], p["model"]["light"]) == (8, 2, light)
    assert (p["model"]["n_dis_global"], p["model"]["n_dis_local"], p["data"]["crop_px"]) == (4, 3, 32)
    for ref_name, name in UGATIT_NETS.items():
        _same(state["nets"][name], ref[ref_name])


def test_photo2cartoon_generator_only(tmp_path):
    m = UGATITModelParams(variant="soft_adalin", ch=8, n_res=1, light=True)
    g = _random(ug.build_generator(m, 32).state_dict(), 5)
    path = tmp_path / "photo2cartoon_weights.pt"
    torch.save({"genA2B": {f"module.{k}": v for k, v in g.items()}}, path)
    out = tmp_path / "p2c"
    # 32 px: the (absent) discriminators' depths must fit it too.
    assert _cli(tmp_path, "photo2cartoon", str(path), "--out", str(out), "--set", "data.crop_px=32",
                "--set", "model.n_dis_global=4", "--set", "model.n_dis_local=3") == 0
    state = torch.load(ckpt.latest(out / "checkpoints"), weights_only=True)
    assert state["family"] == "ugatit" and state["config"]["params"]["model"]["variant"] == "soft_adalin"
    assert list(state["nets"]) == ["G_A"]
    _same(state["nets"]["G_A"], g)
    _, inf = load_run(out)
    assert inf.backward is None
    _same(inf.forward.generator.state_dict(), g)
    with torch.no_grad():
        y = inf.forward(torch.zeros(1, 3, 32, 32))
    assert y.shape == (1, 3, 32, 32)
    # Generator only: it exports (forward alone) with the parity check.
    assert main(["export", "--params", str(tmp_path / "params.yaml"), "--run", str(out),
                 "--out", str(tmp_path / "onnx")]) == 0
    manifest = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert list(manifest["parity"]) == ["forward.onnx"]
    assert max(manifest["parity"]["forward.onnx"].values()) < 1e-3


def test_ugatit_unknown_entry(tmp_path, capsys):
    m = UGATITModelParams(ch=8, n_res=1, n_dis_global=4, n_dis_local=3)
    ref = _ugatit_dict(m, 32)
    ref["optimizer"] = {"x": torch.zeros(1)}
    torch.save(ref, tmp_path / "x_params_0000001.pt")
    assert _cli(tmp_path, "ugatit", str(tmp_path / "x_params_0000001.pt"), "--out", str(tmp_path / "o")) == 1
    assert "unexpected" in capsys.readouterr().err and not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- DCGAN


def test_dcgan(tmp_path):
    g, d = _random(dc.NetG(8, 8).state_dict(), 6), _random(dc.NetD(8).state_dict(), 7)
    old_g = {k: v for k, v in g.items() if not k.endswith("num_batches_tracked")}   # PyTorch < 0.4.1
    torch.save(old_g, tmp_path / "netg_199.pth")
    torch.save(d, tmp_path / "netd_199.pth")
    out = tmp_path / "dcgan"
    assert _cli(tmp_path, "dcgan", str(tmp_path / "netg_199.pth"), str(tmp_path / "netd_199.pth"),
                "--out", str(out)) == 0
    state = torch.load(ckpt.latest(out / "checkpoints"), weights_only=True)
    model = state["config"]["params"]["model"]
    assert {k: model[k] for k in ("nz", "ngf", "ndf")} == {"nz": 8, "ngf": 8, "ndf": 8}
    _same({k: v for k, v in state["nets"]["G"].items() if not k.endswith("num_batches_tracked")}, old_g)
    _same(state["nets"]["D"], d)
    _, inf = load_run(out)
    assert inf.generate is not None and inf.nz == 8


# ----------------------------------------------------------------------------- White-box


def _tf_variables(ch=8, n_res=2, seed=8) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
    """Synthetic TF variables of the reference generator (random HWIO kernels, BGR order)
    and the UNetGenerator state dict they should become."""
    rng = np.random.default_rng(seed)
    names = {v: k for k, v in WHITEBOX_LAYERS.items()}
    tfv: dict[str, np.ndarray] = {}
    sd = wb.UNetGenerator(ch, n_res).state_dict()
    for key, t in sd.items():
        layer, kind = key.rsplit(".", 1)
        if layer.startswith("blocks."):
            _, i, conv = layer.split(".")
            scope = f"generator/block_{i}/{conv}"
        else:
            scope = f"generator/{names[layer]}"
        shape = tuple(t.shape)
        if kind == "weight":
            tfv[f"{scope}/weights"] = rng.standard_normal((shape[2], shape[3], shape[1], shape[0])).astype(np.float32)
        else:
            tfv[f"{scope}/biases"] = rng.standard_normal(shape).astype(np.float32)
    # Optimizer slots and the discriminators' variables are not the generator's: ignored.
    tfv["generator/Conv/weights/Adam"] = np.zeros(1, np.float32)
    tfv["discriminator/Conv/weights"] = np.zeros((3, 3, 3, 8), np.float32)
    return tfv, sd


def test_whitebox_mapping_on_synthetic_arrays():
    tfv, sd = _tf_variables()
    out, hp = whitebox_state_dict(tfv)
    assert hp == {"ch": 8, "n_res": 2}
    assert set(out) == set(sd)
    for k, v in out.items():
        assert tuple(v.shape) == tuple(sd[k].shape), k
    w0 = tfv["generator/Conv/weights"]              # H W I O, input channels B G R
    for i in range(3):
        assert np.array_equal(out["conv0.weight"][:, i].numpy(), w0[:, :, 2 - i, :].transpose(2, 0, 1))
    assert np.array_equal(out["conv0.bias"].numpy(), tfv["generator/Conv/biases"])   # not reversed
    w9, b9 = tfv["generator/Conv_9/weights"], tfv["generator/Conv_9/biases"]
    for o in range(3):
        assert np.array_equal(out["out.weight"][o].numpy(), w9[:, :, :, 2 - o].transpose(2, 0, 1))
        assert out["out.bias"][o].item() == b9[2 - o]
    assert np.array_equal(out["blocks.1.conv2.weight"].numpy(),
                          tfv["generator/block_1/conv2/weights"].transpose(3, 2, 0, 1))
    assert np.array_equal(out["up1a.weight"].numpy(), tfv["generator/Conv_6/weights"].transpose(3, 2, 0, 1))
    # The mapped dict loads into the network of the inferred size.
    wb.UNetGenerator(**hp).load_state_dict(out)

    bad = dict(tfv, **{"generator/Conv_10/weights": np.zeros((1, 1, 3, 3), np.float32)})
    with pytest.raises(WeightsMismatchError, match="generator/Conv_10/weights"):
        whitebox_state_dict(bad)


def test_whitebox_without_tensorflow(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)   # import fails, as when not installed
    (tmp_path / "saved_models").mkdir()
    out = tmp_path / "wb"
    assert _cli(tmp_path, "whitebox", str(tmp_path / "saved_models"), "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "pip install 'toonlab[tf]'" in err and not out.exists()


def test_whitebox_through_a_stand_in_tensorflow(tmp_path, monkeypatch):
    """The reading step with a stand-in for tf.train.load_checkpoint: the run holds the mapping."""
    tfv, _ = _tf_variables(ch=8, n_res=1)

    class Reader:
        def get_variable_to_shape_map(self):
            return {k: list(v.shape) for k, v in tfv.items()}

        def get_tensor(self, name):
            return tfv[name]

    seen = []
    fake = types.SimpleNamespace(train=types.SimpleNamespace(
        load_checkpoint=lambda p: seen.append(p) or Reader(), latest_checkpoint=lambda d: f"{d}/model-99999"))
    monkeypatch.setitem(sys.modules, "tensorflow", fake)
    (tmp_path / "saved_models").mkdir()
    out = tmp_path / "wb"
    assert _cli(tmp_path, "whitebox", str(tmp_path / "saved_models"), "--out", str(out),
                "--set", "data.crop_px=32") == 0
    assert seen == [f"{tmp_path / 'saved_models'}/model-99999"]
    state = torch.load(ckpt.latest(out / "checkpoints"), weights_only=True)
    assert state["step"] == 99999 and state["family"] == "whitebox"
    _same(state["nets"]["G"], whitebox_state_dict(tfv)[0])
    load_run(out)


# ----------------------------------------------------------------------------- round trip


def test_imported_run_exports_and_cartoonizes(tmp_path, monkeypatch):
    from toonlab.data.demo import package_file

    monkeypatch.setenv("TOONLAB_PROGRESS", "0")
    _cyclegan_files(tmp_path / "ref", ngf=4, n_blocks=1)
    files = [str(tmp_path / "ref" / f"latest_net_{n}.pth") for n in ("G_A", "G_B")]
    run = tmp_path / "models" / "cg_imported"
    assert _cli(tmp_path, "cyclegan", *files, "--out", str(run), "--set", "data.crop_px=32") == 0
    params = str(tmp_path / "params.yaml")
    assert main(["export", "--params", params, "--run", str(run), "--out", str(tmp_path / "onnx")]) == 0
    manifest = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert manifest["family"] == "cyclegan"
    for role in ("forward", "backward"):
        assert max(manifest["parity"][f"{role}.onnx"].values()) < 1e-3
    assert resolve_run("cg_imported", tmp_path / "models").run_dir == run

    photo = package_file("skimage", "data/astronaut.png")
    assert photo is not None
    assert main(["cartoonize", "--params", params, "--run", "cg_imported", str(photo), "--faces", "largest",
                 "--out", str(tmp_path / "cartoons")]) == 0
    assert (tmp_path / "cartoons" / "astronaut_face0.png").is_file()
