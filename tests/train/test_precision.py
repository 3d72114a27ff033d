"""`train.cpu_precision` (toonlab.train.precision): the native-bf16 check, the start-up
probe, the fallback to fp32, the record in checkpoints and summary.json, a resumed run
keeping its precision, and fp32 and bf16 training agreeing step by step for every family.

The suite runs with TOONLAB_CPU_BF16=0 (tests/conftest.py): a CPU without native bf16."""

import json

import pytest
import torch
from train_helpers import finish, toonlab, write_params

from conftest import smoke_cases
from toonlab import registry
from toonlab.params import validate_params
from toonlab.train import checkpoint as ckpt
from toonlab.train import precision
from toonlab.train.recipe import Context
from toonlab.train.trainer import Trainer

CPU = torch.device("cpu")


def _ctx(amp=None) -> Context:
    return Context(device=CPU, amp_dtype=amp, channels_last=False, total_steps=10)


# ----------------------------------------------------------------------------- the choice


def test_without_native_bf16_auto_trains_fp32_and_says_why(workdir):
    """The CLI on a CPU without native bf16 (simulated): auto falls back to fp32 with a log
    line, without a probe, and the run records its precision."""
    write_params(workdir, train={"loader_workers": 0, "cpu_precision": "auto"})
    rc, out = finish(toonlab(workdir, "train", "cyclegan", "--steps", "2"))
    assert rc == 0, out
    assert "train.cpu_precision auto: fp32 (TOONLAB_CPU_BF16=0 says this CPU has no native bf16)" in out, out
    assert "precision fp32 (auto: TOONLAB_CPU_BF16=0" in out and "probe:" not in out, out
    summary = json.loads((workdir / "models/cyclegan/summary.json").read_text())
    assert summary["precision"]["name"] == "fp32" and summary["precision"]["probe"] == {}
    state = ckpt.load(ckpt.latest(workdir / "models/cyclegan/checkpoints"))
    assert state["precision"] == summary["precision"]


def test_native_bf16_needs_onednn_and_the_cpu_flags(monkeypatch):
    monkeypatch.delenv(precision.ENV_NO_BF16)
    monkeypatch.setattr(precision, "_onednn_bf16", lambda: True)
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert precision.native_bf16() == (True, "avx512_bf16")
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx2", "avx512f"})
    ok, why = precision.native_bf16()
    assert not ok and "emulated" in why
    monkeypatch.setattr(precision, "_cpu_flags", lambda: None)      # no /proc/cpuinfo: oneDNN decides
    assert precision.native_bf16()[0]
    monkeypatch.setattr(precision, "_onednn_bf16", lambda: False)
    assert precision.native_bf16() == (False, "oneDNN reports no bf16 support on this CPU")
    monkeypatch.setenv(precision.ENV_NO_BF16, "0")
    monkeypatch.setattr(precision, "_onednn_bf16", lambda: True)
    assert not precision.native_bf16()[0]


def test_probe_times_both_precisions_and_leaves_the_rng_as_it_was():
    from toonlab.models.cyclegan.model import build
    from toonlab.models.cyclegan.params import CycleGANParams

    p = CycleGANParams.model_validate({"model": {"ngf": 8, "ndf": 8, "n_blocks": 1},
                                       "data": {"crop_px": 32, "batch_size": 1}})
    built = []

    def make():
        built.append(build(p, _ctx()))
        return built[-1]

    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    figures = precision.probe(make, CPU)
    assert torch.equal(torch.rand(4), expected)       # the run after the probe is the run without it
    assert figures["fp32_s"] > 0 and figures["bf16_s"] > 0
    assert figures["speedup"] == pytest.approx(figures["fp32_s"] / figures["bf16_s"])
    assert len(built) == 1 and built[0].ctx.amp_dtype == torch.bfloat16   # ran both, bf16 last


def _trainer(root, steps: int, setting: str, out: str = "models", **train) -> Trainer:
    """A tiny CycleGAN trainer on `root`'s A/B folders; `train`: more train.* settings."""
    params = validate_params({
        "train": {"source": "folders", "folders": {"A": str(root / "A"), "B": str(root / "B")},
                  "cpu_precision": setting, "log_every": 1, "ckpt_every": 2, "sample_every": 0,
                  "loader_workers": 0, "out_dir": str(root / out), **train},
        "cyclegan": {"model": {"ngf": 8, "ndf": 8, "n_blocks": 1, "n_layers_d": 2},
                     "data": {"crop_px": 32, "load_px": 36, "batch_size": 2},
                     "optim": {"steps_constant": 10, "steps_decay": 10}}})
    return Trainer(registry.get("cyclegan"), params.cyclegan, params.train, device=CPU, packed_dir="unused",
                   steps=steps)


def test_auto_follows_the_probe_and_a_resumed_run_keeps_its_precision(workdir, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda: (True, "amx_bf16"))
    probes = []

    def fake_probe(speedup):
        def run(build, device):
            probes.append(speedup)
            return {"fp32_s": 0.3, "bf16_s": 0.3 / speedup, "speedup": speedup, "probe_s": 1.0}
        return run

    monkeypatch.setattr(precision, "probe", fake_probe(2.0))
    t = _trainer(workdir, 2, "auto")
    t.run(resume="none")
    assert t.precision.name == "bf16" and t.ctx.amp_dtype == torch.bfloat16
    assert "faster in the probe" in t.precision.reason and t.precision.probe["speedup"] == 2.0
    assert ckpt.load(ckpt.latest(t.ckpt_dir))["precision"]["name"] == "bf16"

    # Resumed with auto: no new probe (it would now say fp32), the run stays bf16.
    monkeypatch.setattr(precision, "probe", fake_probe(0.6))
    t = _trainer(workdir, 4, "auto")
    t.run()
    assert probes == [2.0] and t.precision.name == "bf16" and "kept from the run's start" in t.precision.reason
    state = ckpt.load(ckpt.latest(t.ckpt_dir))
    assert state["step"] == 4 and state["precision"]["name"] == "bf16"
    t = _trainer(workdir, 5, "auto")       # resumed again: the reason does not nest
    t.run()
    assert t.precision.reason.count("kept from the run's start") == 1, t.precision.reason
    # Moved to a CPU without native bf16: auto goes on in fp32.
    monkeypatch.setattr(precision, "native_bf16", lambda: (False, "oneDNN reports no bf16 support on this CPU"))
    t = _trainer(workdir, 6, "auto")
    t.run()
    assert t.precision.name == "fp32" and "started in bf16, but oneDNN reports no bf16" in t.precision.reason
    # An explicit setting wins over the stored choice (and continues the run).
    monkeypatch.setattr(precision, "native_bf16", lambda: (True, "amx_bf16"))
    t = _trainer(workdir, 8, "fp32")
    t.run()
    assert t.precision.name == "fp32" and t.ctx.amp_dtype is None
    summary = json.loads((workdir / "models/cyclegan/summary.json").read_text())
    assert summary["precision"]["reason"] == "train.cpu_precision: fp32"
    # A new run whose probe finds bf16 slower trains fp32.
    t = _trainer(workdir, 2, "auto", out="other")
    t.run(resume="none")
    assert t.precision.name == "fp32" and "not at least 1.1x faster" in t.precision.reason


# ----------------------------------------------------------------------------- fp32 and bf16 agree

# Tiny settings of every family. Over the first STEPS steps on the same seed and batches,
# every loss of the bf16 run is within REL of the fp32 run's (relative to |fp32| + ABS);
# measured worst cases: 3.5% (Soft-AdaLIN G_cam), 3.2% (CycleGAN G_adv), 2.5% (DCGAN G).
STEPS, REL, ABS = 4, 0.10, 0.05
FAMILIES = smoke_cases()   # every registered family (and declared variant) at smoke size


@pytest.mark.parametrize("name", list(FAMILIES))
def test_fp32_and_bf16_training_agree_step_by_step(name, one_thread):
    family, raw = FAMILIES[name]
    fam = registry.get(family)
    params = registry.resolve(fam.params).model_validate(raw)
    history = {}
    for amp in (None, torch.bfloat16):
        torch.manual_seed(0)
        recipe = fam.build(params, _ctx(amp))
        history[amp] = [{k: float(v) for k, v in recipe.train_step(precision.synthetic_batch(recipe.data, CPU, s),
                                                                    s).items()}
                        for s in range(STEPS)]
    fp32, bf16 = history[None], history[torch.bfloat16]
    differs = False
    for s in range(STEPS):
        for k, a in fp32[s].items():
            b = bf16[s][k]
            assert abs(b - a) <= REL * (abs(a) + ABS), (name, s, k, a, b)
            differs |= a != b
    assert differs, "the bf16 run computed exactly what fp32 did: autocast was not in effect"
