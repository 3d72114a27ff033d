"""`toonlab ingest`: raw crawl folders -> a clean, deduplicated manifest per domain.

For every file under `<raw_dir>/<domain>/` (recursively, any extension) one row:
path, sha256, size in bytes, width/height (after EXIF orientation), mode, format,
orientation, flags, perceptual hash, status (`ok` / `rejected`) and a
machine-readable reason (see `toonlab.data.decode.REASONS` plus the duplicate reasons
below). Raw files are only ever read, and only regular files are opened: a FIFO, a
device node or a socket is rejected as `not_regular_file` from its `lstat` (checked
again with `fstat` on the descriptor, opened with O_NONBLOCK|O_NOFOLLOW), a file larger
than `ingest.max_file_mb` as `too_large` without being read, and a symbolic link (a
loop included) as `symlink`, never followed.

Paths: the `path` and `duplicate_of` columns hold `toonlab.data.decode.path_text` of the
path relative to the domain folder: the name itself when it is valid UTF-8 without a
backslash, else with backslashes doubled and undecodable bytes as `\\xNN`, so any name
survives the manifest exactly; readers get the real path back with `path_from_text`.

Duplicates: files with the same sha256 are exact duplicates; files whose perceptual
hashes (64-bit DCT pHash) differ in at most `ingest.phash_threshold` bits are near
duplicates (resized or re-encoded copies). Each group keeps one representative: the
largest resolution, then the earliest path. Every member gets the group id (first 12
hex digits of the representative's sha256); the others are rejected with reason
`exact_duplicate` or `near_duplicate` and `duplicate_of` naming the representative.

Provenance: when `<raw_dir>/crawl_log.jsonl` (written by `toonlab crawl`) is there, each
file whose sha256 matches an `ok` record of the log gets `source_url`, `license` (the URL
list's `license` column) and `fetched_at` (UTC ISO 8601) of that record; when several
URLs gave the same bytes, the first by URL order is kept and `source_urls` counts them.
Files not from a crawl have nulls there and `source_urls` 0. A missing or unreadable log
only means no provenance (and a log line).

Incremental: per-file results are cached by content hash (and a fingerprint of the
decode settings), and file hashes by (path, size, mtime), so a re-run only reads and
decodes new or changed files. The manifest is a pure function of the files' contents
and paths (and of the crawl log's ok records): an incremental run writes the same bytes
as a full run.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import stat
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from toonlab.data.crawl_log import read_records
from toonlab.data.decode import DecodeResult, decode_bytes, display_text, path_text
from toonlab.data.params import DecodeParams, IngestParams
from toonlab.errors import UsageError
from toonlab.log import get_logger, progress
from toonlab.util import fileio, tables

log = get_logger(__name__)

CACHE_VERSION = 1
DUPLICATE_REASONS = {
    "exact_duplicate": "same bytes (sha256) as the group's representative",
    "near_duplicate": "perceptually the same image (pHash within the threshold) as the group's representative",
    "symlink": "a symbolic link (a loop included); crawls are read as regular files only",
    "not_regular_file": "a FIFO, device node, socket or other non-regular file; never opened for reading",
    "too_large": "larger than ingest.max_file_mb; refused without being read",
}
CHUNK = 1 << 20

COLUMNS: list[tuple[str, str]] = [  # name, arrow type
    ("path", "string"), ("domain", "string"), ("sha256", "string"), ("bytes", "int64"),
    ("width", "int32"), ("height", "int32"), ("mode", "string"), ("format", "string"),
    ("orientation", "int8"), ("animated", "bool_"), ("frames", "int32"), ("flags", "string"),
    ("phash", "string"), ("status", "string"), ("reason", "string"), ("detail", "string"),
    ("dup_group", "string"), ("duplicate_of", "string"),
    ("source_url", "string"), ("license", "string"), ("fetched_at", "string"), ("source_urls", "int32"),
]
PROVENANCE_FIELDS = ("source_url", "license", "fetched_at")
CRAWL_LOG = "crawl_log.jsonl"


# ----------------------------------------------------------------------------- hashing


def phash(rgb: np.ndarray) -> int:
    """64-bit perceptual hash: 32x32 grey, 2-D DCT, the 8x8 lowest frequencies vs their median."""
    from PIL import Image
    from scipy.fft import dctn

    grey = Image.fromarray(rgb).convert("L").resize((32, 32), Image.LANCZOS)
    coeffs = dctn(np.asarray(grey, dtype=np.float64), norm="ortho")[:8, :8]
    bits = (coeffs > np.median(coeffs)).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def near_pairs(hashes: list[int], threshold: int) -> list[tuple[int, int]]:
    """Index pairs whose hashes differ in at most `threshold` bits.

    Multi-index hashing: split the 64 bits into threshold+1 blocks; two hashes within
    the threshold agree exactly on at least one block (pigeonhole), so only hashes that
    share a block value are compared. Near-linear for real crawls.
    """
    n_blocks = threshold + 1
    edges = [round(64 * k / n_blocks) for k in range(n_blocks + 1)]
    arr = np.array(hashes, dtype=np.uint64)
    candidates: set[tuple[int, int]] = set()
    for lo, hi in zip(edges[:-1], edges[1:]):
        block = (arr >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(block, kind="stable")
        sorted_block = block[order]
        # Runs of equal block values: only those hold candidate pairs.
        starts = np.flatnonzero(np.r_[True, sorted_block[1:] != sorted_block[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for a, b in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
            members = sorted(order[a:b].tolist())
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    candidates.add((members[x], members[y]))
    return sorted((i, j) for i, j in candidates if hamming(hashes[i], hashes[j]) <= threshold)


# ----------------------------------------------------------------------------- per file


def _rejected(reason: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"status": "rejected", "reason": reason, "detail": detail, **extra}


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return what
    return "not a regular file"


def _check_stat(st: os.stat_result, max_bytes: int) -> dict[str, Any] | None:
    """The rejection an `lstat`/`fstat` result already decides (no file is opened), or None."""
    if stat.S_ISLNK(st.st_mode):
        return _rejected("symlink", "symbolic link, not followed")
    if not stat.S_ISREG(st.st_mode):
        return _rejected("not_regular_file", f"{_kind(st.st_mode)}, not opened")
    if st.st_size > max_bytes:
        return _rejected("too_large", f"{st.st_size} bytes, over the limit of {max_bytes} (ingest.max_file_mb)",
                         bytes=st.st_size)
    return None


def read_regular(path: str, max_bytes: int) -> tuple[bytes, str] | dict[str, Any]:
    """(content, sha256) of a regular file of at most `max_bytes`, or a rejection row.

    Checked with `lstat` before opening and with `fstat` on the descriptor; opened with
    O_NONBLOCK (a FIFO swapped in meanwhile cannot block) and O_NOFOLLOW; read and hashed
    in chunks, never more than `max_bytes` + 1 bytes (a file growing meanwhile).
    """
    try:
        st = os.lstat(path)
    except OSError as exc:
        return _rejected("unreadable", f"stat failed: {exc.strerror or exc}")
    if (rejected := _check_stat(st, max_bytes)) is not None:
        return rejected
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a symbolic link meanwhile
            return _rejected("symlink", "symbolic link, not followed")
        return _rejected("unreadable", f"open failed: {exc.strerror or exc}")
    try:
        if (rejected := _check_stat(os.fstat(fd), max_bytes)) is not None:
            return rejected
        h, data = hashlib.sha256(), bytearray()
        while chunk := os.read(fd, min(CHUNK, max_bytes + 1 - len(data))):
            h.update(chunk)
            data += chunk
            if len(data) > max_bytes:
                return _rejected("too_large", f"grew past the limit of {max_bytes} bytes (ingest.max_file_mb) "
                                 "while being read")
        return bytes(data), h.hexdigest()
    except OSError as exc:
        return _rejected("unreadable", f"read failed: {exc.strerror or exc}")
    finally:
        os.close(fd)


def _analyse(job: tuple[str, dict, int]) -> dict[str, Any]:
    """Worker: read one file, hash it, decode it safely. Only picklable data crosses back."""
    path, decode_params, max_bytes = job
    got = read_regular(path, max_bytes)
    if isinstance(got, dict):
        return got
    data, sha = got
    result = decode_bytes(data, DecodeParams.model_validate(decode_params))
    return {"sha256": sha, "bytes": len(data), **_content_fields(result)}


def _content_fields(r: DecodeResult) -> dict[str, Any]:
    detail = r.detail
    for prefix in ("<bytes>: ", ": "):  # decode_bytes names no file: keep rows path-free
        detail = detail.removeprefix(prefix)
    return {
        "width": r.width, "height": r.height, "mode": r.mode, "format": r.format,
        "orientation": r.orientation, "animated": r.animated, "frames": r.frames,
        "flags": ";".join(r.flags), "status": r.status, "reason": r.reason, "detail": detail,
        "phash": f"{phash(r.image):016x}" if r.ok and r.image is not None else "",
    }


# ----------------------------------------------------------------------------- caches


@dataclass
class Caches:
    """File-hash cache keyed by (path, size, mtime) and result cache keyed by content."""

    root: Path
    fingerprint: str
    stat: dict[str, list] = field(default_factory=dict)
    content: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path, domain: str, decode: DecodeParams) -> "Caches":
        key = json.dumps({"v": CACHE_VERSION, "decode": decode.model_dump(mode="json")}, sort_keys=True)
        c = cls(root, hashlib.sha256(key.encode()).hexdigest()[:16])
        c.stat = _read_json(c._stat_file(domain))
        c.content = _read_json(c._content_file())
        return c

    def _stat_file(self, domain: str) -> Path:
        return self.root / f"stat-{domain}.json"

    def _content_file(self) -> Path:
        return self.root / f"content-{self.fingerprint}.json"

    def save(self, domain: str) -> None:
        for path, data in ((self._stat_file(domain), self.stat), (self._content_file(), self.content)):
            fileio.write_text(path, json.dumps(data, separators=(",", ":")))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # a missing or damaged cache only costs time


# ----------------------------------------------------------------------------- scanning


def scan(root: Path) -> list[tuple[str, os.stat_result | None]]:
    """Every entry below `root` that is not a folder (links included, not followed), as
    sorted (POSIX relative path, lstat) pairs; the lstat is None for a sub-folder that
    cannot be listed. Names are `os.fsdecode` strings (surrogate-escaped when not UTF-8)."""
    found: list[tuple[str, os.stat_result | None]] = []
    stack = [(str(root), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as it:
                listed = list(it)
        except OSError:
            if not prefix:
                raise
            found.append((prefix.rstrip("/"), None))
            continue
        for entry in listed:
            rel = prefix + entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished meanwhile
            if stat.S_ISDIR(st.st_mode):
                stack.append((entry.path, rel + "/"))
            else:
                found.append((rel, st))
    return sorted(found, key=lambda item: item[0])


def _stat_key(st: os.stat_result) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


# ----------------------------------------------------------------------------- dedup


def mark_duplicates(rows: list[dict], near: bool, threshold: int) -> None:
    """Group exact and near duplicates among ok rows; keep one representative per group."""
    ok = [i for i, r in enumerate(rows) if r["status"] == "ok"]
    parent = {i: i for i in ok}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    by_sha: dict[str, int] = {}
    for i in ok:
        first = by_sha.setdefault(rows[i]["sha256"], i)
        if first != i:
            union(first, i)
    if near and by_sha:
        uniq = sorted(by_sha.values())
        hashes = [int(rows[i]["phash"], 16) for i in uniq]
        for a, b in near_pairs(hashes, threshold):
            union(uniq[a], uniq[b])

    groups: dict[int, list[int]] = {}
    for i in ok:
        groups.setdefault(find(i), []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        rep = min(members, key=lambda i: (-rows[i]["width"] * rows[i]["height"], rows[i]["path"]))
        gid = rows[rep]["sha256"][:12]
        for i in members:
            rows[i]["dup_group"] = gid
            if i != rep:
                same = rows[i]["sha256"] == rows[rep]["sha256"]
                rows[i].update(status="rejected", reason="exact_duplicate" if same else "near_duplicate",
                               duplicate_of=rows[rep]["path"],
                               detail=f"duplicate of {path_text(rows[rep]['path'])}")


# ----------------------------------------------------------------------------- provenance


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def crawl_provenance(records: Iterable[dict]) -> dict[str, dict[str, Any]]:
    """sha256 -> {source_url, license, fetched_at, source_urls} from a crawl log's `ok` records.

    Several URLs with the same bytes: the first by URL keeps its url/license/fetched_at,
    `source_urls` counts the distinct URLs. Records that are not `ok` or lack a sha256
    are ignored."""
    by_sha: dict[str, dict[str, dict]] = {}
    for rec in records:
        if not isinstance(rec, dict) or rec.get("status") != "ok":
            continue
        sha, url = rec.get("sha256"), rec.get("url")
        if isinstance(sha, str) and sha and isinstance(url, str) and url:
            by_sha.setdefault(sha, {}).setdefault(url, rec)  # a URL's first record
    out: dict[str, dict[str, Any]] = {}
    for sha, recs in by_sha.items():
        first = recs[min(recs)]
        out[sha] = {"source_url": first["url"], "license": _text_or_none(first.get("license")),
                    "fetched_at": _text_or_none(first.get("fetched_at")), "source_urls": len(recs)}
    return out


def read_crawl_provenance(log_path: str | Path) -> dict[str, dict[str, Any]]:
    """`crawl_provenance` of the crawl log at `log_path`; {} (and a log line) when it is
    missing or unreadable; damaged lines are skipped."""
    return crawl_provenance(read_records(log_path, missing="no provenance columns (files not from a crawl)",
                                         unreadable="no provenance columns"))


def add_provenance(rows: list[dict], provenance: dict[str, dict[str, Any]]) -> None:
    """Fill the provenance columns of manifest rows from `crawl_provenance`, by sha256."""
    for row in rows:
        got = provenance.get(row.get("sha256") or "")
        row.update(got if got else {"source_url": None, "license": None, "fetched_at": None, "source_urls": 0})


# ----------------------------------------------------------------------------- manifest


def _blank_row(rel: str, domain: str) -> dict[str, Any]:
    row: dict[str, Any] = {name: ("" if kind == "string" else 0) for name, kind in COLUMNS}
    row.update(path=rel, domain=domain, animated=False, orientation=1)
    return row


def _manifest_row(row: dict) -> dict:
    """`row` as stored: paths as lossless `path_text`, any other text made encodable."""
    out = {k: display_text(v) if isinstance(v, str) else v for k, v in row.items()}
    out["path"] = path_text(row["path"])
    if row.get("duplicate_of"):
        out["duplicate_of"] = path_text(row["duplicate_of"])
    return out


def write_manifest(rows: list[dict], out: Path) -> None:
    """manifest.parquet (for the pipeline) and manifest.csv (for people), atomically.

    `rows` hold real paths (`os.fsdecode` strings); they are stored as `path_text`."""
    import pyarrow as pa

    rows = [_manifest_row(r) for r in rows]
    tables.write_parquet(rows, out / "manifest.parquet", [(name, getattr(pa, kind)()) for name, kind in COLUMNS])
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([k for k, _ in COLUMNS])
    for r in rows:
        writer.writerow([int(r[k]) if isinstance(r[k], bool) else r[k] for k, _ in COLUMNS])
    fileio.write_text(out / "manifest.csv", text.getvalue())


def read_manifest(path: str | Path) -> list[dict]:
    """The manifest's rows; `path` / `duplicate_of` are `path_text` (see `path_from_text`)."""
    return tables.read_rows(path, "ingest manifest", "run `toonlab ingest` first")


def summarize(rows: list[dict]) -> dict[str, Any]:
    reasons: dict[str, int] = {}
    for r in rows:
        if r["status"] == "rejected":
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    groups = {r["dup_group"] for r in rows if r["dup_group"]}
    return {"files": len(rows), "ok": sum(r["status"] == "ok" for r in rows),
            "rejected": sum(r["status"] == "rejected" for r in rows),
            "rejected_by_reason": dict(sorted(reasons.items())), "duplicate_groups": len(groups),
            "from_crawl": sum(bool(r.get("source_url")) for r in rows)}


# ----------------------------------------------------------------------------- driver


@dataclass(frozen=True)
class IngestStats:
    domain: str
    files: int
    analysed: int  # decoded in this run (not served from the cache)
    summary: dict


def _analyse_all(rows: list[dict], to_hash: list[int], jobs: list[tuple], root: Path, domain: str,
                 workers: int, caches: Caches, new_stat: dict[str, list]) -> None:
    """Run `_analyse` on the jobs; record results in the rows and the caches as they come."""
    results: Iterable[dict]
    if workers > 1 and len(jobs) > 8:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_analyse, jobs, chunksize=max(1, min(32, len(jobs) // (workers * 8))))
    else:
        pool, results = None, map(_analyse, jobs)
    try:
        for i, res in zip(to_hash, progress(results, f"ingest {domain}", total=len(jobs), unit="file")):
            row = rows[i]
            if "sha256" not in res:  # rejected before decoding (unreadable, not regular, too large)
                row.update(res)
                continue
            caches.content[res["sha256"]] = {k: v for k, v in res.items() if k != "sha256"}
            row["sha256"] = res["sha256"]
            try:
                new_stat[row["path"]] = _stat_key(os.lstat(root / row["path"])) + [res["sha256"]]
            except OSError:
                pass  # vanished meanwhile: hashed again next time
    finally:
        if pool is not None:
            pool.shutdown()


def ingest_domain(raw_root: str | Path, domain: str, params: IngestParams, decode: DecodeParams,
                  workers: int = 2) -> IngestStats:
    root = Path(raw_root) / domain
    if not root.is_dir():
        raise UsageError(f"no raw folder for domain '{domain}': {root} does not exist "
                         f"(put files there, run `toonlab crawl`, or `toonlab demo-data`)")
    caches = Caches.load(Path(params.cache_dir), domain, decode)
    max_bytes = int(params.max_file_mb * 1024 * 1024)
    entries = scan(root)
    rows: list[dict] = []
    to_hash: list[int] = []
    new_stat: dict[str, list] = {}
    for rel, st in entries:
        row = _blank_row(rel, domain)
        rows.append(row)
        if st is None:
            row.update(status="rejected", reason="unreadable", detail="a folder that cannot be listed")
            continue
        if (rejected := _check_stat(st, max_bytes)) is not None:  # never opened
            row.update(rejected)
            continue
        key = _stat_key(st)
        cached = caches.stat.get(rel)
        if cached and cached[:3] == key and cached[3] in caches.content:
            row.update(sha256=cached[3])
            new_stat[rel] = cached
        else:
            to_hash.append(len(rows) - 1)

    # Files not known from the stat cache: hash (and, if the content is new, decode) them.
    jobs = [(str(root / rows[i]["path"]), decode.model_dump(mode="json"), max_bytes) for i in to_hash]
    done = False
    try:
        _analyse_all(rows, to_hash, jobs, root, domain, workers, caches, new_stat)
        for row in rows:
            if row["sha256"] and row["status"] == "":
                row.update(caches.content[row["sha256"]])
        for row in rows:  # rows rejected before hashing
            if row["status"] == "":
                row.update(status="rejected", reason="unreadable")
        mark_duplicates(rows, params.near_duplicates, params.phash_threshold)
        add_provenance(rows, read_crawl_provenance(Path(raw_root) / CRAWL_LOG))

        out = Path(params.out_dir) / domain
        write_manifest(rows, out)
        summary = summarize(rows)
        fileio.write_json(out / "summary.json", summary)
        done = True
    finally:
        # The work done so far is kept even when a later step (the manifest write) fails.
        stat_cache = new_stat if done else {**caches.stat, **new_stat}
        if jobs or stat_cache != caches.stat:
            caches.stat = stat_cache
            try:
                caches.save(domain)
            except OSError as exc:
                if done:
                    raise
                log.warning("ingest %s: cannot save the cache (%s)", domain, exc)
    log.info("ingest %s: %d files, %d ok, %d rejected %s (%d decoded, %d from cache)", domain, len(rows),
             summary["ok"], summary["rejected"], summary["rejected_by_reason"], len(jobs), len(rows) - len(jobs))
    return IngestStats(domain, len(rows), len(jobs), summary)
