"""Wall-clock timing of code: `timed` (one call) and `best_of` (the fastest of several
calls of each of a few functions, alternated, so that a machine's drift hits them alike)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """(seconds `fn(*args)` took, its result)."""
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def best_of(calls: Mapping[str, Callable[[int], Any]], rounds: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Each call once per round, in turn: round 0 warms up, rounds 1..`rounds` are timed.
    A call gets the round's number. ({name: fastest seconds}, {name: its last result})."""
    best = dict.fromkeys(calls, float("inf"))
    last: dict[str, Any] = {}
    for i in range(rounds + 1):
        for name, call in calls.items():
            seconds, last[name] = timed(call, i)
            if i:
                best[name] = min(best[name], seconds)
    return best, last
