"""URLs as the crawler handles them: `normalize_url` checks and normalizes one URL (from a
list or a redirect), `redact` hides the credentials of every URL in a text (log records
and messages), and `basic_auth` turns a URL's `user:secret@` into HTTP basic auth for
that URL's own origin (`url_origin`). Standard library only: the crawl log uses `redact`."""

from __future__ import annotations

import base64
import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

MAX_URL_LEN = 2048
ALLOWED_SCHEMES = ("http", "https")


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


# ----------------------------------------------------------------------------- credentials


_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/?#\s]*@")


def redact(text: str) -> str:
    """`text` with the user:password part of every URL in it replaced by `***`."""
    return _USERINFO_RE.sub(r"\1***@", text)


def url_origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL: where its credentials may be sent."""
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or ""), parts.port or (443 if parts.scheme == "https" else 80)


def basic_auth(url: str) -> str | None:
    """The Authorization header for the `user:password@` of a URL, None without one."""
    parts = urlsplit(url)
    if parts.username is None:
        return None
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
