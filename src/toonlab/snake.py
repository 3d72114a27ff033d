"""Glue for the Snakefile: validate Snakemake's config with the same typed schema as the
command line, and hand the rules a params file that holds exactly that config.

Snakemake merges `--config` overrides into `params.yaml`'s values; the `toonlab`
commands the rules call must see the same values. When there is no override the rules
read `params.yaml` itself; otherwise the merged config is written (atomically) to
`.snakemake/toonlab/params-override.yaml` and the rules read that.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from toonlab import io as tio
from toonlab.errors import ParamsError
from toonlab.params import DEFAULT_PARAMS, Params, load_params, validate_params

OVERRIDE_FILE = Path(".snakemake/toonlab/params-override.yaml")


@dataclass(frozen=True)
class Workflow:
    params: Params
    params_file: str

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
        """The source files a DVC stage depends on (its `deps` under src/ in dvc.yaml).

        Rules list them as inputs too, so a code change re-runs the rule under Snakemake
        exactly as it re-runs the stage under DVC (Snakemake's own code trigger only sees
        the rule's shell command, not the Python it calls).
        """
        stages = _dvc_stages()
        if stage not in stages:
            raise KeyError(f"dvc.yaml has no stage '{stage}'")
        stage_def = stages[stage]
        deps = stage_def.get("do", stage_def).get("deps", [])   # `foreach` stages keep theirs under `do`
        return [d for d in deps if isinstance(d, str) and d.startswith("src/")]

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


def _dvc_stages(path: str = "dvc.yaml") -> dict:
    try:
        return (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}).get("stages", {})
    except FileNotFoundError:
        return {}


def prepare(config: dict, params_path: str = DEFAULT_PARAMS) -> Workflow:
    try:
        params = validate_params(config, source="snakemake config", strict=False)
        on_disk = load_params(params_path) if Path(params_path).is_file() else None
    except ParamsError as exc:
        # Snakemake prints exceptions from the Snakefile with a traceback; exit cleanly instead.
        print(f"toonlab: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if on_disk == params:
        return Workflow(params, params_path)
    tio.write_text(OVERRIDE_FILE, yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    return Workflow(params, str(OVERRIDE_FILE))
