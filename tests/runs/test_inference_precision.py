"""`runtime.cpu_precision` (toonlab.runs.precision): trained networks translating
on CPU in bf16 only where parity with fp32 holds. The parity check on every family's
real inference networks, the auto rule's branches, explicit settings, and the choice
reaching evaluate's metrics. The suite runs with TOONLAB_CPU_BF16=0 (no native bf16)."""

import pytest
import torch

from conftest import smoke_cases
from toonlab import registry
from toonlab.runs import precision as ip
from toonlab.train import precision
from toonlab.train.recipe import Context

CPU = torch.device("cpu")


FAMILIES = smoke_cases("translation", "unconditional")   # every family with inference


def _inference(name: str):
    family, raw = FAMILIES[name]
    fam = registry.get(family)
    params = registry.resolve(fam.params).model_validate(raw)
    torch.manual_seed(0)
    recipe = fam.build(params, Context(device=CPU, amp_dtype=None, channels_last=False, total_steps=10))
    inf = fam.inference(params, {k: v.state_dict() for k, v in recipe.nets.items()})
    for net in (inf.forward, inf.backward, inf.generate):
        if net is not None:
            net.eval()
    return inf


@pytest.mark.parametrize("name", [n for n, (family, _) in FAMILIES.items() if n == family])
def test_bf16_inference_of_every_family_is_within_the_tolerance(name, one_thread):
    inf = _inference(name)
    figures = ip.parity(inf, rounds=1)
    assert 0 < figures["mean_levels"] <= ip.PARITY_MEAN_LEVELS, figures    # > 0: bf16 really ran
    assert figures["p99_levels"] <= ip.PARITY_P99_LEVELS, figures
    fast, chosen = ip.choose(inf, "bf16", CPU)
    assert chosen.name == "bf16" and chosen.reason == "runtime.cpu_precision: bf16"
    net, x = (fast.forward, torch.rand(1, 3, inf.px, inf.px) * 2 - 1) if inf.forward is not None else \
        (fast.generate, torch.randn(1, inf.nz, 1, 1))
    with torch.no_grad():
        y = net(x)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    if inf.backward is not None:
        assert isinstance(fast.backward, ip.Autocast)
    # The networks' weights stay fp32.
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_a_network_that_drifts_in_bf16_stays_fp32_under_auto(monkeypatch, one_thread):
    """Soft-AdaLIN's hourglasses instance-normalise 2 x 2 maps at 32 px: bf16 rounding of
    their inputs is amplified (measured 5.3 levels mean at 32 px, 3.6 at 64, 2.0 at 128,
    1.5 at 256 with random weights): the check catches it and auto keeps fp32."""
    monkeypatch.setattr(ip, "native_bf16", lambda: (True, "amx_bf16"))
    inf = _inference("soft_adalin")
    same, chosen = ip.choose(inf, "auto", CPU)
    assert same is inf and chosen.name == "fp32" and "outside the bf16 tolerance" in chosen.reason, chosen.reason
    assert chosen.probe["mean_levels"] > ip.PARITY_MEAN_LEVELS or chosen.probe["p99_levels"] > ip.PARITY_P99_LEVELS


def test_fp32_leaves_the_networks_alone_and_other_devices_stay_fp32():
    inf = _inference("cyclegan")
    same, chosen = ip.choose(inf, "fp32", CPU)
    assert same is inf and chosen.name == "fp32"
    same, chosen = ip.choose(inf, "bf16", "cuda")
    assert same is inf and chosen.reason == "inference on cuda in fp32"


def test_auto_without_native_bf16_is_fp32_without_a_check(monkeypatch):
    monkeypatch.setattr(ip, "parity", lambda inf: pytest.fail("no check without native bf16"))
    inf = _inference("cyclegan")
    same, chosen = ip.choose(inf, "auto", CPU)
    assert same is inf and chosen.name == "fp32" and "TOONLAB_CPU_BF16=0" in chosen.reason


@pytest.mark.parametrize(("figures", "name", "why"), [
    ({"mean_levels": 0.4, "p99_levels": 1.5, "speedup": 1.8}, "bf16", "within tolerance"),
    ({"mean_levels": 2.5, "p99_levels": 3.0, "speedup": 1.8}, "fp32", "outside the bf16 tolerance"),
    ({"mean_levels": 0.4, "p99_levels": 9.0, "speedup": 1.8}, "fp32", "outside the bf16 tolerance"),
    ({"mean_levels": 0.4, "p99_levels": 1.5, "speedup": 1.02}, "fp32", "not at least 1.1x faster"),
])
def test_auto_with_native_bf16_follows_parity_and_speed(monkeypatch, figures, name, why):
    monkeypatch.setattr(precision, "native_bf16", lambda: (True, "amx_bf16"))
    monkeypatch.setattr(ip, "native_bf16", lambda: (True, "amx_bf16"))
    checked = []
    monkeypatch.setattr(ip, "parity", lambda inf: checked.append(1) or {**figures, "fp32_s": 0.2, "bf16_s": 0.1})
    inf = _inference("cyclegan")
    out, chosen = ip.choose(inf, "auto", CPU, images=100)
    assert chosen.name == name and why in chosen.reason, chosen.reason
    assert isinstance(out.forward, ip.Autocast) == (name == "bf16")
    assert checked == [1] and chosen.probe["mean_levels"] == figures["mean_levels"]
    # A job of a few images stays fp32 without the check.
    out, chosen = ip.choose(inf, "auto", CPU, images=ip.MIN_IMAGES - 1)
    assert chosen.name == "fp32" and "too few" in chosen.reason and checked == [1]


def test_auto_on_a_real_check_records_its_figures(monkeypatch):
    monkeypatch.setattr(ip, "native_bf16", lambda: (True, "amx_bf16"))
    _, chosen = ip.choose(_inference("whitebox"), "auto", CPU)
    assert set(chosen.probe) >= {"mean_levels", "p99_levels", "fp32_s", "bf16_s", "speedup"}
    assert chosen.name in ("fp32", "bf16") and "levels mean" in chosen.reason
    assert "probe: fp32" in chosen.describe()
