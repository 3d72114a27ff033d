"""Helper processes (data-loader workers, superpixel pools) ignore the stop signals a
cluster sends to the whole process group (SIGTERM on a time limit, preemption or
`scancel`; SIGINT on Ctrl-C), so the main process decides: it finishes the step,
writes a checkpoint and shuts its helpers down itself."""

from __future__ import annotations

import signal


def ignore_stop_signals(*_args: object) -> None:
    """Usable as a `worker_init_fn` or a pool `initializer`."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
