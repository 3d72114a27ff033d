"""ToonLab installed the way users install it: a wheel, non-editable, in a project folder that
does not hold ToonLab's source; the light core in a fresh virtualenv (no torch, no OpenCV);
one OpenCV build in the project's environment.

The wheel is built once per module from a copy of the checkout (the files a fresh clone
has). The fresh virtualenv gets the wheel with its declared core dependencies from the
package index, under requirements.lock: a dependency the core needs but does not declare
fails it. The heavy part runs the wheel installed with --no-deps into a folder placed ahead
of this environment (PYTHONPATH), on the shared tiny project's packed demo data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import REPO, project_files, run

pytestmark = pytest.mark.slow

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for rel in project_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out),
         str(src)], src, timeout=300)
    (found,) = out.glob("toonlab-*.whl")
    return found


def user_project(root: Path, params: Path = REPO / "params.yaml") -> Path:
    """A user's project: a params file and nothing of ToonLab's source."""
    root.mkdir(parents=True)
    shutil.copy2(params, root / "params.yaml")
    return root


def toonlab(exe: list[str], cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_one_opencv_build_provides_cv2_and_it_links_no_libgl(capsys):
    from toonlab.cli import main
    from toonlab.util import opencv

    state = opencv.state()
    assert [o.split()[0] for o in state.owners] == ["opencv-python-headless"], state.line()
    assert state.extension is not None and state.extension.is_file()
    assert state.gl_libraries == [], state.line()  # ldd found no libGL/libEGL, directly or bundled
    assert state.problems() == []
    import cv2  # and it imports: the module the dependents ask for under three names

    assert Path(cv2.__file__).resolve().parent == state.extension.parent.resolve()
    assert main(["doctor"]) == 0  # which build is active, for people
    out = capsys.readouterr().out
    assert f"OpenCV (cv2): {state.owners[0]}; links no libGL" in out and "problem:" not in out


def test_the_core_in_a_fresh_venv_configures_and_names_the_missing_extra(wheel, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    proc = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "-c", str(REPO / "requirements.lock"),
                           str(wheel)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"pip install of the wheel (core only) failed:\n{proc.stdout}\n{proc.stderr}"
    # The core is light: none of the extras came with it.
    for heavy in ("torch", "cv2", "pyarrow", "dvc", "fastapi"):
        probe = subprocess.run([str(py), "-c", f"import {heavy}"], capture_output=True, env=env)
        assert probe.returncode != 0, f"{heavy} is importable from the core install"

    exe = [str(venv / "bin" / "toonlab")]
    proj = user_project(tmp_path / "proj")
    assert toonlab(exe, proj, "--version", env=env).stdout.strip() == f"toonlab {VERSION}"
    out = toonlab(exe, proj, "params", "--section", "dcgan", env=env)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["dcgan"]["model"]["nz"] == 100

    # The pipeline tools work in the user's project: code deps are the installed code's stamps.
    assert toonlab(exe, proj, "pipeline", "--check", env=env).returncode == 1  # no dvc.yaml yet
    w = toonlab(exe, proj, "pipeline", "--write", env=env)
    assert w.returncode == 0, w.stderr
    check = toonlab(exe, proj, "pipeline", "--check", env=env)
    assert check.returncode == 0, check.stderr
    stages = yaml.safe_load((proj / "dvc.yaml").read_text())["stages"]
    deps = [d for s in stages.values() for d in s.get("deps", s.get("do", {}).get("deps", []))]
    assert not [d for d in deps if "src/toonlab" in d or "site-packages" in d]
    assert ".toonlab/code/train_dcgan.txt" in stages["train_dcgan"]["deps"]
    stamp = (proj / ".toonlab/code/train_dcgan.txt").read_text()
    assert "toonlab/models/dcgan/model.py" in stamp and "toonlab/cli.py" not in stamp

    # A command of a missing extra: one line naming it, exit 1, no internal error.
    train = toonlab(exe, proj, "train", "dcgan", "--steps", "1", env=env)
    assert train.returncode == 1
    lines = train.stderr.strip().splitlines()
    assert len(lines) == 1, train.stderr
    assert "'train' extra" in lines[0] and "pip install 'toonlab[train]'" in lines[0]
    assert "internal error" not in train.stderr and "Traceback" not in train.stderr
    # The DVC stages' command, in a project without ToonLab's Snakemake workflow: says so.
    stage = toonlab(exe, proj, "snakemake", "pack", env=env)
    assert stage.returncode == 1 and "has no Snakefile" in stage.stderr, stage.stderr


def test_the_wheel_trains_in_a_user_project_and_an_upgrade_reruns_only_what_it_changed(wheel, built, tmp_path):
    site = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)], tmp_path)
    env = {**os.environ, "PYTHONPATH": str(site)}
    exe = [sys.executable, "-m", "toonlab"]
    where = subprocess.run([*exe[:1], "-c", "import toonlab; print(toonlab.__file__)"], env=env,
                           capture_output=True, text=True, cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(site), where

    proj = user_project(tmp_path / "proj", built.root / "params.yaml")
    packed = yaml.safe_load((proj / "params.yaml").read_text())["pack"]["out_dir"]
    shutil.copytree(built.root / packed, proj / packed)
    trained = toonlab(exe, proj, "train", "dcgan", "--steps", "2", "--device", "cpu", env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (proj / "models/dcgan/summary.json").is_file()

    assert toonlab(exe, proj, "pipeline", "--write", env=env).returncode == 0
    before = {p.name: p.read_bytes() for p in (proj / ".toonlab/code").iterdir()}
    assert toonlab(exe, proj, "pipeline", "--check", env=env).returncode == 0

    # An "upgrade": the same wheel with DCGAN's model file changed. Exactly the stages whose
    # code holds it are stale; --write rewrites those stamps and leaves the others' bytes.
    upgraded = tmp_path / "site2"
    shutil.copytree(site, upgraded)
    model = upgraded / "toonlab/models/dcgan/model.py"
    model.write_text(model.read_text() + "\n# upgraded\n")
    env2 = {**os.environ, "PYTHONPATH": str(upgraded)}
    from toonlab import pipeline

    holding = {s.name for s in pipeline.stages()
               if any(p.name == "model.py" and p.parent.name == "dcgan" for p in pipeline.closure(s.entry))}
    assert "train_dcgan" in holding and "train_cyclegan" not in holding
    check = toonlab(exe, proj, "pipeline", "--check", env=env2)
    assert check.returncode == 1
    named = {part.strip().removeprefix(".toonlab/code/").removesuffix(".txt")
             for part in check.stderr.split("(", 1)[1].split(")", 1)[0].split(",")}
    assert named == holding, check.stderr
    assert toonlab(exe, proj, "pipeline", "--write", env=env2).returncode == 0
    after = {p.name: p.read_bytes() for p in (proj / ".toonlab/code").iterdir()}
    assert {n.removesuffix(".txt") for n in before if before[n] != after[n]} == holding
    assert toonlab(exe, proj, "pipeline", "--check", env=env2).returncode == 0
