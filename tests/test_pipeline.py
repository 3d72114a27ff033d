"""The stage table and the computed code dependencies (toonlab.pipeline): dvc.yaml is the
table rendered, each stage's code is the import closure of its modules, and the README's
table is the table printed. The end-to-end check that editing a file re-runs exactly the
stages holding it, under DVC and Snakemake, is in test_drivers.py."""

from __future__ import annotations

import pytest

from conftest import REPO
from toonlab import pipeline, registry
from toonlab.params import load_params


def test_dvc_yaml_is_the_stage_table_rendered():
    diff = pipeline.check_dvc_yaml(load_params(REPO / "params.yaml"), REPO / "dvc.yaml")
    assert diff == [], f"dvc.yaml is out of date for {diff}: run `toonlab pipeline --write`"


def test_the_check_names_a_stage_whose_code_list_differs(tmp_path):
    import yaml

    params = load_params(REPO / "params.yaml")
    doc = yaml.safe_load(pipeline.dvc_yaml(params))
    doc["stages"]["train_ugatit"]["deps"].remove("src/toonlab/models/ugatit/nets.py")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(doc))
    assert pipeline.check_dvc_yaml(params, tmp_path / "dvc.yaml") == ["train_ugatit"]


def test_every_family_has_its_training_stage_and_rule():
    names = {s.name for s in pipeline.stages()}
    for fam in registry.FAMILIES:
        stage = pipeline.stage(f"train_{fam.name}")
        assert stage.snakemake_rules == (f"train_{fam.name}",) and stage.cmd.endswith(f"train_{fam.name}")
        assert (f"generate_{fam.name}" in names) == (fam.kind == "unconditional")


def test_a_family_stage_holds_its_own_code_and_not_the_others():
    ugatit = pipeline.code_deps("train_ugatit")
    # Imported by ugatit/model.py: the hand-written list used to miss it.
    assert {"src/toonlab/models/ugatit/nets.py", "src/toonlab/models/ugatit/model.py",
            "src/toonlab/train/trainer.py", "src/toonlab/train/recipe.py", "workflow/rules/train.smk"} <= set(ugatit)
    assert not [f for f in ugatit if "/cyclegan/" in f or "/dcgan/" in f or "/whitebox/" in f]
    # The ablation schema is the ablations stage's code, not the trainings': editing it re-runs none.
    assert "src/toonlab/ablations.py" in pipeline.code_deps("ablations")
    assert not [s.name for s in pipeline.stages() if s.name.startswith("train_")
                and "src/toonlab/ablations.py" in pipeline.code_deps(s.name)]
    # White-box reads the landmarker run for its landmark loss: its code is White-box's too.
    assert "src/toonlab/models/landmarker/model.py" in pipeline.code_deps("train_whitebox")
    # Evaluation loads whatever family a checkpoint names, so it holds every evaluable family.
    evaluate = set(pipeline.code_deps("evaluate"))
    for name in registry.with_inference():
        assert pipeline.module_file(registry.get(name).model_module).relative_to(REPO).as_posix() in evaluate
    assert {"src/toonlab/faces/pack.py", "src/toonlab/faces/detectors.py"} <= evaluate
    # The command-line shell is no stage's code.
    for s in pipeline.stages():
        assert not {"src/toonlab/cli.py", "src/toonlab/params.py"} & set(pipeline.code_deps(s.name)), s.name


def test_closure_follows_imports_in_functions_and_skips_type_checking(tmp_path, monkeypatch):
    pkg = tmp_path / "toonlab"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\n"
                              "from toonlab.sub import b\n"
                              "if TYPE_CHECKING:\n    from toonlab import hinted\n"
                              "def f():\n    from . import lazy\n")
    (pkg / "sub" / "b.py").write_text("from ..c import thing\n")
    for name in ("c", "lazy", "hinted", "unused"):
        (pkg / f"{name}.py").write_text("thing = 1\n")
    monkeypatch.setattr(pipeline, "PACKAGE_DIR", pkg)
    pipeline.imports_of.cache_clear()
    pipeline._code_deps.cache_clear()
    try:
        got = sorted(p.relative_to(tmp_path).as_posix() for p in pipeline.closure(["toonlab.a"]))
        assert got == ["toonlab/__init__.py", "toonlab/a.py", "toonlab/c.py", "toonlab/lazy.py",
                       "toonlab/sub/__init__.py", "toonlab/sub/b.py"]
        (pkg / "sub" / "b.py").write_text("from toonlab.nowhere import thing\n")
        pipeline.imports_of.cache_clear()
        with pytest.raises(ImportError, match="imports toonlab.nowhere, which do not exist"):
            pipeline.closure(["toonlab.a"])
    finally:
        pipeline.imports_of.cache_clear()
        pipeline._code_deps.cache_clear()


def test_readme_has_the_stage_and_command_tables():
    from toonlab.cli import command_table

    readme = (REPO / "README.md").read_text()
    for table in (pipeline.markdown_table(), command_table()):
        assert table in readme, "README's tables are stale: paste `toonlab pipeline --markdown`"
    assert "| `cartoonize` | `toonlab.apps.cartoonize` |" in command_table()


def test_dvc_lock_records_only_stages_of_dvc_yaml():
    """A renamed or removed stage leaves no entry behind in the committed dvc.lock."""
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    locked = yaml.safe_load((REPO / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    stale = [name for name in locked
             if name.partition("@")[0] not in stages or ("@" in name) != ("foreach" in stages[name.partition("@")[0]])]
    assert stale == [], f"dvc.lock has entries of stages dvc.yaml no longer has: {stale}"
