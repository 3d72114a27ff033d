"""CLI exit codes and messages: 0 ok, 2 bad usage/params, 1 failure; never a traceback."""

import subprocess
import sys

import pytest

from toonlab import registry
from toonlab.cli import main

STAGES = ["ingest", "crawl", "detect", "matte", "align", "curate", "pack", "evaluate", "report",
          "cartoonize", "export", "export-dataset", "serve", "review", "generate", "pipeline", "demo-data", "doctor", "params"]


def test_top_level_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for stage in STAGES + ["train"]:
        assert stage in out


@pytest.mark.parametrize("stage", STAGES + ["train"])
def test_every_subcommand_has_help(stage, capsys):
    assert main([stage, "--help"]) == 0
    assert "usage: toonlab" in capsys.readouterr().out


def test_unknown_command_is_usage_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_unknown_model_is_usage_error(capsys):
    assert main(["train", "stylegan"]) == 2
    assert "invalid choice: 'stylegan'" in capsys.readouterr().err


def test_bad_params_file_exit_2_names_key(tmp_path, capsys):
    p = tmp_path / "params.yaml"
    p.write_text("demo:\n  anime_count: ten\n")
    assert main(["--params", str(p), "params"]) == 2
    err = capsys.readouterr().err
    assert "demo.anime_count: expected an integer" in err
    assert "Traceback" not in err


def test_params_option_after_subcommand(tmp_path, capsys):
    p = tmp_path / "params.yaml"
    p.write_text("demo:\n  anime_count: 3\n")
    assert main(["params", "--params", str(p), "--section", "demo"]) == 0
    assert "anime_count: 3" in capsys.readouterr().out


def test_missing_params_file_exit_2(tmp_path, capsys):
    assert main(["--params", str(tmp_path / "none.yaml"), "doctor"]) == 2
    assert "file not found" in capsys.readouterr().err


def test_train_choices_are_the_registered_families():
    import argparse

    from toonlab.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    model = next(a for a in sub.choices["train"]._actions if a.dest == "model")
    assert list(model.choices) == registry.names()


def test_doctor_lists_every_optional_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "insightface"))
    monkeypatch.setenv("TOONLAB_WEIGHTS", str(tmp_path / "toonlab"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("{}\n")
    # One file present, to see both states.
    ckpt = tmp_path / "torch" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / "vgg16-397923af.pth").write_bytes(b"x")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "[ok     ] vgg16" in out
    assert "[MISSING] vgg19" in out
    for name, folder in [("buffalo_l", "insightface/models"), ("u2net_human_seg", "u2net"),
                         ("mobilefacenet", "toonlab"),
                         ("isnet_anime", "u2net"), ("inception_fid", "torch/hub/checkpoints")]:
        assert name in out
        assert str(tmp_path / folder) in out
    assert "mediapipe" in out and "animeface" in out


def test_missing_weights_message_names_file_folder_and_alternative(tmp_path, monkeypatch):
    from toonlab.errors import MissingWeightsError
    from toonlab.weights import require

    monkeypatch.setenv("U2NET_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as info:
        require("isnet_anime")
    msg = str(info.value)
    assert "isnet-anime.onnx" in msg and str(tmp_path) in msg and "floodfill" in msg
    (tmp_path / "isnet-anime.onnx").write_bytes(b"x")
    assert require("isnet_anime") == tmp_path


def test_internal_errors_have_no_traceback(monkeypatch, tmp_path, capsys):
    import toonlab.cli as cli

    def boom(args, params):
        raise RuntimeError("kaboom")

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("{}\n")
    monkeypatch.setattr(cli, "_cmd_doctor", boom)
    assert main(["doctor"]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: kaboom" in err and "Traceback" not in err


def test_console_script_and_module_entry_points(tmp_path):
    (tmp_path / "params.yaml").write_text("{}\n")
    for cmd in (["toonlab"], [sys.executable, "-m", "toonlab"]):
        ok = subprocess.run(cmd + ["params", "--section", "runtime"], cwd=tmp_path, capture_output=True, text=True)
        assert ok.returncode == 0 and "device: auto" in ok.stdout
        bad = subprocess.run(cmd + ["cartoonize"], cwd=tmp_path, capture_output=True, text=True)
        assert bad.returncode == 2 and "INPUT" in bad.stderr
        usage = subprocess.run(cmd + ["--no-such-flag"], cwd=tmp_path, capture_output=True, text=True)
        assert usage.returncode == 2
