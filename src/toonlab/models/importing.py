"""What a family's importer (`toonlab.models.<family>/importer.py`) is made of, and the
helpers the importers share (`toonlab import-weights`, see `toonlab.apps.import_weights`).

A family folder may hold an `importer.py`, found by that name (`Family.part("importer")`).
It defines

    FORMATS: dict[str, Format]    # format name (the command's first argument) -> Format

and each `Format(family, read, help)` says which family's run the format becomes, its
reader `read(files: list[Path]) -> Pending` and one line for `toonlab import-weights
--help`. The reader loads the reference files, renames their tensors to ToonLab's and
infers the hyperparameters from the names and shapes; it returns them as a `Pending`
(nothing checked yet: the generic part validates the params, builds the expected state
dicts with `Pending.build(params)` and checks every tensor against them). A reader raises
UsageError for files that are not the format's (exit 2) and WeightsMismatchError for
tensors that do not fit (exit 1).

Light: an importer module (and this one) imports torch, numpy and the family's model
module inside its readers only, since the command line lists the formats at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toonlab.errors import ToonlabError, UsageError

MAX_LISTED = 5


class WeightsMismatchError(ToonlabError):
    """Tensors of a reference checkpoint that do not fit ToonLab's network (exit 1)."""


@dataclass
class Pending:
    """Read and renamed, not yet checked: the inferred params (raw, the family section's
    layout), nets {ToonLab name: (state dict, where from)}; `build(params)` gives the
    expected state dicts by kind, `kinds` the kind of each net; `absent`: the networks the
    files do not hold; `notes`: lines logged and kept in the run's `imported` record."""

    inferred: dict[str, Any]
    nets: dict[str, tuple[dict[str, Any], str]]
    build: Callable[[Any], dict[str, Any]]
    kinds: dict[str, str]
    step: int = 0
    absent: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Format:
    """One import format: the family whose run it becomes, its reader, one line of help."""

    family: str
    read: Callable[[list[Path]], Pending]
    help: str


# ----------------------------------------------------------------------------- helpers


def listing(items: list[str]) -> str:
    """The first few items, and how many more."""
    shown = ", ".join(items[:MAX_LISTED])
    return f"{shown} (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else shown


def load_torch(path: Path) -> Any:
    """A PyTorch file's object (weights only)."""
    import torch

    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a foreign or damaged file, reported with its cause
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ToonlabError(f"{path}: not a readable PyTorch weights file ({first})") from None


def state_dict(obj: Any, where: str) -> dict[str, Any]:
    """`obj` as a state dict; WeightsMismatchError when it is not one."""
    import torch

    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsMismatchError(f"{where}: not a state dict (a mapping of names to tensors)")
    return dict(obj)


def strip_prefix(sd: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """`sd` with `prefix` removed from the names that start with it (DataParallel's `module.`)."""
    return {k.removeprefix(prefix): v for k, v in sd.items()}


def indices(sd: Mapping[str, Any], pattern: str) -> set[int]:
    """The numbers (group 1 of `pattern`) of the names that match it."""
    rx = re.compile(pattern)
    return {int(m.group(1)) for k in sd if (m := rx.match(k))}


def need(sd: Mapping[str, Any], key: str, label: str) -> Any:
    """The tensor `key` of `sd`; WeightsMismatchError naming what `sd` holds when it is absent."""
    if key not in sd:
        raise WeightsMismatchError(f"{label}: no tensor {key!r}, so not a {label} state dict "
                                   f"(it holds {len(sd)} tensors: {listing(sorted(sd))})")
    return sd[key]


def step_of(path: Path, pattern: str) -> int:
    """The training step in a file name (group 1 of `pattern`), 0 without one."""
    m = re.search(pattern, path.name)
    return int(m.group(1)) if m else 0
