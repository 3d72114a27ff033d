"""Checkpoints: tensors and plain data only (they load with `weights_only=True`),
written atomically, the last K kept plus the best by a chosen metric."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toonlab.util import fileio

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


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := NAME.match(p.name))]
    return sorted(found)


def latest(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def prune(folder: Path, keep_last: int) -> None:
    """Delete all but the last `keep_last` step checkpoints (best.pt is separate)."""
    for _, path in list_checkpoints(folder)[:-keep_last or None]:
        path.unlink(missing_ok=True)


def write_best(folder: Path, state: dict[str, Any], metric: str, value: float) -> None:
    save(folder / "best.pt", state)
    fileio.write_json(folder / "best.json", {"metric": metric, "value": value, "step": state["step"]})


def best_value(folder: Path) -> float | None:
    try:
        return float(json.loads((folder / "best.json").read_text())["value"])
    except (OSError, ValueError, KeyError):
        return None
