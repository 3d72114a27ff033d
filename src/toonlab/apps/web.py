"""What the local pages (`toonlab serve`, `toonlab review`) share: the listening socket,
the URL printed for it, their HTML assets and the loopback rule. Light: standard library
only."""

from __future__ import annotations

import socket
from importlib import resources

from toonlab.errors import UsageError

LOOPBACK = ("127.0.0.1", "localhost", "::1")  # anything else logs a warning: the pages have no authentication


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"cannot serve on {host!r}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        hint = " (another program uses it: pick another with --port, or --port 0 for any free one)" \
            if exc.errno in (98, 48) else ""
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def asset(name: str) -> str:
    """The text of `toonlab/apps/assets/<name>`."""
    return resources.files("toonlab.apps").joinpath("assets", name).read_text(encoding="utf-8")
