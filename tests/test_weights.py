"""Pretrained files fetched on demand (toonlab.weights): a real loopback HTTP server plays the
mirror (TOONLAB_WEIGHTS_MIRROR), serving small generated files whose hashes the table entries
are pointed at (dataclasses.replace); a second one plays a forward proxy. Every cache folder
is a temporary one."""

import dataclasses
import hashlib
import http.client
import http.server
import io
import re
import socket
import threading
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from toonlab import weights
from toonlab.cli import main
from toonlab.errors import MissingWeightsError, UsageError
from toonlab.weights import WEIGHTS, FetchError, fetch, require

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
              "no_proxy")


class Mirror:
    """A loopback HTTP server for `files`, recording every request. `cut[name] = n`: the first
    request for `name` gets the full Content-Length but only n bytes, then the connection
    closes. `honour_range = False`: Range headers are ignored (200 with the whole file)."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.cut: dict[str, int] = {}
        self.honour_range = True
        self.requests: list[tuple[str, dict[str, str]]] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                mirror.requests.append((self.path, dict(self.headers)))
                name = urlsplit(self.path).path.lstrip("/")
                data = mirror.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                m = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
                start = int(m.group(1)) if m and mirror.honour_range else 0
                if start >= len(data) and m and mirror.honour_range:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                body = data[start:]
                if name in mirror.cut:
                    body = body[:mirror.cut.pop(name)]
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def paths(self) -> list[str]:
        return [urlsplit(p).path for p, _ in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Proxy:
    """A minimal forward HTTP proxy: records the absolute URL of each request, relays it."""

    def __init__(self):
        self.seen: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                proxy.seen.append(self.path)
                target = urlsplit(self.path)
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "host")}
                conn.request("GET", target.path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "server", "date"):
                        self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                conn.close()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def payload(n: int, seed: int = 0) -> bytes:
    """n deterministic bytes, different per seed (a stand-in for a weights file)."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


def onnx_like(n: int, seed: int) -> bytes:
    return b"\x08\x07" + payload(n, seed)  # ir_version tag first, as a real ONNX file starts


def zipped(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def pin(monkeypatch, name: str, data: bytes, algorithm: str = "sha256", prefix: int | None = None) -> None:
    """Point WEIGHTS[name]'s pinned hash at `data` (the production entry pins the real file)."""
    digest = hashlib.new(algorithm, data).hexdigest()
    monkeypatch.setitem(WEIGHTS, name, dataclasses.replace(WEIGHTS[name], digest=f"{algorithm}:{digest[:prefix]}"))


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Every cache folder under tmp_path, no proxy, fetching on (whatever the suite's default)."""
    for var, sub in (("TORCH_HOME", "torch"), ("U2NET_HOME", "u2net"), ("INSIGHTFACE_HOME", "insightface"),
                     ("TOONLAB_WEIGHTS", "toonlab")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TOONLAB_FETCH_WEIGHTS", "auto")
    monkeypatch.setattr(weights, "_configured", "auto")
    return tmp_path


@pytest.fixture
def mirror(monkeypatch):
    server = Mirror({})
    monkeypatch.setenv("TOONLAB_WEIGHTS_MIRROR", server.url + "/")
    yield server
    server.close()


def checkpoints(root: Path) -> Path:
    return root / "torch" / "hub" / "checkpoints"


def test_require_fetches_from_the_mirror_and_verifies(homes, mirror, monkeypatch):
    data = payload(50_000)
    pin(monkeypatch, "vgg16", data, prefix=8)  # a prefix, as torchvision pins it
    mirror.files["vgg16-397923af.pth"] = data
    folder = require("vgg16")
    assert folder == checkpoints(homes)
    assert (folder / "vgg16-397923af.pth").read_bytes() == data
    assert sorted(p.name for p in folder.iterdir()) == ["vgg16-397923af.pth"]  # no .part, no temp file
    assert mirror.paths() == ["/vgg16-397923af.pth"]
    require("vgg16")  # present: no second request
    assert len(mirror.requests) == 1


def test_md5_pinned_file(homes, mirror, monkeypatch):
    data = payload(3000, seed=4)
    pin(monkeypatch, "isnet_anime", data, algorithm="md5")
    mirror.files["isnet-anime.onnx"] = data
    assert (fetch("isnet_anime") / "isnet-anime.onnx").read_bytes() == data


def test_wrong_hash_is_refused_and_nothing_is_left(homes, mirror, monkeypatch):
    pin(monkeypatch, "vgg19", payload(4000, seed=1))
    served = payload(4000, seed=2)
    mirror.files["vgg19-dcbb9e9d.pth"] = served
    with pytest.raises(FetchError) as err:
        fetch("vgg19")
    msg = str(err.value)
    assert "sha256 mismatch" in msg and hashlib.sha256(served).hexdigest() in msg
    assert hashlib.sha256(payload(4000, seed=1)).hexdigest() in msg
    assert not (homes / "torch").exists()  # no file, no .part, not even the cache folders it created
    # Through require: today's message, plus why the fetch failed and what to do.
    with pytest.raises(MissingWeightsError) as err:
        require("vgg19")
    msg = str(err.value)
    assert "vgg19-dcbb9e9d.pth" in msg and str(checkpoints(homes)) in msg and "Offline alternative" in msg
    assert "fetching it failed" in msg and "sha256 mismatch" in msg and "toonlab weights fetch vgg19" in msg
    assert "\n" not in msg
    assert not (homes / "torch").exists()


def test_cut_off_body_is_resumed_with_a_range_request(homes, mirror, monkeypatch):
    data = payload(200_000, seed=3)
    pin(monkeypatch, "inception_fid", data)
    name = "pt_inception-2015-12-05-6726825d.pth"
    mirror.files[name] = data
    mirror.cut[name] = 70_000
    assert (fetch("inception_fid") / name).read_bytes() == data
    assert len(mirror.requests) == 2
    assert "Range" not in mirror.requests[0][1]
    assert mirror.requests[1][1]["Range"] == "bytes=70000-"
    assert sorted(p.name for p in checkpoints(homes).iterdir()) == [name]


@pytest.mark.parametrize("honour_range", [True, False])
def test_partial_file_of_an_earlier_run_is_resumed(homes, mirror, monkeypatch, honour_range):
    """A `.part` left by an interrupted run: resumed with Range (206), or read again from the
    start when the server answers 200 to the Range request."""
    data = payload(30_000, seed=5)
    pin(monkeypatch, "vgg16", data)
    mirror.files["vgg16-397923af.pth"] = data
    mirror.honour_range = honour_range
    folder = checkpoints(homes)
    folder.mkdir(parents=True)
    (folder / "vgg16-397923af.pth.part").write_bytes(data[:12_345])
    assert (fetch("vgg16") / "vgg16-397923af.pth").read_bytes() == data
    assert [h.get("Range") for _, h in mirror.requests] == ["bytes=12345-"]
    assert not (folder / "vgg16-397923af.pth.part").exists()


def test_complete_partial_file_is_verified_without_downloading_again(homes, mirror, monkeypatch):
    """A `.part` holding the whole file (interrupted just before the rename): the server answers
    416 to the Range request, and the hash check decides."""
    data = payload(8000, seed=8)
    pin(monkeypatch, "vgg16", data)
    mirror.files["vgg16-397923af.pth"] = data
    folder = checkpoints(homes)
    folder.mkdir(parents=True)
    (folder / "vgg16-397923af.pth.part").write_bytes(data)
    assert (fetch("vgg16") / "vgg16-397923af.pth").read_bytes() == data
    assert [h.get("Range") for _, h in mirror.requests] == ["bytes=8000-"]
    assert sorted(p.name for p in folder.iterdir()) == ["vgg16-397923af.pth"]


def test_http_404_is_a_clear_error_and_leaves_nothing(homes, mirror, monkeypatch):
    pin(monkeypatch, "u2net_human_seg", b"whatever", algorithm="md5")
    with pytest.raises(FetchError, match=r"u2net_human_seg\.onnx: HTTP 404"):
        fetch("u2net_human_seg")
    assert not (homes / "u2net").exists()
    with pytest.raises(MissingWeightsError, match="HTTP 404"):
        require("u2net_human_seg")


def test_no_network_keeps_the_missing_file_message_with_the_reason(homes, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("TOONLAB_WEIGHTS_MIRROR", f"http://127.0.0.1:{port}")
    with pytest.raises(MissingWeightsError) as err:
        require("isnet_anime")
    msg = str(err.value)
    assert "isnet-anime.onnx" in msg and str(homes / "u2net") in msg and "floodfill" in msg
    assert "fetching it failed" in msg and "connection refused" in msg
    assert "toonlab weights fetch isnet_anime" in msg and "TOONLAB_WEIGHTS_MIRROR" in msg
    assert not (homes / "u2net").exists()


def test_fetch_never_touches_no_network(homes, mirror, monkeypatch):
    data = payload(1000)
    pin(monkeypatch, "vgg16", data)
    mirror.files["vgg16-397923af.pth"] = data
    monkeypatch.setenv("TOONLAB_FETCH_WEIGHTS", "never")
    with pytest.raises(MissingWeightsError, match="fetch_weights: never") as err:
        require("vgg16")
    assert "vgg16-397923af.pth" in str(err.value) and "toonlab weights fetch vgg16" in str(err.value)
    # The params setting, through configure, when the environment says nothing.
    monkeypatch.delenv("TOONLAB_FETCH_WEIGHTS")
    weights.configure("never")
    with pytest.raises(MissingWeightsError, match="fetch_weights: never"):
        require("vgg16")
    assert mirror.requests == []
    # The environment wins over params; a bad value is a usage error.
    monkeypatch.setenv("TOONLAB_FETCH_WEIGHTS", "auto")
    assert require("vgg16") == checkpoints(homes) and len(mirror.requests) == 1
    monkeypatch.setenv("TOONLAB_FETCH_WEIGHTS", "sometimes")
    with pytest.raises(UsageError, match="TOONLAB_FETCH_WEIGHTS"):
        weights.fetch_mode()
    with pytest.raises(UsageError, match="runtime.fetch_weights"):
        weights.configure("always")


def test_http_proxy_from_the_environment_is_used_and_no_proxy_bypasses_it(homes, mirror, monkeypatch):
    proxy = Proxy()
    try:
        a, b = payload(5000, seed=6), payload(5000, seed=7)
        pin(monkeypatch, "vgg16", a)
        pin(monkeypatch, "vgg19", b)
        mirror.files.update({"vgg16-397923af.pth": a, "vgg19-dcbb9e9d.pth": b})
        monkeypatch.setenv("http_proxy", proxy.url)
        assert (fetch("vgg16") / "vgg16-397923af.pth").read_bytes() == a
        assert proxy.seen == [f"{mirror.url}/vgg16-397923af.pth"]
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        assert (fetch("vgg19") / "vgg19-dcbb9e9d.pth").read_bytes() == b
        assert len(proxy.seen) == 1 and mirror.paths() == ["/vgg16-397923af.pth", "/vgg19-dcbb9e9d.pth"]
    finally:
        proxy.close()


def buffalo_files(prefix: str = "") -> dict[str, bytes]:
    names = ("det_10g.onnx", "2d106det.onnx", "w600k_r50.onnx", "genderage.onnx", "1k3d68.onnx")
    return {prefix + n: onnx_like(2000, seed=i) for i, n in enumerate(names)}


@pytest.mark.parametrize("prefix", ["", "buffalo_l/"])
def test_insightface_pack_is_unpacked_into_its_folder(homes, mirror, monkeypatch, prefix):
    monkeypatch.setitem(WEIGHTS, "buffalo_l", dataclasses.replace(WEIGHTS["buffalo_l"], min_bytes=1000))
    files = buffalo_files(prefix)
    mirror.files["buffalo_l.zip"] = zipped(files)
    root = homes / "insightface" / "models"
    (root / "buffalo_l").mkdir(parents=True)
    (root / "buffalo_l" / "det_10g.onnx").write_bytes(b"stale")  # an incomplete pack is replaced whole
    assert fetch("buffalo_l") == root
    assert sorted(p.name for p in root.iterdir()) == ["buffalo_l"]  # no zip, no .part, no temp folder
    for name, data in files.items():
        assert (root / "buffalo_l" / name.removeprefix(prefix)).read_bytes() == data


@pytest.mark.parametrize("problem", ["missing", "small", "not_onnx", "not_zip"])
def test_bad_insightface_pack_is_refused_and_nothing_is_left(homes, mirror, monkeypatch, problem):
    monkeypatch.setitem(WEIGHTS, "buffalo_l", dataclasses.replace(WEIGHTS["buffalo_l"], min_bytes=1000))
    files = buffalo_files()
    if problem == "missing":
        del files["w600k_r50.onnx"]
    elif problem == "small":
        files["2d106det.onnx"] = b"\x08\x07tiny"
    elif problem == "not_onnx":
        files["det_10g.onnx"] = b"<html>" + payload(2000)
    mirror.files["buffalo_l.zip"] = zipped(files) if problem != "not_zip" else b"<html>rate limited</html>"
    expected = {"missing": "has no w600k_r50.onnx", "small": "2d106det.onnx has 6 bytes",
                "not_onnx": "det_10g.onnx is not an ONNX model", "not_zip": "not a valid zip"}[problem]
    with pytest.raises(FetchError, match=expected):
        fetch("buffalo_l")
    assert not (homes / "insightface").exists()


def test_mobilefacenet_without_a_mirror_says_where_to_get_it(homes, capsys, monkeypatch):
    monkeypatch.delenv("TOONLAB_WEIGHTS_MIRROR", raising=False)
    monkeypatch.chdir(homes)
    (homes / "params.yaml").write_text("{}\n")
    assert main(["weights", "fetch", "mobilefacenet"]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("toonlab:")]
    assert len(lines) == 1 and lines[0].startswith("toonlab: error: mobilefacenet:")
    assert "Google Drive" in lines[0] and str(homes / "toonlab") in lines[0]
    assert not (homes / "toonlab").exists()
    with pytest.raises(MissingWeightsError) as err:
        require("mobilefacenet")
    msg = str(err.value)
    assert "model_mobilefacenet.pth" in msg and "Google Drive" in msg and "faceid_weight: 0" in msg
    assert "TOONLAB_WEIGHTS_MIRROR" in msg and "\n" not in msg


def test_cli_fetch_all_from_the_mirror_then_doctor(homes, mirror, monkeypatch, capsys):
    monkeypatch.chdir(homes)
    (homes / "params.yaml").write_text("{}\n")
    for name in WEIGHTS:
        monkeypatch.setitem(WEIGHTS, name, dataclasses.replace(WEIGHTS[name], min_bytes=1000))
    for i, name in enumerate(("vgg16", "vgg19", "inception_fid", "u2net_human_seg", "isnet_anime")):
        data = payload(4000, seed=10 + i)
        pin(monkeypatch, name, data, algorithm="md5" if WEIGHTS[name].digest.startswith("md5") else "sha256")
        mirror.files[WEIGHTS[name].download_name] = data
    mirror.files["buffalo_l.zip"] = zipped(buffalo_files())
    mobilefacenet = b"PK\x03\x04" + payload(3000, seed=20)
    mirror.files["model_mobilefacenet.pth"] = mobilefacenet

    assert main(["weights", "fetch", "all"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: fetched into" in out for name in WEIGHTS)
    assert all(w.available() for w in WEIGHTS.values())
    assert (homes / "toonlab" / "model_mobilefacenet.pth").read_bytes() == mobilefacenet
    n = len(mirror.requests)
    assert main(["weights", "fetch", "vgg16", "buffalo_l"]) == 0
    assert "vgg16: present in" in capsys.readouterr().out and len(mirror.requests) == n

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert out.count("[ok     ]") == len(WEIGHTS) and "MISSING" not in out
    assert f"fetch: {mirror.url}/buffalo_l.zip (mirror)" in out
    assert f"check: {WEIGHTS['isnet_anime'].digest} pinned by rembg" in out
    assert "no hash published by insightface" in out
    assert main(["weights", "list"]) == 0
    assert "[ok     ] vgg19" in capsys.readouterr().out
    assert main(["weights", "fetch", "vgg17"]) == 2
    assert "unknown weights vgg17" in capsys.readouterr().err


def test_cli_fetch_reports_each_failure_on_one_line(homes, mirror, monkeypatch, capsys):
    monkeypatch.chdir(homes)
    (homes / "params.yaml").write_text("{}\n")
    data = payload(1000)
    pin(monkeypatch, "vgg16", data)
    mirror.files["vgg16-397923af.pth"] = data
    mirror.files["vgg19-dcbb9e9d.pth"] = data  # the wrong file for vgg19's pin
    assert main(["weights", "fetch", "vgg16", "vgg19", "inception_fid"]) == 1
    captured = capsys.readouterr()
    assert "vgg16: fetched into" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("toonlab: error:")]
    assert [e.split(":")[2].strip() for e in errors] == ["vgg19", "inception_fid"]
    assert "sha256 mismatch" in errors[0] and "HTTP 404" in errors[1]


def test_production_table_pins_what_the_owners_pin():
    """The torch.hub files' sha256 prefixes are the ones in their names (torch.hub checks that
    prefix); every URL ends in the file (or pack) it provides; rembg pins full md5s."""
    for w in WEIGHTS.values():
        if w.folder == "torch":
            assert w.digest == "sha256:" + re.search(r"-([a-f0-9]+)\.pth$", w.files[0]).group(1)
            assert w.url.endswith("/" + w.files[0]) and w.url.startswith("https://")
        elif w.folder == "rembg":
            assert re.fullmatch(r"md5:[0-9a-f]{32}", w.digest) and w.url.endswith("/" + w.files[0])
    assert WEIGHTS["buffalo_l"].archive and WEIGHTS["buffalo_l"].digest is None
    assert WEIGHTS["mobilefacenet"].url is None and "photo2cartoon" in WEIGHTS["mobilefacenet"].manual
