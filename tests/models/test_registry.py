"""The model registry is the one place that lists families: a new family is its package,
one registry entry and its params.yaml section, and everything else (the CLI, the params
schema, evaluation, export, the Snakemake rules, the DVC stages) follows."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, run, write_packed
from toonlab import registry

TINY_PARAMS = '''\
"""The `tiny` params.yaml section: a minimal translation family for the registry test."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from toonlab.schema import Section


class TinyData(Section):
    crop_px: Annotated[int, Field(ge=8, le=128)] = 32
    batch_size: Annotated[int, Field(ge=1)] = 2
    domain_a: str = "photo"
    domain_b: str = "anime"


class TinyParams(Section):
    ch: Annotated[int, Field(ge=1)] = 4
    steps: Annotated[int, Field(ge=1)] = 2
    lr: Annotated[float, Field(gt=0)] = 1e-3
    data: TinyData = TinyData()
'''

TINY_MODEL = '''\
"""A minimal translation family: one small conv net A -> B trained with L1 to B's colours."""

from __future__ import annotations

import torch
from torch import nn

from toonlab.models.common import RecipeBase, adam
from toonlab.train.recipe import DataSpec
from toonlab.runs.inference import Inference


class Net(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, ch, 3, padding=1), nn.ReLU(), nn.Conv2d(ch, 3, 3, padding=1), nn.Tanh())

    def forward(self, x):
        return self.body(x)


class TinyRecipe(RecipeBase):
    grid_rows = [["real_A", "fake_B"]]

    def __init__(self, params, ctx):
        super().__init__(ctx)
        d = params.data
        self.data = DataSpec(domains={"A": d.domain_a, "B": d.domain_b}, crop_px=d.crop_px,
                             batch_size=d.batch_size, load_px=d.crop_px)
        self.nets = {"G": Net(params.ch)}
        self.opt = {"G": adam(self.nets["G"].parameters(), params.lr, (0.5, 0.999), ctx.device)}
        self.sched = {}

    def train_step(self, batch, step):
        fake = self.nets["G"](batch["A"])
        loss = (fake.mean(dim=(2, 3)) - batch["B"].mean(dim=(2, 3))).abs().mean()
        self.opt["G"].zero_grad(set_to_none=True)
        loss.backward()
        self.opt["G"].step()
        return {"G_total": loss.detach()}

    @torch.no_grad()
    def sample(self, batch):
        return {"real_A": batch["A"], "fake_B": self.nets["G"](batch["A"])}


def build(params, ctx):
    return TinyRecipe(params, ctx)


def inference(params, nets):
    G = Net(params.ch)
    G.load_state_dict(nets["G"])
    return Inference("tiny", params.data.domain_a, params.data.domain_b, params.data.crop_px, G.eval())
'''

TINY_PRESETS = '''\
"""Presets of the `tiny` section (optional: found by name in the family's folder)."""

from __future__ import annotations

from typing import Any

ABOUT = {"demo": "4 channels, 2 steps", "reference": "64 channels, 1000 steps"}
PRESETS: dict[str, dict[str, Any]] = {"demo": {"ch": 4, "steps": 2}, "reference": {"ch": 64, "steps": 1000}}
'''

TINY_IMPORTER = '''\
"""`toonlab import-weights tinyref G.pth`: a reference implementation's tiny generator."""

from __future__ import annotations

from toonlab.models.importing import Format, Pending, load_torch, state_dict


def read(files):
    from toonlab.models.tiny.model import Net

    sd = state_dict(load_torch(files[0]), files[0].name)
    ch = int(sd["body.0.weight"].shape[0])
    return Pending({"ch": ch}, {"G": (sd, files[0].name)}, lambda p: {"G": Net(p.ch).state_dict()}, {"G": "G"})


FORMATS = {"tinyref": Format("tiny", read, "a tiny reference generator, G.pth")}
'''

ENTRY = '''    Family("tiny", params="toonlab.models.tiny.params:TinyParams", model="toonlab.models.tiny.model",
           steps=lambda p: p.steps, domains=lambda p: [p.data.domain_a, p.data.domain_b]),
'''


def add_tiny_family(project: Path, *, presets: bool = False, importer: bool = False) -> None:
    """What a developer writes for a new family: its package (with, optionally, its presets
    and its weights importer), one registry entry, its section. Nothing else: no family list
    to extend anywhere (`evaluate.runs: []` means every family with inference)."""
    pkg = project / "src/toonlab/models/tiny"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""The tiny family."""\n')
    (pkg / "params.py").write_text(TINY_PARAMS)
    (pkg / "model.py").write_text(TINY_MODEL)
    if presets:
        (pkg / "presets.py").write_text(TINY_PRESETS)
    if importer:
        (pkg / "importer.py").write_text(TINY_IMPORTER)
    reg = project / "src/toonlab/registry.py"
    text = reg.read_text()
    anchor = "FAMILIES: tuple[Family, ...] = (\n"
    assert anchor in text
    reg.write_text(text.replace(anchor, anchor + ENTRY, 1))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tiny"] = {"ch": 4, "steps": 2, "lr": 1e-3, "data": {"crop_px": 32, "batch_size": 2,
                                                                "domain_a": "photo", "domain_b": "anime"}}
    params["train"].update({"log_every": 1, "sample_every": 0, "ckpt_every": 2, "loader_workers": 0})
    assert params["evaluate"]["runs"] == []
    params["evaluate"].update({"max_images": 2, "fixed_inputs": 2})
    params["ablations"]["variants"]["tiny_wide"] = {"family": "tiny", "overrides": {"ch": 8}, "steps": 1}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _env(project: Path) -> dict[str, str]:
    # The copy's sources, not the installed (editable) package of the repository.
    return {**os.environ, "PYTHONPATH": str(project / "src"), "TOONLAB_PROGRESS": "0"}


def toonlab(project: Path, *args: str, check: bool = True):
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "toonlab", *args], cwd=project, env=_env(project),
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode:
        raise AssertionError(f"toonlab {' '.join(args)} exited {proc.returncode}\n{proc.stderr}")
    return proc


@pytest.mark.slow
def test_a_new_family_needs_its_package_one_entry_and_its_section(project):
    add_tiny_family(project)
    rng = np.random.default_rng(0)
    for domain in ("photo", "anime"):
        write_packed(project / "data/packed", domain, rng.integers(0, 256, (4, 128, 128, 3), dtype=np.uint8),
                     rng.uniform(40, 90, (4, 5, 2)))

    # The params schema has its section, ablation variants may name it, the CLI trains it.
    shown = toonlab(project, "params", "--section", "tiny").stdout
    assert "crop_px: 32" in shown
    toonlab(project, "train", "tiny")
    summary = yaml.safe_load((project / "models/tiny/summary.json").read_text())
    assert summary["family"] == "tiny" and summary["steps"] == 2
    toonlab(project, "train", "tiny", "--variant", "tiny_wide")
    assert (project / "models/ablations/tiny_wide/summary.json").is_file()

    # Evaluated and exported like any translation run.
    toonlab(project, "evaluate", "tiny")
    metrics = yaml.safe_load((project / "metrics/tiny.json").read_text())
    assert metrics["family"] == "tiny" and metrics["n_images"] == 2 and metrics["source"] == "photo"
    toonlab(project, "export", "--run", "tiny")
    manifest = yaml.safe_load((project / "models/tiny/export/export.json").read_text())
    assert manifest["family"] == "tiny" and manifest["files"] == {"forward": "forward.onnx"}

    # The drivers derive their training stage: a Snakemake rule, and a DVC stage once
    # dvc.yaml is regenerated (the check names what is out of date until then).
    dry = run(["snakemake", "-n", "train_tiny"], project, env=_env(project))
    assert "train_tiny" in dry.stdout
    stale = toonlab(project, "pipeline", "--check", check=False)
    assert stale.returncode == 1 and "train_tiny" in stale.stderr
    toonlab(project, "pipeline", "--write")
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    deps = stages["train_tiny"]["deps"]
    assert "src/toonlab/models/tiny/model.py" in deps and "src/toonlab/models/tiny/params.py" in deps
    assert "src/toonlab/models/cyclegan/model.py" not in deps
    assert "tiny" in stages["ablations"]["params"]
    assert "src/toonlab/models/tiny/model.py" in stages["evaluate"]["do"]["deps"]
    assert "tiny" in stages["evaluate"]["foreach"]          # evaluated by default, like every family
    toonlab(project, "pipeline", "--check")
    listed = run(["dvc", "stage", "list"], project, timeout=120)
    assert "train_tiny" in listed.stdout


def test_a_family_with_presets_and_an_importer_needs_no_other_edit(project):
    """Its presets.py gives `toonlab preset` switches, its importer.py a format of
    `toonlab import-weights`: found by name in its folder, with no list edited anywhere."""
    import json

    import torch
    from torch import nn

    add_tiny_family(project, presets=True, importer=True)
    toonlab(project, "preset", "reference", "tiny")
    assert yaml.safe_load((project / "params.yaml").read_text())["tiny"]["ch"] == 64
    assert "tiny: reference" in toonlab(project, "preset").stdout
    toonlab(project, "preset", "demo", "tiny")
    assert yaml.safe_load((project / "params.yaml").read_text())["tiny"]["ch"] == 4

    assert "tinyref" in toonlab(project, "import-weights", "--help").stdout

    class Reference(nn.Module):    # the reference implementation's generator, 6 channels
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 3, padding=1),
                                      nn.Tanh())

    torch.save(Reference().state_dict(), project / "G.pth")
    toonlab(project, "import-weights", "tinyref", "G.pth", "--out", "models/tiny_imported")
    summary = json.loads((project / "models/tiny_imported/summary.json").read_text())
    config = json.loads((project / "models/tiny_imported/config.json").read_text())
    assert summary["family"] == "tiny" and config["params"]["ch"] == 6
    bad = toonlab(project, "import-weights", "tinyref", "G.pth", "--out", "models/tiny_imported", check=False)
    assert bad.returncode == 2 and "exists and is not empty" in bad.stderr


def test_every_family_is_complete():
    """Each entry resolves: a light params class (a pydantic section), a model module with
    its builder, and `inference` for the families that have one."""
    import importlib

    from toonlab.schema import Section

    for fam in registry.FAMILIES:
        assert issubclass(fam.params_cls, Section)
        module = importlib.import_module(fam.model_module)
        assert callable(getattr(module, fam.builder)), fam.name
        if fam.has_inference:
            assert callable(getattr(module, "inference", None)), fam.name
        assert fam.domains(fam.params_cls()), fam.name
        assert fam.total_steps(fam.params_cls.model_validate(_steps_set(fam))) > 0


def _steps_set(fam: registry.Family) -> dict:
    """Settings with a non-zero step count (CycleGAN's defaults derive it from the data)."""
    return {"optim": {"steps_constant": 1, "steps_decay": 1}} if fam.name == "cyclegan" else {}


def test_registry_drives_the_choices_and_defaults():
    from toonlab.ablations import AblationVariant
    from toonlab.eval.params import EvaluateParams
    from toonlab.params import Params, load_params

    assert registry.names() == [f.name for f in registry.FAMILIES] and len(set(registry.names())) > 1
    assert registry.with_inference() == [f.name for f in registry.FAMILIES if f.kind != "auxiliary"]
    # evaluate.runs: [] (the committed default) reads as every family with inference.
    assert EvaluateParams().runs == EvaluateParams(runs=[]).runs == registry.with_inference()
    assert EvaluateParams(runs=["cyclegan"]).runs == ["cyclegan"]
    assert load_params(REPO / "params.yaml").evaluate.runs == registry.with_inference()
    for name, cls in registry.sections().items():
        assert Params.model_fields[name].annotation is cls
    with pytest.raises(Exception, match="landmarker"):   # auxiliary families have no ablations
        AblationVariant(family="landmarker")
    assert registry.get("whitebox_pretrain").params_section == "whitebox"
    with pytest.raises(Exception, match="no model family 'stylegan'; registered: cyclegan, dcgan"):
        registry.get("stylegan")


def test_run_folders_and_the_runs_a_family_reads_first():
    from toonlab.params import validate_params

    p = validate_params({"whitebox": {"pretrain": {"run_dir": "runs/pre"}, "loss": {"landmark": 0.0}}})
    wb, pre = registry.get("whitebox"), registry.get("whitebox_pretrain")
    assert pre.run_dir(p) == "runs/pre" and wb.run_dir(p) == "models/whitebox"
    assert wb.needed_runs(p) == ["runs/pre"]
    assert wb.needed_runs(p, all_of_them=True) == ["runs/pre", "models/landmarker"]
    p = validate_params({"whitebox": {"loss": {"landmark": 1.0}}})
    assert wb.needed_runs(p) == ["models/whitebox_pretrain", "models/landmarker"]


def test_the_registry_module_stays_light():
    """Naming families costs no import of their code (the Snakefile and `--help` rely on it)."""
    import subprocess

    code = textwrap.dedent("""
        import sys
        from toonlab import registry
        registry.families(); registry.with_inference()
        print(sorted(m for m in sys.modules if m.startswith(('toonlab.models', 'torch', 'pydantic'))))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
