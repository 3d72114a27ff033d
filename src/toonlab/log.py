"""Logging with levels and progress bars shared by every stage."""

from __future__ import annotations

import logging
import os
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")

LOGGER_NAME = "toonlab"


def setup_logging(level: str | int = "INFO") -> logging.Logger:
    """Configure the `toonlab` logger once: `LEVEL name: message` on stderr."""
    logger = logging.getLogger(LOGGER_NAME)
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            level = logging.INFO
    logger.setLevel(level)
    if not any(getattr(h, "_toonlab", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._toonlab = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
    return logger


def get_logger(name: str) -> logging.Logger:
    short = name.removeprefix("toonlab.")
    return logging.getLogger(f"{LOGGER_NAME}.{short}")


def bar_wanted() -> bool:
    """A tqdm bar on stderr: on a terminal, or always with TOONLAB_PROGRESS=1."""
    env = os.environ.get("TOONLAB_PROGRESS")
    if env is not None:
        return env == "1"
    return sys.stderr.isatty()


def lines_wanted() -> bool:
    """Progress as log lines: whenever there is no bar (a file, a pipe, Snakemake's
    `| tee`, a cluster job's output), unless TOONLAB_PROGRESS=none."""
    return not bar_wanted() and os.environ.get("TOONLAB_PROGRESS") != "none"


def duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s: for ETAs and elapsed times in log lines."""
    s = int(max(0.0, seconds) + 0.5)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class LineProgress:
    """Progress without a terminal: an INFO line every `every` items or `seconds`
    seconds, whichever comes first, and one at the end (`desc: n/total unit (pct), rate,
    ETA`). A hung stage is told from a slow one by the time between lines."""

    def __init__(self, items: Iterable[T], desc: str, total: int | None, unit: str,
                 every: int | None = None, seconds: float | None = None):
        self.items, self.desc, self.unit = items, desc, unit
        if total is None:
            try:
                total = len(items)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total = total
        self.every = every or (max(1, total // 10) if total else 100)
        self.seconds = float(os.environ.get("TOONLAB_PROGRESS_SECONDS", seconds or 30.0))
        self.log = get_logger("progress")

    def line(self, n: int, t0: float, now: float) -> None:
        rate = n / max(now - t0, 1e-9)
        if self.total:
            eta = (self.total - n) / rate if rate > 0 else float("inf")
            self.log.info("%s: %d/%d %s (%d%%), %.3g %s/s, ETA %s", self.desc, n, self.total, self.unit,
                          100 * n // max(1, self.total), rate, self.unit,
                          duration(eta) if eta != float("inf") else "?")
        else:
            self.log.info("%s: %d %s, %.3g %s/s", self.desc, n, self.unit, rate, self.unit)

    def __iter__(self):
        import time

        t0 = last = time.monotonic()
        n = shown = 0
        for item in self.items:
            yield item
            n += 1
            now = time.monotonic()
            if n - shown >= self.every or now - last >= self.seconds:
                self.line(n, t0, now)
                shown, last = n, now
        if n != shown:
            self.line(n, t0, time.monotonic())

    def set_postfix_str(self, *_a, **_k) -> None:  # the tqdm calls callers make
        pass


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it",
             every: int | None = None, seconds: float | None = None) -> Iterable[T]:
    """A tqdm bar on a terminal (or with TOONLAB_PROGRESS=1); otherwise log lines every
    `every` items (default a tenth of the total) or every `seconds` (default 30,
    TOONLAB_PROGRESS_SECONDS), so logs written to files show progress too;
    TOONLAB_PROGRESS=none: neither."""
    if bar_wanted():
        from tqdm.auto import tqdm  # here, not at import: the command line starts faster

        return tqdm(items, desc=desc, total=total, unit=unit, dynamic_ncols=True, file=sys.stderr)
    if lines_wanted():
        return LineProgress(items, desc, total, unit, every, seconds)
    return items
