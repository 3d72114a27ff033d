"""The local web layer both pages (`toonlab serve`, `toonlab review`) are built on: each
protection exists here once, so the two pages cannot drift apart.

* `bind` / `listen`, `url_of`: the listening socket (127.0.0.1 by default; any other
  address logs a warning: the pages have no authentication) and its URL.
* `LocalOnly` (ASGI middleware): 403 ``bad_host`` for a request whose Host names another
  host than a loopback name (localhost, 127.0.0.1, ::1), the bound address or one of
  `serve.allowed_hosts` (DNS rebinding); 403 ``bad_origin`` for a state-changing request
  (POST, PUT, PATCH, DELETE) that a page of another origin sent: an ``Origin`` other than
  ``http://<allowed host>:<the server's port>``, or ``Sec-Fetch-Site`` cross-site or
  same-site. Clients that send no Origin (curl, scripts) pass; browsers always send it
  with a POST.
* `http_protocol`: deadlines for the time the server waits on a client outside the app.
  A request head must be complete within `serve.idle_timeout_s` (408 when part of one
  arrived, then closed); the body of a request answered early (403, 411, 413, 503, ...)
  is drained and dropped only while bytes keep coming and for at most
  `serve.upload_timeout_s`, so that the client reads the answer instead of a reset.
  uvicorn (0.54) has no setting for this: it has no header timeout, and its keep-alive
  timer is cancelled by a request's first byte and not re-armed. So this subclasses its
  h11 protocol and relies on three of its internals (`cycle`, `conn`,
  `_unset_keepalive_if_required`).
* `read_body`: a request body inside the app, under the same two deadlines (408
  ``upload_timeout``) and a byte cap (413).
* `config` / `run`: the uvicorn settings of both pages: that protocol, at most
  `serve.max_connections` open connections (uvicorn answers 503 beyond), idle keep-alive
  connections closed after 5 s, request heads of at most 64 KiB.
* `error` / `closing`: every refusal is JSON ``{"error": message, "reason": code}``.
* `read_inside`: the bytes of a file under a folder, no symbolic link followed below it.

Light at import: standard library only (uvicorn, h11 and Starlette are imported when used).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from toonlab.errors import ToonlabError, UsageError
from toonlab.log import get_logger

log = get_logger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")  # anything else logs a warning: the pages have no authentication
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})   # checked for the Origin
KEEP_ALIVE_S = 5               # idle keep-alive connections are closed after this (uvicorn)
MAX_HEAD_BYTES = 64 * 1024     # request line + headers (h11_max_incomplete_event_size)
# Set in a request's ASGI scope by an answer that closes the connection at once (the body
# not drained): a timed-out body, one over its cap.
CLOSE_NOW = "toonlab.close_now"


# ----------------------------------------------------------------------------- the socket


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


def listen(host: str, port: int, page: str, exposes: str) -> socket.socket:
    """`bind`, with a warning when `host` is not loopback: anyone who can reach it can
    `exposes` (what the page lets a visitor do)."""
    if host not in LOOPBACK:
        names = "the names other machines use for it" if host in ("0.0.0.0", "::") else f"{host} and other names"
        log.warning("%s: listening on %s: anyone who can reach this address can %s (the page has no "
                    "authentication); put %s in serve.allowed_hosts (others are refused)", page, host, exposes, names)
    return bind(host, port)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def asset(name: str) -> str:
    """The text of `toonlab/apps/assets/<name>`."""
    return resources.files("toonlab.apps").joinpath("assets", name).read_text(encoding="utf-8")


def need_server(page: str) -> None:
    """ToonlabError unless FastAPI and uvicorn are installed."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ToonlabError(f"{page} needs FastAPI and uvicorn ({exc}); install them with "
                           "`pip install 'toonlab[serve]'` (make install does)") from None


# ----------------------------------------------------------------------------- Host and Origin


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The host names a request may name: the loopback names, the bound address (not a
    wildcard one) and `extra` (`serve.allowed_hosts`)."""
    names = {*LOOPBACK, *extra}
    if bound not in ("0.0.0.0", "::", ""):
        names.add(bound)
    return frozenset(n.strip().strip("[]").lower() for n in names)


def _host_name(value: str) -> str:
    """The name of a Host header: "example:8000" -> "example", "[::1]:8000" -> "::1"."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def refusal(method: str, headers: dict[str, str], hosts: frozenset[str], port: int | None) -> tuple[str, str] | None:
    """(reason, message) when a request must be refused for its Host or its Origin."""
    host = _host_name(headers.get("host", ""))
    if host not in hosts:
        return "bad_host", (f"this page answers to {', '.join(sorted(hosts))} only, not {host!r} "
                            "(add a name to serve.allowed_hosts to use it)")
    if method not in UNSAFE_METHODS:
        return None
    site = headers.get("sec-fetch-site", "")
    if site in ("cross-site", "same-site"):
        return "bad_origin", f"a page of another site sent this request (Sec-Fetch-Site: {site})"
    origin = headers.get("origin")
    if origin is None:
        return None
    try:
        parts = urlsplit(origin)
        same = (parts.scheme == "http" and parts.hostname in hosts and parts.path in ("", "/")
                and (port is None or (parts.port or 80) == port))
    except ValueError:
        same = False
    if not same:
        return "bad_origin", f"a page of another origin ({origin[:100]!r}) cannot change anything here"
    return None


class LocalOnly:
    """ASGI middleware: answers 403 (`refusal`) before the app sees the request."""

    def __init__(self, app: Any, hosts: frozenset[str]) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            port = (scope.get("server") or (None, None))[1]
            refused = refusal(scope["method"], headers, self.hosts, port)
            if refused is not None:
                reason, message = refused
                log.info("%s %s refused: %s", scope["method"], scope["path"], message)
                body = json.dumps({"error": message, "reason": reason}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


# ----------------------------------------------------------------------------- answers and bodies


def error(status: int, reason: str, message: str, headers: dict[str, str] | None = None):
    """The JSON answer of a refusal: ``{"error": message, "reason": reason}``."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message, "reason": reason}, status_code=status, headers=headers)


def closing(request: Any, status: int, reason: str, message: str):
    """An `error` after which the connection is closed without draining the body."""
    request.scope[CLOSE_NOW] = True
    return error(status, reason, message, headers={"Connection": "close"})


async def read_body(request: Any, limit: int, settings: Any, what: str = "upload"):
    """The request body as one bytes object, or the answer to give instead: 408 (and the
    connection closed) when no byte comes for settings.idle_timeout_s or the whole body is
    not there after settings.upload_timeout_s; 413 beyond `limit` bytes."""
    loop = asyncio.get_running_loop()
    idle_s, total_s = settings.idle_timeout_s, settings.upload_timeout_s
    deadline = loop.time() + total_s
    chunks: list[bytes] = []
    got = 0
    while True:
        left = deadline - loop.time()
        try:
            if left <= 0:
                raise TimeoutError
            message = await asyncio.wait_for(request.receive(), min(idle_s, left))
        except TimeoutError:
            if left <= idle_s:
                why = f"the {what} was not complete after {total_s:g} s (serve.upload_timeout_s)"
            else:
                why = f"the {what} stalled: nothing received for {idle_s:g} s (serve.idle_timeout_s)"
            log.info("%s (%d bytes of %s received)", why, got, request.headers.get("content-length"))
            return closing(request, 408, "upload_timeout", f"{why}; {got} bytes received")
        if message["type"] == "http.disconnect":
            return error(400, "disconnected", f"the client closed the connection before the {what} was complete")
        chunk = message.get("body", b"")
        got += len(chunk)
        if got > limit:     # h11 holds the body to its Content-Length; a safeguard all the same
            return closing(request, 413, "too_large", f"the {what} is over {limit / 2**20:.2f} MB")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    chunks.clear()
    return body


# ----------------------------------------------------------------------------- files


def read_inside(root: str | os.PathLike, rel: str, max_bytes: int) -> bytes | None:
    """The bytes of the regular file `rel` under the folder `root`, or None when it is
    missing, not a regular file, over `max_bytes`, or when it or any folder between `root`
    and it is a symbolic link (or ".."): each part is opened relative to the folder above
    with O_NOFOLLOW, so nothing swapped in meanwhile leads outside `root` (which itself
    may be a link). Like ingest's `read_regular`, which checks the last part only."""
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or any(p in ("..", ".") for p in parts):
        return None
    no_follow = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            flags = no_follow | (os.O_NONBLOCK if last else os.O_DIRECTORY)
            fd, above = os.open(name, flags, dir_fd=fd), fd
            os.close(above)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return None
        data = bytearray()
        while chunk := os.read(fd, max_bytes + 1 - len(data)):
            data += chunk
            if len(data) > max_bytes:
                return None
        return bytes(data)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- the server


def http_protocol(idle_s: float, total_s: float):
    """uvicorn's h11 protocol with deadlines for the time the server waits on a client
    outside the app (uvicorn has none: its keep-alive timer is cancelled by the first byte
    of a request and not re-armed):

    * a request head must be complete within idle_s (of the connection, or of the
      previous answer): else 408 when part of a head arrived, and the connection closed;
    * the unread body of a request answered early (403, 411, 413, 503, ...) is drained and
      dropped by h11 while bytes keep coming (idle_s) and for at most total_s after the
      answer; then the connection is closed. This holds for a client that sent
      ``Connection: close`` too (`Lingering`), except after an answer that closes at once
      (`CLOSE_NOW`).

    While the app has the request, the app's own deadlines apply (`read_body`)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    body = json.dumps({"error": f"the request headers did not arrive within {idle_s:g} s (serve.idle_timeout_s)",
                       "reason": "request_timeout"}).encode()
    timeout_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                   b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    class Lingering:
        """The connection's transport as uvicorn sees it. uvicorn closes the connection as
        soon as it has answered a client that sent ``Connection: close`` (urllib, curl, most
        scripts), even when that client is still sending the body of a request answered
        early (413, 503): the client then gets a broken pipe or a reset instead of the
        answer. Here that close() only stops uvicorn's part; the protocol drains and drops
        the rest of the body and closes when it is complete (or by the deadlines)."""

        def __init__(self, transport, protocol: "DeadlineProtocol") -> None:
            self.real = transport
            self.protocol = protocol
            self.lingering = False

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

        def is_closing(self) -> bool:
            return self.lingering or self.real.is_closing()

        def close(self) -> None:
            if self.lingering or not self.protocol._may_linger():
                self.real.close()
                return
            self.lingering = True
            self.real.resume_reading()     # uvicorn pauses reading while the app does not read
            self.protocol._watch()

    class DeadlineProtocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _phase: Any = None
        _deadline = 0.0
        _lost = False

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(Lingering(transport, self))
            self._watch()

        def data_received(self, data: bytes) -> None:
            if self.transport.lingering:
                self._drop(data)
                return
            super().data_received(data)
            self._watch()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch()

        def connection_lost(self, exc: Exception | None) -> None:
            self._lost = True
            self._unwatch()
            super().connection_lost(exc)

        def _may_linger(self) -> bool:
            cycle = self.cycle
            return (not self._lost and self.conn.their_state is h11.SEND_BODY and cycle is not None
                    and cycle.response_complete and not cycle.scope.get(CLOSE_NOW))

        def _drop(self, data: bytes) -> None:
            """While lingering: parse and drop the body; close once it is complete."""
            try:
                self.conn.receive_data(data)
                while (event := self.conn.next_event()) is not h11.NEED_DATA:
                    if not isinstance(event, h11.Data):
                        break
                else:
                    self._watch()
                    return
            except h11.RemoteProtocolError:
                pass
            self._unwatch()
            self.transport.real.close()

        def _unwatch(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _app_has_it(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _watch(self) -> None:
            self._unwatch()
            if self.transport.real.is_closing() or self._app_has_it():
                self._phase = None
                return
            now = self.loop.time()
            # IDLE: a request head to come; SEND_BODY: a body to drop (keep-alive, or lingering)
            phase = self.conn.their_state
            if phase is not h11.IDLE:
                # uvicorn's keep-alive timer (armed by the answer) would close a connection
                # still sending its body after a pause of 5 s: a reset instead of the answer.
                self._unset_keepalive_if_required()
            if phase is not self._phase:
                self._phase = phase
                self._deadline = now + (idle_s if phase is h11.IDLE else total_s)
            self._timer = self.loop.call_at(min(self._deadline, now + idle_s), self._expired)

        def _expired(self) -> None:
            self._timer = None
            if self.transport.real.is_closing() or self._app_has_it():
                return
            if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
                self.transport.write(timeout_408)      # a head begun and not finished
            self.transport.real.close()

    return DeadlineProtocol


def config(app: Any, settings: Any):
    """The uvicorn.Config of a page: `settings` is params.serve (idle_timeout_s,
    upload_timeout_s, max_connections)."""
    import uvicorn

    return uvicorn.Config(app, log_level="warning", access_log=False, ws="none",
                          http=http_protocol(settings.idle_timeout_s, settings.upload_timeout_s),
                          timeout_keep_alive=KEEP_ALIVE_S, limit_concurrency=settings.max_connections,
                          h11_max_incomplete_event_size=MAX_HEAD_BYTES)


def run(app: Any, sock: socket.socket, settings: Any) -> None:
    """Serve `app` on `sock` until interrupted (`config`); the socket is closed after."""
    import uvicorn

    try:
        uvicorn.Server(config(app, settings)).run(sockets=[sock])
    finally:
        sock.close()
