"""When may a run folder's checkpoint be continued with today's settings?

A run's identity is its `config` (the family's params section, the training settings
that shape the model or the data, and a fingerprint of the training images). Comparing
the config saved in the checkpoint with today's sorts every changed key into:

- length: how long it trains (the family's `length_keys`, e.g. `optim.steps`, or
  `--steps`): the run continues, the learning-rate schedule recomputed for the new end;
- everything else: the run is refused (exit 2) naming each key, old and new value, and
  the ways on (`--restart` moves the run aside; `--run-dir` trains elsewhere).

Settings that touch neither the model nor the optimiser state (log / sample /
checkpoint cadence, `keep_last`, `loader_workers`, `compile`, `amp`, `cpu_precision`, `channels_last`,
the world size) are not part of the config: changing them always continues.

Resuming (rank 0 picks, every rank restores): `pick` takes the checkpoint to continue
(`--resume auto`: the newest readable one; a path; `none`: a new run) and judges the
change of settings; `restore` puts back the step, networks, optimizers, schedulers (the
learning rates recomputed for the new length), rank r's own image pools and RNG, and the
data position, so that an interrupted run continues exactly. The global batch is fixed at
a run's start (`global_batch`): another number of processes splits it anew.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toonlab.errors import UsageError
from toonlab.log import get_logger
from toonlab.train import checkpoint as ckpt
from toonlab.train.data import SamplerState
from toonlab.train.device import unwrap
from toonlab.util.keys import flatten

if TYPE_CHECKING:
    from toonlab.registry import Family
    from toonlab.train.params import TrainParams
    from toonlab.train.recipe import Recipe
    from toonlab.train.runfolder import RunLock

log = get_logger(__name__)

# Old checkpoints stored these in the config; they are facts of a resume, not of the run.
NOT_IDENTITY = ("total_steps", "world", "train.amp", "train.channels_last")


@dataclass
class Changes:
    length: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    other: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def describe(self, which: dict[str, tuple[Any, Any]], section: str) -> str:
        return ", ".join(f"{display(k, section)} ({_short(a)} -> {_short(b)})" for k, (a, b) in which.items())


def display(key: str, section: str) -> str:
    """The key as a user writes it in params.yaml: params.x -> <section>.x, data.B -> the
    training images of B."""
    if key.startswith("params."):
        return f"{section}.{key[len('params.'):]}"
    if key.startswith("data."):
        return f"training images of {key[len('data.'):]}"
    return key


def _short(v: Any) -> str:
    text = repr(v) if not isinstance(v, str) else v
    return text if len(text) <= 40 else text[:37] + "..."


def compare(old: dict[str, Any], new: dict[str, Any], length_keys: tuple[str, ...],
            defaults: dict[str, Any] | None = None) -> Changes:
    """Sort the keys that differ. `defaults`: the family section's default values; a key a
    checkpoint predates (added to ToonLab since) is unchanged when today's value is its default."""
    a, b = flatten(old, empty=True, sep="."), flatten(new, empty=True, sep=".")
    known = flatten({"params": defaults}, empty=True, sep=".") if defaults else {}
    lengths = {f"params.{k}" for k in length_keys}
    out = Changes()
    for key in sorted(set(a) | set(b)):
        if key in NOT_IDENTITY:
            continue
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if key not in a and key in known and known[key] == vb:
            continue
        if va != vb:
            (out.length if key in lengths else out.other)[key] = (va, vb)
    return out


# ----------------------------------------------------------------------------- a run's identity


def identity(family: str, fparams: Any, tp: TrainParams, data: dict[str, str]) -> dict[str, Any]:
    """The run's config: what `compare` judges. `data`: the training images' fingerprint."""
    t = tp.model_dump(mode="json")
    keep = ("seed", "jitter", "source", "folders", "split")
    train = {k: t[k] for k in keep}
    if tp.accumulate != 1:   # named only when on: runs from before the setting keep their identity
        train["accumulate"] = tp.accumulate
    return {"family": family, "params": fparams.model_dump(mode="json"), "train": train, "data": data}


def fingerprint(domains: dict[str, str], tp: TrainParams, packed_dir: str) -> dict[str, str]:
    """What the training images are: the packed index of each domain (or the folder's
    file list), so a run on changed data starts over instead of resuming."""
    out = {}
    for key, domain in sorted(domains.items()):
        h = hashlib.sha256()
        if tp.source == "folders":
            folder = Path(tp.folders.get(key, ""))
            for f in sorted(folder.rglob("*")) if folder.is_dir() else []:
                if f.is_file():
                    st = f.stat()
                    h.update(f"{f.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        else:
            index = Path(packed_dir) / domain / "index.json"
            h.update(index.read_bytes() if index.is_file() else b"")
        out[key] = h.hexdigest()[:16]
    return out


# ----------------------------------------------------------------------------- resuming


def pick(resume: str, restart: bool, lock: RunLock, ckpt_dir: Path, config: dict[str, Any], family: Family,
         fparams: Any, total: int, on_change: str) -> tuple[str | None, dict[str, Any] | None]:
    """Rank 0, holding the run's `lock`: move the run aside when asked (`restart`) and pick
    the checkpoint to resume from, with its loaded state ((None, None): a new run)."""
    run_dir = lock.run_dir
    if restart:
        lock.move_run_aside()
    if resume == "auto":
        path, state = ckpt.newest_readable(ckpt_dir)
    elif resume in ("none", ""):
        path, state = None, None
        if ckpt.list_checkpoints(ckpt_dir):
            raise UsageError(f"--resume none: {ckpt_dir} already holds checkpoints, which a new run "
                             "would overwrite; add --restart to move the run aside first, or use --run-dir")
    else:
        path = Path(resume)
        if not path.is_file():
            raise UsageError(f"--resume {resume}: no such checkpoint")
        state = ckpt.load(path)
    if path is None:
        return None, None
    changes = compare(state.get("config", {}), config, family.length_keys, defaults=_defaults(type(fparams)))
    section = family.params_section
    if changes.other and resume != "auto":
        log.warning("%s was written with other settings (%s); resuming from it anyway", path,
                    changes.describe(changes.other, section))
    elif changes.other:
        what = changes.describe(changes.other, section)
        if on_change == "restart":
            log.warning("settings changed since %s: %s (train.on_change: restart)", path, what)
            lock.move_run_aside()
            return None, None
        raise UsageError(
            f"{family.name}: the run in {run_dir} was trained with other settings: {what}. "
            f"Nothing was changed or deleted. To go on: `toonlab train {family.name} --restart` "
            f"(moves the run aside to {run_dir.name}.replaced-<time>/ and starts over), or train "
            "into a new folder with --run-dir (pipelines: set train.on_change: restart)")
    old_total = state.get("total_steps", state.get("config", {}).get("total_steps"))
    if changes.length or (old_total is not None and int(old_total) != total):
        what = changes.describe(changes.length, section) or f"steps {old_total} -> {total}"
        log.info("%s: length of training changed (%s): continuing from %s, learning-rate schedule "
                 "recomputed for %d steps", family.name, what, path.name, total)
    return str(path), state


def global_batch(spec_batch: int, state: dict[str, Any] | None, world: int, family: str, run_dir: Path) -> int:
    """The run's global batch: fixed at its start (data.batch_size x processes)."""
    if state is None:
        return spec_batch * world
    data = state.get("data", {})
    old_world = int(data.get("world", state.get("config", {}).get("world", 1)))
    gb = int(data.get("global_batch", spec_batch * old_world))
    if gb % world:
        raise UsageError(
            f"{family}: the run in {run_dir} has a global batch of {gb} images per step "
            f"({gb // old_world} per process x {old_world} processes), which {world} processes "
            f"cannot share evenly; resume with a number of processes that divides {gb}, or start over "
            "with --restart")
    return gb


def restore(recipe: Recipe, state: dict[str, Any], family: str, rank: int, world: int,
            global_batch: int) -> tuple[int, SamplerState]:
    """Put the checkpoint's `state` back into `recipe` and the RNG: (its step, the data
    position for this rank)."""
    if state.get("family") != family:
        raise UsageError(f"checkpoint is a {state.get('family')} run, not {family}")
    for k, sd in state["nets"].items():
        unwrap(recipe.nets[k]).load_state_dict(sd)
    for k, sd in state["optimizers"].items():
        recipe.optimizers()[k].load_state_dict(sd)
    for k, sd in state["schedulers"].items():
        recipe.schedulers()[k].load_state_dict(sd)
    for sched in recipe.schedulers().values():
        _recompute_lr(sched)
    # Rank r continues with rank r's own pools and RNG (rank r mod the old world size
    # when the number of processes changed).
    mine = ([{"extra": state["extra"], "rng": state["rng"]}] + list(state.get("rank_states", [])))
    own = mine[rank % len(mine)]
    recipe.load_extra_state(own["extra"])
    ckpt.set_rng_state(own["rng"])
    data = state["data"]
    old_world = int(data.get("world", state.get("config", {}).get("world", 1)))
    sampler = SamplerState(int(data["epoch"]), int(data["position"]))
    if old_world != world:
        log.info("resuming a run of %d process(es) on %d: global batch %d, %d per process, same data "
                 "position", old_world, world, global_batch, global_batch // world)
        sampler = sampler.for_world(old_world, world)
    return int(state["step"]), sampler


def _recompute_lr(sched: Any) -> None:
    """After loading a LambdaLR whose lambda was rebuilt for a new run length: the
    optimizer's learning rates as the new schedule gives them at the restored step (the
    same values when the length did not change)."""
    lambdas = getattr(sched, "lr_lambdas", None)
    if lambdas is None:
        return
    lrs = [base * fn(sched.last_epoch) for base, fn in zip(sched.base_lrs, lambdas)]
    for group, lr in zip(sched.optimizer.param_groups, lrs):
        group["lr"] = lr
    sched._last_lr = lrs


def _defaults(cls: type) -> dict[str, Any] | None:
    """A params section's default values (None when it has required keys)."""
    try:
        return cls().model_dump(mode="json")
    except Exception:  # noqa: BLE001 - a section without full defaults: no key may be absent
        return None
