"""Helper processes (data-loader workers, superpixel pools) ignore the stop signals a
cluster sends to the whole process group (SIGTERM on a time limit, preemption or
`scancel`; SIGINT on Ctrl-C), so the main process decides: it finishes the step,
writes a checkpoint and shuts its helpers down itself.

A helper that is still starting when the stop comes must not die of it either: the
parent starts helpers inside `stops_blocked()` (a child inherits the blocked signal
mask, so a stop stays pending), and `ignore_stop_signals`, run first thing in the
helper, ignores the stops before unblocking them (a pending one is then discarded). The
parent gets its own pending stop when the block ends."""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def ignore_stop_signals(*_args: object) -> None:
    """Usable as a `worker_init_fn` or a pool `initializer`."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextlib.contextmanager
def stops_blocked() -> Iterator[None]:
    """Block the stop signals in this thread while helper processes are started."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
