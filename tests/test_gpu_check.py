"""`benchmarks/gpu_check.py --smoke --device cpu`: the GPU acceptance script's CPU smoke
mode, run as `make gpu-check ARGS=--smoke` runs it (a subprocess, a scratch working
folder), so the script cannot rot between the runs on a GPU. Every family and system
check must PASS with real numbers; the compile child-process path runs once, with
torch.compile's `eager` backend (inductor on CPU would take minutes)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"

pytestmark = pytest.mark.slow


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    work = tmp_path_factory.mktemp("gpu_check")
    out = work / "results.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TOONLAB_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--out", str(out),
                           "--compile", "on", "--compile-backend", "eager", "--compile-families", "landmarker"],
                          check=False, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    return json.loads(out.read_text()), proc.stdout, work


def test_every_row_passes_with_every_family_and_check(smoke):
    from toonlab.registry import FAMILIES

    result, stdout, work = smoke
    rows = {r["check"]: r for r in result["rows"]}
    failed = {k: r["reason"] for k, r in rows.items() if r["status"] != "PASS"}
    assert not failed, failed
    assert result["ok"] is True and result["mode"] == "smoke" and result["device"] == "cpu"
    families = [f.name for f in FAMILIES]
    assert [r["check"] for r in result["rows"] if r["kind"] == "family"] == families
    assert [r["check"] for r in result["rows"] if r["kind"] == "system"] == ["resume", "torchrun", "onnx", "serve"]
    assert [r["check"] for r in result["rows"] if r["kind"] == "compile"] == ["landmarker+compile"]
    # The figures that would turn `train.compile: auto` on, in a family figures.py's form.
    assert "  figures: landmarker: ('fp32', 32, " in stdout
    # The printed table: one line per row, each with its status.
    for name in rows:
        assert any(line.startswith(name + " ") and " PASS " in line for line in stdout.splitlines()), name
    assert sorted(p.name for p in work.iterdir()) == ["results.json"]   # its scratch files live in a temp dir


def test_family_rows_carry_real_measurements(smoke):
    result, _, _ = smoke
    for row in (r for r in result["rows"] if r["kind"] in ("family", "compile")):
        ex = row["extra"]
        assert _number(row["images_per_s"]) and row["images_per_s"] > 0, row
        assert _number(row["step_ms"]) and row["step_ms"] > 0, row
        assert ex["finite"] is True and ex["steps"] >= 2, row
        assert ex["losses"] and all(_number(v) for v in ex["losses"].values()), row
        assert _number(ex["flops_per_step"]) and ex["flops_per_step"] > 1e5, row   # FlopCounterMode counted
        assert abs(row["images_per_s"] * row["step_ms"] / 1000 - ex["batch"]) < 1e-6 * ex["batch"] + 1e-9
        assert row["peak_mib"] is None and row["mfu"] is None   # CUDA only
    compiled = next(r for r in result["rows"] if r["kind"] == "compile")
    assert compiled["extra"]["compiled"] is True and _number(compiled["extra"]["speedup"])


def test_system_rows_carry_their_evidence(smoke):
    result, _, _ = smoke
    rows = {r["check"]: r for r in result["rows"]}

    resume = rows["resume"]["extra"]
    assert resume["l2_diff"] == 0.0 and resume["max_abs_diff"] == 0.0   # bit-identical on CPU
    assert 0 < resume["killed_after_step"] < resume["total_steps"]
    assert resume["earlier_checkpoints_untouched"] is True   # continued, did not start over
    assert resume["resumed_at"] in (None, resume["killed_after_step"])   # None: the log line was reworded

    torchrun = rows["torchrun"]["extra"]
    assert torchrun["backend"] == "gloo" and torchrun["all_reduce_ok"] is True and torchrun["finite"] is True

    onnx = rows["onnx"]["extra"]
    assert onnx["provider"] == "CPUExecutionProvider"
    diffs = [v for per_file in onnx["parity"].values() for v in per_file.values()]
    assert set(onnx["parity"]) == {"forward.onnx", "backward.onnx"} and len(diffs) == 4
    assert all(_number(v) and 0 <= v <= onnx["tol"] for v in diffs), onnx["parity"]
    assert onnx["tol"] == 1e-3

    serve = rows["serve"]["extra"]
    assert serve["status"] == 200 and serve["faces"] >= 1 and 0 < serve["changed_fraction"] < 1


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda"], check=False, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr


def test_an_fp16_row_measures_the_loss_scaled_step(tmp_path):
    """The fp16 rows (on by default on CUDA): float16 autocast with loss scaling, the
    overflowing steps counted; here on the CPU for one family."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TOONLAB_PROGRESS": "0"}
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--fp16", "on", "--checks",
                           "--families", "cyclegan", "--out", str(out)], check=False, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["check"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["cyclegan", "cyclegan fp16"]
    fp16 = rows["cyclegan fp16"]
    assert fp16["status"] == "PASS" and fp16["extra"]["amp"] == "fp16" and rows["cyclegan"]["extra"]["amp"] == "fp32"
    assert _number(fp16["extra"]["loss_scale"]) and fp16["extra"]["skipped_steps"] >= 0
    assert "fp16 autocast + loss scaling" in fp16["reason"] and "overflowing steps skipped" in fp16["reason"]
