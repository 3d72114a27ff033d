"""A training run's folder, as people share it between jobs: one trainer at a time (a
lock file), a heartbeat a watcher can read, and moving a run aside instead of deleting it.

- `<run>/train.lock`: JSON {pid, host, started}, created exclusively. A second trainer on
  the same run refuses, naming the holder. A lock is stale, and taken over with a warning,
  when its process is gone (same host: the pid is not running) or, from another host,
  when the run's heartbeat is older than `STALE_AFTER_S` (a preempted node leaves its lock).
- `<run>/heartbeat.json`: {status, step, total, time, pid, host, ...}, rewritten at each
  log step: `status` is running, finished, stopped (a signal; resumable) or failed.
- `move_aside(run)`: `<run>` -> `<run>.replaced-<UTC time>` (`--restart`); never deletes
  (`RunLock.move_run_aside`: the same by the trainer holding the run's lock).
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from toonlab.errors import UsageError
from toonlab.log import get_logger
from toonlab.util import fileio
from toonlab.util.procs import pid_alive

log = get_logger(__name__)

LOCK = "train.lock"
HEARTBEAT = "heartbeat.json"
STALE_AFTER_S = 15 * 60


class RunBusyError(UsageError):
    """Another live trainer holds the run folder."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class RunLock:
    """`with RunLock(run_dir):` holds `<run>/train.lock` for the trainer's lifetime."""

    def __init__(self, run_dir: Path, stale_after_s: float = STALE_AFTER_S):
        self.run_dir, self.path, self.stale_after_s = Path(run_dir), Path(run_dir) / LOCK, stale_after_s
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        self.held = False

    def _stale_reason(self, holder: dict[str, Any] | None) -> str | None:
        """Why the existing lock may be taken over, or None while its holder may be alive."""
        if holder is None:
            return "unreadable lock file"
        pid, host = int(holder.get("pid", -1)), str(holder.get("host", ""))
        if host == self.me["host"]:
            return None if pid_alive(pid) else f"process {pid} is not running"
        beat = self.run_dir / HEARTBEAT
        try:
            age = time.time() - beat.stat().st_mtime
        except OSError:
            age = time.time() - self.path.stat().st_mtime
        if age > self.stale_after_s:
            return f"no heartbeat from {host} for {age / 60:.0f} min"
        return None

    def acquire(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_json(self.path)
                reason = self._stale_reason(holder)
                if reason is None:
                    raise RunBusyError(
                        f"{self.run_dir} is being trained by process {holder['pid']} on {holder['host']} "
                        f"(since {holder.get('started', '?')}; lock {self.path}). Wait for it, stop it, or "
                        "train into another folder with --run-dir") from None
                log.warning("taking over the stale lock %s (%s; held by %s)", self.path, reason, holder)
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(self.me, fh)
            self.held = True
            return
        raise RunBusyError(f"could not take the lock {self.path} (another trainer keeps taking it)")

    def release(self) -> None:
        if self.held and (read_json(self.path) or {}).get("pid") == self.me["pid"]:
            self.path.unlink(missing_ok=True)
        self.held = False

    def move_run_aside(self) -> Path | None:
        """`move_aside` the run this lock holds, then hold the lock of its new, empty folder."""
        self.release()
        dest = move_aside(self.run_dir)
        self.me["started"] = _now()
        self.acquire()
        return dest

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def heartbeat(run_dir: Path, status: str, step: int, total: int, **extra: Any) -> None:
    fileio.write_json(Path(run_dir) / HEARTBEAT, {
        "status": status, "step": step, "total": total, "time": _now(), "unix_time": time.time(),
        "pid": os.getpid(), "host": socket.gethostname(), **extra})


def move_aside(run_dir: Path) -> Path | None:
    """Rename `run_dir` to a dated sibling (nothing is deleted); None if there was no run."""
    run_dir = Path(run_dir)
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}-{n}")
    os.replace(run_dir, dest)
    log.warning("moved the previous run %s aside to %s (nothing deleted)", run_dir, dest)
    return dest
