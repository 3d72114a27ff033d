"""One run resolver for every command that names a run: a name under train.out_dir, a run
folder or a checkpoint file mean the same to evaluate, cartoonize, export, serve and
generate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import write_run
from toonlab.errors import ToonlabError, UsageError
from toonlab.models.cyclegan import model as cyclegan
from toonlab.runs.load import load_run, read_run, resolve_run
from toonlab.train import checkpoint as ckpt


@pytest.fixture
def runs(tmp_path) -> Path:
    params = cyclegan.CycleGANParams.model_validate({"model": {"ngf": 4, "n_blocks": 0}, "data": {"crop_px": 16}})
    nets = {"G_A": cyclegan.ResnetGenerator(ngf=4, n_blocks=0), "G_B": cyclegan.ResnetGenerator(ngf=4, n_blocks=0)}
    out = tmp_path / "models"
    write_run(out, "cyclegan", "cyclegan", params, nets)
    write_run(out / "ablations", "small", "cyclegan", params, nets)
    write_run(tmp_path / "elsewhere", "mine", "cyclegan", params, nets)
    return out


def test_the_three_forms_name_the_same_run(runs, monkeypatch):
    monkeypatch.chdir(runs.parent)
    by_name = resolve_run("cyclegan", "models")
    by_folder = resolve_run("models/cyclegan", "models")
    ck = runs / "cyclegan/checkpoints/step-00000001.pt"
    by_file = resolve_run(ck, "models")
    assert by_name.name == by_folder.name == by_file.name == "cyclegan"
    assert by_name.run_dir.resolve() == by_folder.run_dir.resolve() == by_file.run_dir.resolve()
    assert by_name.checkpoint is None and by_file.checkpoint == ck
    assert by_name.checkpoint_path().resolve() == ck.resolve()
    assert resolve_run("ablations/small", "models").name == "ablations/small"
    assert resolve_run("elsewhere/mine", "models").name == "mine"   # outside train.out_dir: its folder's name
    best = runs / "cyclegan/best.pt"
    best.write_bytes(ck.read_bytes())
    assert resolve_run(best, "models").run_dir == runs / "cyclegan"   # a file beside the run, not in checkpoints/
    assert resolve_run("cyclegan", "models", checkpoint=best).checkpoint == best


def test_loading_gives_the_family_and_its_networks(runs):
    loaded, inf = load_run("cyclegan", out_dir=runs)
    assert loaded.family.name == "cyclegan" and loaded.step == 1 and loaded.params.data.crop_px == 16
    assert (inf.source, inf.target, inf.px) == ("photo", "anime", 16)
    assert not inf.forward.training and inf.forward(torch.zeros(1, 3, 16, 16)).shape == (1, 3, 16, 16)


def test_errors_name_the_run_and_what_to_do(runs, tmp_path):
    with pytest.raises(UsageError, match=r"no run 'nope': not a checkpoint file, a run folder, or a run under"):
        resolve_run("nope", runs)
    (runs / "untrained").mkdir()
    with pytest.raises(UsageError, match=r"no checkpoint in .*untrained/checkpoints; train the run first"):
        read_run(resolve_run("untrained", runs))
    with pytest.raises(UsageError, match="--checkpoint .*missing.pt: no such file"):
        resolve_run("cyclegan", runs, checkpoint=tmp_path / "missing.pt")
    foreign = runs / "foreign"
    ckpt.save(foreign / "checkpoints/step-00000001.pt", {"family": "stylegan", "step": 1, "config": {}, "nets": {}})
    with pytest.raises(ToonlabError, match="unknown model family 'stylegan' \\(registered: cyclegan, dcgan"):
        read_run(resolve_run("foreign", runs))
    junk = runs / "junk"
    (junk / "checkpoints").mkdir(parents=True)
    (junk / "checkpoints/step-00000001.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ToonlabError, match="not a readable toonlab checkpoint"):
        read_run(resolve_run("junk", runs))


def test_generate_refuses_a_translation_run(runs, tmp_path):
    from toonlab.params import validate_params
    from toonlab.runs.generate import generate_images

    params = validate_params({"train": {"out_dir": str(runs)}})
    with pytest.raises(UsageError, match="cyclegan run: `toonlab generate` draws from unconditional models \\(dcgan\\)"):
        generate_images("cyclegan", params, tmp_path / "out")
    assert not (tmp_path / "out").exists()
