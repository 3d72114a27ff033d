"""`toonlab serve`: the real command in a subprocess (uvicorn on loopback), tiny runs of
real families (CycleGAN, White-box; a DCGAN run that must not be offered), real photos
shipped in installed packages, uploads over real HTTP and through headless Chromium
(Debian `chromium` + `chromium-driver`, driven by Selenium), and hostile clients on raw
sockets (stalled and trickling uploads, unfinished request heads, more uploads than the
cap) against small configured deadlines."""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import write_run
from servers import multipart, start, stop
from toonlab.cli import main
from toonlab.data.decode import decode_file
from toonlab.data.demo import package_file
from toonlab.models.cyclegan import model as cyclegan
from toonlab.models.dcgan import model as dcgan
from toonlab.models.whitebox import model as whitebox

PX = 64
LIMIT_MB = 1.0             # serve.max_upload_mb in these tests (the astronaut PNG is 0.79 MB)
MAX_PIXELS = 2_000_000     # serve.max_pixels (t1.jpg is 1280 x 886)
# The server fixture's deadlines and upload cap: small, so that the hostile-client tests
# take seconds (the defaults are 30 s, 180 s and 4).
IDLE_S = 4.0               # serve.idle_timeout_s (not lower: a loaded 2-core CI stalls clients for seconds)
UPLOAD_S = 10.0            # serve.upload_timeout_s (the drain of a refused 1 MB body must fit in it under load)
CAP = 5                    # serve.max_concurrent_uploads
MARGIN_S = 6.0             # allowed lateness of a close (a loaded 2-core machine)


def _photo(pkg: str, rel: str) -> Path:
    p = package_file(pkg, rel)
    assert p is not None, f"{pkg}'s {rel} is required"
    return p


T1 = ("insightface", "data/images/t1.jpg")          # group photo, 6 faces
ASTRONAUT = ("skimage", "data/astronaut.png")


def _write_runs(models: Path) -> None:
    cg = cyclegan.CycleGANParams.model_validate({"model": {"ngf": 8, "n_blocks": 1}, "data": {"crop_px": PX}})
    run = write_run(models, "cyclegan", "cyclegan", cg,
                    {"G_A": cyclegan.ResnetGenerator(ngf=8, n_blocks=1),
                     "G_B": cyclegan.ResnetGenerator(ngf=8, n_blocks=1)})
    (run / "summary.json").write_text(json.dumps({"family": "cyclegan", "steps": 1}))
    # No summary.json: the family comes from the checkpoint.
    wp = whitebox.WhiteboxParams.model_validate({"model": {"ch": 8, "n_res": 1, "vgg_weights": "random"},
                                                 "pretrain": {"run_dir": ""}, "data": {"crop_px": PX}})
    write_run(models / "ablations", "whitebox_small", "whitebox", wp, {"G": whitebox.UNetGenerator(8, 1)})
    dp = dcgan.DCGANParams.model_validate({"model": {"nz": 8, "ngf": 8}})
    write_run(models, "dcgan", "dcgan", dp, {"G": dcgan.NetG(8, 8)})
    (models / "unfinished" / "checkpoints").mkdir(parents=True)


def _params(root: Path, **serve) -> Path:
    p = root / "params.yaml"
    p.write_text(yaml.safe_dump({
        "runtime": {"device": "cpu"},
        "train": {"out_dir": str(root / "models")},
        "serve": {"max_upload_mb": LIMIT_MB, "max_pixels": MAX_PIXELS, "formats": ["JPEG", "PNG"], **serve},
    }))
    return p


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`toonlab serve --port 0` in a subprocess: (base URL, process, its output lines)."""
    root = tmp_path_factory.mktemp("serve")
    _write_runs(root / "models")
    params = _params(root, idle_timeout_s=IDLE_S, upload_timeout_s=UPLOAD_S, max_concurrent_uploads=CAP)
    proc, url, lines = start(["serve", "--params", str(params), "--port", "0"], root)
    yield url, proc, lines
    stop(proc)


# ----------------------------------------------------------------------------- HTTP helpers


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _upload(url: str, data: bytes | None, name: str = "photo.jpg", **fields: str) -> tuple[int, dict]:
    body, ctype = multipart(fields, {} if data is None else {"photo": (name, data)})
    return _post(url + "api/cartoonize", body, ctype)


def _image(data_url: str) -> np.ndarray:
    head, b64 = data_url.split(",", 1)
    assert head.startswith("data:image/")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def _encode(img: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **kw)
    return buf.getvalue()


# ----------------------------------------------------------------------------- the API


def test_offers_the_runs_that_translate_photos(server):
    url, _, _ = server
    status, body = _get(url + "api/runs")
    assert status == 200
    info = json.loads(body)
    assert [r["name"] for r in info["runs"]] == ["cyclegan", "ablations/whitebox_small"]
    assert [r["family"] for r in info["runs"]] == ["cyclegan", "whitebox"]
    assert info["limits"] == {"max_upload_bytes": int(LIMIT_MB * 2**20), "max_pixels": MAX_PIXELS,
                              "formats": ["JPEG", "PNG"]}
    status, page = _get(url)
    assert status == 200
    text = page.decode()
    assert '<option value="cyclegan">' in text and '<option value="ablations/whitebox_small">' in text
    assert "dcgan" not in text and "unfinished" not in text
    assert 'accept="image/jpeg,image/png"' in text


def test_group_photo_every_face_pasted_back(server):
    url, _, _ = server
    t1 = _photo(*T1)
    status, res = _upload(url, t1.read_bytes(), "t1.jpg", run="cyclegan", faces="all", paste_back="1")
    assert status == 200, res
    assert res["faces"] == 6 and len(res["crops"]) == 6
    assert (res["width"], res["height"]) == (1280, 886) and res["run"] == "cyclegan"
    cartoon = _image(res["cartoon"])
    original = np.asarray(decode_file(t1).image)
    assert cartoon.shape == original.shape          # under display_px: full resolution
    same = np.all(cartoon == original, axis=-1)
    # The faces changed, everything outside them kept its bytes.
    assert 0.5 < same.mean() < 0.995
    assert same[0].all() and same[-1].all()
    for c in res["crops"]:
        assert _image(c["input"]).shape == _image(c["cartoon"]).shape == (PX, PX, 3)


def test_largest_face_as_aligned_crops_with_another_family(server):
    url, _, _ = server
    status, res = _upload(url, _photo(*T1).read_bytes(), "t1.jpg", run="ablations/whitebox_small",
                          faces="largest", paste_back="0")
    assert status == 200, res
    assert res["faces"] == 1 and res["family"] == "whitebox" and not res["paste_back"]
    assert _image(res["cartoon"]).shape == (PX, PX, 3)


def _noise_png(side: int, seed: int = 0) -> bytes:
    return _encode(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8), "PNG",
                   compress_level=0)


def _gif() -> bytes:
    return _encode(np.full((128, 128, 3), 90, np.uint8), "GIF")


def _truncated_png() -> bytes:
    data = _photo(*ASTRONAUT).read_bytes()
    return data[:len(data) // 3]


BAD_UPLOADS = {
    # name: (photo bytes or None, file name, extra fields, status, reason, words in the message)
    "text": (b"hello, this is not a photo\n" * 20, "notes.jpg", {}, 415, "unsupported_type", "text file"),
    "html": (b"<!doctype html><html><body>404</body></html>", "x.png", {}, 415, "unsupported_type", "HTML"),
    "gif": (None, "anim.gif", {}, 415, "unsupported_type", "GIF files are not accepted"),
    "truncated": (None, "cut.png", {}, 400, "truncated", "cannot use this photo"),
    "bytes_over_limit": (None, "big.png", {}, 413, "too_large", "limit is 1 MB"),
    "request_over_limit": (None, "huge.png", {}, 413, "too_large", "limit is 1 MB"),
    "pixels_over_limit": (None, "wide.png", {}, 413, "too_many_pixels", "limit is 2 megapixels"),
    "too_small": (None, "tiny.png", {}, 400, "too_small", "cannot use this photo"),
    "no_face": (None, "wall.png", {}, 422, "no_face", "no face"),
    "empty": (b"", "empty.jpg", {}, 400, "empty_file", "empty"),
    "no_file": (None, "", {}, 400, "no_file", "'photo' field"),
    "unknown_run": (None, "a.png", {"run": "../../etc"}, 404, "unknown_run", "cyclegan"),
    "bad_faces": (None, "a.png", {"faces": "some"}, 400, "bad_field", "faces must be"),
    "bad_flag": (None, "a.png", {"paste_back": "maybe"}, 400, "bad_field", "0 or 1"),
}


def _bad_bytes(name: str) -> bytes | None:
    astronaut = _photo(*ASTRONAUT).read_bytes()
    return {
        "gif": _gif,
        "truncated": _truncated_png,
        # Between the photo limit and the request limit (limit + form overhead): read, then refused.
        "bytes_over_limit": lambda: _noise_png(600),
        # Over the request limit: refused from Content-Length, before the body is read.
        "request_over_limit": lambda: _noise_png(900),
        "pixels_over_limit": lambda: _encode(np.full((1200, 2000, 3), 200, np.uint8), "PNG"),
        "too_small": lambda: _encode(np.full((40, 40, 3), 200, np.uint8), "PNG"),
        "no_face": lambda: _encode(np.full((300, 300, 3), 128, np.uint8), "PNG"),
        "no_file": lambda: None,
        "unknown_run": lambda: astronaut,
        "bad_faces": lambda: astronaut,
        "bad_flag": lambda: astronaut,
    }[name]()


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_gets_a_clear_error_and_the_server_keeps_serving(server, case):
    url, proc, _ = server
    data, name, fields, status, reason, words = BAD_UPLOADS[case]
    if data is None:
        data = _bad_bytes(case)
    if case == "bytes_over_limit":
        assert LIMIT_MB * 2**20 < len(data) < LIMIT_MB * 2**20 + 64 * 1024
    got, res = _upload(url, data, name, **fields)
    assert (got, res.get("reason")) == (status, reason), res
    assert words in res["error"], res["error"]
    assert "Traceback" not in res["error"]
    assert _get(url + "healthz") == (200, b'{"status":"ok"}')
    assert proc.poll() is None


@pytest.mark.parametrize("body, ctype, reason", [
    (b"--x\r\nthis is not multipart at all", "multipart/form-data; boundary=zz", "malformed_upload"),
    (b'{"photo": "me.jpg"}', "application/json", "bad_request"),
])
def test_malformed_request_bodies(server, body, ctype, reason):
    url, proc, _ = server
    status, res = _post(url + "api/cartoonize", body, ctype)
    assert status == 400 and res["reason"] == reason, res
    assert proc.poll() is None


def test_still_serves_good_uploads_after_the_bad_ones(server):
    url, proc, lines = server
    status, res = _upload(url, _photo(*ASTRONAUT).read_bytes(), "astronaut.png", run="cyclegan")
    assert status == 200 and res["faces"] == 1, res
    assert proc.poll() is None
    assert not any("Traceback" in line for line in lines), "".join(lines)


# ----------------------------------------------------------------------------- hostile clients


def _connect(url: str) -> socket.socket:
    parts = urllib.parse.urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def _upload_head(url: str, length: int, boundary: str = "b0undary") -> bytes:
    host = urllib.parse.urlsplit(url).netloc
    return (f"POST /api/cartoonize HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\n\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="a.png"\r\n\r\n').encode()


def _until_closed(sock: socket.socket, t0: float, limit: float, trickle: bytes = b"") -> tuple[float, bytes]:
    """Read (sending `trickle` every 0.4 s while the server reads) until the server closes:
    (seconds since t0, bytes received). inf when still open after `limit` seconds."""
    got = b""
    sock.settimeout(0.4)
    while time.monotonic() - t0 < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if trickle:
                try:
                    sock.sendall(trickle)
                except OSError:      # closed under us: read what came before
                    trickle = b""
            continue
        except ConnectionResetError:
            return time.monotonic() - t0, got
        if not chunk:
            return time.monotonic() - t0, got
        got += chunk
    return float("inf"), got


def _answer(raw: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body) if body else {}


def test_stalled_and_trickling_clients_are_closed_and_others_served(server):
    """Content-Lengths larger than what is sent, a client trickling bytes, an unfinished
    request head and a silent connection: each is closed by its deadline (408 where it
    can still be answered) while a normal upload is served meanwhile."""
    url, proc, _ = server
    results: dict[str, tuple[float, bytes]] = {}

    def client(name: str, first: bytes, limit: float, trickle: bytes = b"") -> None:
        with _connect(url) as sock:
            if first:
                sock.sendall(first)
            t0 = time.monotonic()
            results[name] = _until_closed(sock, t0, limit, trickle)

    stalled = _upload_head(url, 100_000) + b"\x89PNG\r\n\x1a\n" + b"\0" * 100
    plans = {**{f"stalled{i}": (stalled, IDLE_S, b"") for i in range(3)},
             "trickle": (_upload_head(url, 100_000), UPLOAD_S, b"abc"),
             "head": (f"POST /api/cartoonize HTTP/1.1\r\nHost: {urllib.parse.urlsplit(url).netloc}\r\n".encode(),
                      IDLE_S, b""),
             "silent": (b"", IDLE_S, b"")}
    threads = [threading.Thread(target=client, args=(name, first, deadline + MARGIN_S, trickle))
               for name, (first, deadline, trickle) in plans.items()]
    for t in threads:
        t.start()
    time.sleep(0.3)
    # Meanwhile (4 uploads held open, under the cap of 5): a real upload gets its cartoon.
    status, res = _upload(url, _photo(*ASTRONAUT).read_bytes(), "astronaut.png", run="cyclegan")
    assert status == 200 and res["faces"] == 1, res
    assert _image(res["cartoon"]).shape == (512, 512, 3)
    for t in threads:
        t.join()
    for name, (_, deadline, _) in plans.items():
        waited, raw = results[name]
        assert deadline - 0.5 <= waited <= deadline + MARGIN_S, (name, waited, raw[:200])
        if name == "silent":
            assert raw == b"", raw
            continue
        status, headers, body = _answer(raw)
        assert status == 408 and headers.get("connection") == "close", (name, raw[:300])
        if name == "head":
            assert body["reason"] == "request_timeout" and "serve.idle_timeout_s" in body["error"], body
        elif name == "trickle":
            assert body["reason"] == "upload_timeout" and "serve.upload_timeout_s" in body["error"], body
        else:
            assert body["reason"] == "upload_timeout" and "serve.idle_timeout_s" in body["error"], body
    assert proc.poll() is None
    assert _get(url + "healthz") == (200, b'{"status":"ok"}')


def test_uploads_over_the_cap_get_503_with_retry_after(server):
    url, proc, _ = server
    socks = []
    try:
        for _ in range(CAP):             # CAP slow uploads, admitted: their bodies are being read
            sock = _connect(url)
            sock.sendall(_upload_head(url, 50_000) + b"\x89PNG")
            socks.append(sock)
        time.sleep(0.3)
        with _connect(url) as extra:      # one more: refused from its headers
            first = _upload_head(url, 50_000) + b"\x89PNG"
            extra.sendall(first)
            extra.settimeout(10)
            raw = b""
            while b"}" not in raw:
                chunk = extra.recv(65536)
                assert chunk, raw
                raw += chunk
            status, headers, body = _answer(raw)
            # Answered early, it may go on sending: the rest of its body is drained and
            # dropped (no reset), then the idle connection is closed by the head deadline.
            for _ in range(3):
                time.sleep(0.5)
                extra.sendall(b"\0" * 16_000)
            extra.sendall(b"\0" * (50_000 - 48_000 - len(first.partition(b"\r\n\r\n")[2])))
            t0 = time.monotonic()
            waited, rest = _until_closed(extra, t0, IDLE_S + MARGIN_S)
            assert rest == b"" and IDLE_S - 0.5 <= waited <= IDLE_S + MARGIN_S, (waited, rest)
        assert status == 503 and int(headers["retry-after"]) > 0, raw
        assert body["reason"] == "busy" and "serve.max_concurrent_uploads" in body["error"], body
        assert headers["content-type"] == "application/json"
    finally:
        for sock in socks:
            sock.close()
    # The slow uploads gone, the cap is free again.
    for _ in range(20):
        status, res = _upload(url, _photo(*ASTRONAUT).read_bytes(), "astronaut.png", run="cyclegan")
        if status != 503:
            break
        time.sleep(0.2)
    assert status == 200 and res["faces"] == 1, res
    assert proc.poll() is None


def test_a_closing_client_still_sending_reads_the_early_answer(server):
    """A client that sends ``Connection: close`` (urllib, curl) and is still sending an
    over-limit body when the 413 comes: the rest of its body is drained (no broken pipe,
    no reset), and the connection closes as soon as the body is complete."""
    url, proc, _ = server
    length = 3 * 2**20
    head = _upload_head(url, length).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    with _connect(url) as sock:
        first = head + b"\0" * 32_000
        sock.sendall(first)
        raw = b""
        while b"}" not in raw:           # the answer comes while most of the body is unsent
            chunk = sock.recv(65536)
            assert chunk, raw
            raw += chunk
        status, headers, body = _answer(raw)
        assert status == 413 and body["reason"] == "too_large" and "limit is 1 MB" in body["error"], raw
        left = length - len(first.partition(b"\r\n\r\n")[2])
        for i in range(0, left, 256 * 1024):
            sock.sendall(b"\0" * min(256 * 1024, left - i))
        t0 = time.monotonic()
        waited, rest = _until_closed(sock, t0, IDLE_S + MARGIN_S)
        assert rest == b"" and waited < IDLE_S - 0.5, (waited, rest)
    assert proc.poll() is None
    assert _get(url + "healthz") == (200, b'{"status":"ok"}')


def test_loaded_runs_are_bounded_in_bytes(tmp_path):
    import torch

    from toonlab.apps.serve import Studio, select_runs
    from toonlab.params import load_params

    _write_runs(tmp_path / "models")
    cpu = torch.device("cpu")

    def studio(max_loaded_mb: float) -> Studio:
        params = load_params(_params(tmp_path, max_loaded_mb=max_loaded_mb))
        return Studio(params, select_runs([], params.train.out_dir), cpu)

    cg, wb = "cyclegan", "ablations/whitebox_small"
    roomy = studio(1024)
    roomy.load(cg)
    roomy.load(wb)
    sizes = roomy.loaded_runs()
    roomy.close()
    assert list(sizes) == [cg, wb] and all(v > 0 for v in sizes.values())
    # Room for either run, not both: loading the second drops the first.
    tight = studio((max(sizes.values()) + min(sizes.values()) / 2) / 2**20)
    tight.load(cg)
    assert tight.loaded_runs() == {cg: sizes[cg]}
    tight.load(wb)
    assert tight.loaded_runs() == {wb: sizes[wb]}
    tight.load(cg)
    assert tight.loaded_runs() == {cg: sizes[cg]}
    tight.close()

    # A run larger than the limit still loads, alone, with a warning.
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("toonlab.apps.model_cache")
    logger.addHandler(handler)
    try:
        small = studio(min(sizes.values()) / 2 / 2**20)
        assert small.load(cg) is not None
        assert small.loaded_runs() == {cg: sizes[cg]}
        small.load(wb)
        assert small.loaded_runs() == {wb: sizes[wb]}
        small.close()
    finally:
        logger.removeHandler(handler)
    warned = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warned) == 2 and "serve.max_loaded_mb" in warned[0] and cg in warned[0], warned


def test_page_shows_markup_as_text(tmp_path, monkeypatch):
    """Markup in the fields the page prints (a run's folder name and its family, in the run
    menu) is text, and the menu's value is the run's name as the API takes it."""
    import torch

    from conftest import register_family
    from test_pages_escaping import evil, shown_as_text
    from toonlab.apps.serve import Studio, select_runs
    from toonlab.apps.serve_page import render_page
    from toonlab.params import load_params
    from toonlab.schema import Section
    from toonlab.train import checkpoint as ckpt

    class Hostile(Section):
        pass

    family = "fam" + evil("family")
    register_family(monkeypatch, family, Hostile)
    ckpt.save(tmp_path / "models" / ("run" + evil("run")) / "checkpoints" / "step-00000001.pt",
              {"family": family, "step": 1, "config": {}, "nets": {}})
    params = load_params(_params(tmp_path))
    studio = Studio(params, select_runs([], params.train.out_dir), torch.device("cpu"))
    try:
        text = render_page(studio)
    finally:
        studio.close()
    page = shown_as_text(text, ["run", "family"], scripts=2)
    assert [a["value"] for tag, a in page.elements if tag == "option" and "value" in a][0] == "run" + evil("run")
    assert 'accept="image/jpeg,image/png"' in text
    limits = text.split('<script type="application/json" id="limits">')[1].split("</script>")[0]
    assert json.loads(limits) == studio.describe()["limits"]


# ----------------------------------------------------------------------------- the page in Chromium


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    driver = shutil.which("chromedriver")
    assert browser and driver, ("headless Chromium and its driver are required for this test: "
                                "`apt-get install chromium chromium-driver` (make test installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1400", "--disable-background-networking", "--no-first-run"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.mark.slow  # a headless browser: not in `make test-fast`
def test_upload_in_headless_chromium(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, proc, _ = server
    bad = tmp_path / "holiday.jpg"
    bad.write_text("not really a photo\n" * 10)
    drv = _driver()
    try:
        drv.get(url)
        assert drv.title.startswith("ToonLab")
        runs = [o.get_attribute("value") for o in Select(drv.find_element(By.ID, "run")).options]
        assert runs == ["cyclegan", "ablations/whitebox_small"]
        wait = WebDriverWait(drv, 180)

        # A malformed upload: the page shows the server's message.
        drv.find_element(By.ID, "photo").send_keys(str(bad))
        drv.find_element(By.ID, "submit").click()
        wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
        assert "not a photo" in drv.find_element(By.ID, "error").text
        assert not drv.find_element(By.ID, "result").is_displayed()

        # A real photo, with the second run chosen.
        Select(drv.find_element(By.ID, "run")).select_by_value("ablations/whitebox_small")
        drv.find_element(By.ID, "photo").clear()
        drv.find_element(By.ID, "photo").send_keys(str(_photo(*ASTRONAUT)))
        drv.find_element(By.ID, "submit").click()
        loaded = "return arguments[0].complete && arguments[0].naturalWidth"
        cartoon = drv.find_element(By.ID, "cartoon")
        wait.until(lambda d: d.find_element(By.ID, "result").is_displayed()
                   and d.execute_script(loaded, cartoon) > 0)
        original = drv.find_element(By.ID, "original")
        assert drv.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]",
                                  cartoon) == [512, 512]
        assert drv.execute_script(loaded, original) == 512
        assert not drv.find_element(By.ID, "error").is_displayed()
        assert "whitebox" in drv.find_element(By.ID, "cap-cartoon").text
        assert "1 face" in drv.find_element(By.ID, "cap-original").text
        assert len(drv.find_elements(By.CSS_SELECTOR, "#crops img")) == 2

        # On screen: side by side, and not blank.
        o_box, c_box = original.rect, cartoon.rect
        assert c_box["x"] > o_box["x"] + o_box["width"] - 1 and abs(c_box["y"] - o_box["y"]) < 2
        drv.save_screenshot(str(tmp_path / "page.png"))
        shot = np.asarray(Image.open(io.BytesIO(cartoon.screenshot_as_png)).convert("RGB")).astype(np.float32)
        assert shot.shape[0] > 100 and shot.shape[1] > 100
        assert shot.std() > 10
        assert Image.open(tmp_path / "page.png").size[0] > 0
    finally:
        drv.quit()
    assert proc.poll() is None


# ----------------------------------------------------------------------------- start-up errors


def test_start_up_errors_are_clear(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "models").mkdir(parents=True)
    assert main(["serve", "--params", str(_params(empty)), "--port", "0"]) == 2
    assert "no trained run that translates photos" in capsys.readouterr().err

    root = tmp_path / "runs"
    _write_runs(root / "models")
    params = str(_params(root))
    assert main(["serve", "--params", params, "--run", "dcgan", "--port", "0"]) == 2
    assert "does not translate photos" in capsys.readouterr().err
    assert main(["serve", "--params", params, "--run", "nosuchrun", "--port", "0"]) == 2
    assert "no run 'nosuchrun'" in capsys.readouterr().err

    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", "--params", params, "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err
