"""The crawler's HTTP client (`Fetcher`) on urllib3: one URL at a time, with a per-host rate
limit (`HostRateLimiter`), a deadline per URL, retries with backoff, redirects followed by
hand, basic auth to the URL's own origin only, size, Content-Type and magic-byte checks.
Where a request may go: the address policy (`AddressPolicy`), checked on the address
actually connected to, and the proxies of the environment (`Proxies`), through which the
target is judged by name. Every failure becomes a crawl log status and reason."""

from __future__ import annotations

import datetime
import email.utils
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import urljoin, urlsplit, urlunsplit

import urllib3
import urllib3.connection
import urllib3.exceptions

from toonlab.data.crawl_store import sniff_image
from toonlab.data.params import CrawlParams
from toonlab.data.urls import ALLOWED_SCHEMES, basic_auth, normalize_url, redact, url_origin
from toonlab.errors import ToonlabError
from toonlab.log import get_logger

log = get_logger(__name__)

REDIRECT_CODES = (301, 302, 303, 307, 308)
OK_CODES = (200, 203)
RETRY_CODES = (408, 429)  # plus every 5xx
CHUNK = 64 * 1024


class HostRateLimiter:
    """At most `rate` request starts per second per host; thread-safe.

    Each caller reserves the next free slot of its host under a lock, then sleeps
    outside the lock until that slot."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, now))
            self._next[host] = slot + self.interval
        delay = slot - now
        if delay > 0:
            time.sleep(delay)


class _Fail(Exception):
    """A fetch outcome other than ok. `retry` marks transient failures."""

    def __init__(self, status: str, reason: str, http_status: int | None = None,
                 retry: bool = False, retry_after: float | None = None, detail: str | None = None):
        super().__init__(reason)
        self.status, self.reason, self.http_status = status, reason, http_status
        self.retry, self.retry_after, self.detail = retry, retry_after, detail


@dataclass(frozen=True)
class _Redirect:
    status: int
    location: str | None


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None when
    absent or unreadable (the backoff applies)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def _content_type_ok(value: str | None) -> bool:
    if not value:
        return False
    mime = value.split(";", 1)[0].strip().lower()
    return mime.startswith("image/") or mime == "application/octet-stream"


# ----------------------------------------------------------------------------- address policy


class AddressPolicy:
    """Which addresses a crawl may connect to.

    By default only global unicast addresses: loopback, private (RFC 1918, fc00::/7,
    100.64/10), link-local (169.254/16, fe80::/10, cloud metadata services), multicast,
    unspecified and reserved addresses are refused. `allow_private` lifts that;
    `allow_hosts` names exceptions: host names (matched exactly) or networks (matched
    against the address). Through a proxy the crawler never learns the target's address
    (the proxy resolves the name), so `refuses_name` judges the name instead."""

    def __init__(self, allow_private: bool = False, allow_hosts: Iterable[str] = ()):
        self.allow_private = allow_private
        self.names: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in allow_hosts:
            item = item.strip().lower()
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.names.add(item.rstrip("."))

    @classmethod
    def of(cls, params: CrawlParams) -> AddressPolicy:
        return cls(params.allow_private, params.allow_hosts)

    def refuses(self, host: str, address: str) -> str | None:
        """None when `host` at `address` may be fetched, else why not (one line)."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return f"{address} is not an IP address"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if self.allow_private or host.lower().rstrip(".") in self.names:
            return None
        if any(ip.version == net.version and ip in net for net in self.networks):
            return None
        kind = _address_kind(ip)
        if kind is None:
            return None
        return (f"{host} resolves to {ip}, a {kind} address (set crawl.allow_private: true or list the "
                "host in crawl.allow_hosts to crawl your own network)")

    def refuses_name(self, host: str) -> str | None:
        """The check for a host that a proxy resolves: None when it may be fetched, else why not.

        An IP literal is judged as that address. `localhost`, `*.localhost`, names of one
        label and special-use local names (.local, .internal, .home.arpa, .localdomain)
        lead to this machine or to the proxy's own network, so they need `allow_private`
        or their name in `allow_hosts`. Any other name is the proxy's to resolve; a network
        in `allow_hosts` cannot match it (its address is never seen here)."""
        name = host.lower().strip("[]").rstrip(".")
        try:
            ipaddress.ip_address(name.split("%", 1)[0])
        except ValueError:
            pass
        else:
            return self.refuses(name, name)
        if self.allow_private or name in self.names:
            return None
        if name == "localhost" or name.endswith(".localhost"):
            kind = "loopback"
        elif "." not in name or name.endswith(_LOCAL_SUFFIXES):
            kind = "local-network"
        else:
            return None
        return (f"{host} is a {kind} name, resolved by the proxy where the crawler cannot check its address "
                "(set crawl.allow_private: true or list the host in crawl.allow_hosts to crawl your own network)")


_LOCAL_SUFFIXES = (".local", ".internal", ".home.arpa", ".localdomain")


def _address_kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """The class of a non-global address, None for a global unicast one."""
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "reserved"
    if isinstance(ip, ipaddress.IPv6Address) and (ip in _NAT64 or ip in _6TO4):
        return "translated"  # embeds an IPv4 address the policy cannot see through
    return None


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_6TO4 = ipaddress.ip_network("2002::/16")


def _connect(host: str, port: int, timeout: float | None, policy: AddressPolicy,
             options: Iterable[tuple[int, int, int]] = ()) -> socket.socket:
    """A TCP socket connected to an address of `host` that the policy allows.

    The policy is checked on the resolved addresses and the socket connects to exactly
    the address checked (no second lookup, so no DNS-rebinding gap); the peer address is
    checked once more after connecting."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    refused: str | None = None
    error: OSError | None = None
    for family, kind, proto, _name, addr in infos:
        why = policy.refuses(host, addr[0])
        if why is not None:
            refused = refused or why
            continue
        sock = socket.socket(family, kind, proto)
        try:
            for option in options:
                sock.setsockopt(*option)
            sock.settimeout(timeout)
            sock.connect(addr)
            why = policy.refuses(host, sock.getpeername()[0])
            if why is not None:
                raise _Fail("rejected", "blocked_address", detail=why)
            return sock
        except BaseException as exc:
            sock.close()
            if not isinstance(exc, OSError):
                raise
            error = exc
    if error is not None:
        raise error
    raise _Fail("rejected", "blocked_address", detail=refused or f"{host} has no address")


# ----------------------------------------------------------------------------- proxies


@dataclass(frozen=True)
class Proxy:
    url: str  # scheme://host:port, never with credentials
    authorization: str | None  # Proxy-Authorization, from user:password in the proxy URL


class Proxies:
    """The proxies named by HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY, or by their
    lower-case forms, which win (as with curl and requests; `urllib.request` reads them,
    and ignores HTTP_PROXY inside a CGI request). A bare `host:port` is an http:// proxy.

    http:// URLs go to their proxy as absolute-form requests; https:// ones through a
    CONNECT tunnel, TLS to the target end to end. The proxy's own address is not subject
    to the address policy (proxies usually sit on a private network): the target is
    judged by name instead (`AddressPolicy.refuses_name`). Credentials in a proxy URL
    are sent as Proxy-Authorization and never logged."""

    def __init__(self, env: dict[str, str] | None = None):
        env = urllib.request.getproxies_environment() if env is None else env
        self.by_scheme: dict[str, Proxy] = {}
        for scheme in ALLOWED_SCHEMES:
            value = (env.get(scheme) or env.get("all") or "").strip()
            if value:
                self.by_scheme[scheme] = _parse_proxy(value, scheme)
        self.no_proxy = env.get("no", "")

    def choose(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy for a URL, None when it goes straight to its host."""
        proxy = self.by_scheme.get(scheme)
        return None if proxy is None or _bypassed(host, port, self.no_proxy) else proxy


def _parse_proxy(value: str, scheme: str) -> Proxy:
    text = value if "://" in value else "http://" + value
    parts = urlsplit(text)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if parts.scheme.lower() not in ALLOWED_SCHEMES or not host:
        raise ToonlabError(f"the proxy for {scheme}:// URLs ({scheme.upper()}_PROXY or ALL_PROXY, or their lower-case "
                           f"forms) is {redact(text)!r}, not an http:// or https:// proxy URL")
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    return Proxy(f"{parts.scheme.lower()}://{netloc}", basic_auth(text))


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether NO_PROXY sends host:port straight to it: `*` every host; a name itself and
    its subdomains (a leading `.` or `*.` is ignored); `name:port` or `[v6]:port` only
    that port; an address or CIDR network the IP-literal hosts in it."""
    host = host.lower().strip("[]").rstrip(".")
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for entry in re.split(r"[\s,]+", no_proxy.strip().lower()):
        if entry == "*":
            return True
        m = re.fullmatch(r"\[(.+)\](?::(\d+))?|([^:]+):(\d+)", entry)
        name, want = (m.group(1) or m.group(3), m.group(2) or m.group(4)) if m else (entry, None)
        if not name or (want is not None and int(want) != port):
            continue
        try:
            net = ipaddress.ip_network(name, strict=False)
        except ValueError:
            name = name.removeprefix("*.").strip(".")
            if name and (host == name or host.endswith("." + name)):
                return True
        else:
            if ip is not None and ip.version == net.version and ip in net:
                return True
    return False


# ----------------------------------------------------------------------------- transport (urllib3)


class _Guarded:
    """What the crawler adds to urllib3's connections (keywords of the pool manager):

    * `policy`: checked on the address actually connected to (`_connect`); None on a
      connection to a proxy, whose own address is exempt (see `Proxies`);
    * `deadline` (time.monotonic): the URL's deadline; a timer shuts the socket down then,
      so a server that trickles bytes, each read within timeout_s, cannot hold the URL."""

    def __init__(self, *args: Any, policy: AddressPolicy | None, deadline: float, **kw: Any):
        self._watchdog: threading.Timer | None = None
        super().__init__(*args, **kw)
        self.policy, self.deadline = policy, deadline

    def _new_conn(self) -> socket.socket:
        if self.policy is None:
            sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        else:
            sock = _connect(self.host, self.port, self.timeout, self.policy, self.socket_options or ())
        self._watchdog = threading.Timer(max(0.0, self.deadline - time.monotonic()), self._expire, (sock,))
        self._watchdog.daemon = True
        self._watchdog.start()
        return sock

    def _expire(self, tcp: socket.socket) -> None:
        for sock in (self.sock, tcp):  # the TLS socket once there is one (it owns the descriptor then)
            try:
                sock.shutdown(socket.SHUT_RDWR)
                return
            except (AttributeError, OSError):
                pass

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        super().close()  # type: ignore[misc]


class _HTTPConnection(_Guarded, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Guarded, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}
# One manager per request: a pool key of scheme, host and port is enough, and urllib3's
# default key would refuse the guard keywords (policy, deadline) that pass to the pools.
_POOL_KEYS = dict.fromkeys(_POOLS, lambda context: (context["scheme"], context["host"], context["port"]))


def _failure(exc: BaseException, status: int | None, in_body: bool, proxy: Proxy | None) -> _Fail:
    """The crawl outcome of an error from urllib3, http.client, ssl or socket. urllib3
    wraps the error it caught, so every exception on the chain counts."""
    chain: list[BaseException] = []
    todo: list[object] = [exc]
    while todo:
        e = todo.pop()
        if isinstance(e, BaseException) and all(e is not c for c in chain):
            chain.append(e)
            todo += [e.__cause__, e.__context__, *e.args]
    root = exc  # the error as the traceback would end, for people
    while (cause := root.__cause__ or (None if root.__suppress_context__ else root.__context__)) is not None:
        root = cause
    text = " ".join(redact(str(root)).split())[:300]

    def has(*types: type) -> bool:
        return any(isinstance(e, types) for e in chain)

    if has(urllib3.exceptions.InvalidChunkLength) or "line exceeded maximum allowed length" in text:
        return _Fail("failed", "bad_chunked", status, detail=f"malformed chunked body: {text}")
    if has(ssl.SSLError, urllib3.exceptions.SSLError):  # an untrusted certificate does not heal
        return _Fail("failed", "tls_error", status, retry=not has(ssl.SSLCertVerificationError))
    # The proxy unreachable (urllib3's ProxyError), or its answer to CONNECT not 200 (from http.client).
    tunnel = re.search(r"Tunnel connection failed: (\d{3})", text)
    if proxy is not None and (tunnel or has(urllib3.exceptions.ProxyError)):
        code = int(tunnel[1]) if tunnel else None
        retry = code is None or code >= 500 or code in RETRY_CODES
        return _Fail("failed", "proxy_error", code, retry=retry, detail=f"the proxy {proxy.url}: {text}")
    if has(socket.gaierror, urllib3.exceptions.NameResolutionError):
        return _Fail("failed", "dns_error", status, retry=True)
    if has(TimeoutError, urllib3.exceptions.ReadTimeoutError):
        return _Fail("failed", "timeout", status, retry=True)
    if in_body:  # the connection ended, or broke, before the whole body came
        return _Fail("failed", "truncated", status, retry=True, detail=text)
    if has(http.client.HTTPException) and not has(ConnectionError, urllib3.exceptions.NewConnectionError):
        return _Fail("failed", "bad_response", status, detail=text)  # not HTTP: a retry cannot heal it
    return _Fail("failed", "connection_error", status, retry=True)


# ----------------------------------------------------------------------------- fetching


class _Clock:
    """The deadline of one URL: `total_timeout_s` from its first request."""

    def __init__(self, total: float):
        self.total = total
        self.deadline: float | None = None

    def start(self) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.total

    def remaining(self) -> float:
        return self.total if self.deadline is None else self.deadline - time.monotonic()


_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError)


class Fetcher:
    """Fetches single URLs on urllib3: straight to the host, its address checked by the
    policy at connect time, or through the proxy that `proxies` (default: the
    environment) names for it, the host checked by name before anything is sent."""

    def __init__(self, params: CrawlParams, limiter: HostRateLimiter | None = None, proxies: Proxies | None = None):
        self.p = params
        self.limiter = limiter or HostRateLimiter(params.per_host_rate)
        self.ssl_context = ssl.create_default_context()
        self.policy = AddressPolicy.of(params)
        self.proxies = Proxies() if proxies is None else proxies

    # One URL, retries included. Returns (record fields, body or None).
    def fetch(self, url: str) -> tuple[dict, bytes | None]:
        """Every attempt, redirect and wait of one URL shares one deadline
        (`total_timeout_s` from the first request): a retry whose wait would pass it is not
        made, and a Retry-After beyond it ends the URL with `retry_after_too_long`."""
        clock = _Clock(self.p.total_timeout_s)
        attempts = 0
        while True:
            attempts += 1
            try:
                body, http_status = self._follow(url, clock)
                return {"http_status": http_status, "attempts": attempts}, body
            except _Fail as f:
                fields = {"status": f.status, "reason": f.reason, "http_status": f.http_status,
                          "attempts": attempts, "detail": f.detail}
                if not f.retry or attempts > self.p.retries:
                    return fields, None
                remaining = clock.remaining()
                delay = self.p.backoff_s * (2 ** (attempts - 1))
                if f.retry_after is not None:
                    if f.retry_after > remaining:
                        fields.update(reason="retry_after_too_long",
                                      detail=f"the server asked to retry in {f.retry_after:.0f} s, beyond the "
                                             f"URL's deadline (crawl.total_timeout_s {self.p.total_timeout_s:g} s)")
                        return fields, None
                    delay = max(delay, f.retry_after)
                if delay >= remaining:
                    return fields, None  # the deadline passes before the next attempt
                log.debug("%s: %s, retry %d in %.2fs", redact(url), f.reason, attempts, delay)
                time.sleep(delay)

    def _follow(self, url: str, clock: _Clock) -> tuple[bytes, int]:
        seen = {url}
        current = url
        origin, auth = url_origin(url), basic_auth(url)
        for _hop in range(self.p.max_redirects + 1):
            # Credentials of the listed URL go to its own origin only, never across a redirect.
            result = self._request(current, clock, auth if url_origin(current) == origin else None)
            if isinstance(result, _Redirect):
                status, location = result.status, result.location
            else:
                return result
            if not location:
                raise _Fail("failed", f"http_{status}", status)
            target, reason = normalize_url(urljoin(current, location.strip().replace(" ", "%20")))
            if reason is not None:
                raise _Fail("rejected" if reason == "bad_scheme" else "failed",
                            reason if reason == "bad_scheme" else "bad_redirect", status)
            assert target is not None
            if target in seen:
                raise _Fail("failed", "redirect_loop", status)
            seen.add(target)
            current = target
        raise _Fail("failed", "too_many_redirects", status)

    def _request(self, url: str, clock: _Clock, auth: str | None = None) -> tuple[bytes, int] | _Redirect:
        """One HTTP GET, straight to the host or through its proxy (redirects are not
        followed here: `_follow` checks every hop again). Returns (body, status) for an
        image, a _Redirect for a redirect, raises _Fail otherwise."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        proxy = self.proxies.choose(parts.scheme, host, port)
        if proxy is not None and (why := self.policy.refuses_name(host)) is not None:
            raise _Fail("rejected", "blocked_address", detail=why)  # before anything is sent
        self.limiter.wait(f"{host}:{port}")
        clock.start()
        remaining = clock.remaining()
        if remaining <= 0 or clock.deadline is None:
            raise _Fail("failed", "timeout", retry=True)
        timeout = min(self.p.timeout_s, remaining)
        kw: dict[str, Any] = {"num_pools": 1, "maxsize": 1, "timeout": urllib3.Timeout(connect=timeout, read=timeout),
                              "ssl_context": self.ssl_context, "deadline": clock.deadline,
                              "policy": None if proxy else self.policy}  # a proxy's own address is exempt
        if proxy is None:
            pools = urllib3.PoolManager(**kw)
        else:
            pools = urllib3.ProxyManager(proxy.url, proxy_ssl_context=self.ssl_context, **kw, proxy_headers=(
                {"Proxy-Authorization": proxy.authorization} if proxy.authorization else None))
        pools.pool_classes_by_scheme, pools.key_fn_by_scheme = _POOLS, _POOL_KEYS  # type: ignore[assignment]
        headers = {"User-Agent": self.p.user_agent, "Accept": "image/*, application/octet-stream;q=0.5",
                   "Accept-Encoding": "identity", "Connection": "close"}
        if auth:
            headers["Authorization"] = auth
        target = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path or "/", parts.query, ""))
        resp: urllib3.BaseHTTPResponse | None = None
        try:
            resp = pools.urlopen("GET", target, headers=headers, redirect=False, retries=False, preload_content=False,
                                 decode_content=False)
            return self._answer(resp, clock)
        except _Fail:
            if clock.remaining() <= 0:
                raise _Fail("failed", "timeout", retry=True) from None
            raise
        except _TRANSPORT_ERRORS as exc:
            if clock.remaining() <= 0:  # the watchdog cut the connection at the URL's deadline
                raise _Fail("failed", "timeout", retry=True) from None
            raise _failure(exc, resp.status if resp else None, resp is not None, proxy) from None
        finally:
            if resp is not None:
                resp.release_conn()
            pools.clear()  # closes the connection and stops its watchdog

    def _answer(self, resp: urllib3.BaseHTTPResponse, clock: _Clock) -> tuple[bytes, int] | _Redirect:
        status = resp.status
        if not 100 <= status <= 599:  # not HTTP: a retry cannot heal it
            raise _Fail("failed", "bad_status", status, detail=f"status code {status} is outside 100-599")
        if status in REDIRECT_CODES:
            return _Redirect(status, resp.headers.get("Location"))
        if status not in OK_CODES:
            retry = status >= 500 or status in RETRY_CODES
            raise _Fail("failed", f"http_{status}", status, retry=retry,
                        retry_after=_retry_after(resp.headers.get("Retry-After")) if retry else None)
        if not _content_type_ok(resp.headers.get("Content-Type")):
            raise _Fail("failed", "bad_content_type", status)
        length = resp.headers.get("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > self.p.max_bytes:
            raise _Fail("failed", "too_large", status)
        buf = bytearray()
        for piece in resp.stream(CHUNK, decode_content=False):  # chunked framing: urllib3
            buf += piece
            if len(buf) > self.p.max_bytes:
                raise _Fail("failed", "too_large", status)
            if clock.remaining() <= 0:
                raise _Fail("failed", "timeout", status, retry=True)
        if clock.remaining() <= 0:
            raise _Fail("failed", "timeout", status, retry=True)
        if not buf:
            raise _Fail("failed", "empty_body", status)
        if sniff_image(bytes(buf[:32])) is None:
            raise _Fail("failed", "not_an_image", status)
        return bytes(buf), status
