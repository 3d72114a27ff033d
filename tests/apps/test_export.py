"""`toonlab export`: every family's generators go to ONNX with a dynamic batch axis,
onnxruntime agrees with PyTorch within 1e-3 on random and real images, and the export
folder loads back as an `Inference` that stands in for the torch one."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import smoke_cases, write_run
from toonlab import registry
from toonlab.apps import export as tex
from toonlab.errors import ToonlabError, UsageError
from toonlab.runs.load import load_run
from toonlab.train.recipe import Context

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")


CASES = smoke_cases("translation", "unconditional")   # every family with inference, and its variants
RUNS = list(CASES)


def _unconditional(run: str) -> bool:
    return registry.get(CASES[run][0]).kind == "unconditional"


def _families():
    # Networks are built from torch's global generator: seed it, so that the weights (and
    # the parity numbers) are the same every run.
    torch.manual_seed(0)
    for run, (family, raw) in CASES.items():
        fam = registry.get(family)
        params = fam.params_cls.model_validate(raw)
        recipe = fam.build(params, Context(device=CPU, amp_dtype=None, channels_last=False, total_steps=1))
        yield run, family, params, dict(recipe.nets)
        close = getattr(recipe, "close", None)
        if close is not None:
            close()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every tiny run written and exported once: {run: (run_dir, manifest)}."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for run, family, params, nets in _families():
        run_dir = write_run(root, run, family, params, nets)
        out[run] = (run_dir, tex.export_run(run_dir))
    return out


@pytest.mark.parametrize("run", RUNS)
def test_export_files_and_parity(exported, run):
    run_dir, manifest = exported[run]
    folder = run_dir / "export"
    assert json.loads((folder / "export.json").read_text()) == manifest
    _, inf = load_run(run_dir)
    want = [role for role in ("forward", "backward", "generate") if getattr(inf, role) is not None]
    assert want == (["generate"] if _unconditional(run) else ["forward", "backward"] if inf.backward else ["forward"])
    assert sorted(manifest["files"]) == sorted(want)
    for role in want:
        assert (folder / f"{role}.onnx").stat().st_size > 1000
        diffs = manifest["parity"][f"{role}.onnx"]
        assert set(diffs) == ({"random"} if _unconditional(run) else {"random", "images"})
        assert all(0 <= d < 1e-3 for d in diffs.values()), diffs
    assert sorted(p.name for p in folder.iterdir()) == sorted(["export.json"] + [f"{r}.onnx" for r in want])
    assert manifest["opset"] == 17 and manifest["step"] == 1 and manifest["run"] == run
    assert manifest["px"] == (96 if _unconditional(run) else 32) == inf.px
    assert manifest["versions"]["onnxruntime"] and manifest["versions"]["torch"] == torch.__version__


@pytest.mark.parametrize("run", RUNS)
def test_dynamic_batch_and_round_trip(exported, run):
    run_dir, manifest = exported[run]
    _, ref = load_run(run_dir, CPU)
    got = tex.load_onnx_inference(run_dir / "export")
    assert (got.family, got.px, got.source, got.target, got.nz) == (ref.family, ref.px, ref.source, ref.target,
                                                                   ref.nz)
    gen = torch.Generator().manual_seed(7)
    for n in (1, 3):
        if _unconditional(run):
            assert got.forward is None and got.backward is None
            z = torch.randn(n, ref.nz, 1, 1, generator=gen)
            pairs = [(got.generate, ref.generate, z)]
        else:
            x = torch.rand(n, 3, ref.px, ref.px, generator=gen) * 2 - 1
            pairs = [(got.forward, ref.forward, x)]
            if ref.backward is None:
                assert got.backward is None
            else:
                pairs.append((got.backward, ref.backward, x))
        for onnx_net, torch_net, inp in pairs:
            y = onnx_net(inp)
            with torch.no_grad():
                want = torch_net(inp)
            assert y.dtype == torch.float32 and y.shape == want.shape == (n, 3, ref.px, ref.px)
            assert float((y - want).abs().max()) < 1e-3
            assert float(want.std()) > 1e-3  # a non-trivial output, so the comparison means something


def test_onnx_module_stands_in_for_torch_module(exported):
    run_dir, _ = exported["cyclegan"]
    inf = tex.load_onnx_inference(run_dir / "export")
    net = inf.forward.to(CPU).eval()   # what load_run / cartoonize do to torch networks
    assert net is inf.forward and net.providers[-1] == "CPUExecutionProvider"
    x = torch.zeros(2, 3, 32, 32, dtype=torch.float64)
    assert net(x).dtype == torch.float32


def test_missing_export_folder_gives_clear_error(tmp_path):
    with pytest.raises(ToonlabError, match=r"toonlab export --run"):
        tex.load_onnx_inference(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ToonlabError, match=r"no export\.json"):
        tex.load_onnx_inference(tmp_path / "empty")


def test_parity_failure_raises_with_numbers_and_writes_nothing(exported, tmp_path, monkeypatch):
    run_dir, _ = exported["whitebox"]
    real_forward = tex.OnnxModule.forward
    monkeypatch.setattr(tex.OnnxModule, "forward", lambda self, x: real_forward(self, x) + 0.01)
    out = tmp_path / "bad_export"
    with pytest.raises(ToonlabError, match=r"forward\.onnx: .*max abs difference 0\.01"):
        tex.export_run(run_dir, out_dir=out)
    assert not out.exists() and not list(tmp_path.glob(".bad_export*"))


def test_lowest_opset_and_given_parity_images(exported, tmp_path):
    run_dir, _ = exported["whitebox"]
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    manifest = tex.export_run(run_dir, out_dir=tmp_path / "op11", opset=tex.MIN_OPSET, parity_images=images)
    assert manifest["opset"] == 11 and manifest["parity"]["forward.onnx"]["images"] < 1e-3
    with pytest.raises(UsageError, match="opset 10"):
        tex.export_run(run_dir, out_dir=tmp_path / "op10", opset=10)
    with pytest.raises(UsageError, match=r"N x 3 x 32 x 32"):
        tex.export_run(run_dir, out_dir=tmp_path / "badimg", parity_images=torch.rand(2, 3, 16, 16))
    assert not (tmp_path / "op10").exists() and not (tmp_path / "badimg").exists()


def test_default_parity_images_are_the_astronaut_and_its_mirror():
    x = tex.default_parity_images(40)
    assert x.shape == (2, 3, 40, 40) and -1 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(x[1], x[0].flip(-1)) and float(x[0].std()) > 0.2


def test_run_without_checkpoint_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no run .*untrained.*not a checkpoint file, a run folder"):
        tex.export_run(tmp_path / "untrained")
    (tmp_path / "untrained").mkdir()
    with pytest.raises(UsageError, match="no checkpoint in .*untrained/checkpoints"):
        tex.export_run(tmp_path / "untrained")


def test_cartoonize_cli_with_onnx_matches_the_torch_run(exported, tmp_path):
    """`toonlab cartoonize --onnx EXPORT_DIR` runs the ONNX Runtime path end to end and
    gives the crops `--run` gives (uint8, within one level after rounding)."""
    import numpy as np
    from PIL import Image

    from toonlab.cli import main
    from toonlab.data.demo import package_file

    run_dir, _ = exported["cyclegan"]
    photo = package_file("skimage", "data/astronaut.png")
    params = tmp_path / "params.yaml"
    params.write_text(f"train:\n  out_dir: {run_dir.parent}\n")
    common = ["cartoonize", "--params", str(params), str(photo)]
    assert main([*common, "--onnx", str(run_dir / "export"), "--out", str(tmp_path / "onnx")]) == 0
    assert main([*common, "--run", str(run_dir), "--out", str(tmp_path / "torch")]) == 0
    summary = json.loads((tmp_path / "onnx" / "summary.json").read_text())
    assert summary["run"] == f"onnx:{run_dir / 'export'}" and summary["faces"] == 1
    a = np.asarray(Image.open(tmp_path / "onnx" / "astronaut_face0.png"), np.int16)
    b = np.asarray(Image.open(tmp_path / "torch" / "astronaut_face0.png"), np.int16)
    assert a.shape == b.shape == (32, 32, 3)
    assert np.abs(a - b).max() <= 1 and a.std() > 1
    assert main([*common, "--onnx", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 1
