"""`train.compile` (toonlab.train.compiling): the auto rule (measured gain, this run's step
time, the steps left), and the trainer compiling, reporting the first step and
checkpointing plain weights. Speed itself is measured by benchmarks/train_step.py --compile;
here torch.compile runs with its `eager` backend (inductor would take minutes)."""

import dataclasses
import json

import pytest
import torch
from test_precision import _trainer

from toonlab import registry
from toonlab.params import validate_params
from toonlab.registry import CompileGain
from toonlab.train import checkpoint as ckpt
from toonlab.train import compiling, precision

CPU = torch.device("cpu")
GAIN = CompileGain(points=(("bf16", 256, 1.5, 45.0), ("bf16", 128, 1.1, 90.0)), measured="test")


def _resolve(setting, remaining=1000, precision="bf16", gain=GAIN, device=CPU, step=1.0, px=256):
    asked = []

    def step_s():
        asked.append(step)
        return step

    return compiling.resolve(setting, device, "cyclegan", gain, precision, px, remaining, step_s), asked


def test_explicit_settings_win():
    assert _resolve(True, gain=None)[0].on and not _resolve(False)[0].on
    assert _resolve(True)[0].reason == "train.compile: true"


@pytest.mark.parametrize(("kw", "why"), [
    ({"device": torch.device("cuda")}, "auto: not measured on cuda"),
    ({"gain": None}, "torch.compile not measured for cyclegan in bf16"),
    ({"precision": "fp32"}, "torch.compile not measured for cyclegan in fp32"),
    ({"gain": CompileGain((("bf16", 256, 0.85, 74.5),))}, "measured not faster for cyclegan in bf16 on CPU near 256 px"),
    ({"remaining": compiling.MIN_REMAINING - 1}, f"left to runs of at least {compiling.MIN_REMAINING} steps"),
])
def test_auto_stays_eager_without_timing_anything(kw, why):
    decision, asked = _resolve("auto", **kw)
    assert not decision.on and why in decision.reason, decision.reason
    assert asked == []


def test_auto_compiles_where_it_pays_back_within_a_few_hundred_steps():
    # 1 s/step eager, 1.5x compiled: 1/3 s saved per step; 45 s of compilation: 135 steps.
    decision, asked = _resolve("auto", step=1.0)
    assert decision.on and asked == [1.0]
    assert decision.estimate["payback_steps"] == pytest.approx(135.0)
    assert "pays back after ~135 steps" in decision.reason
    # A 10x faster step saves 10x less: 1350 steps, beyond PAYBACK_MAX_STEPS.
    decision, _ = _resolve("auto", step=0.1)
    assert not decision.on and f"not within {compiling.PAYBACK_MAX_STEPS}" in decision.reason
    # 135 steps, but only 200 left: it must pay back by the middle of the run.
    decision, _ = _resolve("auto", step=1.0, remaining=200)
    assert not decision.on and "not within 100 (200 steps left)" in decision.reason
    assert compiling.payback_steps(1.0, 45.0, 1.0) == float("inf")
    # The measured size nearest the run's applies: at 128 px, 1.1x and 90 s: 990 steps.
    decision, _ = _resolve("auto", step=1.0, px=96)
    assert not decision.on and "1.10x compiled, ~90 s to compile: pays back after ~990 steps" in decision.reason
    assert GAIN.at("bf16", 192) == (1.5, 45.0) and GAIN.at("fp32", 256) is None


def test_auto_needs_a_cxx_compiler(monkeypatch):
    monkeypatch.setattr(compiling.shutil, "which", lambda name: None)
    decision, asked = _resolve("auto")
    assert not decision.on and "no C++ compiler" in decision.reason and asked == []


def test_the_setting_takes_true_false_auto_and_nothing_else():
    assert validate_params({"train": {"compile": "auto"}}).train.compile == "auto"
    assert validate_params({"train": {"compile": True}}).train.compile is True
    assert validate_params({}).train.compile == "auto"
    with pytest.raises(Exception, match="train.compile"):
        validate_params({"train": {"compile": "yes"}})


def test_the_trainer_compiles_when_auto_says_so_and_reports_the_first_step(workdir, monkeypatch, caplog):
    """auto with a measured gain and a slow eager step: the trainer compiles the trainable
    networks, logs and records the decision and the first step's time, and its checkpoints
    hold the plain networks' weights (a later eager run resumes them)."""
    measured = CompileGain(points=(("fp32", 32, 2.0, 1.0),))
    monkeypatch.setattr(registry.Family, "cpu_compile", property(lambda fam: measured))
    compiled = []
    real = torch.compile

    def eager_compile(net, **kw):
        compiled.append(type(net).__name__)
        return real(net, backend="eager", **kw)

    monkeypatch.setattr(torch, "compile", eager_compile)
    # The eager step time comes from a short timing of a throwaway recipe: slow it down.
    monkeypatch.setattr(compiling, "MIN_REMAINING", 2)
    timed = []
    real_time = precision.time_steps

    def slow_timing(build, device, precisions=("fp32", "bf16"), rounds=2):
        timed.append(precisions)
        out = real_time(build, device, precisions, rounds=1)
        return {**out, **{f"{p}_s": 1.0 for p in precisions}}

    monkeypatch.setattr(precision, "time_steps", slow_timing)
    t = _trainer(workdir, 6, "fp32")
    with caplog.at_level("INFO"):
        t.run(resume="none")
    assert timed == [("fp32",)]
    assert t.compiled.on and "pays back after ~2 steps" in t.compiled.reason, t.compiled.reason
    assert sorted(compiled) == ["NLayerDiscriminator", "NLayerDiscriminator", "ResnetGenerator",
                                "ResnetGenerator"], compiled
    assert "torch.compile on (auto: 1000 ms/step eager" in caplog.text
    assert "the first step, compiling, took" in caplog.text
    summary = json.loads((workdir / "models/cyclegan/summary.json").read_text())
    assert summary["compile"]["on"] and summary["compile"]["first_step_s"] > 0
    state = ckpt.load(ckpt.latest(t.ckpt_dir))
    assert not any("_orig_mod" in k for sd in state["nets"].values() for k in sd)
    # The same run continued with compile off: eager, from the compiled run's weights.
    params_off = _trainer(workdir, 8, "fp32")
    params_off.tp = params_off.tp.model_copy(update={"compile": False})
    params_off.run()
    assert not params_off.compiled.on and ckpt.load(ckpt.latest(t.ckpt_dir))["step"] == 8


def test_a_short_auto_run_stays_eager_and_says_why(workdir, monkeypatch):
    measured = CompileGain(points=(("fp32", 32, 2.0, 1.0),))
    monkeypatch.setattr(registry.Family, "cpu_compile", property(lambda fam: measured))
    t = _trainer(workdir, 2, "fp32")
    t.run(resume="none")
    assert not t.compiled.on and "steps left" in t.compiled.reason
    summary = json.loads((workdir / "models/cyclegan/summary.json").read_text())
    assert summary["compile"] == {"on": False, "reason": t.compiled.reason, "estimate": {}, "first_step_s": None}


def test_compile_figures_live_in_the_family_folder_keyed_by_cpu_kind(monkeypatch):
    """The registry holds no measurements: a family's figures come from its folder's
    figures.py, for this kind of CPU only (figures of the AMX kind never decide elsewhere)."""
    from toonlab.util import cpu

    fam = registry.get("cyclegan")
    assert fam.part("figures") is not None and "cpu_compile" not in {f.name for f in dataclasses.fields(fam)}
    monkeypatch.setattr(cpu, "kind", lambda: "amx")
    assert fam.cpu_compile.at("fp32", 128) == (1.34, 95.6)
    assert registry.get("whitebox_pretrain").cpu_compile is None      # shares the folder, not measured
    monkeypatch.setattr(cpu, "kind", lambda: "no-bf16")
    assert fam.cpu_compile is None
    assert compiling.resolve("auto", torch.device("cpu"), "cyclegan", fam.cpu_compile, "fp32", 128, 1000,
                             lambda: 1.0).reason == "auto: torch.compile not measured for cyclegan in fp32 on CPU"
