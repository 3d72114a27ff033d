"""The loop's optimizer steps (toonlab.train.optimize: phases, clearing, fp16 loss scaling,
skipped overflows, clipping, gradient accumulation), fp16 on CPU and accumulation for every
family, `train.amp` by GPU capability, and the generators' EMA (toonlab.train.ema), each
with an exact resume."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_precision import _trainer
from torch import nn

from conftest import logged_losses, smoke_cases
from toonlab import registry
from toonlab.errors import ToonlabError, UsageError
from toonlab.params import validate_params
from toonlab.runs.load import read_run, resolve_run
from toonlab.train import checkpoint as ckpt
from toonlab.train import optimize, precision
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


class _TwoPhases:
    """A discriminator phase, then a generator phase against the updated discriminator (the
    shape of U-GAT-IT's and DCGAN's steps), with plain SGD so that gradients show in the weights."""

    def __init__(self):
        torch.manual_seed(0)
        self.G, self.D = nn.Linear(3, 3), nn.Linear(3, 1)
        self.steps = Stepper({"D": torch.optim.SGD(self.D.parameters(), lr=0.1),
                              "G": torch.optim.SGD(self.G.parameters(), lr=0.1)}, CPU)
        self.seen: list[torch.Tensor] = []

    def phases(self, x, step):
        with torch.no_grad():
            fake = self.G(x)
        d = (self.D(x) - 1).pow(2).mean() + self.D(fake).pow(2).mean()
        yield "D", d
        self.seen.append(self.D.weight.detach().clone())   # what the G phase is judged by
        g = (self.D(self.G(x)) - 1).pow(2).mean()
        yield "G", g
        return {"D": d.detach(), "G": g.detach()}


def test_phases_step_in_order_and_accumulation_takes_the_mean_gradient():
    x = torch.randn(8, 3)
    one = _TwoPhases()
    d0 = one.D.weight.detach().clone()
    whole = one.steps.drive([one.phases(x, 0)])
    # The G phase ran after the D step: it saw the updated discriminator.
    assert len(one.seen) == 1 and not torch.equal(one.seen[0], d0) and torch.equal(one.seen[0], one.D.weight)
    # Two micro-batches of 4, accumulated: every phase sees the weights the whole batch's
    # phase saw, so the step is the whole batch's step (the mean of the micro-batches' means).
    acc = _TwoPhases()
    parts = acc.steps.drive([acc.phases(x[:4], 0), acc.phases(x[4:], 0)])
    assert len(acc.seen) == 2 and all(torch.allclose(w, one.seen[0], atol=1e-7) for w in acc.seen)
    for a, b in ((one.G, acc.G), (one.D, acc.D)):
        for pa, pb in zip(a.parameters(), b.parameters()):
            assert torch.allclose(pa, pb, atol=1e-6), (pa, pb)
    assert acc.steps.stepped == {"D": 1, "G": 1}      # one step each, not one per micro-batch
    assert parts["D"] == pytest.approx(float(whole["D"]), rel=1e-5)
    # Micro-batches whose phases differ cannot share a step.
    odd = _TwoPhases()

    def d_only(x, step):
        yield "D", odd.D(x).pow(2).mean()
        return {}
    with pytest.raises(ToonlabError, match="different"):
        odd.steps.drive([odd.phases(x[:4], 0), d_only(x[4:], 0)])


def test_accumulated_cyclegan_step_equals_the_whole_batch_step(one_thread):
    """A real family: CycleGAN's norms act per sample, so (with the image pool off and SGD in
    place of Adam, whose first step would only show the gradients' signs) two micro-batches
    of 2 accumulated train exactly as one batch of 4, up to float rounding."""
    fam = registry.get("cyclegan")
    raw = smoke_cases()["cyclegan"][1]
    params = registry.resolve(fam.params).model_validate({**raw, "optim": {"pool_size": 0}})

    def build(accumulate: int):
        torch.manual_seed(0)
        ctx = Context(device=CPU, amp_dtype=None, channels_last=False, total_steps=10,
                      extra={"accumulate": accumulate} if accumulate > 1 else {})
        recipe = fam.build(params, ctx)
        recipe.opt = {k: torch.optim.SGD(o.param_groups[0]["params"], lr=0.5) for k, o in recipe.opt.items()}
        return recipe

    untrained = build(1)
    batch = precision.synthetic_batch(dataclasses.replace(untrained.data, batch_size=4), CPU, 0)
    trained = []
    for accumulate in (1, 2):
        recipe = build(accumulate)
        optimize.train_step(recipe, [{k: v[i::accumulate] for k, v in batch.items()} for i in range(accumulate)], 0)
        trained.append(recipe)
    whole, acc = trained
    for name, net in whole.nets.items():
        start = untrained.nets[name].state_dict()
        moved = max(float((v - start[k]).abs().max()) for k, v in net.state_dict().items())
        off = max(float((v - acc.nets[name].state_dict()[k]).abs().max()) for k, v in net.state_dict().items())
        assert moved > 1e-3 and off < 1e-3 * moved, (name, moved, off)   # it trained, the same way


@pytest.mark.parametrize("name", list(smoke_cases()))
def test_every_family_accumulates_gradients(name, one_thread):
    """`train.accumulate: 2` for every registered family: one optimizer step per phase on
    two micro-batches, finite losses, every trained network updated."""
    family, raw = smoke_cases()[name]
    fam = registry.get(family)
    params = registry.resolve(fam.params).model_validate(raw)
    torch.manual_seed(0)
    recipe = fam.build(params, Context(device=CPU, amp_dtype=None, channels_last=False, total_steps=10,
                                       extra={"accumulate": 2}))
    optimize.check_accumulate(recipe, 2, family)
    before = {k: [p.detach().clone() for p in n.parameters() if p.requires_grad] for k, n in recipe.nets.items()}
    micro = [precision.synthetic_batch(recipe.data, CPU, s) for s in (0, 1)]
    losses = optimize.train_step(recipe, micro, 0)
    assert losses and all(torch.isfinite(v).all() for v in losses.values()), losses
    assert set(recipe.steps.stepped.values()) <= {0, 1} and sum(recipe.steps.stepped.values()) >= 1
    stepped = [k for k, n in recipe.steps.stepped.items() if n]
    trained = {k for k, ps in before.items() if ps and any(
        not torch.equal(a, b) for a, b in zip(ps, [p for p in recipe.nets[k].parameters() if p.requires_grad]))}
    assert trained, (name, stepped)


def test_an_accumulating_run_takes_k_batches_a_step_and_resumes_exactly(workdir):
    straight = _trainer(workdir, 4, "fp32", accumulate=2)
    straight.run(resume="none")
    a = ckpt.load(ckpt.latest(workdir / "models/cyclegan/checkpoints"))
    assert a["step"] == 4 and a["data"]["position"] == 4 * 2 * 2    # 4 steps x 2 micro-batches x 2 images
    assert a["config"]["train"]["accumulate"] == 2
    (workdir / "models").rename(workdir / "straight")
    _trainer(workdir, 2, "fp32", accumulate=2).run(resume="none")
    _trainer(workdir, 4, "fp32", accumulate=2).run()
    b = ckpt.load(ckpt.latest(workdir / "models/cyclegan/checkpoints"))
    assert _same(a["nets"], b["nets"]) and _same(a["optimizers"], b["optimizers"]) and a["data"] == b["data"]
    # Another accumulation is another run: refused (naming the key) unless asked to restart.
    with pytest.raises(UsageError, match="accumulate"):
        _trainer(workdir, 6, "fp32").run()


def test_accumulation_needs_the_recipe_s_phases():
    class StepsItself:     # a recipe with only train_step (it steps its own optimizers)
        def train_step(self, batch, step):
            return {}
    optimize.check_accumulate(StepsItself(), 1, "tiny")       # without accumulation: fine
    with pytest.raises(UsageError, match="train.accumulate: 2: the tiny recipe steps its optimizers itself"):
        optimize.check_accumulate(StepsItself(), 2, "tiny")


def test_ugatit_s_accumulating_path_recomputes_the_same_translations(one_thread):
    """Accumulating, U-GAT-IT makes its translations again for the G phase instead of
    holding each micro-batch's graph across the D step: the same step, bit for bit."""
    family, raw = smoke_cases()["ugatit"]
    fam = registry.get(family)
    params = registry.resolve(fam.params).model_validate(raw)
    out = []
    for extra in ({}, {"accumulate": 2}):
        torch.manual_seed(0)
        recipe = fam.build(params, Context(device=CPU, amp_dtype=None, channels_last=False, total_steps=10,
                                           extra=extra))
        recipe.steps.drive([recipe.phases(precision.synthetic_batch(recipe.data, CPU, 0), 0)])
        out.append({k: n.state_dict() for k, n in recipe.nets.items()})
    assert _same(out[0], out[1])


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
