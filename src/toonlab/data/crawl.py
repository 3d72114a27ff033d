"""`toonlab crawl`: fetch URL lists into `<raw_dir>/<domain>/<sha256>.<ext>`.

Input lists are plain text (one URL per line; blank lines and `#` comment lines are
ignored) or CSV with a header holding a `url` column and optional `domain` and
`license` columns. A folder stands for every `.txt` and `.csv` file below it.

Each URL is fetched at most once per run, by a pool of `concurrency` threads, on
urllib3 (connections, TLS, chunked framing), with:

* a per-host rate limit (`per_host_rate` requests per second, shared by all threads);
* a socket timeout for connecting and for each read (`timeout_s`) and one deadline per
  URL (`total_timeout_s`) covering every attempt, redirect and retry wait, so a server
  that trickles bytes or asks for long `Retry-After` waits is also stopped (a
  Retry-After beyond the deadline ends the URL with `retry_after_too_long`);
* retries with exponential backoff (`backoff_s * 2**n`) on connection errors, timeouts,
  truncated bodies, proxy failures, 5xx and 429 answers; never on other 4xx, on status
  codes outside 100-599 (`bad_status`), on a malformed chunked body (`bad_chunked`) or
  on a tunnel that the proxy refuses with a 4xx (`proxy_error`);
* an address policy (`AddressPolicy`): hosts resolving to loopback, private,
  link-local, multicast, unspecified or reserved addresses are refused
  (`blocked_address`) unless `allow_private` or `allow_hosts` says otherwise; it is
  checked on the address actually connected to, for the listed URL and every redirect;
* proxies from HTTP_PROXY, HTTPS_PROXY (a CONNECT tunnel), ALL_PROXY and NO_PROXY or
  their lower-case forms, as curl and requests read them (`Proxies`); through a proxy
  the target is judged by name (`AddressPolicy.refuses_name`), the proxy's own address
  is exempt, and proxy credentials go out as Proxy-Authorization, never into the log;
* redirects followed by hand, at most `max_redirects`, to http/https only, loops detected;
* credentials in a URL (`user:secret@host`) sent as HTTP basic auth to that URL's own
  origin only (never across a redirect to another origin) and redacted (`***`) in
  every log record and message;
* a size cap (`max_bytes`) checked on Content-Length and while streaming;
* a Content-Type check (image/* or application/octet-stream) and a magic-byte check
  (JPEG, PNG, GIF, WebP, BMP, TIFF); then ingest's safe decoder (`decode` rules): a
  truncated, corrupt or oversized (`decode.max_pixels`) image is logged `rejected` with
  the decoder's reason and never written. The file extension comes from the magic bytes only; nothing from
  the URL or the headers ever reaches a file name.

The crawl log is JSON Lines, one record per input URL, sorted by URL, written
atomically at the end and periodically during the run (URLs not fetched yet appear as
`skipped`/`pending`). A second run reads it and fetches only URLs whose last status is
not `ok` or whose file is gone; `ok` records are carried over.

Record fields: url (credentials redacted), domain, license, status (ok | failed |
rejected | skipped), reason (None for ok), detail (one line for people, or None),
http_status, bytes, sha256, path (relative to out_root), attempts, source (list file,
as `decode.path_text`, and line of the URL's first occurrence), fetched_at (UTC ISO 8601
time of the fetch, to the second, for every URL fetched in this run; an `ok` record
carried over from a previous run keeps its own; None for URLs not fetched).
"""

from __future__ import annotations

import base64
import csv
import datetime
import email.utils
import http.client
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import urllib3
import urllib3.connection
import urllib3.exceptions

from toonlab.data.crawl_log import read_records
from toonlab.data.decode import decode_bytes, display_text, path_text
from toonlab.data.params import CrawlParams, DecodeParams
from toonlab.errors import ToonlabError
from toonlab.log import get_logger, progress
from toonlab.util.fileio import sha256_bytes, write_bytes, write_text

log = get_logger(__name__)

STATUSES = ("ok", "failed", "rejected", "skipped")
KNOWN_DOMAINS = ("photo", "anime")
DOMAIN_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
MAX_URL_LEN = 2048
ALLOWED_SCHEMES = ("http", "https")
REDIRECT_CODES = (301, 302, 303, 307, 308)
OK_CODES = (200, 203)
RETRY_CODES = (408, 429)  # plus every 5xx
CHUNK = 64 * 1024
LIST_SUFFIXES = (".txt", ".csv")
EXTENSIONS = ("jpg", "png", "gif", "webp", "bmp", "tif")
STORED_PATH_RE = re.compile(r"^[a-z0-9_-]{1,64}/[0-9a-f]{64}\.(?:" + "|".join(EXTENSIONS) + r")$")
FLUSH_EVERY = 50  # results between periodic log writes (grows with the log, see _Flusher)
FLUSH_MAX_INTERVAL_S = 30.0


# ----------------------------------------------------------------------------- URL lists


@dataclass(frozen=True)
class UrlEntry:
    url: str
    domain: str
    license: str | None
    source: str


def normalize_url(raw: str) -> tuple[str | None, str | None]:
    """Return (normalized url, None) or (None, reason). Drops the fragment, lowercases
    scheme and host, percent-encodes non-ASCII path/query, IDNA-encodes the host."""
    url = raw.strip()
    if not url:
        return None, "malformed_url"
    if len(url) > MAX_URL_LEN:
        return None, "url_too_long"
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        return None, "malformed_url"  # whitespace or control characters (header injection)
    try:
        parts = urlsplit(url)
    except ValueError:
        return None, "malformed_url"
    scheme = parts.scheme.lower()
    if not scheme:
        return None, "malformed_url"  # e.g. "example.com/a.jpg"
    if scheme not in ALLOWED_SCHEMES:
        return None, "bad_scheme"  # file:, ftp:, javascript:, data:, ...
    try:
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None, "malformed_url"
    if not host:
        return None, "malformed_url"
    try:
        host_ascii = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return None, "malformed_url"
    if not re.fullmatch(r"[a-z0-9.\-_]+|\[[0-9a-f:.]+\]|[0-9a-f:.]+", host_ascii):
        return None, "malformed_url"
    if ":" in host_ascii and not host_ascii.startswith("["):
        host_ascii = f"[{host_ascii}]"
    userinfo = ""
    if parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "") + "@"
    netloc = userinfo + host_ascii + (f":{port}" if port is not None else "")
    safe = "/%:@!$&'()*+,;=-._~"
    path = quote(parts.path, safe=safe) or "/"
    query = quote(parts.query, safe=safe + "?")
    return urlunsplit((scheme, netloc, path, query, "")), None


def _clip(text: str, n: int = MAX_URL_LEN) -> str:
    text = text.strip()
    return text if len(text) <= n else text[: n - 3] + "..."


def _list_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in LIST_SUFFIXES
                           and not f.name.startswith("."))
            if not found:
                log.warning("URL list folder %s holds no .txt or .csv file", display_text(path_text(p)))
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise ToonlabError(f"URL list {display_text(path_text(p))} not found (crawl.url_lists names files or "
                               "folders of .txt/.csv lists)")
    return files


def _read_rows(path: Path) -> Iterable[tuple[int, str, str | None, str | None]]:
    """Yield (line number, url text, domain or None, license or None)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ToonlabError(f"URL list {display_text(path_text(path))} is not a UTF-8 text file") from None
    except OSError as exc:
        raise ToonlabError(f"cannot read URL list {display_text(path_text(path))}: {exc.strerror or exc}") from None
    if path.suffix.lower() != ".csv":
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                yield n, line, None, None
        return
    reader = csv.reader(text.splitlines())
    header: list[str] | None = None
    for row in reader:
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        header = [c.strip().lower() for c in row]
        break
    if header is None:
        return
    if "url" not in header:
        raise ToonlabError(f"URL list {display_text(path_text(path))}: CSV header {header!r} has no 'url' column")
    iu = header.index("url")
    idom = header.index("domain") if "domain" in header else None
    ilic = header.index("license") if "license" in header else None

    def cell(row: list[str], i: int | None) -> str | None:
        if i is None or i >= len(row):
            return None
        return row[i].strip() or None

    for row in reader:
        url = cell(row, iu)
        if url is None or url.startswith("#"):
            continue
        yield reader.line_num, url, cell(row, idom), cell(row, ilic)


def read_url_lists(
    paths: Iterable[str | Path],
    default_domain: str = "photo",
    domains: Iterable[str] | None = KNOWN_DOMAINS,
) -> tuple[list[UrlEntry], list[dict]]:
    """Read URL lists. Returns (entries, rejected records).

    Entries are deduplicated on the normalized URL (the first occurrence wins), in input
    order. Bad lines never raise: they come back as log records with status `rejected`
    and a reason (bad_scheme, malformed_url, url_too_long, bad_domain, unknown_domain).
    `domains=None` accepts any domain name that matches DOMAIN_RE. A missing list, a
    non-UTF-8 file or a CSV without a `url` column raises ToonlabError.
    """
    allowed = None if domains is None else set(domains)
    entries: dict[str, UrlEntry] = {}
    rejected: dict[str, dict] = {}
    duplicates = 0
    for path in _list_files(paths):
        for line_no, raw, dom, lic in _read_rows(path):
            source = f"{path_text(path)}:{line_no}"
            domain = (dom or default_domain).strip().lower()
            url, reason = normalize_url(raw)
            if reason is None:
                if not DOMAIN_RE.match(domain):
                    reason = "bad_domain"
                elif allowed is not None and domain not in allowed:
                    reason = "unknown_domain"
            if reason is not None:
                key = redact(url or _clip(raw))
                rejected.setdefault(key, _record(
                    key, _clip(domain, 64) if DOMAIN_RE.match(domain) else None, lic, "rejected", reason,
                    source=source))
                continue
            assert url is not None
            if url in entries:
                duplicates += 1
                prev = entries[url]
                if prev.domain != domain:
                    log.warning("%s: %s listed again with domain '%s'; keeping '%s' from %s",
                                display_text(source), redact(url), domain, prev.domain,
                                display_text(prev.source))
                continue
            entries[url] = UrlEntry(url, domain, lic, source)
    for url in entries:  # a URL accepted somewhere is not also reported as rejected
        rejected.pop(redact(url), None)
    if duplicates:
        log.info("dropped %d duplicate URL(s) from the lists", duplicates)
    return list(entries.values()), [rejected[k] for k in sorted(rejected)]


# ----------------------------------------------------------------------------- images


def sniff_image(data: bytes) -> str | None:
    """File extension from the magic bytes, or None if `data` is not a known image."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tif"
    if data[:2] == b"BM" and len(data) >= 26:
        dib = int.from_bytes(data[14:18], "little")
        if dib in (12, 40, 52, 56, 64, 108, 124):
            return "bmp"
    return None


def _content_type_ok(value: str | None) -> bool:
    if not value:
        return False
    mime = value.split(";", 1)[0].strip().lower()
    return mime.startswith("image/") or mime == "application/octet-stream"


# ----------------------------------------------------------------------------- fetching


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


# ----------------------------------------------------------------------------- credentials

_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/?#\s]*@")


def redact(text: str) -> str:
    """`text` with the user:password part of every URL in it replaced by `***`."""
    return _USERINFO_RE.sub(r"\1***@", text)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or ""), parts.port or (443 if parts.scheme == "https" else 80)


def _basic_auth(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.username is None:
        return None
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


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
    return Proxy(f"{parts.scheme.lower()}://{netloc}", _basic_auth(text))


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
        origin, auth = _origin(url), _basic_auth(url)
        for _hop in range(self.p.max_redirects + 1):
            # Credentials of the listed URL go to its own origin only, never across a redirect.
            result = self._request(current, clock, auth if _origin(current) == origin else None)
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


# ----------------------------------------------------------------------------- crawl log


def _record(url: str, domain: str | None, license: str | None, status: str, reason: str | None,
            *, http_status: int | None = None, nbytes: int | None = None, sha256: str | None = None,
            path: str | None = None, attempts: int = 0, source: str | None = None,
            detail: str | None = None, fetched_at: str | None = None) -> dict:
    """One crawl log record. The URL and the detail are redacted (no credentials)."""
    return {"url": redact(url), "domain": domain, "license": license, "status": status, "reason": reason,
            "detail": redact(detail) if detail else None, "http_status": http_status, "bytes": nbytes,
            "sha256": sha256, "path": path, "attempts": attempts, "source": source, "fetched_at": fetched_at}


def utc_now() -> str:
    """The current UTC time as ISO 8601 to the second: `2026-01-31T12:00:00Z`."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_log(log_path: Path) -> dict[str, dict]:
    """Last record per URL of a previous crawl log; unreadable lines are ignored."""
    return {rec["url"]: rec for rec in read_records(log_path, unreadable="fetching everything again")}


def _reusable(prev: dict | None, entry: UrlEntry, out_root: Path) -> bool:
    """A previous ok record whose file is still on disk under the same domain."""
    if not prev or prev.get("status") != "ok":
        return False
    rel = prev.get("path")
    if not isinstance(rel, str) or not STORED_PATH_RE.match(rel) or not rel.startswith(entry.domain + "/"):
        return False
    f = out_root / rel
    try:
        return f.is_file() and (prev.get("bytes") is None or f.stat().st_size == prev["bytes"])
    except OSError:
        return False


def _write_log(log_path: Path, records: Iterable[dict]) -> None:
    lines = [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in sorted(records, key=lambda r: r["url"])]
    write_text(log_path, "".join(line + "\n" for line in lines))


# ----------------------------------------------------------------------------- crawl


def _url_name(url: str) -> str:
    """The last path segment of a URL, for the decoder's messages."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return name[:100] if name.isprintable() and name else "download"


def _store(out_root: Path, domain: str, body: bytes) -> tuple[str, str]:
    ext = sniff_image(body[:32])
    assert ext is not None and DOMAIN_RE.match(domain)
    digest = sha256_bytes(body)
    rel = f"{domain}/{digest}.{ext}"
    target = out_root / domain / f"{digest}.{ext}"
    if not (target.is_file() and target.stat().st_size == len(body)):
        write_bytes(target, body)
    return digest, rel


def crawl(lists: list[Path], out_root: Path, log_path: Path, params: CrawlParams,
          domains: Iterable[str] | None = KNOWN_DOMAINS, decode: DecodeParams | None = None) -> dict:
    """Fetch every URL of `lists` into `out_root/<domain>/`; write the log to `log_path`.

    A download is kept (and logged `ok`) only when ingest's safe decoder (`decode`
    rules: header, pixel limit, full decode) finds an intact image; otherwise it is
    logged `rejected` with the decoder's reason (truncated, corrupt, too_many_pixels,
    ...) and not written. Intact images that ingest's size, aspect or animation rules
    leave out are kept: ingest records why.

    Returns counts by status (ok, failed, rejected, skipped) plus total, downloaded
    (new ok this run) and resumed (ok records carried over from the previous log).
    """
    out_root, log_path = Path(out_root), Path(log_path)
    entries, rejected = read_url_lists(lists, params.default_domain, domains)
    previous = read_log(log_path)
    # Ingest's decoder without its selection rules: an intact image that ingest leaves out
    # (too small, extreme aspect, animated) is kept, and ingest records why, so another
    # decode.min_side needs no new crawl. Every other reason is a damaged or hostile file.
    check = (decode or DecodeParams()).model_copy(update={"min_side": 1, "max_aspect": 1e9, "allow_animated": True})
    records: dict[str, dict] = {r["url"]: r for r in rejected}  # keyed by the redacted URL
    todo: list[UrlEntry] = []
    resumed = 0
    for e in entries:
        prev = previous.get(redact(e.url))
        if _reusable(prev, e, out_root):
            assert prev is not None
            records[redact(e.url)] = _record(e.url, e.domain, e.license, "ok", None,
                                     http_status=prev.get("http_status"), nbytes=prev.get("bytes"),
                                     sha256=prev.get("sha256"), path=prev["path"],
                                     attempts=prev.get("attempts") or 0, source=e.source,
                                     fetched_at=prev.get("fetched_at"))
            resumed += 1
        else:
            todo.append(e)
    log.info("crawl: %d URL(s) in %d list(s): %d to fetch, %d already fetched, %d rejected",
             len(entries) + len(rejected), len(lists), len(todo), resumed, len(rejected))
    out_root.mkdir(parents=True, exist_ok=True)

    def pending(reason: str) -> dict[str, dict]:
        return {redact(e.url): _record(e.url, e.domain, e.license, "skipped", reason, source=e.source)
                for e in todo if redact(e.url) not in records}

    fetcher = Fetcher(params)
    for scheme, proxy in fetcher.proxies.by_scheme.items():  # proxy.url never holds credentials
        log.info("crawl: %s:// URLs go through the proxy %s%s", scheme, proxy.url,
                 f" (except NO_PROXY {fetcher.proxies.no_proxy!r})" if fetcher.proxies.no_proxy else "")

    def work(e: UrlEntry) -> dict:
        fetched_at = utc_now()
        fields, body = fetcher.fetch(e.url)
        if body is None:
            return _record(e.url, e.domain, e.license, fields["status"], fields["reason"],
                           http_status=fields["http_status"], attempts=fields["attempts"], source=e.source,
                           detail=fields.get("detail"), fetched_at=fetched_at)
        checked = decode_bytes(body, check, name=_url_name(e.url))
        if not checked.ok:  # truncated, corrupt, a bomb, ...: not kept
            return _record(e.url, e.domain, e.license, "rejected", checked.reason,
                           http_status=fields["http_status"], nbytes=len(body), sha256=sha256_bytes(body),
                           attempts=fields["attempts"], source=e.source, detail=checked.detail,
                           fetched_at=fetched_at)
        del checked
        digest, rel = _store(out_root, e.domain, body)
        return _record(e.url, e.domain, e.license, "ok", None, http_status=fields["http_status"],
                       nbytes=len(body), sha256=digest, path=rel, attempts=fields["attempts"], source=e.source,
                       fetched_at=fetched_at)

    downloaded = 0
    since_flush, last_flush = 0, time.monotonic()
    pool = ThreadPoolExecutor(max_workers=params.concurrency, thread_name_prefix="crawl")
    try:
        # Submit in a bounded window so huge lists do not queue millions of futures.
        window = params.concurrency * 4
        queue = iter(todo)
        running: dict[Future, UrlEntry] = {}

        def refill() -> None:
            while len(running) < window:
                e = next(queue, None)
                if e is None:
                    return
                running[pool.submit(work, e)] = e

        refill()
        bar = progress(range(len(todo)), desc="crawl", total=len(todo), unit="url")
        bar_iter = iter(bar)
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            stop: BaseException | None = None
            for fut in done:
                e = running.pop(fut)
                try:
                    rec = fut.result()
                except Exception as exc:  # a bug or a disk error: record it, keep crawling
                    log.error("%s: %s: %s", redact(e.url), type(exc).__name__, redact(str(exc)))
                    rec = _record(e.url, e.domain, e.license, "failed", "internal_error", source=e.source)
                except BaseException as exc:  # KeyboardInterrupt, SystemExit: keep the other results
                    stop = exc
                    continue
                records[rec["url"]] = rec
                downloaded += rec["status"] == "ok"
                since_flush += 1
                next(bar_iter, None)
            if stop is not None:
                raise stop
            refill()
            now = time.monotonic()
            if since_flush and (since_flush >= max(FLUSH_EVERY, len(records) // 10)
                                or now - last_flush >= FLUSH_MAX_INTERVAL_S):
                _write_log(log_path, [*records.values(), *pending("pending").values()])
                since_flush, last_flush = 0, now
        getattr(bar, "close", lambda: None)()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        _write_log(log_path, [*records.values(), *pending("interrupted").values()])
        log.warning("crawl interrupted; progress saved to %s (run again to resume)", log_path)
        raise
    pool.shutdown(wait=True)
    _write_log(log_path, records.values())

    summary: dict[str, int] = {s: 0 for s in STATUSES}
    reasons: dict[str, int] = {}
    for r in records.values():
        summary[r["status"]] = summary.get(r["status"], 0) + 1
        if r["status"] != "ok":
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    summary.update(total=len(records), downloaded=downloaded, resumed=resumed)
    log.info("crawl done: %d ok (%d new, %d resumed), %d failed, %d rejected, %d skipped; log %s",
             summary["ok"], downloaded, resumed, summary["failed"], summary["rejected"], summary["skipped"],
             log_path)
    if reasons:
        log.info("crawl problems: %s", ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    return summary
