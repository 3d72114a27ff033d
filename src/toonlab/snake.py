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
        """What the first stage reads: the demo manifest when the demo writes the raw folder,
        else every file in the raw domain folders (so new or changed files re-run it)."""
        data = self.params.data
        if data.source == "demo":
            return [f"{data.raw_dir}/demo.json"]
        files = []
        for domain in data.domains:
            root = Path(data.raw_dir) / domain
            if root.is_dir():
                files += sorted(str(p) for p in root.rglob("*") if p.is_file())
        return files


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
