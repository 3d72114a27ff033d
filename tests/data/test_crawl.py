"""`toonlab.data.crawl` against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import io
import json
import logging
import os
import re
import socket
import threading
import time
import zlib
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

import toonlab.data.crawl as crawl_mod
from toonlab.data.crawl import crawl
from toonlab.data.crawl_store import sniff_image
from toonlab.data.params import CrawlParams
from toonlab.data.transport import HostRateLimiter
from toonlab.data.urllists import read_url_lists
from toonlab.data.urls import normalize_url
from toonlab.errors import ToonlabError

MAX_BYTES = 100_000


def _image(fmt: str, color=(200, 40, 40), px: int = 48) -> bytes:
    img = Image.new("RGB", (px, px), color)
    for i in range(px):  # a little structure so JPEG and PNG differ from a flat fill
        img.putpixel((i, i), (i * 5 % 256, 255 - i, 17))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


PNG = _image("PNG")
JPEG = _image("JPEG", color=(20, 90, 200))
ANIME_PNG = _image("PNG", color=(250, 200, 230))
HTML = b"<!doctype html><html><body>not an image</body></html>"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default listen backlog (5) refuses connections under load

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: Counter[str] = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.lock = threading.Lock()
        self.auth_seen: list[str | None] = []

    def handle_error(self, request, client_address):  # clients hang up on purpose in these tests
        pass

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output quiet
        pass

    def _send(self, code: int, body: bytes = b"", ctype: str | None = "image/png", headers=None,
              length: int | None = -1) -> None:
        self.send_response(code)
        if ctype:
            self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(len(body) if length == -1 else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _redirect(self, location: str, code: int = 302) -> None:
        self._send(code, b"", ctype=None, headers={"Location": location})

    def do_GET(self):  # noqa: C901 - one branch per test endpoint
        path = self.path.split("?", 1)[0]
        with self.server.lock:
            self.server.hits[path] += 1
            self.server.times[path.rsplit("/", 1)[0] if path.startswith("/rate/") else path].append(
                time.monotonic())
            n = self.server.hits[path]
        self.close_connection = True
        if path in ("/img.png", "/rate/0", "/rate/1", "/rate/2", "/rate/3", "/rate/4", "/rate/5"):
            self._send(200, PNG)
        elif path == "/img.jpg":
            self._send(200, JPEG, "image/jpeg; charset=binary")
        elif path == "/anime.png":
            self._send(200, ANIME_PNG)
        elif path == "/octet":
            self._send(200, JPEG, "application/octet-stream")
        elif path == "/404":
            self._send(404, b"nope", "text/plain")
        elif path == "/403":
            self._send(403, b"no", "text/plain")
        elif path == "/flaky":  # 500 once, then the image
            self._send(500, b"oops", "text/plain") if n == 1 else self._send(200, PNG)
        elif path == "/always500":
            self._send(503, b"down", "text/plain")
        elif path == "/429":
            if n == 1:
                self._send(429, b"slow down", "text/plain", headers={"Retry-After": "0"})
            else:
                self._send(200, JPEG, "image/jpeg")
        elif path == "/slow":  # nothing for longer than the read timeout
            time.sleep(1.5)
            self._send(200, PNG)
        elif path == "/trickle":  # a byte every 0.1 s: never idle long enough for the read timeout
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "400")
            self.end_headers()
            for i in range(400):
                self.wfile.write(PNG[i:i + 1] if i < len(PNG) else b"\0")
                self.wfile.flush()
                time.sleep(0.1)
        elif path == "/big-cl":
            self._send(200, PNG[:16] + b"\0" * (MAX_BYTES * 2))
        elif path == "/big-stream":  # no Content-Length: the body ends when the connection closes
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(PNG[:16])
            for _ in range(MAX_BYTES * 2 // 8192):
                self.wfile.write(b"\0" * 8192)
        elif path == "/truncated":
            self._send(200, PNG[:100], length=len(PNG))
        elif path == "/html-as-jpeg":
            self._send(200, HTML, "image/jpeg")
        elif path == "/png-as-html":
            self._send(200, PNG, "text/html")
        elif path == "/empty":
            self._send(200, b"", "image/png")
        elif path == "/loop-a":
            self._redirect("/loop-b")
        elif path == "/loop-b":
            self._redirect(f"{self.server.base}/loop-a", 301)
        elif path.startswith("/chain/"):
            k = int(path.rsplit("/", 1)[1])
            self._redirect(f"/chain/{k - 1}" if k > 0 else "../img.jpg", 307)
        elif path.startswith("/forever/"):
            k = int(path.rsplit("/", 1)[1])
            self._redirect(f"/forever/{k + 1}")
        elif path == "/to-file":
            self._redirect("file:///etc/passwd")
        elif path == "/to-js":
            self._redirect("javascript:alert(1)")
        elif path in HOSTILE:
            HOSTILE[path](self)
        else:
            self._send(404, b"", "text/plain")


# ----------------------------------------------------------------------------- hostile servers


def _raw(data: bytes):
    """An answer written byte for byte (malformed framing, odd status lines)."""
    def answer(h: Handler) -> None:
        h.wfile.write(data)
        h.wfile.flush()
    return answer


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression bomb's header)."""
    png = bytearray(_image("PNG", px=8))
    ihdr = png.index(b"IHDR")
    png[ihdr + 4:ihdr + 12] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    png[ihdr + 17:ihdr + 21] = zlib.crc32(bytes(png[ihdr:ihdr + 17])).to_bytes(4, "big")
    return bytes(png)


def _retry_after(value: str):
    def answer(h: Handler) -> None:
        h._send(503, b"busy", "text/plain", headers={"Retry-After": value})
    return answer


def _retry_after_once(h: Handler) -> None:  # 503 with Retry-After: 1, then the image
    if h.server.hits[h.path] == 1:
        h._send(503, b"busy", "text/plain", headers={"Retry-After": "1"})
    else:
        h._send(200, PNG)


def _slow_503(h: Handler) -> None:  # always fails, slowly: only the URL deadline ends it
    time.sleep(0.3)
    h._send(503, b"down", "text/plain")


def _auth(h: Handler) -> None:  # basic auth user:s3cr@t
    expected = "Basic " + base64.b64encode(b"user:s3cr@t").decode()
    if h.headers.get("Authorization") == expected:
        h._send(200, JPEG, "image/jpeg")
    else:
        h._send(401, b"who?", "text/plain", headers={"WWW-Authenticate": 'Basic realm="x"'})


def _record_auth(h: Handler) -> None:
    with h.server.lock:
        h.server.auth_seen.append(h.headers.get("Authorization"))
    h._send(200, PNG)


def _chunked(parts: list[bytes], tail: bytes = b"0\r\n\r\n"):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in parts)
    return _raw(head + body + tail)


JPEG_BIG = _image("JPEG", color=(90, 140, 30), px=96)
HOSTILE = {
    "/retry-after-60": _retry_after("60"),
    "/retry-after-date": _retry_after(email.utils.formatdate(time.time() + 3600, usegmt=True)),
    "/retry-after-1": _retry_after_once,
    "/slow-503": _slow_503,
    # Content-Length shorter than the image: the body is cut at the announced length
    "/short-cl": lambda h: h._send(200, JPEG_BIG, "image/jpeg", length=len(JPEG_BIG) // 2),
    "/jpeg-then-html": lambda h: h._send(200, b"\xff\xd8\xff" + HTML, "image/jpeg"),
    "/png-bomb": lambda h: h._send(200, _bomb_png(30000, 30000)),
    "/auth.jpg": _auth,
    "/auth-to-other-host": lambda h: h._redirect(f"http://localhost:{h.server.server_address[1]}/seen-auth"),
    "/auth-same-origin": lambda h: h._redirect("/seen-auth"),
    "/seen-auth": _record_auth,
    "/to-loopback-ip": lambda h: h._redirect(f"http://127.0.0.1:{h.server.server_address[1]}/img.png"),
    "/to-metadata": lambda h: h._redirect("http://169.254.169.254/latest/meta-data/"),
    "/to-private": lambda h: h._redirect("http://10.255.255.1/x.png"),
    "/chunked-ok": _chunked([PNG[:100], PNG[100:333], PNG[333:]]),
    "/chunked-bad-size": _chunked([PNG[:100]], tail=b"zz\r\n" + PNG[100:] + b"\r\n0\r\n\r\n"),
    "/chunked-bad-end": _raw(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + b"%x\r\n" % len(PNG) + PNG + b"XY0\r\n\r\n"),
    "/chunked-cut": _chunked([PNG[:100]], tail=b"%x\r\n" % (len(PNG) - 100) + PNG[100:150]),
    "/status-799": _raw(b"HTTP/1.1 799 Odd\r\nContent-Type: image/png\r\nContent-Length: 0\r\n\r\n"),
}


@pytest.fixture
def server():
    srv = Server()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def fast_params(**kw) -> CrawlParams:
    base = dict(concurrency=8, per_host_rate=1000.0, timeout_s=0.5, total_timeout_s=2.0, retries=2,
                backoff_s=0.05, max_bytes=MAX_BYTES, max_redirects=5, allow_private=True)
    base.update(kw)
    return CrawlParams(**base)


def read_log(path: Path) -> dict[str, dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    recs = [json.loads(line) for line in lines]
    urls = [r["url"] for r in recs]
    assert urls == sorted(urls), "log must be sorted by URL"
    assert len(set(urls)) == len(urls), "one record per URL"
    return {r["url"]: r for r in recs}


def check_out_root(out_root: Path) -> list[Path]:
    """Every file is out_root/<domain>/<sha256>.<ext>, named by its content and magic bytes."""
    files = sorted(p for p in out_root.rglob("*") if p.is_file())
    for f in files:
        rel = f.relative_to(out_root)
        assert re.fullmatch(r"(photo|anime)/[0-9a-f]{64}\.(jpg|png|gif|webp|bmp|tif)", rel.as_posix()), rel
        data = f.read_bytes()
        assert hashlib.sha256(data).hexdigest() == f.stem
        assert sniff_image(data) == f.suffix[1:]
    return files


def write_list(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- params and lists


def test_params_defaults_and_validation():
    p = CrawlParams()
    assert p.url_lists == ["data/urls"] and p.concurrency == 4 and p.per_host_rate == 2.0
    assert p.max_bytes == 20 * 1024 * 1024 and p.default_domain == "photo" and p.retries == 3
    for bad in ({"concurrency": 0}, {"per_host_rate": 0.0}, {"retries": -1}, {"timeout_s": 0.0},
                {"concurrency": "4"}, {"default_domain": "cats"}, {"speed": 1}):
        with pytest.raises(ValidationError):
            CrawlParams(**bad)
    with pytest.raises(ValidationError):
        p.concurrency = 2  # frozen
    assert not {"size", "nfiles"} & set(CrawlParams.model_fields)


def test_normalize_url():
    assert normalize_url("  HTTP://Example.COM/a.jpg#frag ") == ("http://example.com/a.jpg", None)
    assert normalize_url("https://bücher.de/ä.png") == ("https://xn--bcher-kva.de/%C3%A4.png", None)
    for raw, reason in [("file:///etc/passwd", "bad_scheme"), ("ftp://h/x.jpg", "bad_scheme"),
                        ("javascript:alert(1)", "bad_scheme"), ("data:image/png;base64,AA", "bad_scheme"),
                        ("example.com/a.jpg", "malformed_url"), ("http://", "malformed_url"),
                        ("http://h:99999/x", "malformed_url"), ("http://h/a b.jpg", "malformed_url"),
                        ("http://h/x\r\nHost: evil", "malformed_url"),
                        ("http://h/" + "a" * 3000, "url_too_long")]:
        assert normalize_url(raw) == (None, reason), raw


def test_read_url_lists_text_csv_folder(tmp_path: Path):
    lists = tmp_path / "urls"
    write_list(lists / "a.txt", [
        "# a comment", "", "http://h.example/1.jpg", "  http://h.example/1.jpg  ",  # duplicate
        "HTTP://H.example/1.jpg#x",  # duplicate after normalization
        "file:///etc/passwd", "ftp://h.example/x.png", "javascript:alert(1)", "not a url", "http://",
        "https://h.example/2.png",
    ])
    (lists / "sub").mkdir()
    (lists / "sub" / "b.csv").write_text(
        "URL,Domain,License\n"
        "http://h.example/3.png,anime,CC-BY-4.0\n"
        "http://h.example/4.png,,\n"
        "http://h.example/5.png,../../etc,\n"
        "http://h.example/6.png,cats,\n"
        "http://h.example/1.jpg,anime,\n"  # already listed as photo: first wins
        ",anime,\n", encoding="utf-8")
    (lists / "notes.md").write_text("http://ignored.example/x.png\n", encoding="utf-8")
    entries, rejected = read_url_lists([lists], default_domain="photo")
    got = {e.url: (e.domain, e.license) for e in entries}
    assert got == {
        "http://h.example/1.jpg": ("photo", None),
        "https://h.example/2.png": ("photo", None),
        "http://h.example/3.png": ("anime", "CC-BY-4.0"),
        "http://h.example/4.png": ("photo", None),
    }
    assert [e.url for e in entries][:2] == ["http://h.example/1.jpg", "https://h.example/2.png"]
    reasons = {r["url"]: r["reason"] for r in rejected}
    assert all(r["status"] == "rejected" for r in rejected)
    assert reasons == {
        "file:///etc/passwd": "bad_scheme", "ftp://h.example/x.png": "bad_scheme",
        "javascript:alert(1)": "bad_scheme", "not a url": "malformed_url", "http://": "malformed_url",
        "http://h.example/5.png": "bad_domain", "http://h.example/6.png": "unknown_domain",
    }
    assert next(r for r in rejected if r["reason"] == "bad_domain")["domain"] is None
    # any safe name passes when the caller does not restrict the domains
    entries, rejected = read_url_lists([lists / "sub" / "b.csv"], domains=None)
    assert {e.domain for e in entries} >= {"cats"} and [r["reason"] for r in rejected] == ["bad_domain"]


def test_read_url_lists_errors(tmp_path: Path):
    with pytest.raises(ToonlabError, match="not found"):
        read_url_lists([tmp_path / "missing.txt"])
    bad = tmp_path / "bad.csv"
    bad.write_text("link,domain\nhttp://h/x.png,photo\n", encoding="utf-8")
    with pytest.raises(ToonlabError, match="no 'url' column"):
        read_url_lists([bad])
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(ToonlabError, match="UTF-8"):
        read_url_lists([binary])


def test_sniff_image():
    for fmt, ext in [("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"), ("WEBP", "webp"), ("BMP", "bmp"),
                     ("TIFF", "tif")]:
        assert sniff_image(_image(fmt)) == ext, fmt
    for junk in (b"", HTML, b"BM" + b"\0" * 40, b"RIFF\0\0\0\0WAVEfmt ", b"%PDF-1.7"):
        assert sniff_image(junk) is None


# ----------------------------------------------------------------------------- fetching


def test_crawl_statuses_files_and_resume(server: Server, tmp_path: Path):
    base = server.base
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    expected = {  # path -> (status, reason, attempts)
        "/img.png": ("ok", None, 1),
        "/img.jpg": ("ok", None, 1),
        "/octet": ("ok", None, 1),
        "/flaky": ("ok", None, 2),
        "/429": ("ok", None, 2),
        "/chain/3": ("ok", None, 1),
        "/404": ("failed", "http_404", 1),
        "/403": ("failed", "http_403", 1),
        "/always500": ("failed", "http_503", 3),
        "/slow": ("failed", "timeout", 3),
        "/trickle": ("failed", "timeout", 1),  # the URL deadline (2 s) passes during the first attempt
        "/big-cl": ("failed", "too_large", 1),
        "/big-stream": ("failed", "too_large", 1),
        "/truncated": ("failed", "truncated", 3),
        "/html-as-jpeg": ("failed", "not_an_image", 1),
        "/png-as-html": ("failed", "bad_content_type", 1),
        "/empty": ("failed", "empty_body", 1),
        "/loop-a": ("failed", "redirect_loop", 1),
        "/forever/0": ("failed", "too_many_redirects", 1),
        "/to-file": ("rejected", "bad_scheme", 1),
        "/to-js": ("rejected", "bad_scheme", 1),
    }
    urls = [base + p for p in expected]
    dead = f"http://127.0.0.1:{dead_port}/x.png"
    lst = write_list(tmp_path / "urls.txt", ["# test list", *urls, urls[0], "file:///etc/passwd", dead])
    out_root, log_path = tmp_path / "raw", tmp_path / "logs" / "crawl.jsonl"

    t0 = time.monotonic()
    summary = crawl([lst], out_root, log_path, fast_params())
    elapsed = time.monotonic() - t0
    assert elapsed < 15, elapsed

    recs = read_log(log_path)
    assert set(recs) == {*urls, dead, "file:///etc/passwd"}
    for path, (status, reason, attempts) in expected.items():
        r = recs[base + path]
        assert (r["status"], r["reason"], r["attempts"]) == (status, reason, attempts), (path, r)
        assert r["domain"] == "photo"
    assert (recs[dead]["status"], recs[dead]["reason"], recs[dead]["attempts"]) == ("failed", "connection_error", 3)
    assert (recs["file:///etc/passwd"]["status"], recs["file:///etc/passwd"]["reason"]) == ("rejected", "bad_scheme")
    assert recs[base + "/404"]["http_status"] == 404 and recs[base + "/always500"]["http_status"] == 503
    assert server.hits["/404"] == 1 and server.hits["/403"] == 1  # 4xx is never retried
    assert server.hits["/forever/5"] == 1 and server.hits["/forever/6"] == 0  # 5 redirects followed, no more
    assert server.hits["/big-cl"] == 1 and server.hits["/html-as-jpeg"] == 1

    files = check_out_root(out_root)
    ok = {u: r for u, r in recs.items() if r["status"] == "ok"}
    assert len(ok) == 6
    for r in ok.values():
        f = out_root / r["path"]
        assert f.is_file() and f.stat().st_size == r["bytes"] and f.stem == r["sha256"]
        assert r["http_status"] == 200
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["fetched_at"])  # UTC, to the second
    assert recs[base + "/404"]["fetched_at"] and recs["file:///etc/passwd"]["fetched_at"] is None
    assert {f.name for f in files} == {
        f"{hashlib.sha256(PNG).hexdigest()}.png", f"{hashlib.sha256(JPEG).hexdigest()}.jpg"}
    assert recs[base + "/chain/3"]["sha256"] == hashlib.sha256(JPEG).hexdigest()
    assert not list(tmp_path.rglob("*.tmp"))
    assert summary["ok"] == 6 and summary["downloaded"] == 6 and summary["resumed"] == 0
    assert summary["rejected"] == 3 and summary["failed"] == len(expected) - 6 - 2 + 1
    assert summary["total"] == len(recs)

    # --- resume: ok URLs are not requested again, the others are; a deleted file is refetched
    before = server.hits.copy()
    (out_root / recs[base + "/img.jpg"]["path"]).unlink()  # also the file of /octet, /429, /chain/3
    summary2 = crawl([lst], out_root, log_path, fast_params(retries=1))
    after = server.hits
    assert after["/img.png"] == before["/img.png"]
    assert after["/flaky"] == before["/flaky"]
    assert after["/429"] == before["/429"] + 1
    assert after["/img.jpg"] == before["/img.jpg"] + 2  # directly and via /chain/0
    assert after["/octet"] == before["/octet"] + 1
    assert after["/404"] == before["/404"] + 1 and after["/html-as-jpeg"] == before["/html-as-jpeg"] + 1
    recs2 = read_log(log_path)
    assert set(recs2) == set(recs)
    assert all(recs2[u]["status"] == "ok" for u in ok)
    assert recs2[base + "/img.png"] == recs[base + "/img.png"]  # carried over unchanged
    assert recs2[base + "/img.jpg"]["fetched_at"] >= recs[base + "/img.jpg"]["fetched_at"]  # fetched again
    assert summary2["ok"] == 6 and summary2["resumed"] == 2 and summary2["downloaded"] == 4
    check_out_root(out_root)


def test_csv_domain_and_license(server: Server, tmp_path: Path):
    base = server.base
    lst = tmp_path / "lists" / "mixed.csv"
    lst.parent.mkdir()
    lst.write_text(
        "url,domain,license\n"
        f"{base}/anime.png,anime,CC-BY-SA-4.0\n"
        f"{base}/img.jpg,photo,CC0\n"
        f"{base}/img.png,,unknown\n"
        f"{base}/img.png?evil=1,../../etc,\n"
        f"{base}/img.png?x=2,cats,\n"
        "ftp://example.com/a.png,photo,\n", encoding="utf-8")
    out_root, log_path = tmp_path / "raw", tmp_path / "crawl.jsonl"
    summary = crawl([tmp_path / "lists"], out_root, log_path, fast_params(default_domain="anime"))
    recs = read_log(log_path)
    a = recs[f"{base}/anime.png"]
    assert (a["status"], a["domain"], a["license"]) == ("ok", "anime", "CC-BY-SA-4.0")
    assert a["path"] == f"anime/{hashlib.sha256(ANIME_PNG).hexdigest()}.png"
    p = recs[f"{base}/img.jpg"]
    assert (p["status"], p["domain"], p["license"]) == ("ok", "photo", "CC0")
    assert p["path"].startswith("photo/")
    d = recs[f"{base}/img.png"]  # no domain in the row: params.default_domain
    assert (d["status"], d["domain"], d["license"]) == ("ok", "anime", "unknown")
    assert recs[f"{base}/img.png?evil=1"]["reason"] == "bad_domain"
    assert recs[f"{base}/img.png?x=2"]["reason"] == "unknown_domain"
    assert recs["ftp://example.com/a.png"]["reason"] == "bad_scheme"
    assert server.hits["/img.png"] == 1  # rejected rows are never requested
    files = check_out_root(out_root)
    assert sorted(f.parent.name for f in files) == ["anime", "anime", "photo"]
    assert not (tmp_path / "etc").exists() and not (out_root.parent / "etc").exists()
    assert summary["ok"] == 3 and summary["rejected"] == 3


def test_rate_limit_per_host(server: Server, tmp_path: Path):
    lst = write_list(tmp_path / "urls.txt", [f"{server.base}/rate/{i}" for i in range(6)])
    summary = crawl([lst], tmp_path / "raw", tmp_path / "log.jsonl", fast_params(per_host_rate=5.0, concurrency=4))
    assert summary["ok"] == 6
    stamps = sorted(server.times["/rate"])
    assert len(stamps) == 6
    assert stamps[-1] - stamps[0] >= 0.8, stamps  # 5 intervals of 0.2 s
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert min(gaps) >= 0.05, gaps  # never a burst (server-side stamps jitter a little)


def test_rate_limiter_is_per_host():
    lim = HostRateLimiter(10.0)
    t0 = time.monotonic()
    stamps: dict[str, list[float]] = defaultdict(list)

    def go(host: str) -> None:
        lim.wait(host)
        stamps[host].append(time.monotonic() - t0)

    threads = [threading.Thread(target=go, args=(h,)) for h in ("a", "b") * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for host in ("a", "b"):
        s = sorted(stamps[host])
        assert s[-1] - s[0] >= 0.18
        assert s[-1] < 0.4  # hosts do not wait for each other (0.5 s if they did)


def test_interrupt_keeps_progress_and_resumes(server: Server, tmp_path: Path, monkeypatch):
    urls = [f"{server.base}/rate/{i}" for i in range(6)]
    lst = write_list(tmp_path / "urls.txt", urls)
    out_root, log_path = tmp_path / "raw", tmp_path / "crawl.jsonl"
    real_fetch = crawl_mod.Fetcher.fetch
    writes: list[int] = []
    real_write = crawl_mod.write_log

    def counting_write(path, records):
        records = list(records)
        writes.append(len(records))
        real_write(path, records)

    snapshot: dict[str, dict] = {}

    def fetch(self, url):
        i = int(url.rsplit("/", 1)[1])
        if i == 1:  # wait for the periodic write that follows the first result
            deadline = time.monotonic() + 10
            while not log_path.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            snapshot.update(read_log(log_path))
        if i >= 3:  # the interrupt, and nothing fetched after it
            raise KeyboardInterrupt
        return real_fetch(self, url)

    monkeypatch.setattr(crawl_mod.Fetcher, "fetch", fetch)
    monkeypatch.setattr(crawl_mod, "write_log", counting_write)
    monkeypatch.setattr(crawl_mod, "FLUSH_EVERY", 1)
    with pytest.raises(KeyboardInterrupt):
        crawl([lst], out_root, log_path, fast_params(concurrency=1))
    recs = read_log(log_path)
    assert set(recs) == set(urls)  # every URL has a record, even those not fetched yet
    assert [recs[u]["status"] for u in urls[:3]] == ["ok"] * 3
    assert {recs[u]["status"] for u in urls[3:]} == {"skipped"}
    assert recs[urls[5]]["reason"] == "interrupted"
    assert len(writes) >= 2  # at least one periodic write before the one at the interrupt
    assert set(snapshot) == set(urls) and snapshot[urls[0]]["status"] == "ok"
    assert {(r["status"], r["reason"]) for u, r in snapshot.items() if u != urls[0]} == {("skipped", "pending")}

    monkeypatch.setattr(crawl_mod.Fetcher, "fetch", real_fetch)
    hits_before = server.hits.copy()
    summary = crawl([lst], out_root, log_path, fast_params(concurrency=1))
    assert summary["ok"] == 6 and summary["resumed"] == 3 and summary["downloaded"] == 3
    assert all(server.hits[f"/rate/{i}"] == hits_before[f"/rate/{i}"] for i in range(3))
    assert all(server.hits[f"/rate/{i}"] == hits_before[f"/rate/{i}"] + 1 for i in range(3, 6))


def test_empty_lists_write_an_empty_log(tmp_path: Path):
    lst = write_list(tmp_path / "urls.txt", ["# nothing yet"])
    summary = crawl([lst], tmp_path / "raw", tmp_path / "crawl.jsonl", fast_params())
    assert summary == {"ok": 0, "failed": 0, "rejected": 0, "skipped": 0, "total": 0, "downloaded": 0, "resumed": 0}
    assert (tmp_path / "crawl.jsonl").read_text() == ""


# ----------------------------------------------------------------------------- hostile servers (issue 19)


def _one(server: Server, tmp_path: Path, paths: list[str], name: str = "urls", **kw) -> tuple[dict, dict, float]:
    """Crawl `paths` of the server; returns (records by path, summary, seconds)."""
    urls = [p if "://" in p else server.base + p for p in paths]
    lst = write_list(tmp_path / f"{name}.txt", urls)
    t0 = time.monotonic()
    summary = crawl([lst], tmp_path / name / "raw", tmp_path / name / "log.jsonl", fast_params(**kw))
    elapsed = time.monotonic() - t0
    recs = read_log(tmp_path / name / "log.jsonl")
    by_path = {p: recs[re.sub(r"://[^/@]*@", "://***@", u)] for p, u in zip(paths, urls)}  # credentials redacted
    return by_path, summary, elapsed


def test_retry_after_is_bounded_by_the_url_deadline(server: Server, tmp_path: Path):
    # Before: Retry-After held each URL up to 60 s per retry whatever total_timeout_s said.
    recs, _, elapsed = _one(server, tmp_path, ["/retry-after-60", "/retry-after-date", "/retry-after-1"],
                            total_timeout_s=5.0, retries=3)
    for path in ("/retry-after-60", "/retry-after-date"):
        r = recs[path]
        assert (r["status"], r["reason"], r["http_status"], r["attempts"]) == (
            "failed", "retry_after_too_long", 503, 1), r
        assert "total_timeout_s" in r["detail"]
        assert server.hits[path] == 1
    ok = recs["/retry-after-1"]  # a short Retry-After is honoured: one wait of about 1 s, then the image
    assert (ok["status"], ok["attempts"]) == ("ok", 2)
    t = server.times["/retry-after-1"]
    assert t[1] - t[0] >= 0.95
    assert elapsed < 4.0


def test_the_url_deadline_covers_every_attempt_and_wait(server: Server, tmp_path: Path):
    # 0.3 s per failing answer, 20 retries allowed: only the 1.5 s deadline ends it.
    recs, _, elapsed = _one(server, tmp_path, ["/slow-503"], total_timeout_s=1.5, retries=20, backoff_s=0.05)
    r = recs["/slow-503"]
    assert r["status"] == "failed" and r["reason"] in ("http_503", "timeout")  # the last may be cut short
    assert 2 <= r["attempts"] <= 5 and server.hits["/slow-503"] == r["attempts"]
    t = server.times["/slow-503"]
    assert t[-1] - t[0] < 1.5
    assert elapsed < 3.0


def test_downloads_are_decoded_before_they_are_kept(server: Server, tmp_path: Path):
    recs, summary, _ = _one(server, tmp_path, ["/short-cl", "/jpeg-then-html", "/png-bomb", "/img.png"])
    expect = {"/short-cl": "truncated", "/jpeg-then-html": "corrupt", "/png-bomb": "too_many_pixels"}
    for path, reason in expect.items():
        r = recs[path]
        assert (r["status"], r["reason"], r["path"]) == ("rejected", reason, None), r
        assert r["detail"] and r["bytes"] > 0 and r["attempts"] == 1
    assert recs["/short-cl"]["bytes"] == len(JPEG_BIG) // 2
    assert recs["/img.png"]["status"] == "ok"  # 48 px: below ingest's min_side, kept (ingest says why)
    files = check_out_root(tmp_path / "urls" / "raw")
    assert [f.name for f in files] == [f"{hashlib.sha256(PNG).hexdigest()}.png"]
    assert summary["ok"] == 1 and summary["rejected"] == 3


def test_address_policy_refuses_private_hosts_by_default(server: Server, tmp_path: Path):
    port = server.server_address[1]
    paths = [f"http://127.0.0.1:{port}/img.png", f"http://localhost:{port}/img.png",
             f"http://[::ffff:127.0.0.1]:{port}/img.png", f"http://0.0.0.0:{port}/img.png",
             "http://10.255.255.1/x.png", "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/x.png",
             "http://224.0.0.1/x.png", "http://100.64.0.1/x.png"]
    recs, summary, elapsed = _one(server, tmp_path, paths, allow_private=False)
    kinds = ["loopback", "loopback", "loopback", "unspecified", "private", "link-local", "link-local",
             "multicast", "reserved"]
    for path, kind in zip(paths, kinds):
        r = recs[path]
        assert (r["status"], r["reason"], r["attempts"]) == ("rejected", "blocked_address", 1), r
        assert f"a {kind} address" in r["detail"] and "crawl.allow_private" in r["detail"], r["detail"]
    assert server.hits["/img.png"] == 0  # refused before connecting, resolved names included
    assert summary["rejected"] == len(paths) and elapsed < 5


def test_allow_hosts_and_cross_host_redirects(server: Server, tmp_path: Path):
    port = server.server_address[1]
    local = f"http://localhost:{port}"
    paths = [f"{local}/img.png", f"{local}/to-loopback-ip", f"{local}/to-metadata", f"{local}/to-private",
             f"http://127.0.0.1:{port}/img.jpg"]
    # Only the host name "localhost" is allowed: its redirects to other hosts are checked again.
    recs, _, _ = _one(server, tmp_path, paths, allow_private=False, allow_hosts=["localhost"])
    assert recs[f"{local}/img.png"]["status"] == "ok"
    for path in paths[1:]:
        r = recs[path]
        assert (r["status"], r["reason"]) == ("rejected", "blocked_address"), r
    assert server.hits["/to-loopback-ip"] == 1 and server.hits["/img.png"] == 1 and server.hits["/img.jpg"] == 0
    assert "127.0.0.1" in recs[f"{local}/to-loopback-ip"]["detail"]
    assert "169.254.169.254" in recs[f"{local}/to-metadata"]["detail"]
    # A network in allow_hosts matches the address, whatever the name.
    recs, _, _ = _one(server, tmp_path, [f"http://127.0.0.1:{port}/img.jpg", f"{local}/anime.png"], name="net",
                      allow_private=False, allow_hosts=["127.0.0.0/8"])
    assert all(r["status"] == "ok" for r in recs.values()), recs
    with pytest.raises(ValidationError, match="allow_hosts"):
        fast_params(allow_hosts=["10.0.0.0/33"])


def test_address_policy_classes():
    from toonlab.data.transport import AddressPolicy
    p = AddressPolicy()
    assert p.refuses("example.com", "93.184.216.34") is None
    assert p.refuses("example.com", "2606:2800:220:1:248:1893:25c8:1946") is None
    for addr, kind in [("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
                       ("fc00::1", "private"), ("127.0.0.1", "loopback"), ("::1", "loopback"),
                       ("::ffff:10.0.0.1", "private"), ("169.254.169.254", "link-local"), ("fe80::1%eth0", "link-local"),
                       ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"),
                       ("::", "unspecified"), ("100.64.0.1", "reserved"), ("64:ff9b::a00:1", "translated")]:
        assert f"a {kind} address" in (p.refuses("h", addr) or ""), addr
    assert AddressPolicy(allow_private=True).refuses("h", "10.1.2.3") is None
    assert AddressPolicy(allow_hosts=["nas.local", "192.168.0.0/16"]).refuses("NAS.local.", "10.1.2.3") is None
    assert AddressPolicy(allow_hosts=["192.168.0.0/16"]).refuses("h", "192.168.4.4") is None
    assert AddressPolicy(allow_hosts=["192.168.0.0/16"]).refuses("h", "10.1.2.3") is not None


def test_credentials_are_sent_to_their_origin_only_and_never_logged(server: Server, tmp_path: Path, caplog):
    base = server.base
    cred = base.replace("http://", "http://user:s3cr%40t@")
    paths = [f"{cred}/auth.jpg", f"{cred}/auth-same-origin", f"{cred}/auth-to-other-host", f"{base}/auth.jpg",
             "ftp://user:s3cr%40t@example.com/a.png"]
    caplog.set_level(logging.DEBUG, logger="toonlab")
    recs, _, _ = _one(server, tmp_path, paths)
    assert recs[f"{cred}/auth.jpg"]["status"] == "ok"
    assert recs[f"{base}/auth.jpg"]["reason"] == "http_401"
    assert recs[f"{cred}/auth-same-origin"]["status"] == "ok" and recs[f"{cred}/auth-to-other-host"]["status"] == "ok"
    # Same origin: the credentials go along; another origin (localhost): they do not.
    assert sorted(server.auth_seen, key=str) == sorted(["Basic " + base64.b64encode(b"user:s3cr@t").decode(), None],
                                                      key=str)
    log_text = (tmp_path / "urls" / "log.jsonl").read_text()
    assert "s3cr" not in log_text and "***@" in log_text
    assert recs["ftp://user:s3cr%40t@example.com/a.png"]["url"] == "ftp://***@example.com/a.png"
    assert "s3cr" not in caplog.text
    # A second run finds the redacted records and fetches nothing again.
    before = server.hits.copy()
    _one(server, tmp_path, paths)
    assert server.hits["/auth.jpg"] == before["/auth.jpg"] + 1  # only the 401 one is tried again


def test_errors_that_cannot_heal_are_not_retried(server: Server, tmp_path: Path):
    paths = ["/chunked-ok", "/chunked-bad-size", "/chunked-bad-end", "/chunked-cut", "/status-799"]
    recs, _, _ = _one(server, tmp_path, paths, retries=2)
    assert recs["/chunked-ok"]["status"] == "ok" and recs["/chunked-ok"]["bytes"] == len(PNG)
    # urllib3 (like http.client and requests) discards the two bytes after a chunk unchecked: the chunk is intact.
    bad_end = recs["/chunked-bad-end"]
    assert (bad_end["status"], bad_end["bytes"], bad_end["attempts"]) == ("ok", len(PNG), 1), bad_end
    for path, reason, attempts in [("/chunked-bad-size", "bad_chunked", 1), ("/status-799", "bad_status", 1),
                                   ("/chunked-cut", "truncated", 3)]:
        r = recs[path]
        assert (r["status"], r["reason"], r["attempts"]) == ("failed", reason, attempts), r
        assert server.hits[path] == attempts
    assert recs["/status-799"]["http_status"] == 799


def test_crawl_log_keeps_list_files_with_undecodable_names(server: Server, tmp_path: Path):
    from toonlab.data.decode import path_from_text
    folder = tmp_path / "lists"
    folder.mkdir()
    raw_name = os.fsencode(folder) + b"/urls-\xff\xfe.txt"
    with open(raw_name, "wb") as f:
        f.write(f"{server.base}/img.png\nnot a url\n".encode())
    log_path = tmp_path / "log.jsonl"
    summary = crawl([folder], tmp_path / "raw", log_path, fast_params())
    assert summary["ok"] == 1 and summary["rejected"] == 1
    recs = read_log(log_path)
    for r in recs.values():
        text, line = r["source"].rsplit(":", 1)
        assert os.fsencode(path_from_text(text)) == raw_name and line in ("1", "2")


def test_https_verifies_the_certificate_and_keeps_the_address_policy(tmp_path: Path):
    """A real TLS server on loopback with a self-signed certificate for localhost."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                           str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext",
                           "subjectAltName=DNS:localhost"], capture_output=True, text=True)
    assert made.returncode == 0, f"openssl could not make a test certificate: {made.stderr}"
    srv = Server()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"https://localhost:{srv.server_address[1]}/img.png"
        fetcher = crawl_mod.Fetcher(fast_params(retries=0))
        assert fetcher.fetch(url)[0]["reason"] == "tls_error"  # not signed by a trusted authority
        fetcher.ssl_context = ssl.create_default_context(cafile=str(cert))
        fields, body = fetcher.fetch(url)
        assert fields["http_status"] == 200 and body == PNG  # SNI and host name checked against the certificate
        fields, body = crawl_mod.Fetcher(fast_params(allow_private=False)).fetch(url)
        assert (fields["reason"], body) == ("blocked_address", None)
    finally:
        srv.shutdown()
        srv.server_close()
