"""Checkpoints: tensors and plain data only (they load with `weights_only=True`),
written atomically, the last K kept plus the best by a chosen metric.

A checkpoint that cannot be read (truncated by a full disk, damaged in a copy) raises
`CheckpointError` naming the file; resume falls back to the newest readable one."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toonlab.errors import ToonlabError
from toonlab.log import get_logger
from toonlab.util import fileio

log = get_logger(__name__)

NAME = re.compile(r"^step-(\d{8})\.pt$")


def rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {"python": [py[0], list(py[1]), py[2]],
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                       int(np_state[3]), float(np_state[4])],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    fileio.write_bytes(path, buf.getvalue())


class CheckpointError(ToonlabError):
    """A checkpoint file that cannot be read: the message names it."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"cannot read checkpoint {path}: {reason} (truncated or damaged; an older "
                         f"checkpoint in {Path(path).parent} may still be readable)")


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's state; `CheckpointError` naming the file when it is unreadable."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(path, "no such file") from None
    except Exception as exc:  # zip / pickle / EOF errors of a truncated or corrupt file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(path, first) from None
    if not isinstance(state, dict):
        raise CheckpointError(path, f"holds a {type(state).__name__}, not a checkpoint")
    return state


def newest_readable(folder: Path, map_location: str | torch.device = "cpu"
                    ) -> tuple[Path, dict[str, Any]] | tuple[None, None]:
    """The newest step checkpoint that loads, with its state, newest first; each one that
    does not load is named in a warning (and left in place: nothing is deleted)."""
    bad: list[CheckpointError] = []
    for _, path in reversed(list_checkpoints(folder)):
        try:
            state = load(path, map_location)
        except CheckpointError as exc:
            log.warning("%s; trying the previous checkpoint", exc)
            bad.append(exc)
            continue
        if bad:
            log.warning("falling back to %s (unreadable: %s)", path.name, ", ".join(e.path.name for e in bad))
        return path, state
    if bad:
        raise ToonlabError(f"no readable checkpoint in {folder}: {'; '.join(str(e) for e in bad)}. "
                           "Move the damaged files away, or start over with --restart (moves the run aside)")
    return None, None


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := NAME.match(p.name))]
    return sorted(found)


def latest(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def prune(folder: Path, keep_last: int) -> None:
    """Delete all but the last `keep_last` step checkpoints: the only deletion the trainer
    makes. best.pt is a separate file and the newest checkpoint is always kept."""
    found = list_checkpoints(folder)
    for _, path in found[:-max(1, keep_last)]:
        path.unlink(missing_ok=True)


def write_best(folder: Path, state: dict[str, Any], metric: str, value: float) -> None:
    save(folder / "best.pt", state)
    fileio.write_json(folder / "best.json", {"metric": metric, "value": value, "step": state["step"]})


def best_value(folder: Path) -> float | None:
    try:
        return float(json.loads((folder / "best.json").read_text())["value"])
    except (OSError, ValueError, KeyError):
        return None
