"""What the trainer tests share: a tiny CycleGAN on generated folders, and the CLI in a
subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

TINY = {"model": {"ngf": 8, "ndf": 8, "n_blocks": 1, "n_layers_d": 2},
        "data": {"crop_px": 32, "load_px": 36, "batch_size": 2},
        "optim": {"steps_constant": 10, "steps_decay": 10}}


def write_params(root: Path, cyclegan=None, train=None, runtime=None):
    params = {"runtime": {"device": "cpu", **(runtime or {})},
              "train": {"source": "folders", "folders": {"A": str(root / "A"), "B": str(root / "B")},
                        "log_every": 1, "ckpt_every": 5, "sample_every": 0, "loader_workers": 2,
                        "out_dir": str(root / "models"), **(train or {})},
              "cyclegan": {**TINY, **(cyclegan or {})}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def toonlab(root: Path, *args, env=None, **kw) -> subprocess.Popen:
    env = env or {**os.environ, "OMP_NUM_THREADS": "1", "TOONLAB_PROGRESS": "0"}
    return subprocess.Popen([sys.executable, "-m", "toonlab", *args], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def finish(proc: subprocess.Popen, timeout=300) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out
