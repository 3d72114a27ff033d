"""The review files `toonlab review` writes cannot lose or corrupt a decision: two review
servers on one project lose none of many concurrent decisions (an OS lock around each
read-modify-write), a reply says "ok" only for a decision on disk, and any text (line
breaks, carriage returns, NUL and other control characters, quotes, commas, astral
characters) in a reason or note is read back identical by the page and by `curate`."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml
from PIL import Image
from test_review import _faces

from servers import start, stop  # the real `toonlab review` in a subprocess
from toonlab.cli import main
from toonlab.data.ingest import COLUMNS, write_manifest
from toonlab.faces.review_decisions import (
    Decision,
    ReviewError,
    load_review,
    read_review,
    review_file,
    review_lock,
    write_review,
)
from toonlab.util.tables import write_parquet

DOMAIN = "photo"


def _project(root: Path, images: int) -> list[tuple[str, int]]:
    """A project as the face stages leave it: `images` raw images of two kept faces each
    (ingest and processed manifests, the aligned crops); the (sha256, face_index) keys."""
    raw, proc = root / "data/raw" / DOMAIN, root / "data/processed" / DOMAIN
    raw.mkdir(parents=True)
    ingest, processed = [], []
    for k in range(images):
        name = f"img{k:03d}.png"
        Image.fromarray(np.full((48, 48, 3), (k * 5 % 256, k // 51 * 40, 90), np.uint8)).save(raw / name)
        sha = hashlib.sha256((raw / name).read_bytes()).hexdigest()
        row = {c: ("" if kind == "string" else 0) for c, kind in COLUMNS}
        row.update(path=name, domain=DOMAIN, sha256=sha, status="ok", animated=False, orientation=1, width=48,
                   height=48, mode="RGB", format="PNG", frames=1, phash="0" * 16)
        ingest.append(row)
        for fi in (0, 1):
            face = {"domain": DOMAIN, "raw_path": name, "sha256": sha, "face_index": fi, "status": "ok",
                    "reason": "", "detail": "", "box": [4.0 + 20 * fi, 4.0, 22.0 + 20 * fi, 24.0], "score": 0.9,
                    "face_px": 20.0, "yaw": 1.0, "blur": 90.0 + k, "bg_fraction": 0.3}
            for px in (256, 128):
                rel = f"{px}/{sha[:12]}_{fi}.png"
                (proc / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((px, px, 4), (k % 256, 60, 120 * fi, 255), np.uint8)).save(proc / rel)
                face[f"crop_{px}"] = rel
            processed.append(face)
    write_manifest(ingest, root / "data/interim" / DOMAIN)
    write_parquet(pa.Table.from_pylist(processed), proc / "manifest.parquet")
    (root / "params.yaml").write_text(yaml.safe_dump({"data": {"domains": [DOMAIN]}}))
    return [(f["sha256"], f["face_index"]) for f in processed]


def _post(url: str, msg: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"{url}api/decide", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps(msg).encode())
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# ----------------------------------------------------------------------------- two servers


def test_two_review_servers_lose_no_concurrent_decision(tmp_path):
    """96 decisions on distinct faces, posted concurrently and alternately to two `toonlab
    review` processes on one project: every one is in the file, and each was there already
    when its reply said ok. (Before the OS lock, a read-modify-write of one process
    overwrote the other's: about half of them were lost, every reply ok.)"""
    keys = _project(tmp_path, 48)
    assert len(keys) == 96
    servers = [start(["review", "--port", "0"], tmp_path) for _ in range(2)]
    path = review_file(tmp_path / "data/review", DOMAIN)
    want = {key: ("reject" if n % 3 else "keep", f"r{n}", f"note {n}, \"quoted\"") for n, key in enumerate(keys)}

    def decide(n: int):
        key = keys[n]
        dec, reason, note = want[key]
        got = _post(servers[n % 2].url, {"domain": DOMAIN, "sha256": key[0], "face_index": key[1], "decision": dec,
                                        "reason": reason, "note": note})
        on_disk = load_review(path).get(key)   # no other request touches this face
        return got, on_disk and (on_disk.decision, on_disk.reason, on_disk.note)

    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(decide, range(len(keys))))
    finally:
        stop(*(s.proc for s in servers))
    assert [r[0][0] for r in results] == [200] * len(keys), [r[0] for r in results if r[0][0] != 200][:3]
    assert all(r[0][1]["ok"] for r in results)
    final = load_review(path)
    lost = sorted(set(want) - set(final))
    assert len(lost) == 0, f"{len(lost)} of {len(want)} decisions lost"
    assert {k: (d.decision, d.reason, d.note) for k, d in final.items()} == want
    missing = sum(r[1] != want[k] for r, k in zip(results, keys))
    assert missing == 0, f"{missing} decisions not on disk when their reply said ok"
    assert sorted(p.name for p in path.parent.iterdir()) == [".photo.csv.lock", "photo.csv"]


def test_a_decision_that_cannot_be_written_is_an_error_not_ok(tmp_path, monkeypatch):
    from toonlab.apps.review import Reviewer
    from toonlab.params import validate_params
    from toonlab.util import fileio

    keys = _project(tmp_path, 1)
    monkeypatch.chdir(tmp_path)
    rv = Reviewer(validate_params({"data": {"domains": [DOMAIN]}}), [DOMAIN])
    assert rv.decide(DOMAIN, *keys[0], "reject", "blurry")["ok"]
    before = rv.review_path(DOMAIN).read_bytes()

    def full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio, "write_text", full)
    with pytest.raises(ReviewError, match=r"cannot write review file .*photo.csv: No space left on device"):
        rv.decide(DOMAIN, *keys[1], "reject", "closed_eyes")
    assert rv.review_path(DOMAIN).read_bytes() == before


def test_curate_reads_a_review_file_after_the_write_in_progress(tmp_path):
    """`read_review` (curate's reader) waits for a writer holding the lock, and then reads
    what it wrote."""
    path = tmp_path / "photo.csv"
    write_review(path, [Decision("a" * 64, 0, "keep")])
    got = []
    with review_lock(path):
        reader = threading.Thread(target=lambda: got.append(read_review(path)))
        reader.start()
        reader.join(0.5)            # without the lock it has read the old file by now
        write_review(path, [Decision("a" * 64, 0, "reject")])
    reader.join(30)
    assert [d.decision for d in got[0].values()] == ["reject"]


# ----------------------------------------------------------------------------- any text

# Line breaks of every kind, NUL and other control characters, CSV's own syntax, a BOM,
# spaces at the ends, non-ASCII and astral characters.
SPECIAL = ["\r", "\n", "\r\n", "\n\r", "\x00", "\x0b", "\x0c", "\x1c", "\x1e", "\x1f", "\x7f", "\x85", "\u2028",
           "\u2029", "\t", " ", "  ", '"', '""', "'", ",", ";", "\\", "\ufeff", "é", "中", "😀", "\U0010fffd"]


def _text(rng: random.Random, n: int, line_breaks: bool = True) -> str:
    out = []
    for _ in range(rng.randint(1, n)):
        r = rng.random()
        if r < 0.5:
            out.append(rng.choice(SPECIAL))
        elif r < 0.8:
            out.append(rng.choice("abcXYZ019_-"))
        else:
            cp = rng.randint(0x20, 0x10FFFF)
            out.append(chr(cp) if not 0xD800 <= cp < 0xE000 else "x")
    text = "".join(out)
    return text if line_breaks else text.replace("\n", "\r")


def test_any_text_survives_the_review_file(tmp_path):
    """A few hundred decisions with random text in every free field, written and read back
    by `load_review` and by `read_review` (what curate reads them with): identical."""
    rng = random.Random(31)
    ds = [Decision(hashlib.sha256(str(n).encode()).hexdigest(), n % 5 - 1, rng.choice(("reject", "keep")),
                   _text(rng, 12), _text(rng, 40), _text(rng, 6), _text(rng, 6)) for n in range(400)]
    ds += [Decision("0" * 64, i, "keep", c, c + "x", c * 2, "x" + c) for i, c in enumerate(SPECIAL)]  # each alone
    path = tmp_path / "review" / "photo.csv"
    write_review(path, ds)
    assert path.read_bytes().count(b"\n") >= len(ds) + 1          # one row per line at least
    want = {d.key: d.row() for d in ds}
    for read in (load_review, read_review):
        got = read(path)
        assert {k: d.row() for k, d in got.items()} == want
    write_review(path, load_review(path).values())               # a rewrite changes nothing
    assert {k: d.row() for k, d in load_review(path).items()} == want


def test_any_text_through_the_page_and_curate(tmp_path, monkeypatch):
    """Random reasons and notes (with carriage returns, NUL, U+2028...) posted to a real
    `toonlab review`: accepted, shown back by the page identical, kept identical in the
    file over later decisions, and `toonlab curate` applies them (it stopped with "invalid
    review file" after a note holding a carriage return)."""
    keys = _project(tmp_path, 10)
    rng = random.Random(7)
    # The page sends one-line reasons and notes (it turns "\n" into a space); "\r" stays.
    want = {key: ("reject" if n % 2 else "keep", _text(rng, 10, False) + f"#{n}", _text(rng, 30, False))
            for n, key in enumerate(keys)}
    want[keys[0]] = ("reject", "\r", "\r")
    want[keys[1]] = ("keep", "a\rb", "\x00")
    proc, url, _ = start(["review", "--port", "0"], tmp_path)
    try:
        for key in keys:
            dec, reason, note = want[key]
            status, body = _post(url, {"domain": DOMAIN, "sha256": key[0], "face_index": key[1], "decision": dec,
                                       "reason": reason, "note": note})
            assert (status, body.get("ok")) == (200, True), body
        shown = {(f["sha256"], f["face_index"]): (f["decision"], f["decision_reason"], f["note"])
                 for f in _faces(url, DOMAIN)["faces"]}
    finally:
        stop(proc)
    assert shown == want
    path = review_file(tmp_path / "data/review", DOMAIN)
    assert {k: (d.decision, d.reason, d.note) for k, d in read_review(path).items()} == want
    monkeypatch.chdir(tmp_path)
    assert main(["curate"]) == 0
    review = json.loads((tmp_path / "reports/curation/summary.json").read_text())["domains"][DOMAIN]["review"]
    by = review["by_decision_reason"]
    assert {(dec, reason) for dec, reasons in by.items() for reason in reasons} == {
        (dec, reason) for dec, reason, _ in want.values()}
    assert review["rejected"] == sum(dec == "reject" for dec, _, _ in want.values())
