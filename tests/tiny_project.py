"""The tiny project the end-to-end tests share (`from tiny_project import ...`).

The whole pipeline is built once per `make test`, by both drivers: Snakemake first for the
data stages and CycleGAN's training (`snakemake -c2 preprocess train_cyclegan`), then `dvc
repro`, which must only record those and runs every other stage itself (the other
trainings, generation, evaluation, ablations, the report). One build shows both
directions: after Snakemake, DVC redoes nothing; after DVC, Snakemake has nothing to do.
The conftest fixture `built` builds it under a file lock shared by the xdist workers (the
first to ask builds, the other waits for it and reads the record); `built_copy` is a copy
for a test that changes it (a code edit, a review decision, a remote, an experiment).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from conftest import run
from toonlab import presets
from toonlab.util import keys

TINY_DEMO = {"variants_per_photo": 2, "anime_count": 4, "anime_px": 256, "photo_max_px": 256}
# Every face in the train split; each family at its tiny values (`toonlab.presets.tiny()`:
# a few steps at the smallest size, from the family folders): the drivers are under test here.
TINY_REST = {"curate": {"split": {"train": 1.0, "val": 0.0, "test": 0.0}},
             # Every face is in the train split: evaluate on it (the drivers are under test, not the model).
             "evaluate": {"split": "train", "max_images": 2, "generated": 4, "fixed_inputs": 2, "kid_subsets": 2},
             "ablations": {"run": ["cyclegan_base", "dcgan_d1_g1"]},
             "train": {"log_every": 2, "sample_every": 0, "ckpt_every": 2, "loader_workers": 0}}

# Built by Snakemake before DVC sees the project (the targets, and the DVC stages they make).
SNAKEMAKE_FIRST = ("preprocess", "train_cyclegan")
SNAKEMAKE_FIRST_STAGES = {"crawl", "ingest", "detect", "matte", "align", "curate", "pack", "train_cyclegan"}
# What a snapshot covers: the data stages' outputs and CycleGAN's run. Of the run, only the
# bytes count: DVC puts the run's metrics and summary files back in place from its cache
# after recording them (the same bytes, a new time).
SNAPSHOT_TOPS = ("data", "models/cyclegan")


def unchanged(before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]]) -> bool:
    """The same files, each with the same bytes, and under data/ the same time too."""
    return before.keys() == after.keys() and all(
        before[f] == after[f] if f.startswith("data/") else before[f][1] == after[f][1] for f in before)


def shrink(project: Path, **demo) -> None:
    p = project / "params.yaml"
    params = yaml.safe_load(p.read_text())
    params["demo"].update(TINY_DEMO, **demo)
    params["runtime"]["workers"] = 1  # tiny data: no worker processes to start
    p.write_text(yaml.safe_dump(keys.merge(keys.merge(params, presets.tiny()), TINY_REST), sort_keys=False))


def snapshot(root: Path, tops: tuple[str, ...] = ("data",)) -> dict[str, tuple[int, str]]:
    """Every file under `tops` with its modification time and a digest of its content."""
    import hashlib

    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for top in tops for p in sorted((root / top).rglob("*")) if p.is_file()}


def stage_sections(out: str) -> dict[str, str]:
    """`dvc repro`'s output (stdout and stderr together) cut into what each stage printed,
    its command's output included: stage name -> text."""
    parts = re.split(r"^Running stage '([^']+)':$", out, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def rules_run(out: str) -> set[str]:
    return set(re.findall(r"^(?:local)?rule (\w+):", out, re.M))


@dataclass
class Built:
    """The shared build: its folder, and what each driver printed while building it."""

    root: Path
    snakemake: str          # `snakemake -c2 preprocess train_cyclegan` (stdout + stderr)
    before: dict            # snapshot(SNAPSHOT_TOPS) after it
    repro: str              # the first `dvc repro` (stdout + stderr, in order)
    after: dict             # snapshot(SNAPSHOT_TOPS) after that
    again: str              # a second `dvc repro`
    dry_all: str            # then `snakemake -n all`
    status: str             # `dvc status`
    metrics_shown: str      # `dvc metrics show`

    def save(self, path: Path) -> None:
        record = {**asdict(self), "root": str(self.root)}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Built:
        record = json.loads(path.read_text())
        record["root"] = Path(record["root"])
        for k in ("before", "after"):
            record[k] = {f: tuple(v) for f, v in record[k].items()}
        return cls(**record)


def build(dest: Path, copy_project) -> Built:
    """Copy the project to `dest`, shrink it, and build everything: Snakemake first for
    SNAKEMAKE_FIRST, then `dvc repro` twice; then what both drivers say of it."""
    copy_project(dest)
    shrink(dest)
    smk = run(["snakemake", "-c2", *SNAKEMAKE_FIRST], dest, timeout=900, merged=True).stdout
    before = snapshot(dest, SNAPSHOT_TOPS)
    repro = run(["dvc", "repro"], dest, timeout=900, merged=True).stdout
    after = snapshot(dest, SNAPSHOT_TOPS)
    again = run(["dvc", "repro"], dest, merged=True).stdout
    # Read-only checks on the build are run here, once: the tests only read the record and
    # the files (a driver writing its logs or state into the build while another test
    # copies it would race).
    said = [run(cmd, dest, merged=True).stdout for cmd in (["snakemake", "-n", "all"], ["dvc", "status"],
                                                           ["dvc", "metrics", "show"])]
    return Built(dest, smk, before, repro, after, again, *said)


def copy_built(built: Built, dest: Path) -> Path:
    """A copy of the shared build for a test that changes it (modification times kept, so
    that Snakemake sees what it saw)."""
    shutil.copytree(built.root, dest, symlinks=True)
    return dest
