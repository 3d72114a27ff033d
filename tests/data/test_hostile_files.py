"""`toonlab ingest` on hostile raw folders: FIFOs, device nodes, sockets, symlink loops,
oversize files and file names that are not UTF-8. Every entry gets exactly one manifest
row with a reason, nothing hangs or reads without limit, raw files are never touched,
and the cache survives a failing manifest write.

Anything that could hang or exhaust memory without the fix runs in a subprocess with a
timeout and an address-space limit.
"""

import io
import json
import os
import resource
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toonlab.data import ingest as ingest_mod
from toonlab.data.decode import path_from_text, path_text
from toonlab.data.ingest import ingest_domain, read_manifest, read_regular
from toonlab.data.params import DecodeParams, IngestParams

BAD_NAME = b"bad\xff\xfe.png"
MB = 1024 * 1024


def picture(seed: int, w: int = 160, h: int = 120) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((w, h), Image.BICUBIC).save(buf, "PNG")
    return buf.getvalue()


def snapshot(root: Path) -> dict[bytes, tuple]:
    """Names, modes, device numbers and (regular files only) bytes of everything below
    `root`, from lstat: FIFOs and devices are never opened, links never followed."""
    out = {}
    base = os.fsencode(root)
    for folder, dirs, files in os.walk(base):
        for name in dirs + files:
            p = os.path.join(folder, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    content = fh.read()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            else:
                content = None
            out[os.path.relpath(p, base)] = (st.st_mode, st.st_rdev, st.st_size, st.st_mtime_ns, content)
    return out


def _limit_memory() -> None:  # runs in the child: a read without limit fails fast
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def ingest_in_subprocess(raw: Path, tmp: Path, timeout: float = 120, **params) -> subprocess.CompletedProcess:
    """`ingest_domain` in a child process, killed after `timeout` seconds (a hang fails the test)."""
    script = (
        "import json, sys\n"
        "from toonlab.data.ingest import ingest_domain\n"
        "from toonlab.data.params import DecodeParams, IngestParams\n"
        "raw, tmp, kw = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])\n"
        "p = IngestParams(out_dir=tmp + '/interim', cache_dir=tmp + '/cache', **kw)\n"
        "print(json.dumps(ingest_domain(raw, 'photo', p, DecodeParams(), workers=2).summary))\n"
    )
    env = {**os.environ, "TOONLAB_PROGRESS": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, str(raw), str(tmp), json.dumps(params)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_limit_memory, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker processes too
        proc.communicate()
        pytest.fail(f"ingest did not finish within {timeout} s (hung on a special file?)")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_char_device(path: Path) -> bool:
    """A node with /dev/zero's numbers (reads never end); False when not allowed (not root)."""
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))
        return True
    except PermissionError:
        return False


def make_socket(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(path))
    finally:
        s.close()  # the socket file stays


def make_sparse(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        fh.truncate(size)  # no disk blocks used


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, dict[bytes, str]]:
    """A raw folder with one of every hostile kind and two good images; expected reasons
    by the entry's real (byte) path relative to the domain folder."""
    raw = tmp_path / "raw"
    root = raw / "photo"
    (root / "sub").mkdir(parents=True)
    expected: dict[bytes, str] = {}
    (root / "a.png").write_bytes(picture(1))
    (root / "sub" / "b.png").write_bytes(picture(2))
    expected[b"a.png"] = expected[b"sub/b.png"] = ""
    with open(os.fsencode(root) + b"/" + BAD_NAME, "wb") as fh:  # a good image with a non-UTF-8 name
        fh.write(picture(3))
    expected[BAD_NAME] = ""
    make_fifo(root / "pipe.jpg")
    expected[b"pipe.jpg"] = "not_regular_file"
    if make_char_device(root / "zero.png"):
        expected[b"zero.png"] = "not_regular_file"
    make_socket(root / "sock.png")
    expected[b"sock.png"] = "not_regular_file"
    os.symlink("loop_b.png", root / "loop_a.png")
    os.symlink("loop_a.png", root / "loop_b.png")
    os.symlink("self.png", root / "sub" / "self.png")
    expected[b"loop_a.png"] = expected[b"loop_b.png"] = expected[b"sub/self.png"] = "symlink"
    make_sparse(root / "huge.png", 64 * MB)
    expected[b"huge.png"] = "too_large"
    return raw, expected


def test_hostile_corpus_end_to_end(hostile, tmp_path):
    raw, expected = hostile
    before = snapshot(raw)
    proc = ingest_in_subprocess(raw, tmp_path, max_file_mb=1)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    rows = read_manifest(tmp_path / "interim" / "photo" / "manifest.parquet")
    got = {os.fsencode(path_from_text(r["path"])): r for r in rows}
    assert len(got) == len(rows) == len(expected)  # exactly one row per entry
    assert {k: r["reason"] for k, r in got.items()} == expected
    for key, r in got.items():
        assert r["status"] == ("ok" if expected[key] == "" else "rejected"), key
    assert got[BAD_NAME]["path"] == "bad\\xff\\xfe.png" and got[BAD_NAME]["format"] == "PNG"
    assert got[b"huge.png"]["bytes"] == 64 * MB and got[b"huge.png"]["sha256"] == ""
    csv_text = (tmp_path / "interim" / "photo" / "manifest.csv").read_text(encoding="utf-8")
    assert "bad\\xff\\xfe.png" in csv_text
    summary = json.loads((tmp_path / "interim" / "photo" / "summary.json").read_text())
    assert summary["files"] == len(expected) and summary["ok"] == 3
    assert snapshot(raw) == before  # raw folder byte-identical, modes and times included


def test_fifo_and_device_only_are_rejected_without_opening(tmp_path):
    root = tmp_path / "raw" / "photo"
    root.mkdir(parents=True)
    make_fifo(root / "a_pipe.png")
    device = make_char_device(root / "b_zero.png")
    (root / "c.png").write_bytes(picture(4))
    proc = ingest_in_subprocess(tmp_path / "raw", tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = {r["path"]: r for r in read_manifest(tmp_path / "interim" / "photo" / "manifest.parquet")}
    assert rows["a_pipe.png"]["reason"] == "not_regular_file" and "FIFO" in rows["a_pipe.png"]["detail"]
    if device:
        assert rows["b_zero.png"]["reason"] == "not_regular_file"
        assert "character device" in rows["b_zero.png"]["detail"]
    assert rows["c.png"]["status"] == "ok"


@pytest.mark.timeout(30)
def test_read_regular_checks_the_open_descriptor_too(tmp_path, monkeypatch):
    """A FIFO swapped in after the lstat: the open cannot block, the fstat rejects it."""
    fifo = tmp_path / "pipe.png"
    make_fifo(fifo)
    regular = os.lstat(__file__)  # what a racing lstat might have seen
    real_lstat = os.lstat
    monkeypatch.setattr(ingest_mod.os, "lstat", lambda p, *a, **k: regular if os.fspath(p) == str(fifo)
                        else real_lstat(p, *a, **k))
    got = read_regular(str(fifo), 200 * MB)
    assert isinstance(got, dict) and got["reason"] == "not_regular_file"


@pytest.mark.timeout(30)
def test_read_regular_is_bounded_and_streams_the_hash(tmp_path):
    import hashlib

    big = tmp_path / "big.bin"
    make_sparse(big, 3 * MB)
    got = read_regular(str(big), 1 * MB)
    assert isinstance(got, dict) and got["reason"] == "too_large" and got["bytes"] == 3 * MB
    data, sha = read_regular(str(big), 3 * MB)
    assert len(data) == 3 * MB and sha == hashlib.sha256(data).hexdigest()
    os.symlink(big, tmp_path / "link.bin")
    assert read_regular(str(tmp_path / "link.bin"), 3 * MB)["reason"] == "symlink"


def test_invalid_utf8_name_survives_manifest_cache_and_readers(tmp_path):
    root = tmp_path / "raw" / "photo"
    root.mkdir(parents=True)
    bad = os.fsencode(root) + b"/" + BAD_NAME
    with open(bad, "wb") as fh:
        fh.write(picture(5))
    (root / "back\\slash.png").write_bytes(picture(6))
    (root / "x.png").write_bytes(picture(5))  # exact duplicate of the bad name

    params = IngestParams(out_dir=str(tmp_path / "interim"), cache_dir=str(tmp_path / "cache"))
    first = ingest_domain(tmp_path / "raw", "photo", params, DecodeParams(), workers=1)
    manifest = tmp_path / "interim" / "photo" / "manifest.parquet"
    rows = {r["path"]: r for r in read_manifest(manifest)}
    assert set(rows) == {"bad\\xff\\xfe.png", "back\\\\slash.png", "x.png"}
    assert rows["bad\\xff\\xfe.png"]["status"] == "ok"  # the row keeps its verdict
    assert rows["x.png"]["duplicate_of"] == "bad\\xff\\xfe.png"
    for text, r in rows.items():  # every reader gets the real file back from the text
        real = root / path_from_text(text)
        assert ingest_mod.hashlib.sha256(real.read_bytes()).hexdigest() == r["sha256"]
    assert os.fsencode(root / path_from_text("bad\\xff\\xfe.png")) == bad

    # The stat cache holds the name too: a re-run decodes nothing and writes the same bytes.
    data = manifest.read_bytes()
    again = ingest_domain(tmp_path / "raw", "photo", params, DecodeParams(), workers=1)
    assert first.analysed == 3 and again.analysed == 0
    assert manifest.read_bytes() == data


def test_path_text_round_trips_any_bytes():
    rng = np.random.default_rng(0)
    names = [b"plain.png", "é.png".encode(), b"a\\b", b"a\\xff", b"\\\\", b"\xed\xb3\xbf", b"\xff", b"sub/\x80.png"]
    names += [bytes(rng.integers(1, 256, int(n), dtype=np.uint8)).replace(b"/", b"_") for n in rng.integers(1, 40, 200)]
    for raw in names:
        text = path_text(os.fsdecode(raw))
        text.encode("utf-8")  # valid UTF-8: parquet, JSON and CSV take it
        assert os.fsencode(path_from_text(text)) == raw
        if b"\\" not in raw:
            try:
                assert text == raw.decode("utf-8")  # a valid UTF-8 name is its own text
            except UnicodeDecodeError:
                pass


def test_cache_is_saved_when_the_manifest_write_fails(tmp_path, monkeypatch):
    root = tmp_path / "raw" / "photo"
    root.mkdir(parents=True)
    for k in range(3):
        (root / f"{k}.png").write_bytes(picture(10 + k))
    params = IngestParams(out_dir=str(tmp_path / "interim"), cache_dir=str(tmp_path / "cache"))

    def broken(rows, out):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ingest_mod, "write_manifest", broken)
    with pytest.raises(OSError, match="No space"):
        ingest_domain(tmp_path / "raw", "photo", params, DecodeParams(), workers=1)
    monkeypatch.undo()
    stats = ingest_domain(tmp_path / "raw", "photo", params, DecodeParams(), workers=1)
    assert stats.analysed == 0  # the decoded work was kept
    assert stats.summary["ok"] == 3
