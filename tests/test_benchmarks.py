"""The benchmarks still run (at toy sizes: a benchmark's figures are read by people, not
asserted here; this only keeps the scripts from rotting as the code moves)."""

import re
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # every benchmark script at toy size: not in `make test-fast`

SMOKE = {
    "cartoonize.py": (["--image-px", "256", "--ngf", "8", "--blocks", "1", "--repeat", "1", "--no-onnx"],
                      "total"),
    "preprocess.py": (["--images", "2", "--workers", "1", "--combos", "photo:mediapipe:mediapipe"],
                      "now / before"),
    "serve.py": (["--uploads", "3", "--image-px", "512", "--ngf", "8", "--blocks", "1", "--cap", "2"], "alive"),
    "train_step.py": (["--models", "dcgan", "--sets", "cpu", "--paths", "fp32", "--steps", "2", "--max-seconds", "1",
                       "--loader-seconds", "1"], r"\d\.\d\dx  \(G every batch; cpu\)"),   # the loader column filled
}


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_runs_at_toy_size(script, tmp_path):
    args, expect = SMOKE[script]
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert re.search(expect, proc.stdout), out[-3000:]
