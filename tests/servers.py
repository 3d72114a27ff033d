"""The web commands in tests (`from servers import start, stop, multipart`): `toonlab serve`
or `toonlab review` in a subprocess, followed until it prints its URL, and an upload
body. The following and the body are the benchmarks' (benchmarks/common.py), which also
start `toonlab serve` and upload to it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import follow, multipart, url_in  # noqa: E402

__all__ = ["Server", "multipart", "start", "stop"]

READY = " on http://"   # the line both commands print when they listen: "ToonLab ... on http://HOST:PORT/"


class Server(NamedTuple):
    proc: subprocess.Popen
    url: str            # http://HOST:PORT/
    lines: list[str]    # its output (stdout and stderr), still growing


def start(args: list[str], cwd: Path, timeout: float = 180) -> Server:
    """`toonlab ARGS` (e.g. ["review", "--port", "0"]) in `cwd`, once it listens; the test
    fails with its output when it does not within `timeout` seconds."""
    proc = subprocess.Popen([sys.executable, "-m", "toonlab", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    ready, lines = follow(proc, READY)
    url = url_in(lines, READY) if ready.wait(timeout) else None
    if url is None:
        proc.kill()
        pytest.fail(f"toonlab {args[0]} did not start:\n" + "".join(lines))
    return Server(proc, url, lines)


def stop(*procs: subprocess.Popen) -> None:
    """Terminate the processes, then wait for each (30 s at most)."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(30)
