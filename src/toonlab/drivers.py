"""DVC and Snakemake beyond the workspace that made the outputs: fresh clones, `dvc pull`,
queued experiments (each in a temporary clone) and cluster profiles.

Snakemake decides what is stale from its own records (`.snakemake/metadata`: the params,
code, input set and input checksums each output was made with) and from file times.
A workspace that got its outputs from DVC (`git clone` + `dvc pull`, `dvc exp run` in a
temporary clone) has no such records and file times in the order the files were written,
not the order they were made. Two rules close that gap:

* **When DVC runs a stage** (its command is `toonlab snakemake STAGE`, which sets nothing
  but this), DVC has already decided the stage is stale from its hashes. The command runs
  only the stage's own Snakemake rules (`--allowed-rules`: nothing upstream or beside it
  reruns), and forces them (`--forceall`, limited to those rules) when Snakemake has no record of making the
  stage's outputs: without records Snakemake cannot see a parameter change, so DVC's word
  stands. With records (a workspace where Snakemake ran it), Snakemake's own triggers
  decide, so `dvc repro` after `snakemake all` still only records hashes.
* **When Snakemake runs without DVC** in a workspace whose outputs it has no record of,
  the Snakefile first asks DVC (`dvc status`) which stages are current (`adopt`): the
  outputs of a current stage get file times just after their inputs' (outputs' content
  is never touched), the outputs of a stage DVC reports changed get an old time, so
  Snakemake reruns exactly that stage and what follows it. The answer is remembered in
  `.snakemake/toonlab/adopted.json` until dvc.lock, the params file or a code file changes.

Light module (no torch): the Snakefile and `toonlab snakemake` import it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from toonlab import pipeline
from toonlab.errors import UsageError
from toonlab.util import fileio, keys

METADATA_DIR = Path(".snakemake/metadata")
ADOPTED_FILE = Path(".snakemake/toonlab/adopted.json")
DEFAULT_PROFILE = "profiles/local"
OLD_TIME_NS = 86_400 * 10**9          # 1970-01-02: older than any input, so Snakemake reruns
DVC_STATUS_TIMEOUT = 900


# ----------------------------------------------------------------------------- Snakemake's records


def recorded_outputs(root: Path = Path(".")) -> set[str]:
    """The output paths Snakemake holds a record for (its `.snakemake/metadata` folder:
    one file per output, named by the url-safe base64 of the path; names longer than the
    file system allows are split into folders whose names start with '@')."""
    base = root / METADATA_DIR
    if not base.is_dir():
        return set()
    found: set[str] = set()
    for dirpath, _, files in os.walk(base):
        prefix = "".join(part[1:] for part in Path(dirpath).relative_to(base).parts if part.startswith("@"))
        for name in files:
            try:
                found.add(base64.urlsafe_b64decode(prefix + name).decode())
            except (ValueError, UnicodeDecodeError):
                continue
    return found


def _under(path: str, outs: list[str]) -> bool:
    path = os.path.normpath(path)
    return any(path == o or path.startswith(o.rstrip("/") + "/") for o in map(os.path.normpath, outs))


def has_records(outs: list[str], recorded: set[str]) -> bool:
    """Whether Snakemake made (and recorded) any output under these paths."""
    return any(_under(r, outs) for r in recorded)


# ----------------------------------------------------------------------------- `toonlab snakemake STAGE`


_TEMPLATE = re.compile(r"\$\{([^}]+)\}")


def _lookup(values: dict[str, Any], key: str, template: str) -> Any:
    """The value of a dotted params key (`train.out_dir`) named in a dvc.yaml template."""
    found, value = keys.find(values, key)
    if not found:
        raise UsageError(f"{template!r}: no parameter {key!r}")
    return value


def resolve(template: str, values: dict[str, Any], item: str | None = None) -> str:
    """A dvc.yaml template (`${train.out_dir}/${item}`) with the params' values."""
    def one(m: re.Match) -> str:
        key = m.group(1).strip()
        if key == "item":
            if item is None:
                raise UsageError(f"{template!r} needs an item (a run name)")
            return item
        return str(_lookup(values, key, template))
    return _TEMPLATE.sub(one, template)


@dataclass
class StageRun:
    """The Snakemake command line that does one DVC stage's work."""

    stage: str
    target: str
    rules: list[str]
    outs: list[str]
    forced: bool
    profile: str | None
    argv: list[str] = field(default_factory=list)


def stage_run(stage_name: str, params: Any, *, item: str | None = None, extra: list[str] | None = None,
              root: Path = Path("."), env: dict[str, str] | None = None) -> StageRun:
    """What `toonlab snakemake STAGE[@ITEM]` runs: the stage's target with only its own
    rules allowed, forced when Snakemake has no record of its outputs, under the profile
    in $SNAKEMAKE_PROFILE (Snakemake's own variable) or profiles/local."""
    env = os.environ if env is None else env
    extra = list(extra or [])
    try:
        s = pipeline.stage(stage_name)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    values = params.model_dump(mode="json")
    if s.foreach and item is None:
        runs = ", ".join(map(str, _lookup(values, s.foreach[2:-1], s.foreach)))
        raise UsageError(f"stage {s.name!r} runs once per run ({s.foreach}): name one, e.g. "
                         f"'toonlab snakemake {s.name}@cyclegan' (runs: {runs})")
    target = resolve(s.target or s.name, values, item)
    outs = [resolve(o, values, item) for o in (*s.outs, *s.metrics)]
    rules = list(s.snakemake_rules)
    allowed = rules + ([s.name] if not s.foreach and s.name not in rules else [])
    forced = not has_records(outs, recorded_outputs(root))
    profile = None
    if "--profile" not in extra and not env.get("SNAKEMAKE_PROFILE"):
        profile = DEFAULT_PROFILE
        if not (root / profile).is_dir():
            raise UsageError(f"no Snakemake profile folder {profile}/ (set $SNAKEMAKE_PROFILE to yours)")
    argv = ["snakemake", target]
    if profile:
        argv += ["--profile", profile]
    argv += ["--allowed-rules", *allowed]
    if forced:  # every job of the target's DAG among the allowed rules (--forcerun would add unrelated ones)
        argv += ["--forceall"]
    argv += extra
    return StageRun(s.name, target, rules, outs, forced, profile, argv)


# ----------------------------------------------------------------------------- adopting DVC's record


@dataclass
class Adoption:
    current: list[str] = field(default_factory=list)     # stages whose outputs got fresh times
    changed: list[str] = field(default_factory=list)     # stages DVC reports changed: made to rerun
    untouched: list[str] = field(default_factory=list)   # already in order, or recorded by Snakemake
    skipped: str = ""                                    # why nothing was asked (e.g. remembered)


def _files(paths: list[str], root: Path) -> list[Path]:
    out: list[Path] = []
    for rel in paths:
        p = root / rel
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += [f for f in p.rglob("*") if f.is_file() and not f.is_symlink()]
    return out


def _lock_stages(lock: dict) -> dict[str, dict[str, list[str]]]:
    out = {}
    for name, body in (lock.get("stages") or {}).items():
        out[name] = {"deps": [d["path"] for d in body.get("deps", [])],
                     "outs": [o["path"] for o in body.get("outs", [])]}
    return out


def _order(stages: dict[str, dict[str, list[str]]]) -> list[str]:
    """Stages upstream first (an out of A is, or holds, a dep of B: A before B)."""
    names = list(stages)
    ups = {b: {a for a in names if a != b and any(_under(d, stages[a]["outs"]) for d in stages[b]["deps"])}
           for b in names}
    done: list[str] = []
    while len(done) < len(names):
        ready = [n for n in names if n not in done and ups[n] <= set(done)]
        if not ready:  # a cycle (cannot happen in a valid dvc.yaml): keep the file's order
            ready = [n for n in names if n not in done]
        done.append(ready[0])
    return done


def _key(lock_bytes: bytes, params_file: Path, stages: dict[str, dict[str, list[str]]], root: Path) -> str:
    h = hashlib.sha256(lock_bytes)
    h.update(params_file.read_bytes() if params_file.is_file() else b"")
    outs = [o for s in stages.values() for o in s["outs"]]
    for dep in sorted({d for s in stages.values() for d in s["deps"] if not _under(d, outs)}):
        p = root / dep
        if p.is_file():
            st = p.stat()
            h.update(f"{dep}:{st.st_mtime_ns}:{st.st_size}\n".encode())
    return h.hexdigest()


def dvc_status(root: Path) -> dict[str, Any]:
    """`dvc status --json`: the stages DVC would run, with why."""
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, capture_output=True,
                          text=True, timeout=DVC_STATUS_TIMEOUT, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"])
    text = proc.stdout.strip()
    return json.loads(text[text.find("{"):]) if "{" in text else {}


def adopt(params_file: str | Path, root: Path = Path("."),
          status: Callable[[Path], dict[str, Any]] = dvc_status) -> Adoption:
    """Give Snakemake DVC's view of a workspace it has no records of (see the module
    docstring). Only file times of DVC-tracked outputs change, never their content; a
    stage Snakemake has records of is left to Snakemake."""
    lock_path = root / "dvc.lock"
    if not lock_path.is_file():
        return Adoption(skipped="no dvc.lock")
    lock_bytes = lock_path.read_bytes()
    stages = _lock_stages(yaml.safe_load(lock_bytes) or {})
    recorded = recorded_outputs(root)
    strangers = [n for n, s in stages.items()
                 if not has_records(s["outs"], recorded) and any((root / o).exists() for o in s["outs"])]
    if not strangers:
        return Adoption(skipped="Snakemake has records of every stage's outputs")
    key = _key(lock_bytes, Path(root / params_file), stages, root)
    marker = root / ADOPTED_FILE
    try:
        if json.loads(marker.read_text()).get("key") == key:
            return Adoption(skipped="remembered")
    except (OSError, ValueError):
        pass
    changed = set(status(root))
    result = Adoption()
    mtimes: dict[Path, int] = {}

    def mtime(p: Path) -> int:
        if p not in mtimes:
            mtimes[p] = p.stat().st_mtime_ns
        return mtimes[p]

    for name in _order(stages):
        outs = _files(stages[name]["outs"], root)
        if name not in strangers or not outs:
            result.untouched.append(name)
            continue
        if name in changed:
            for f in outs:
                os.utime(f, ns=(OLD_TIME_NS, OLD_TIME_NS))
                mtimes[f] = OLD_TIME_NS
            result.changed.append(name)
            continue
        inputs = _files(stages[name]["deps"], root)
        newest_in = max((mtime(f) for f in inputs), default=0)
        times = [mtime(f) for f in outs]
        if min(times) > newest_in and min(times) == max(times):
            result.untouched.append(name)
            continue
        t = max(newest_in + 10**9, max(times))
        for f in outs:
            os.utime(f, ns=(t, t))
            mtimes[f] = t
        result.current.append(name)
    fileio.write_text(marker, json.dumps({"key": key, "current": result.current, "changed": result.changed}))
    return result
