"""Glue for the Snakefile: validate Snakemake's config with the same typed schema as the
command line, and hand the rules a params file that holds exactly that config.

Snakemake merges `--config` overrides into `params.yaml`'s values; the `toonlab`
commands the rules call must see the same values. When there is no override the rules
read `params.yaml` itself; otherwise the merged config is written (atomically) to
`.snakemake/toonlab/params-override.yaml` and the rules read that. The rules put the
path to their command through the environment (`toonlab --params "$TOONLAB_PARAMS_FILE"`,
set by the Snakefile), not through `params:`, so an override reruns only the rules whose
own settings changed, not every rule.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from toonlab import drivers, pipeline, registry
from toonlab.errors import ParamsError
from toonlab.params import DEFAULT_PARAMS, load_params, validate_params
from toonlab.util import fileio, keys

OVERRIDE_FILE = Path(".snakemake/toonlab/params-override.yaml")

# What each kind of rule asks a cluster for: memory (MB) and walltime (minutes). These are
# defaults; a profile's `set-resources` overrides them per rule (profiles/slurm/). GPUs and
# nodes come from params.yaml (train.gpus, train.nodes; none with runtime.device: cpu).
RESOURCES: dict[str, tuple[int, int]] = {
    "crawl": (2000, 60), "ingest": (4000, 60), "detect": (8000, 120), "matte": (8000, 120),
    "align": (8000, 120), "curate": (4000, 60), "pack": (4000, 60), "train": (16000, 1440),
    "generate": (8000, 60), "evaluate": (16000, 240), "report": (4000, 30),
}


@dataclass(frozen=True)
class Workflow:
    params: Any
    params_file: str

    # -- the model families (the training rules are generated from them)
    @property
    def families(self) -> list[registry.Family]:
        return list(registry.FAMILIES)

    def families_of(self, kind: str) -> list[registry.Family]:
        return [f for f in registry.FAMILIES if f.kind == kind]

    def family(self, name: str) -> registry.Family:
        return registry.get(name)

    def run_dir(self, family: registry.Family) -> str:
        return family.run_dir(self.params)

    def family_inputs(self, family: registry.Family) -> list[str]:
        """What a family trains on: the packed data of its domains and the summary.json of
        the runs it reads first (only those its current settings need)."""
        domains = dict.fromkeys(family.domains(family.section_of(self.params)))
        packed = [f"{self.params.pack.out_dir}/{d}/index.json" for d in domains]
        return packed + [f"{run}/summary.json" for run in family.needed_runs(self.params)]

    def family_config(self, family: registry.Family) -> dict:
        """The family's settings, as the rule's params (a change re-runs the rule)."""
        data = self.params.model_dump(mode="json")
        return {key: keys.get(data, key) for key in family.dvc_params or (family.params_section,)}

    def resources(self, kind: str) -> dict[str, int | str]:
        """The `resources:` of a rule of this kind (a key of RESOURCES): `mem_mb`, `runtime`
        and, unless runtime.device is cpu, the GPUs: a training asks train.gpus per node
        (`gpu`, or `gres: gpu:N` per node with train.nodes > 1, plus `nodes`), an
        evaluation or generation one GPU. Threads are the rule's `threads:` (Slurm:
        --cpus-per-task), passed on to toonlab as --workers."""
        mem_mb, runtime = RESOURCES[kind]
        res: dict[str, int | str] = {"mem_mb": mem_mb, "runtime": runtime}
        on_gpu = self.params.runtime.device != "cpu"
        if kind == "train":
            gpus, nodes = self.params.train.gpus, self.params.train.nodes
            if nodes > 1:
                res["nodes"] = nodes
            if on_gpu:
                res.update({"gres": f"gpu:{gpus}"} if nodes > 1 else {"gpu": gpus})
        elif kind in ("evaluate", "generate") and on_gpu:
            res["gpu"] = 1
        return res

    def raw_inputs(self) -> list[str]:
        """What stands for the raw crawl: the demo manifest or the crawl log when a rule
        writes the raw folder, else every file in the raw domain folders (so new or changed
        files re-run the stages that read them)."""
        data = self.params.data
        if data.source == "demo":
            return [f"{data.raw_dir}/demo.json"]
        if data.source == "crawl":
            return [f"{data.raw_dir}/crawl_log.jsonl"]
        files = []
        for domain in data.domains:
            root = Path(data.raw_dir) / domain
            if root.is_dir():
                files += sorted(str(p) for p in root.rglob("*") if p.is_file())
        return files

    def code(self, stage: str) -> list[str]:
        """The code a stage depends on (`toonlab.pipeline.code_deps`: the import closure of
        its modules and its rule file), the same list as the stage's deps in dvc.yaml.

        Rules list them as inputs, so a code change re-runs the rule under Snakemake exactly
        as it re-runs the stage under DVC (Snakemake's own code trigger only sees the rule's
        shell command, not the Python it calls)."""
        return pipeline.code_deps(stage)

    def url_list_files(self) -> list[str]:
        """The URL list files `toonlab crawl` reads (folders expanded to their .txt/.csv)."""
        files = []
        for entry in self.params.crawl.url_lists:
            p = Path(entry)
            if p.is_dir():
                files += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in (".txt", ".csv"))
            else:
                files.append(str(p))
        return files


def prepare(config: dict, params_path: str = DEFAULT_PARAMS, main_process: bool = True) -> Workflow:
    """The validated config and the params file the rules read. In the main Snakemake
    process (not a cluster job's, not under `dvc repro`, which decides by itself), a
    workspace whose DVC outputs Snakemake has no records of (a fresh clone after `dvc
    pull`, an experiment's temporary clone) first takes DVC's view (`drivers.adopt`)."""
    try:
        params = validate_params(config, source="snakemake config", strict=False)
        on_disk = load_params(params_path) if Path(params_path).is_file() else None
    except ParamsError as exc:
        # Snakemake prints exceptions from the Snakefile with a traceback; exit cleanly instead.
        print(f"toonlab: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if on_disk == params:
        flow = Workflow(params, params_path)
    else:
        fileio.write_text(OVERRIDE_FILE, yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
        flow = Workflow(params, str(OVERRIDE_FILE))
    if main_process:
        # Outside ToonLab's checkout the rules' code inputs are the installed code's stamps:
        # brought up to date here (rewritten only when the code changed), before any rule looks.
        stamped = pipeline.write_stamps()
        if stamped:
            print(f"toonlab: the installed ToonLab's code changed for: {', '.join(stamped)} "
                  f"(stamps in {pipeline.STAMP_DIR}/)", file=sys.stderr)
    if main_process and not os.environ.get("DVC_STAGE"):
        _adopt(flow.params_file)
    return flow


def _adopt(params_file: str) -> None:
    try:
        done = drivers.adopt(params_file)
    except Exception as exc:  # DVC missing or busy: Snakemake decides by file times, as usual
        print(f"toonlab: warning: could not ask DVC which results are current ({exc}); "
              "Snakemake decides by file times", file=sys.stderr)
        return
    if done.current or done.changed:
        print(f"toonlab: Snakemake had no records of this workspace's DVC outputs (a fresh clone?): "
              f"took DVC's view: {len(done.current)} stage(s) up to date"
              + (f", changed and to rerun: {', '.join(done.changed)}" if done.changed else ""), file=sys.stderr)
