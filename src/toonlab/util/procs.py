"""Processes on this machine: `pid_alive(pid)`, whether a process id is running."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (another user's counts). False for an
    id no single process has (0 and below name process groups; too large for the OS)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, another user's
        return True
    except (OverflowError, OSError):
        return False
    return True
