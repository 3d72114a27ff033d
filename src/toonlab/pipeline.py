"""The pipeline's stages, once, for both drivers: what each runs, reads, writes and
which code it depends on.

* `stages()` is the stage table: the data stages, then one `train_<family>` stage per
  registered family (and `generate_<family>` per unconditional one), then evaluation,
  ablations and the report. `dvc.yaml` is rendered from it (`toonlab pipeline --write`;
  `toonlab pipeline --check` and the test suite fail when it is out of date), and the
  Snakemake rules take their code inputs from it.
* `code_deps(stage)` is a stage's code: the transitive closure of the `toonlab` imports
  of its entry modules (module-level and function-level imports, relative ones too; not
  those under `if TYPE_CHECKING:`), every package `__init__.py` on the way, and its rule
  file. DVC lists these files as the stage's deps and Snakemake as the rule's inputs, so
  editing a file re-runs exactly the stages whose closure holds it, under either driver.

The command-line shell (`cli.py`, `params.py`) is no stage's dependency: the values a
stage reads come from params.yaml, which DVC and Snakemake track by value.

The project is the working directory's (the nearest folder up holding dvc.yaml or
params.yaml: `project_root()`), never the package's location. In ToonLab's own checkout
(a folder with `src/toonlab/`) the code deps are those source files.
In any other project (ToonLab installed from a wheel) a stage cannot list files of
site-packages: its code dep is `.toonlab/code/<stage>.txt`, the sha256 of every file
of its closure in the installed package (`code_stamp`), written by `toonlab pipeline
--write` (and by the Snakefile when it loads). Upgrading ToonLab changes exactly the
stamps of the stages whose code changed, so DVC and Snakemake re-run those and no others.
This module is light (no torch, no OpenCV): the Snakefile imports it.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from toonlab import registry

PACKAGE = "toonlab"
PACKAGE_DIR = Path(__file__).resolve().parent
RULES_DIR = "workflow/rules"
DVC_YAML = "dvc.yaml"
STAMP_DIR = ".toonlab/code"              # installed mode: one code stamp per stage
PROJECT_MARKERS = ("dvc.yaml", "params.yaml")


def project_root(start: Path | None = None) -> Path:
    """The project folder: the nearest of the working directory and its parents that holds
    dvc.yaml or params.yaml (the working directory itself when none does)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / m).is_file() for m in PROJECT_MARKERS):
            return folder
    return here


def source_checkout(root: Path | None = None) -> bool:
    """True in a checkout of ToonLab (or a copy of one): the project has src/toonlab/. Its
    stages list those source files (the closure is read from the package that runs, which
    is that source in an editable install)."""
    return ((root or project_root()) / "src" / PACKAGE / "__init__.py").is_file()


# ----------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class Stage:
    """One stage: a DVC stage and the Snakemake target of the same name."""

    name: str
    command: str                          # the toonlab command it runs (for people)
    entry: tuple[str, ...]                # modules whose import closure is its code
    rules: str                            # its rule file in workflow/rules/
    deps: tuple[str, ...] = ()            # data it reads (DVC templates over params.yaml)
    params: tuple[str, ...] = ()          # params.yaml keys it reads
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()           # loss-curve folders (DVCLive TSVs over `step`), tracked outputs
    target: str = ""                      # Snakemake target (default: the stage name)
    foreach: str = ""                     # DVC foreach over this list (the evaluate stage)
    snakemake_rules: tuple[str, ...] = ()  # the rules whose jobs do its work

    @property
    def cmd(self) -> str:
        """DVC's command: Snakemake does the stage's work (`toonlab.drivers.stage_run`:
        only its own rules, under the profile in $SNAKEMAKE_PROFILE or profiles/local)."""
        return f"toonlab snakemake {self.name}" + ("@${item}" if self.foreach else "")


def _family_stages(fam: registry.Family) -> list[Stage]:
    run = f"${{{fam.run_dir_key}}}" if fam.run_dir_key else f"${{train.out_dir}}/{fam.name}"
    needs = [f"${{{fam.params_section}.{key}}}/summary.json" for key in _need_keys(fam)]
    code = ("toonlab.train.launch", fam.params_module, fam.model_module)
    stages = [Stage(
        f"train_{fam.name}", f"toonlab train {fam.name}", code, "train.smk",
        deps=("${pack.out_dir}", *needs), params=(*(fam.dvc_params or (fam.params_section,)), "train"),
        outs=(f"{run}/checkpoints", f"{run}/samples", f"{run}/summary.json"),
        metrics=(f"{run}/dvclive/metrics.json",), plots=(f"{run}/dvclive/plots/metrics/train",),
        snakemake_rules=(f"train_{fam.name}",))]
    if fam.kind == "unconditional":
        sample = "sample" in fam.params_cls.model_fields
        stages.append(Stage(
            f"generate_{fam.name}", f"toonlab generate --run {fam.name}",
            ("toonlab.runs.generate", fam.params_module, fam.model_module), "generate.smk",
            deps=(f"{run}/checkpoints",), params=(f"{fam.params_section}.sample" if sample else fam.params_section,),
            outs=(f"{run}/generated",), snakemake_rules=(f"generate_{fam.name}",)))
    return stages


def _need_keys(fam: registry.Family) -> list[str]:
    """The params keys (inside its section) of the runs a family may read first."""
    if fam.needs is None:
        return []
    return list(fam.needs(fam.params_cls()))


def _inference_code() -> tuple[str, ...]:
    """Every evaluable family's modules: which family a run is comes from its checkpoint."""
    fams = [registry.get(n) for n in registry.with_inference()]
    return tuple(m for f in fams for m in (f.params_module, f.model_module))


# Data the report reads besides code (the published numbers it shows beside the measured ones):
# a dep by path in ToonLab's checkout, part of the report's code stamp elsewhere.
PAPER_TABLES = "src/toonlab/eval/paper_tables.yaml"
PACKAGE_DATA = {PAPER_TABLES: PACKAGE_DIR / "eval" / "paper_tables.yaml"}


def stages() -> list[Stage]:
    """Every stage, in pipeline order."""
    fams = list(registry.FAMILIES)
    inference = [f for f in fams if f.has_inference]
    needs = [f"${{{f.params_section}.{k}}}/summary.json" for f in inference for k in _need_keys(f)]
    out: list[Stage] = [
        Stage("crawl", "toonlab demo-data / toonlab crawl", ("toonlab.data.crawl", "toonlab.data.demo"), "crawl.smk",
              deps=("data/urls",), params=("data", "demo", "crawl", "decode"),
              outs=("${data.raw_dir}",),
              snakemake_rules=("demo_data", "fetch_urls")),
        Stage("ingest", "toonlab ingest", ("toonlab.data.ingest",), "ingest.smk",
              deps=("${data.raw_dir}",), params=("data", "decode", "ingest"), outs=("${ingest.out_dir}",),
              snakemake_rules=("ingest_domain",)),
        Stage("detect", "toonlab detect", ("toonlab.faces.detect",), "detect.smk",
              deps=("${data.raw_dir}", "${ingest.out_dir}"), params=("detect", "preprocess", "decode"),
              outs=("${preprocess.work_dir}/detect",), snakemake_rules=("detect_domain",)),
        Stage("matte", "toonlab matte", ("toonlab.faces.matte",), "matte.smk",
              deps=("${data.raw_dir}", "${preprocess.work_dir}/detect"), params=("matte", "decode"),
              outs=("${preprocess.work_dir}/matte",), snakemake_rules=("matte_domain",)),
        Stage("align", "toonlab align", ("toonlab.faces.align",), "align.smk",
              deps=("${data.raw_dir}", "${preprocess.work_dir}/detect", "${preprocess.work_dir}/matte"),
              params=("align", "preprocess", "decode"), outs=("${align.out_dir}",),
              snakemake_rules=("align_domain",)),
        Stage("curate", "toonlab curate", ("toonlab.faces.curate",), "curate.smk",
              deps=("${data.raw_dir}", "${ingest.out_dir}", "${align.out_dir}", "${curate.review_dir}"),
              params=("curate",),
              outs=("${curate.out_dir}", "${curate.report_dir}"), snakemake_rules=("curate",)),
        Stage("pack", "toonlab pack", ("toonlab.faces.pack",), "pack.smk",
              deps=("${curate.out_dir}", "${align.out_dir}"), params=("pack",), outs=("${pack.out_dir}",),
              snakemake_rules=("pack",)),
    ]
    for fam in fams:
        out += _family_stages(fam)
    out += [
        Stage("evaluate", "toonlab evaluate RUN", ("toonlab.eval.evaluate", *_inference_code()), "evaluate.smk",
              deps=("${pack.out_dir}", "${train.out_dir}/${item}/summary.json"), params=("evaluate", "detect"),
              outs=("${evaluate.out_dir}/${item}",), metrics=("${evaluate.metrics_dir}/${item}.json",),
              target="${evaluate.metrics_dir}/${item}.json", foreach="${evaluate.runs}",
              snakemake_rules=("evaluate_run",)),
        Stage("ablations", "toonlab train FAMILY --variant NAME; toonlab evaluate ablations/NAME",
              ("toonlab.train.launch", "toonlab.eval.evaluate", "toonlab.ablations", *_inference_code()),
              "ablations.smk", deps=("${pack.out_dir}", *dict.fromkeys(needs)),
              params=("ablations", *dict.fromkeys(f.params_section for f in inference), "train", "evaluate"),
              outs=("${train.out_dir}/${ablations.runs_subdir}", "${evaluate.out_dir}/${ablations.runs_subdir}",
                    "${evaluate.metrics_dir}/${ablations.runs_subdir}"),
              snakemake_rules=("train_variant", "evaluate_run")),
        Stage("report", "toonlab report", ("toonlab.eval.report",), "report.smk",
              deps=("${evaluate.metrics_dir}", "${curate.report_dir}/summary.json", PAPER_TABLES),
              params=("report", "evaluate.runs", "ablations"), outs=("${report.out}",), snakemake_rules=("report",)),
    ]
    return out


def stage(name: str) -> Stage:
    found = {s.name: s for s in stages()}
    if name not in found:
        raise KeyError(f"no stage {name!r}; stages: {', '.join(found)}")
    return found[name]


# ----------------------------------------------------------------------------- code closure


def module_file(module: str, root: Path | None = None) -> Path | None:
    """The source file of a `toonlab` module or package, or None when there is none."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    root = root or PACKAGE_DIR
    parts = module.split(".")[1:]
    base = root.joinpath(*parts) if parts else root
    for candidate in (base.with_suffix(".py") if parts else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
           (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@functools.lru_cache(maxsize=None)
def imports_of(path: Path, module: str) -> tuple[str, ...]:
    """The `toonlab` modules a source file imports, anywhere in it except under
    `if TYPE_CHECKING:` (`from pkg import name` counts as pkg.name when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.append(target)
            found.extend(f"{target}.{a.name}" for a in node.names if module_file(f"{target}.{a.name}"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    broken = [m for m in found if m.split(".")[0] == PACKAGE and module_file(m) is None]
    if broken:
        raise ImportError(f"{path}: imports {', '.join(broken)}, which do not exist")
    return tuple(m for m in dict.fromkeys(found) if module_file(m) is not None)


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(entries: tuple[str, ...] | list[str]) -> list[Path]:
    """Source files of `entries` and of everything they import, transitively, with the
    `__init__.py` of every package on the way; sorted."""
    seen: set[str] = set()
    todo = [p for m in entries for p in _with_parents(m)]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        path = module_file(mod)
        if path is None:
            raise KeyError(f"no module {mod!r} under {PACKAGE_DIR}")
        seen.add(mod)
        todo += [p for m in imports_of(path, mod) for p in _with_parents(m) if p not in seen]
    return sorted(module_file(m) for m in seen)  # type: ignore[type-var]


def code_deps(name: str, root: Path | None = None) -> list[str]:
    """The code a stage depends on, as paths relative to the project root (what dvc.yaml
    lists and the rules take as inputs): in ToonLab's checkout its import closure and its
    rule file; elsewhere its code stamp (and its rule file when the project has one)."""
    root = root or project_root()
    return list(_code_deps(name, id(registry.FAMILIES), root, source_checkout(root)))


@functools.lru_cache(maxsize=None)
def _code_deps(name: str, families: int, root: Path, source: bool) -> tuple[str, ...]:
    # Keyed by the registry too (its identity): the Snakefile asks once per job.
    s = stage(name)
    rules = f"{RULES_DIR}/{s.rules}"
    if source:
        files = [f"src/{PACKAGE}/{p.relative_to(PACKAGE_DIR).as_posix()}" for p in closure(s.entry)]
        return (*files, rules)
    return (f"{STAMP_DIR}/{s.name}.txt", *((rules,) if (root / rules).is_file() else ()))


def stage_deps(s: Stage, root: Path | None = None) -> list[str]:
    """A stage's data deps as dvc.yaml lists them (package data is in the code stamp
    outside ToonLab's checkout)."""
    if source_checkout(root):
        return list(s.deps)
    return [d for d in s.deps if d not in PACKAGE_DATA]


def code_stamp(name: str) -> str:
    """The text of a stage's code stamp: the sha256 of each file of its closure in the
    installed package (and of the package data it reads), by path inside the package. No
    version number: an upgrade that leaves a stage's code alone leaves its stamp alone."""
    s = stage(name)
    files = [*closure(s.entry), *(PACKAGE_DATA[d] for d in s.deps if d in PACKAGE_DATA)]
    lines = [f"# The code of stage {name} in the installed ToonLab (written by `toonlab pipeline --write`",
             "# and by the Snakefile; DVC and Snakemake track this file): sha256 per file."]
    for path in sorted(set(files)):
        lines.append(f"{_installed_sha256(path)}  {PACKAGE}/{path.relative_to(PACKAGE_DIR).as_posix()}")
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=None)
def _installed_sha256(path: Path) -> str:
    # Once per file and process: most files are in the closure of many stages.
    from toonlab.util.fileio import sha256_file

    return sha256_file(path)


def stale_stamps(root: Path | None = None) -> list[str]:
    """Stages whose code stamp is missing or differs from the installed code ([] in
    ToonLab's checkout, which has none)."""
    root = root or project_root()
    if source_checkout(root):
        return []
    stale = []
    for s in stages():
        path = root / STAMP_DIR / f"{s.name}.txt"
        try:
            current = path.read_text(encoding="utf-8")
        except (FileNotFoundError, UnicodeDecodeError):
            current = None
        if current != code_stamp(s.name):
            stale.append(s.name)
    return stale


def write_stamps(root: Path | None = None) -> list[str]:
    """Write the code stamps that are stale (atomically; untouched when current, so their
    times do not change); the stages written."""
    from toonlab.util import fileio

    root = root or project_root()
    stale = stale_stamps(root)
    for name in stale:
        fileio.write_text(root / STAMP_DIR / f"{name}.txt", code_stamp(name))
    return stale


def stages_holding(path: str, root: Path | None = None) -> list[str]:
    """The stages whose code holds `path` (relative to the project root)."""
    return [s.name for s in stages() if path in code_deps(s.name, root)]


# ----------------------------------------------------------------------------- dvc.yaml


HEADER = """\
# Generated by `toonlab pipeline --write` from src/toonlab/pipeline.py (the stage table)
# and src/toonlab/registry.py (the model families): edit those, not this file.
# `toonlab pipeline --check` (and the test suite) fail when it is out of date.
#
# DVC owns the versioned results; each stage asks Snakemake for its target, and the
# Snakemake rule runs one `toonlab` command (see workflow/rules/). A stage's code deps
# are the import closure of its modules plus its rule file (`toonlab pipeline --deps
# STAGE`). Outputs are `persist` so that DVC leaves them in place and Snakemake decides
# what is out of date: after `snakemake all`, `dvc repro` only records hashes, and after
# `dvc repro`, `snakemake -n all` has nothing to do.
"""


def _persist(paths: tuple[str, ...]) -> list[dict[str, dict[str, bool]]]:
    return [{p: {"persist": True}} for p in paths]


def dvc_stage(s: Stage, root: Path | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"cmd": s.cmd, "deps": [*stage_deps(s, root), *code_deps(s.name, root)],
                            "params": list(s.params),
                            "outs": _persist(s.outs)}
    if s.metrics:
        body["metrics"] = _persist(s.metrics)
    if s.plots:
        body["plots"] = [{p: {"x": "step", "persist": True}} for p in s.plots]
    return {"foreach": s.foreach, "do": body} if s.foreach else body


def dvc_yaml(params: Any = None, root: Path | None = None) -> str:
    """The text of dvc.yaml: every stage (a training stage's loss curves are its `plots`,
    templated on its run folder like its other outputs)."""
    doc: dict[str, Any] = {"stages": {s.name: dvc_stage(s, root) for s in stages()}}
    if not listed_runs(root):
        # `evaluate.runs: []` (the default) means every family with inference: DVC cannot
        # default a `foreach`, so the list is written here (regenerated with the families).
        doc["stages"]["evaluate"]["foreach"] = registry.with_inference()
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120)


def listed_runs(root: Path | None = None) -> list[str]:
    """The runs params.yaml lists under `evaluate.runs` as written ([] where it lists none)."""
    path = (root or project_root()) / "params.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []
    runs = raw.get("evaluate", {}).get("runs") if isinstance(raw.get("evaluate"), dict) else None
    return list(runs) if isinstance(runs, list) else []


def check_dvc_yaml(params: Any, path: str | Path | None = None) -> list[str]:
    """Stages whose dvc.yaml entry differs from the stage table, or whose code stamp is
    stale outside ToonLab's checkout ([] when in sync)."""
    root = project_root()
    path = path or root / DVC_YAML
    want = yaml.safe_load(dvc_yaml(params, root))
    try:
        have = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return [f"{path} is missing"]
    diff = [name for name in {**want["stages"], **have.get("stages", {})}
            if want["stages"].get(name) != have.get("stages", {}).get(name)]
    if have.get("plots"):
        diff.append("plots (top level: now each training stage's own)")
    diff += [f"{STAMP_DIR}/{name}.txt" for name in stale_stamps(root)]
    return diff


# ----------------------------------------------------------------------------- for people


def markdown_table() -> str:
    """The README's table of stages: DVC stage / Snakemake target, the command it runs,
    its rule file and its entry modules."""
    rows = ["| DVC stage / Snakemake target | `toonlab` command | rule file | module(s) |",
            "|---|---|---|---|"]
    family_modules = {m for f in registry.FAMILIES for m in (f.params_module, f.model_module)}
    for s in stages():
        own = [m for m in s.entry if m not in family_modules]
        fams = [m for m in s.entry if m in family_modules and not m.endswith(".params")]
        mods = ", ".join(f"`{m}`" for m in own + (fams if len(fams) == 1 else []))
        if len(fams) > 1:
            mods += " + every evaluable family's model"
        name = f"`{s.name}`" + (" (DVC: `evaluate@<run>`)" if s.foreach else "")
        rows.append(f"| {name} | `{s.command}` | `{RULES_DIR}/{s.rules}` | {mods} |")
    return "\n".join(rows)
