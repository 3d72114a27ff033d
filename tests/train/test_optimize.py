"""The loop's optimizer steps (toonlab.train.optimize: clearing, fp16 loss scaling, skipped
overflows, clipping), fp16 on CPU for every family, `train.amp` by GPU capability, and the
generators' EMA (toonlab.train.ema), each with an exact resume."""

from __future__ import annotations

import pytest
import torch
from test_precision import _trainer
from torch import nn

from conftest import logged_losses, smoke_cases
from toonlab import registry
from toonlab.params import validate_params
from toonlab.runs.load import read_run, resolve_run
from toonlab.train import checkpoint as ckpt
from toonlab.train import precision
from toonlab.train.optimize import Stepper
from toonlab.train.recipe import Context

CPU = torch.device("cpu")


def _net_and_stepper(fp16: bool, clip: float = 0.0) -> tuple[nn.Module, Stepper]:
    torch.manual_seed(0)
    net = nn.Linear(4, 2)
    return net, Stepper({"G": torch.optim.Adam(net.parameters(), lr=0.1)}, CPU, fp16=fp16, clip_grad=clip)


def test_an_overflowing_fp16_step_is_skipped_counted_and_the_scale_lowered():
    net, steps = _net_and_stepper(fp16=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    scale = steps.scale
    x = torch.ones(3, 4)
    steps.update("G", net(x).sum() * float("inf"))      # an injected inf: gradients overflow
    steps.finish()
    assert steps.skipped == {"G": 1} and steps.stepped == {"G": 0}
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())   # weights untouched
    assert steps.scale == scale / 2
    steps.update("G", net(x).sum())
    steps.finish()
    assert steps.stepped == {"G": 1} and not torch.equal(net.weight, before["weight"])
    # The state a checkpoint keeps brings back the scale and the counts.
    _, again = _net_and_stepper(fp16=True)
    again.load_state_dict(steps.state_dict())
    assert again.scale == steps.scale and again.skipped == {"G": 1} and again.stepped == {"G": 1}


def test_fp32_steps_are_plain_and_clipping_bounds_the_gradient_norm():
    net, steps = _net_and_stepper(fp16=False)
    steps.update("G", net(torch.ones(3, 4)).sum() * float("inf"))
    assert steps.stepped == {"G": 1} and steps.scale == 1.0          # no scaler: nothing skipped
    net, steps = _net_and_stepper(fp16=False, clip=0.5)
    steps.update("G", 1000 * net(torch.ones(3, 4)).sum())
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in net.parameters()]))
    assert norm == pytest.approx(0.5, rel=1e-4)
    # A phase's gradients are cleared before its first backward, not between its losses.
    steps.backward("G", net(torch.ones(1, 4)).sum())
    first = net.bias.grad.clone()
    steps.backward("G", net(torch.ones(1, 4)).sum())
    assert torch.equal(net.bias.grad, 2 * first)


@pytest.mark.parametrize("name", list(smoke_cases()))
def test_every_family_trains_in_fp16_on_cpu(name, one_thread):
    """float16 autocast with loss scaling on CPU (the path of a 7.x GPU): every recipe's
    steps go through the stepper, its losses stay finite and the scaler is live."""
    family, raw = smoke_cases()[name]
    fam = registry.get(family)
    params = registry.resolve(fam.params).model_validate(raw)
    torch.manual_seed(0)
    recipe = fam.build(params, Context(device=CPU, amp_dtype=torch.float16, channels_last=False, total_steps=10))
    batch = precision.synthetic_batch(recipe.data, CPU, 0)
    history = []
    for s in range(4):
        losses = recipe.train_step(batch, s)
        recipe.steps.finish()
        history.append({k: float(v) for k, v in losses.items()})
    assert all(torch.isfinite(torch.tensor(v)) for h in history for v in h.values()), history
    assert recipe.steps.scaler.is_enabled() and recipe.steps.scale > 0
    assert sum(recipe.steps.stepped.values()) + sum(recipe.steps.skipped.values()) > 0
    assert "steps" in recipe.extra_state()


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_fp16_training_decreases_its_losses_and_resumes_bit_exactly(workdir, caplog):
    straight = _trainer(workdir, 6, "fp16", sample_every=2)
    with caplog.at_level("INFO"):
        straight.run(resume="none")
    assert straight.precision.name == "fp16"
    assert "fp16 loss scale" in caplog.text and "overflowing steps skipped" in caplog.text
    losses = logged_losses(workdir / "models/cyclegan")["G_total"]
    assert len(losses) == 6 and losses[-1] < losses[0], losses
    a = ckpt.load(ckpt.latest(workdir / "models/cyclegan/checkpoints"))
    assert a["extra"]["steps"]["scaler"]["scale"] > 0
    # 3 steps, then resumed to 6: the same weights, optimizer state and loss scale.
    (workdir / "models").rename(workdir / "straight")
    _trainer(workdir, 3, "fp16", sample_every=2).run(resume="none")
    _trainer(workdir, 6, "fp16", sample_every=2).run()
    b = ckpt.load(ckpt.latest(workdir / "models/cyclegan/checkpoints"))
    assert _same(a["nets"], b["nets"]) and _same(a["optimizers"], b["optimizers"])
    assert _same(a["extra"]["steps"], b["extra"]["steps"]) and a["extra"]["scaler"] == b["extra"]["scaler"]


def test_ema_is_kept_resumed_exactly_and_used_for_inference(workdir):
    plain = _trainer(workdir, 4, "fp32", sample_every=2)
    plain.run(resume="none")
    trained = ckpt.load(ckpt.latest(workdir / "models/cyclegan/checkpoints"))
    assert "ema" not in trained
    (workdir / "models").rename(workdir / "plain")
    _trainer(workdir, 4, "fp32", sample_every=2, ema=0.9).run(resume="none")
    a = ckpt.load(ckpt.latest(workdir / "models/cyclegan/checkpoints"))
    # The average changes nothing that is trained; it is its own set of generator weights.
    assert _same(a["nets"], trained["nets"]) and set(a["ema"]) == {"G_A", "G_B"}
    assert not torch.equal(a["ema"]["G_A"]["model.1.weight"], a["nets"]["G_A"]["model.1.weight"])
    (workdir / "models").rename(workdir / "ema4")
    _trainer(workdir, 2, "fp32", sample_every=2, ema=0.9).run(resume="none")
    _trainer(workdir, 4, "fp32", sample_every=2, ema=0.9).run()
    b = ckpt.load(ckpt.latest(workdir / "models/cyclegan/checkpoints"))
    assert _same(a["ema"], b["ema"]) and _same(a["nets"], b["nets"])
    loaded = read_run(resolve_run(workdir / "models/cyclegan", workdir / "models"))
    assert _same(loaded.nets["G_A"], b["ema"]["G_A"]) and _same(loaded.nets["D_A"], b["nets"]["D_A"])


@pytest.mark.parametrize(("amp", "capability", "name", "why"), [
    ("auto", (9, 0), "bf16", "auto: native bf16 on compute capability 9.0"),
    ("auto", (8, 0), "bf16", "auto: native bf16 on compute capability 8.0"),
    ("auto", (7, 5), "fp16", "auto: no bf16 units on compute capability 7.5: fp16 with loss scaling"),
    (True, (7, 0), "fp16", "auto: no bf16 units on compute capability 7.0: fp16 with loss scaling"),
    ("auto", (6, 1), "fp32", "auto: compute capability 6.1 has no tensor cores for bf16 or fp16"),
    ("fp16", (9, 0), "fp16", "train.amp: fp16"),
    ("off", (9, 0), "fp32", "train.amp: off"),
    (False, (9, 0), "fp32", "train.amp: off"),
])
def test_amp_on_cuda_follows_the_gpu_capability(amp, capability, name, why):
    chosen = precision.cuda_precision(amp, torch.device("cuda"), capability=capability)
    assert (chosen.name, chosen.reason, chosen.device) == (name, why, "cuda")
    assert chosen.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[name]
    # A resumed auto run keeps its first choice (a V100 run moved to an H100 stays fp16).
    kept = precision.cuda_precision("auto", torch.device("cuda"), chosen.record(), capability=(9, 0))
    assert kept.name == name
    with pytest.raises(Exception, match="train.amp"):
        validate_params({"train": {"amp": "fp8"}})
