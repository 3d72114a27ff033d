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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from toonlab.util.keys import flatten

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
