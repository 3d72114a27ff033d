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


def test_no_import_cycles():
    """toonlab's modules, with every import (also those inside functions), form no cycle."""
    modules = {}
    for path in sorted(pipeline.PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(pipeline.PACKAGE_DIR.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = set(pipeline.imports_of(path, name)) - {name}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for dep in sorted(modules.get(m, ())):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[m] = 2

    for m in modules:
        if m not in state:
            visit(m)
