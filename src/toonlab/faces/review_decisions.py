"""Human review of the curated faces: `data/review/<domain>.csv`, versioned with the code,
read by `toonlab curate` after the automatic checks (and written by `toonlab review`).

One row per decision, keyed on the raw image's content hash and the face's index in it
(never on file names, so a decision survives renames and re-runs of every upstream
stage)::

    sha256,face_index,decision,reason,note,who,when
    3f0c...e1,0,reject,closed_eyes,,alice,2026-12-06T12:00:00Z
    a91b...07,2,keep,,fine despite the blur,bob,2026-12-06T12:01:10Z

`sha256` (64 hex digits) and `face_index` (an integer, -1 for an image-level row) and
`decision` (`reject` or `keep`) are required; `reason`, `note`, `who`, `when` are free
text, read back exactly as written: any Unicode text, line breaks and control characters
included (`render_review` quotes every field that holds a quote, a comma, a line break or
another control character, or spaces at either end; the reader decodes the bytes itself,
so a quoted carriage return stays one). A missing file means no decision. A bad row
(unknown decision, bad hash or index, the same face twice, an unknown column) is a clear
error naming the file and line.

Writers take turns: `toonlab review` holds an exclusive OS lock (`review_lock`: flock on
the sibling `.<domain>.csv.lock`, never on the file itself, which each write replaces)
around each read-modify-write of a file, so two review pages (two processes) on one
project lose no decision; `curate` reads under the shared lock (`read_review`). The lock
files are ignored by git and DVC (.gitignore, .dvcignore).

`curate` applies the decisions (`apply_review`):

* `reject` on a face the checks kept: it is dropped (status `rejected`, reason
  `human_reject`);
* `keep` on a face a quality threshold rejected (it has an aligned crop): it is kept;
  the automatic reason stays in `auto_reason`;
* every row gets `auto_reason` (what the automatic checks said, "" for kept faces) and
  `decided_by` (`human` where a decision matched the row, else `auto`);
* a decision about an image or face that is no longer in the processed manifest is
  *stale*, and a `keep` of an image-level rejection (no face, unreadable image) or of a
  face without a crop is *refused*: both are logged as warnings and listed in the
  curation report and its summary.json, never silently dropped.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from toonlab.errors import UsageError
from toonlab.log import get_logger
from toonlab.util import fileio

log = get_logger(__name__)

COLUMNS = ("sha256", "face_index", "decision", "reason", "note", "who", "when")
REQUIRED = ("sha256", "face_index", "decision")
DECISIONS = ("reject", "keep")
HUMAN_REJECT = "human_reject"
_SHA = re.compile(r"[0-9a-f]{64}")
# A field holding one of these is quoted: CSV's own syntax, and every line break or other
# control character (csv's writer leaves a lone "\r" bare with a "\n" line end).
_QUOTE = re.compile(r'[",\x00-\x1f\x7f-\x9f\u2028\u2029]')


class ReviewError(UsageError):
    """A review file that cannot be used (exit code 2, no traceback)."""


@dataclass(frozen=True)
class Decision:
    sha256: str
    face_index: int
    decision: str
    reason: str = ""
    note: str = ""
    who: str = ""
    when: str = ""
    line: int = 0          # where it is in its file (for messages)

    @property
    def key(self) -> tuple[str, int]:
        return (self.sha256, self.face_index)

    def row(self) -> dict[str, str]:
        d = asdict(self)
        return {c: str(d[c]) for c in COLUMNS}


def review_file(review_dir: str | Path, domain: str) -> Path:
    return Path(review_dir) / f"{domain}.csv"


@contextlib.contextmanager
def review_lock(path: str | Path, shared: bool = False) -> Iterator[None]:
    """Hold the OS lock of review file `path`, exclusive (a writer: around the whole
    read-modify-write) or shared (a reader): flock on its sibling `.<name>.lock`.

    A reader takes it only where the lock file exists (a writer creates it) and can be
    opened: the file is replaced whole by each write, so a reader without it still reads
    one whole version. No lock where the OS has no flock (Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    fd = None
    try:
        if not shared:
            lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDONLY if shared else os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if not shared:
            raise ReviewError(f"cannot lock review file {path} ({lock}: {exc.strerror})") from None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


# ----------------------------------------------------------------------------- read / write


def parse_review(text: str, source: str = "review file") -> dict[tuple[str, int], Decision]:
    """The decisions of a review file's text, keyed by (sha256, face_index); every
    problem is collected and raised at once as a ReviewError naming `source` and lines."""
    if not text.strip():
        return {}
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    problems: list[str] = []
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    if missing or unknown:
        what = []
        if missing:
            what.append(f"lacks column(s) {', '.join(missing)}")
        if unknown:
            what.append(f"has unknown column(s) {', '.join(repr(c) for c in unknown)}")
        raise ReviewError(f"{source}, line 1: the header {' and '.join(what)} "
                          f"(expected {','.join(COLUMNS)}; only {', '.join(REQUIRED)} are required)")
    reader.fieldnames = header
    out: dict[tuple[str, int], Decision] = {}
    for rec in reader:
        line = reader.line_num
        if None in rec:
            problems.append(f"{source}, line {line}: more fields than the header has")
            continue
        # The required fields are read leniently (spaces, case); the free text as written.
        vals = {k: (v or "").strip() if k in REQUIRED else (v or "") for k, v in rec.items()}
        if not any(v.strip() for v in vals.values()):
            continue  # a blank line
        sha = vals.get("sha256", "").lower()
        bad = []
        if not _SHA.fullmatch(sha):
            bad.append(f"sha256 must be 64 hex digits, got {vals.get('sha256', '')!r}")
        try:
            fi = int(vals.get("face_index", ""))
            if fi < -1:
                raise ValueError
        except ValueError:
            bad.append(f"face_index must be an integer >= -1, got {vals.get('face_index', '')!r}")
            fi = -2
        dec = vals.get("decision", "").lower()
        if dec not in DECISIONS:
            bad.append(f"decision must be one of {', '.join(DECISIONS)}, got {vals.get('decision', '')!r}")
        if bad:
            problems.append(f"{source}, line {line}: " + "; ".join(bad))
            continue
        d = Decision(sha, fi, dec, vals.get("reason", ""), vals.get("note", ""), vals.get("who", ""),
                     vals.get("when", ""), line)
        if d.key in out:
            problems.append(f"{source}, line {line}: face {fi} of {sha[:12]}... already has a decision "
                            f"on line {out[d.key].line}")
            continue
        out[d.key] = d
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ReviewError("invalid review file:\n" + "\n".join(f"  {p}" for p in shown))
    return out


def load_review(path: str | Path) -> dict[tuple[str, int], Decision]:
    """The decisions of a review file ({} when it does not exist)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ReviewError(f"cannot read review file {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReviewError(f"review file {path}: not UTF-8 text (byte {exc.start})") from None
    return parse_review(text, str(path))


def _field(text: str) -> str:
    if _QUOTE.search(text) or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


def render_review(decisions: Iterable[Decision]) -> str:
    """A review file's text: the header, then the decisions sorted by (sha256, face_index)
    (stable diffs whatever order they were made in), one per line unless a field holds a
    line break (quoted, as every field with a control character)."""
    rows = [",".join(COLUMNS)]
    for d in sorted(decisions, key=lambda d: d.key):
        rows.append(",".join(_field(v) for v in d.row().values()))
    return "\n".join(rows) + "\n"


def write_review(path: str | Path, decisions: Iterable[Decision]) -> None:
    """Write a review file atomically (temporary sibling, then rename); a failure is a
    ReviewError (the file is left as it was)."""
    try:
        fileio.write_text(path, render_review(decisions))
    except OSError as exc:
        raise ReviewError(f"cannot write review file {path}: {exc.strerror or exc}") from None


def read_review(path: str | Path) -> dict[tuple[str, int], Decision]:
    """`load_review` under the shared `review_lock` (not while a review page writes it)."""
    with review_lock(path, shared=True):
        return load_review(path)


# ----------------------------------------------------------------------------- apply


@dataclass
class ReviewOutcome:
    """What applying one domain's decisions did (plain data for summary.json)."""

    file: str
    decisions: int = 0
    by_decision_reason: dict[str, dict[str, int]] | None = None
    rejected: int = 0         # kept by the checks, rejected by a human
    rescued: int = 0          # rejected by a threshold, kept by a human
    confirmed: int = 0        # the human agreed with the checks (nothing changed)
    stale: list[dict[str, Any]] | None = None
    refused: list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "decisions": self.decisions,
                "by_decision_reason": self.by_decision_reason or {}, "rejected": self.rejected,
                "rescued": self.rescued, "confirmed": self.confirmed, "stale": self.stale or [],
                "refused": self.refused or []}


def _brief(d: Decision, **extra: Any) -> dict[str, Any]:
    return {"sha256": d.sha256, "face_index": d.face_index, "decision": d.decision, "reason": d.reason,
            "line": d.line, **extra}


def apply_review(rows: list[dict], decisions: Mapping[tuple[str, int], Decision],
                 file: str = "", warn: bool = True) -> tuple[list[dict], ReviewOutcome]:
    """Processed-manifest rows with the human decisions applied (new dicts, same order,
    plus `auto_reason` and `decided_by`), and what was done."""
    out_rows: list[dict] = []
    seen: set[tuple[str, int]] = set()
    res = ReviewOutcome(file=file, decisions=len(decisions), stale=[], refused=[])
    counts: Counter = Counter()
    for r in rows:
        row = dict(r)
        auto_ok = row["status"] == "ok"
        row["auto_reason"] = "" if auto_ok else (row.get("reason") or "")
        row["decided_by"] = "auto"
        key = (str(row.get("sha256") or ""), int(row["face_index"]))
        d = decisions.get(key)
        if d is not None:
            seen.add(key)
            if d.decision == "reject":
                row["decided_by"] = "human"
                counts[(d.decision, d.reason or "(none)")] += 1
                if auto_ok:
                    row.update(status="rejected", reason=HUMAN_REJECT,
                               detail="rejected by human review" + (f": {d.reason}" if d.reason else ""))
                    res.rejected += 1
                else:
                    res.confirmed += 1
            elif auto_ok:
                row["decided_by"] = "human"
                counts[(d.decision, d.reason or "(none)")] += 1
                res.confirmed += 1
            elif key[1] < 0:
                res.refused.append(_brief(d, why="image_level", auto_reason=row["auto_reason"]))
            elif not (row.get("crop_256") or row.get("crop_128")):
                res.refused.append(_brief(d, why="no_crop", auto_reason=row["auto_reason"]))
            else:
                row["decided_by"] = "human"
                counts[(d.decision, d.reason or "(none)")] += 1
                row.update(status="ok", reason="",
                           detail=f"kept by human review (automatic reason: {row['auto_reason']})")
                res.rescued += 1
        out_rows.append(row)
    for key in sorted(set(decisions) - seen):
        res.stale.append(_brief(decisions[key]))
    by: dict[str, dict[str, int]] = {}
    for (dec, reason), n in sorted(counts.items()):
        by.setdefault(dec, {})[reason] = n
    res.by_decision_reason = by
    where = file or "review file"
    for s in (res.stale if warn else []):
        log.warning("curate: %s line %d: no face %d of image %s in the processed manifest (stale %s decision, "
                    "not applied)", where, s["line"], s["face_index"], s["sha256"][:12], s["decision"])
    for s in (res.refused if warn else []):
        what = ("an image-level rejection (no usable face) cannot be kept" if s["why"] == "image_level"
                else "the face has no aligned crop (re-run `toonlab align`)")
        log.warning("curate: %s line %d: keep of face %d of %s refused: %s (automatic reason %s)", where,
                    s["line"], s["face_index"], s["sha256"][:12], what, s["auto_reason"] or "-")
    return out_rows, res


# ----------------------------------------------------------------------------- pending


def pending(decisions: Mapping[tuple[str, int], Decision], processed_rows: list[dict],
            curated_keys: set[tuple[str, int]]) -> list[dict[str, Any]]:
    """The faces a `dvc repro curate` would move, computed from curate's own outputs: the
    curated manifest the decisions in the file would give (the processed manifest, the
    automatic result, with `apply_review`) against the one the last `curate` run wrote.

    Each is {sha256, face_index, decision, reason, line, change}: change `reject` (still
    in the curated manifest), `keep` (not there yet), or for a decision removed from the
    file (undone after the last run) `undo_reject` / `undo_keep`. `curated_keys`: the
    (sha256, face_index) of the curated rows.
    """
    applied, _ = apply_review(processed_rows, decisions, warn=False)  # stale/refused: curate warns
    want = {(str(r.get("sha256") or ""), int(r["face_index"])) for r in applied if r["status"] == "ok"}
    out = []
    for key in sorted(want ^ curated_keys):
        d = decisions.get(key)
        if d is not None:
            out.append(_brief(d, change=d.decision))
        else:
            out.append({"sha256": key[0], "face_index": key[1], "decision": "", "reason": "", "line": 0,
                        "change": "undo_reject" if key in want else "undo_keep"})
    return out


def apply_review_table(table, decisions: Mapping[tuple[str, int], Decision], file: str = ""):
    """`apply_review` on a processed-manifest Arrow table: (table with `auto_reason` and
    `decided_by`, outcome)."""
    import pyarrow as pa

    rows, outcome = apply_review(table.to_pylist(), decisions, file)
    schema = table.schema
    for name in ("auto_reason", "decided_by"):
        if name in schema.names:
            schema = schema.remove(schema.get_field_index(name))
        schema = schema.append(pa.field(name, pa.string()))
    return pa.Table.from_pylist(rows, schema=schema), outcome
