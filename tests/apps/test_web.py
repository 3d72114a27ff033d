"""The local-web layer both pages are built on (`toonlab.apps.web`): the real `toonlab
serve` and `toonlab review` in subprocesses on loopback, asked with foreign Host names and
cross-origin posts, sent request heads that never finish (raw sockets), and, for review,
raw images swapped for symbolic links after ingest."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import urllib.parse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml
from PIL import Image
from test_serve import _params, _write_runs

from servers import multipart, start, stop

IDLE_S = 2.0           # serve.idle_timeout_s of both servers here: a stalled request head gets 408 after it
WAIT_S = 5 * IDLE_S    # how long a test reads before it calls a connection "held"
ALLOWED = "toonlab.lan"  # serve.allowed_hosts


@pytest.fixture(scope="module")
def serve_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("web_serve")
    _write_runs(root / "models")
    params = _params(root, idle_timeout_s=IDLE_S, allowed_hosts=[ALLOWED])
    proc, url, _ = start(["serve", "--params", str(params), "--run", "cyclegan", "--port", "0"], root)
    yield url
    stop(proc)


def _png(value: int) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def review_site(tmp_path_factory):
    """`toonlab review` of a small hand-made project: faces 0 (a.png, its near-duplicate
    b.png beside it) and 1 (sub/c.png). (url, project root, {face: sha256})."""
    from toonlab.data.ingest import COLUMNS, write_manifest
    from toonlab.util.tables import write_parquet

    root = tmp_path_factory.mktemp("web_review")
    raw = root / "data/raw/photo"
    (raw / "sub").mkdir(parents=True)
    files = {"a.png": 40, "b.png": 41, "sub/c.png": 120}
    shas, ingest = {}, []
    for name, value in files.items():
        (raw / name).write_bytes(_png(value))
        shas[name] = hashlib.sha256((raw / name).read_bytes()).hexdigest()
        row = {c: ("" if kind == "string" else 0) for c, kind in COLUMNS}
        row.update(path=name, domain="photo", sha256=shas[name], status="ok", animated=False, orientation=1)
        if name != "sub/c.png":
            row["dup_group"] = "g1"
        if name == "b.png":
            row.update(status="rejected", reason="near_duplicate", duplicate_of="a.png")
        ingest.append(row)
    write_manifest(ingest, root / "data/interim/photo")
    crops = root / "data/processed/photo/crops"
    crops.mkdir(parents=True)
    faces = []
    for name in ("a.png", "sub/c.png"):
        crop = f"crops/{name.replace('/', '_')}"
        Image.fromarray(np.full((32, 32, 4), 200, np.uint8)).save(root / "data/processed/photo" / crop)
        faces.append({"domain": "photo", "raw_path": name, "sha256": shas[name], "face_index": 0, "status": "ok",
                      "reason": "", "detail": "", "crop_256": crop, "crop_128": "", "box": [4.0, 4.0, 40.0, 40.0],
                      "score": 0.9, "face_px": 36.0, "yaw": 2.0, "blur": 80.0, "bg_fraction": 0.3})
    write_parquet(pa.Table.from_pylist(faces), root / "data/processed/photo/manifest.parquet")
    (root / "data/review").mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump({
        "data": {"raw_dir": str(root / "data/raw")}, "ingest": {"out_dir": str(root / "data/interim")},
        "align": {"out_dir": str(root / "data/processed")},
        "curate": {"out_dir": str(root / "data/curated"), "review_dir": str(root / "data/review")},
        "serve": {"idle_timeout_s": IDLE_S, "allowed_hosts": [ALLOWED]}}))
    proc, url, _ = start(["review", "--domain", "photo", "--port", "0"], root)
    yield url, root, {0: shas["a.png"], 1: shas["sub/c.png"]}
    stop(proc)


def _ask(url: str, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[int, dict | bytes]:
    """One request with exactly these headers (Host included when given): (status, JSON or bytes)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        names = {k.replace("_", "-"): v for k, v in headers.items()}
        conn.request(method, path, body=body or None, headers=names)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.getheader("content-type", "").startswith("application/json"):
        return resp.status, json.loads(data)
    return resp.status, data


def _not_a_photo() -> tuple[bytes, str]:
    """An upload the server answers 415 once it looks at it (cheap: nothing decoded)."""
    return multipart({"run": "cyclegan"}, {"photo": ("notes.jpg", b"hello, not a photo\n" * 20)})


def _decision(sha: str, decision: str = "reject") -> bytes:
    return json.dumps({"domain": "photo", "sha256": sha, "face_index": 0, "decision": decision}).encode()


def _review_rows(root: Path) -> list[str]:
    path = root / "data/review/photo.csv"
    return path.read_text().splitlines()[1:] if path.exists() else []


# ----------------------------------------------------------------------------- Host names


def test_serve_answers_its_own_names_only(serve_url):
    port = urllib.parse.urlsplit(serve_url).port
    body, ctype = _not_a_photo()
    foreign = f"rebind.attacker.example:{port}"
    status, res = _ask(serve_url, "POST", "/api/cartoonize", body, Host=foreign, Content_Type=ctype)
    assert (status, res["reason"]) == (403, "bad_host"), res
    assert "serve.allowed_hosts" in res["error"]
    status, res = _ask(serve_url, "GET", "/api/runs", Host=foreign)
    assert (status, res["reason"]) == (403, "bad_host"), res
    for name in (f"localhost:{port}", f"127.0.0.1:{port}", f"{ALLOWED}:{port}", ALLOWED.upper()):
        status, res = _ask(serve_url, "POST", "/api/cartoonize", body, Host=name, Content_Type=ctype)
        assert (status, res["reason"]) == (415, "unsupported_type"), (name, res)


def test_review_answers_its_own_names_only(review_site):
    url, root, shas = review_site
    port = urllib.parse.urlsplit(url).port
    foreign = f"rebind.attacker.example:{port}"
    before = _review_rows(root)
    status, res = _ask(url, "POST", "/api/decide", _decision(shas[0]), Host=foreign, Content_Type="application/json")
    assert (status, res["reason"]) == (403, "bad_host"), res
    assert _review_rows(root) == before
    status, res = _ask(url, "GET", "/api/faces?domain=photo", Host=foreign)
    assert (status, res["reason"]) == (403, "bad_host"), res
    status, res = _ask(url, "GET", "/api/faces?domain=photo", Host=f"{ALLOWED}:{port}")
    assert status == 200 and len(res["faces"]) == 2, res


# ----------------------------------------------------------------------------- Origin


def test_serve_refuses_cross_origin_posts(serve_url):
    port = urllib.parse.urlsplit(serve_url).port
    body, ctype = _not_a_photo()
    for headers in ({"Origin": "http://attacker.example"}, {"Origin": f"http://127.0.0.1:{port + 1}"},
                    {"Origin": f"https://127.0.0.1:{port}"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}):
        status, res = _ask(serve_url, "POST", "/api/cartoonize", body, Content_Type=ctype, **headers)
        assert (status, res["reason"]) == (403, "bad_origin"), (headers, res)
    # The page's own origin (what a browser sends from the page) and no Origin (curl) pass.
    for headers in ({"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"},
                    {"Origin": f"http://{ALLOWED}:{port}"}, {}):
        status, res = _ask(serve_url, "POST", "/api/cartoonize", body, Content_Type=ctype, **headers)
        assert (status, res["reason"]) == (415, "unsupported_type"), (headers, res)


def test_review_refuses_cross_origin_decisions(review_site):
    url, root, shas = review_site
    port = urllib.parse.urlsplit(url).port
    before = _review_rows(root)
    status, res = _ask(url, "POST", "/api/decide", _decision(shas[0]), Content_Type="application/json",
                       Origin="http://attacker.example")
    assert (status, res["reason"]) == (403, "bad_origin"), res
    assert _review_rows(root) == before
    status, res = _ask(url, "POST", "/api/decide", _decision(shas[0]), Content_Type="application/json",
                       Origin=f"http://127.0.0.1:{port}")
    assert status == 200 and res["ok"], res
    assert [r.split(",")[:3] for r in _review_rows(root)] == [[shas[0], "0", "reject"]]
    status, res = _ask(url, "POST", "/api/decide", _decision(shas[0], ""), Content_Type="application/json")
    assert status == 200 and _review_rows(root) == []


# ----------------------------------------------------------------------------- deadlines


def _held_or_answered(url: str, first: bytes) -> bytes:
    """Send `first`, then read until the server closes; fails when it still holds the
    connection after WAIT_S (a few times the configured deadline)."""
    parts = urllib.parse.urlsplit(url)
    got = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=WAIT_S) as sock:
        sock.sendall(first)
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except TimeoutError:
            pytest.fail(f"the server still held the connection after {WAIT_S:g} s (idle_timeout_s {IDLE_S:g}): "
                        f"{got[:200]!r}")
        except ConnectionResetError:
            pass
    return got


def _status_and_body(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("page", ["serve", "review"])
def test_a_stalled_request_head_gets_408(page, request):
    url = request.getfixturevalue("serve_url") if page == "serve" else request.getfixturevalue("review_site")[0]
    raw = _held_or_answered(url, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
    status, body = _status_and_body(raw)
    assert (status, body["reason"]) == (408, "request_timeout"), raw
    assert "serve.idle_timeout_s" in body["error"]


def test_a_stalled_decision_body_gets_408(review_site):
    url, root, shas = review_site
    before = _review_rows(root)
    head = (b"POST /api/decide HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n")
    raw = _held_or_answered(url, head + _decision(shas[0])[:20])
    status, body = _status_and_body(raw)
    assert (status, body["reason"]) == (408, "upload_timeout"), raw
    assert _review_rows(root) == before


# ----------------------------------------------------------------------------- files


def test_review_serves_no_file_through_a_symbolic_link(review_site, tmp_path):
    """Raw images, near-duplicates and crops swapped for symbolic links (or under a folder
    swapped for one) after ingest: 404, the file outside is never read."""
    url, root, _ = review_site
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    for rel in ("secret.png", "sub/c.png"):
        (outside / rel).write_bytes(_png(250))
    raw = root / "data/raw/photo"
    for path in ("/raw/photo/0", "/raw/photo/1", "/dup/photo/0/0", "/crop/photo/0", "/matte/photo/0"):
        status, data = _ask(url, "GET", path)
        assert status == 200 and isinstance(data, bytes) and data[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0"), (path, data)

    for name in ("a.png", "b.png"):
        os.replace(raw / name, raw / f"{name}.bak")
        os.symlink(outside / "secret.png", raw / name)
    os.rename(raw / "sub", raw / "sub.bak")
    os.symlink(outside / "sub", raw / "sub")
    crop = root / "data/processed/photo/crops/a.png"
    os.replace(crop, crop.with_suffix(".bak"))
    os.symlink(outside / "secret.png", crop)
    answers = {}
    for path in ("/raw/photo/0", "/raw/photo/1", "/dup/photo/0/0", "/crop/photo/0", "/matte/photo/0"):
        status, res = _ask(url, "GET", path)
        answers[path] = (status, res["reason"] if isinstance(res, dict) else f"{len(res)} bytes")
    assert answers == {"/raw/photo/0": (404, "no_raw"), "/raw/photo/1": (404, "no_raw"),
                       "/dup/photo/0/0": (404, "no_raw"), "/crop/photo/0": (404, "no_crop"),
                       "/matte/photo/0": (404, "no_crop")}


# ----------------------------------------------------------------------------- the rules


def test_host_and_origin_rules():
    from toonlab.apps.web import allowed_hosts, refusal

    hosts = allowed_hosts("0.0.0.0", ["mybox.lan"])
    assert hosts == {"localhost", "127.0.0.1", "::1", "mybox.lan"}     # a wildcard address is no name
    assert allowed_hosts("192.168.1.20") == {"localhost", "127.0.0.1", "::1", "192.168.1.20"}

    def reason(method: str, port: int | None = 8000, **headers: str) -> str | None:
        got = refusal(method, {k.replace("_", "-").lower(): v for k, v in headers.items()}, hosts, port)
        return got and got[0]

    assert reason("GET", Host="[::1]:8000") is None and reason("GET", Host="MyBox.LAN") is None
    assert reason("GET", Host="mybox.lan.attacker.example:8000") == "bad_host"
    assert reason("GET") == "bad_host"                                     # no Host at all (HTTP/1.0)
    assert reason("GET", Host="localhost", Origin="http://attacker.example") is None   # reads are not checked
    assert reason("POST", Host="[::1]:8000", Origin="http://[::1]:8000", Sec_Fetch_Site="same-origin") is None
    assert reason("DELETE", Host="localhost:8000", Origin="http://[::1]:8000/x") == "bad_origin"
    assert reason("PUT", Host="localhost:8000", Origin="http://localhost:8000:1") == "bad_origin"
    assert reason("PATCH", Host="localhost:8000", Sec_Fetch_Site="same-site") == "bad_origin"


@pytest.mark.parametrize("value, ok", [(["MyBox.lan", "[fe80::1]", "10.0.0.2"], ["mybox.lan", "fe80::1", "10.0.0.2"]),
                                       (["mybox.lan:8000"], None), (["http://mybox.lan"], None), ([""], None),
                                       (["*"], None)])
def test_allowed_hosts_are_validated(value, ok):
    from toonlab.errors import ParamsError
    from toonlab.params import validate_params

    if ok is not None:
        assert validate_params({"serve": {"allowed_hosts": value}}).serve.allowed_hosts == ok
        return
    with pytest.raises(ParamsError) as bad:
        validate_params({"serve": {"allowed_hosts": value}})
    assert bad.value.problems == [f"serve.allowed_hosts: {value[0]!r} is not a host name or an address "
                                  "(no scheme, port or path: e.g. mybox.lan or 192.168.1.20)"]
