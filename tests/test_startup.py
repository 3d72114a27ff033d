"""The configuration layer is light: the command line's start-up, `toonlab params` and the
Snakefile's parse import neither torch nor OpenCV, and toonlab's modules import each other
without cycles."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from toonlab import pipeline

HEAVY = ("torch", "cv2", "torchvision", "mediapipe", "onnxruntime")


def heavy_modules_after(code: str, cwd) -> list[str]:
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import sys
        print("HEAVY", sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("HEAVY"))
    return eval(line.removeprefix("HEAVY "))  # noqa: S307 - our own printed list


def test_help_and_params_load_no_heavy_module(tmp_path):
    (tmp_path / "params.yaml").write_text("{}\n")
    for argv in (["--help"], ["params"], ["train", "--help"], ["pipeline", "--deps", "train_ugatit"]):
        loaded = heavy_modules_after(f"""
            from toonlab.cli import main
            try:
                main({argv!r})
            except SystemExit:
                pass
        """, tmp_path)
        assert loaded == [], f"toonlab {' '.join(argv)} imported {loaded}"


def test_snakefile_parse_loads_no_heavy_module(project):
    """A real parse of the workflow (every rule file, the generated training rules, the code
    dependencies of every stage) through Snakemake's API."""
    loaded = heavy_modules_after("""
        from pathlib import Path
        from snakemake.api import SnakemakeApi
        from snakemake.settings.types import OutputSettings, ResourceSettings

        with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
            workflow = api.workflow(resource_settings=ResourceSettings(), snakefile=Path("Snakefile"))
            rules = {r.name for r in workflow._workflow.rules}
            assert {"train_ugatit", "train_whitebox_pretrain", "generate_dcgan", "evaluate_run"} <= rules, rules
    """, project)
    assert loaded == []


def _with_import(tmp_path, module_path: str, imported: str):
    """A copy of the package whose `module_path` also imports `imported` (inside a function,
    where the import checks look too)."""
    import shutil

    from toonlab import layout

    copy = tmp_path / "toonlab"
    shutil.copytree(pipeline.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / module_path, "a", encoding="utf-8") as f:
        f.write(f"\n\ndef _added():\n    import {imported}  # noqa: F401\n")
    return layout.modules(copy)


def test_no_import_cycles(tmp_path):
    """toonlab's modules, with every import (also those inside functions), form no cycle;
    one added import that closes a loop is caught."""
    from toonlab import layout

    assert layout.cycle(layout.modules()) == []
    broken = _with_import(tmp_path, "util/keys.py", "toonlab.registry")      # registry imports util.keys
    assert layout.cycle(broken) == ["toonlab.registry", "toonlab.util.keys", "toonlab.registry"]


def test_imports_point_down_the_layers(tmp_path):
    """Every module is in a layer (toonlab.layout) and imports only its own layer and those
    below; an import pointing up (the registry reaching into the trainer) is caught."""
    from toonlab import layout

    graph = layout.modules()
    assert {layout.layer_of(m) for m in graph} == set(layout.NAMES)
    assert layout.upward(graph) == []
    broken = _with_import(tmp_path, "registry.py", "toonlab.train.trainer")
    assert layout.upward(broken) == ["toonlab.registry (spec) -> toonlab.train.trainer (train)"]
    assert layout.layer_of("toonlab.models.cyclegan.params") == "spec"
    assert layout.layer_of("toonlab.models.cyclegan.model") == "models"
