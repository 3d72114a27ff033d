"""`toonlab crawl` through HTTP proxies (HTTP_PROXY, HTTPS_PROXY, NO_PROXY, lower-case forms),
against a real forward proxy on 127.0.0.1, written here, that records every request it gets:
absolute-form GETs for http:// URLs and CONNECT tunnels for https:// ones."""

from __future__ import annotations

import base64
import datetime
import io
import json
import logging
import os
import select
import socket
import socketserver
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from toonlab.data.crawl import crawl
from toonlab.data.params import CrawlParams
from toonlab.data.transport import Fetcher, Proxies
from toonlab.errors import ToonlabError


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 90)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    """Each test starts without proxy variables, whatever the machine running it has."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name == "REQUEST_METHOD":
            monkeypatch.delenv(name)


# ----------------------------------------------------------------------------- origin servers


class Origin(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), OriginHandler)
        self.seen: list[tuple[str, dict[str, str]]] = []  # (path, headers), lower-case names

    def handle_error(self, request, client_address):
        pass

    @property
    def port(self) -> int:
        return self.server_address[1]


class OriginHandler(BaseHTTPRequestHandler):
    server: Origin
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.path == "/img.png":
            code, headers, body = 200, {"Content-Type": "image/png"}, PNG
        elif self.path == "/to-metadata":
            code, headers, body = 302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""
        elif self.path == "/endless-chunk-size":  # a chunk-size line that never ends
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(32):
                self.wfile.write(b"0" * 65536)
            return
        else:
            code, headers, body = 404, {"Content-Type": "text/plain"}, b"no"
        self.send_response(code)
        for k, v in {**headers, "Content-Length": str(len(body)), "Connection": "close"}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


def _serve(srv: socketserver.BaseServer):
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return srv


@pytest.fixture
def origin():
    srv = _serve(Origin())
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for `localhost` (its own authority) and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_origin(certificate):
    srv = Origin()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*certificate)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    _serve(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


# ----------------------------------------------------------------------------- the forward proxy


class Proxy(socketserver.ThreadingTCPServer):
    """A forward proxy: absolute-form requests are passed on to their origin, CONNECT opens a
    tunnel. Records (request line, headers) of every request; with `credentials` it answers
    407 to requests without the matching Proxy-Authorization."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, credentials: str | None = None):
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.expected = "Basic " + base64.b64encode(credentials.encode()).decode() if credentials else None

    def handle_error(self, request, client_address):
        pass

    @property
    def lines(self) -> list[str]:
        return [line for line, _ in self.seen]

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.server_address[1]}"


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Bytes both ways until either side closes."""
    while True:
        ready, _, _ = select.select([a, b], [], [], 5)
        if not ready:
            return
        for s in ready:
            data = s.recv(65536)
            if not data:
                return
            (b if s is a else a).sendall(data)


class ProxyHandler(socketserver.BaseRequestHandler):
    server: Proxy

    def handle(self):
        client: socket.socket = self.request
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(65536)
            if not data:
                return
            head += data
        head, _, rest = head.partition(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}
        with self.server.lock:
            self.server.seen.append((request_line, headers))
        if self.server.expected and headers.get("proxy-authorization") != self.server.expected:
            client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n"
                           b"Connection: close\r\n\r\n")
            return
        method, target, _ = request_line.split(" ", 2)
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _relay(client, upstream)
            return
        parts = urlsplit(target)  # absolute form: http://host:port/path
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        forward = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()
                                                   if not k.startswith("proxy-")]
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=5) as upstream:
            upstream.sendall("\r\n".join(forward).encode("latin-1") + b"\r\n\r\n" + rest)
            _relay(client, upstream)


@pytest.fixture
def proxy():
    srv = _serve(Proxy())
    yield srv
    srv.shutdown()
    srv.server_close()


# ----------------------------------------------------------------------------- helpers


def fast_params(**kw) -> CrawlParams:
    base = dict(concurrency=2, per_host_rate=1000.0, timeout_s=2.0, total_timeout_s=5.0, retries=2,
                backoff_s=0.05, max_bytes=100_000, max_redirects=5, allow_private=False, allow_hosts=["localhost"])
    base.update(kw)
    return CrawlParams(**base)


def run_crawl(tmp_path: Path, urls: list[str], **kw) -> tuple[dict[str, dict], Path, dict]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    lst = tmp_path / "urls.txt"
    lst.write_text("\n".join(urls) + "\n", encoding="utf-8")
    out_root, log_path = tmp_path / "raw", tmp_path / "crawl.jsonl"
    summary = crawl([lst], out_root, log_path, fast_params(**kw))
    recs = {r["url"]: r for r in map(json.loads, log_path.read_text(encoding="utf-8").splitlines())}
    return recs, out_root, summary


# ----------------------------------------------------------------------------- tests


def test_http_url_goes_through_the_proxy(origin: Origin, proxy: Proxy, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    url = f"http://localhost:{origin.port}/img.png"
    recs, out_root, summary = run_crawl(tmp_path, [url])
    assert summary["ok"] == 1, recs
    assert proxy.lines == [f"GET {url} HTTP/1.1"]  # absolute form: the proxy resolves the name
    assert proxy.seen[0][1]["host"] == f"localhost:{origin.port}"
    assert [path for path, _ in origin.seen] == ["/img.png"]
    assert (out_root / recs[url]["path"]).read_bytes() == PNG


def test_https_url_goes_through_a_connect_tunnel(tls_origin: Origin, certificate, monkeypatch):
    proxy = _serve(Proxy(credentials="puser:p@ss"))
    try:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url("puser:p%40ss@"))
        fetcher = Fetcher(fast_params())
        fetcher.ssl_context = ssl.create_default_context(cafile=str(certificate[0]))
        url = f"https://localhost:{tls_origin.port}/img.png"
        fields, body = fetcher.fetch(url)
        assert (fields["http_status"], body) == (200, PNG), fields
        assert [line.rsplit(" ", 1)[0] for line in proxy.lines] == [f"CONNECT localhost:{tls_origin.port}"]
        assert proxy.seen[0][1]["proxy-authorization"] == "Basic " + base64.b64encode(b"puser:p@ss").decode()
        assert [path for path, _ in tls_origin.seen] == ["/img.png"]
        assert "proxy-authorization" not in tls_origin.seen[0][1]  # sent to the proxy only
        # The certificate is checked against the target's name through the tunnel too.
        fields, body = Fetcher(fast_params(retries=0)).fetch(url)
        assert (fields["reason"], body) == ("tls_error", None)
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_no_proxy_hosts_go_straight_to_the_origin(origin: Origin, proxy: Proxy, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    monkeypatch.setenv("NO_PROXY", "example.com, .localhost,localhost")
    url = f"http://localhost:{origin.port}/img.png"
    recs, _, summary = run_crawl(tmp_path, [url])
    assert summary["ok"] == 1, recs
    assert proxy.seen == [] and [path for path, _ in origin.seen] == ["/img.png"]
    # Straight to the host, the address policy judges the address again: 127.0.0.1 is loopback.
    monkeypatch.setenv("NO_PROXY", "127.0.0.0/8")
    recs, _, _ = run_crawl(tmp_path / "ip", [f"http://127.0.0.1:{origin.port}/img.png"])
    assert next(iter(recs.values()))["reason"] == "blocked_address" and proxy.seen == []


def test_no_proxy_rules():
    proxies = Proxies({"http": "proxy.example:3128", "https": "https://proxy.example",
                       "no": "example.com, .svc.local,*.corp.example, api.test:8080, 10.0.0.0/8, [::1]:81, fe80::/10"})
    assert proxies.by_scheme["http"].url == "http://proxy.example:3128"  # a bare host:port is an http proxy
    assert proxies.by_scheme["https"].url == "https://proxy.example"
    direct = [("example.com", 80), ("img.example.com", 443), ("a.svc.local", 80), ("x.corp.example", 80),
              ("corp.example", 80), ("api.test", 8080), ("10.1.2.3", 80), ("::1", 81), ("fe80::1", 80)]
    proxied = [("notexample.com", 80), ("example.com.evil.test", 80), ("api.test", 80), ("11.0.0.1", 80),
               ("::1", 80), ("10.1.2.3.nip.io", 80)]
    for host, port in direct:
        assert proxies.choose("http", host, port) is None, host
    for host, port in proxied:
        assert proxies.choose("http", host, port) is not None, host
    assert Proxies({"http": "http://p:1", "no": "*"}).choose("http", "anything.example", 80) is None
    assert Proxies({"all": "http://p:1"}).choose("https", "h.example", 443).url == "http://p:1"
    assert Proxies({"https": "http://p:1"}).choose("http", "h.example", 80) is None  # only https:// URLs


def test_lower_case_variables_win(origin: Origin, proxy: Proxy, tmp_path: Path, monkeypatch):
    other = _serve(Proxy())
    try:
        monkeypatch.setenv("HTTP_PROXY", other.url())
        monkeypatch.setenv("http_proxy", proxy.url())
        url = f"http://localhost:{origin.port}/img.png"
        recs, _, summary = run_crawl(tmp_path, [url])
        assert summary["ok"] == 1, recs
        assert proxy.lines == [f"GET {url} HTTP/1.1"] and other.seen == []
        monkeypatch.setenv("NO_PROXY", "example.com")
        monkeypatch.setenv("no_proxy", "localhost")
        recs, _, summary = run_crawl(tmp_path / "again", [url])
        assert summary["ok"] == 1 and len(proxy.seen) == 1 and other.seen == []  # no_proxy: straight there
    finally:
        other.shutdown()
        other.server_close()


def test_policy_refuses_targets_by_name_before_the_proxy_sees_them(origin: Origin, proxy: Proxy, tmp_path: Path,
                                                                   monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    monkeypatch.setenv("HTTPS_PROXY", proxy.url())
    refused = {"http://10.0.0.1/x.png": "a private address", f"http://127.0.0.1:{origin.port}/img.png": "loopback",
               "https://[::1]/x.png": "loopback", "http://169.254.169.254/latest/meta-data/": "link-local",
               "http://app.localhost/x.png": "a loopback name", "http://intranet/x.png": "a local-network name",
               "http://metadata.google.internal/x.png": "a local-network name",
               "https://printer.local/x.png": "a local-network name"}
    redirect = f"http://localhost:{origin.port}/to-metadata"
    recs, _, summary = run_crawl(tmp_path, [*refused, redirect], allow_hosts=[])
    for url, why in refused.items():
        r = recs[url]
        assert (r["status"], r["reason"], r["attempts"]) == ("rejected", "blocked_address", 1), r
        assert why in r["detail"] and "crawl.allow_hosts" in r["detail"], r["detail"]
    assert recs[redirect]["reason"] == "blocked_address"  # `localhost` itself needs allow_hosts
    assert proxy.seen == [] and origin.seen == []
    # Named in allow_hosts, localhost goes through the proxy; its redirect is judged again, by name.
    recs, _, _ = run_crawl(tmp_path / "allowed", [redirect])
    r = recs[redirect]
    assert (r["status"], r["reason"], r["http_status"]) == ("rejected", "blocked_address", None), r
    assert "169.254.169.254" in r["detail"]
    assert proxy.lines == [f"GET {redirect} HTTP/1.1"]  # the hop to the metadata service never reached the proxy
    # allow_private lifts the policy: any public or private target may go to the proxy.
    assert Fetcher(fast_params(allow_private=True)).policy.refuses_name("intranet") is None


def test_proxy_credentials_are_sent_but_never_logged(origin: Origin, tmp_path: Path, monkeypatch, caplog):
    proxy = _serve(Proxy(credentials="puser:s3cr@t"))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    try:
        monkeypatch.setenv("http_proxy", proxy.url("puser:s3cr%40t@"))
        monkeypatch.setenv("https_proxy", f"http://puser:s3cr%40t@127.0.0.1:{dead}")
        caplog.set_level(logging.DEBUG, logger="toonlab")
        ok, down = f"http://localhost:{origin.port}/img.png", "https://img.example.com/x.png"
        recs, _, summary = run_crawl(tmp_path, [ok, down], retries=1)
        assert recs[ok]["status"] == "ok", recs[ok]
        assert proxy.seen[0][1]["proxy-authorization"] == "Basic " + base64.b64encode(b"puser:s3cr@t").decode()
        assert "proxy-authorization" not in origin.seen[0][1]
        r = recs[down]  # the https proxy is down: a proxy_error, retried, its URL without the password
        assert (r["status"], r["reason"], r["attempts"]) == ("failed", "proxy_error", 2), r
        assert f"127.0.0.1:{dead}" in r["detail"]
        assert f"http://127.0.0.1:{proxy.server_address[1]}" in caplog.text  # the proxy is named in the log
        for text in (caplog.text, (tmp_path / "crawl.jsonl").read_text()):
            assert "s3cr" not in text and "puser" not in text
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_a_tunnel_the_proxy_refuses_is_not_retried(certificate, monkeypatch):
    proxy = _serve(Proxy(credentials="puser:right"))
    try:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url("puser:wrong@"))
        fields, body = Fetcher(fast_params()).fetch("https://localhost:9/x.png")
        assert (fields["status"], fields["reason"], fields["http_status"], fields["attempts"], body) == (
            "failed", "proxy_error", 407, 1, None), fields
        assert "407" in fields["detail"] and "wrong" not in fields["detail"]
        assert len(proxy.seen) == 1
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_unsupported_proxy_scheme_is_a_clear_error(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "socks5://user:pw@127.0.0.1:1080")
    with pytest.raises(ToonlabError, match="not an http:// or https:// proxy URL") as err:
        run_crawl(tmp_path, ["https://img.example.com/x.png"])
    assert "pw" not in str(err.value) and "socks5://***@127.0.0.1:1080" in str(err.value)


def test_an_endless_chunk_size_line_is_cut_off(origin: Origin, tmp_path: Path):
    # urllib3 2.8 bounds chunk-size lines (before, it read them into memory without a limit).
    url = f"http://localhost:{origin.port}/endless-chunk-size"
    recs, _, _ = run_crawl(tmp_path, [url])
    r = recs[url]
    assert (r["status"], r["reason"], r["attempts"]) == ("failed", "bad_chunked", 1), r
    assert "exceeded maximum allowed length" in r["detail"]
