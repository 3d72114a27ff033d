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


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterable[T]:
    """A tqdm bar on stderr. Shown on a terminal, or always with TOONLAB_PROGRESS=1;
    hidden with TOONLAB_PROGRESS=0 (logs stay readable in CI and DVC output)."""
    from tqdm.auto import tqdm  # here, not at import: the command line starts faster

    env = os.environ.get("TOONLAB_PROGRESS")
    disable = None if env is None else env == "0"
    return tqdm(items, desc=desc, total=total, unit=unit, disable=disable, dynamic_ncols=True, file=sys.stderr)
