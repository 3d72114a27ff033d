"""The crawl log (`<raw_dir>/crawl_log.jsonl`, written by `toonlab crawl`): JSON Lines, one
record per input URL, sorted by URL. `record` builds a record (credentials redacted),
`write_log` writes a log atomically, `read_records` reads one back for the crawler
(resume, `read_log`) and for ingest (provenance). Light: the standard library and
toonlab's small helpers only, so ingest does not depend on the crawler's code."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Iterable

from toonlab.data.urls import redact
from toonlab.log import get_logger
from toonlab.util.fileio import write_text

log = get_logger(__name__)

STATUSES = ("ok", "failed", "rejected", "skipped")


def read_records(log_path: str | Path, missing: str = "", unreadable: str = "") -> list[dict]:
    """The records (JSON objects with a string `url`) of a crawl log, in file order.

    A missing file gives [] (and `missing` as an info line when given); an unreadable one
    gives [] and a warning ending with `unreadable`; damaged lines are skipped with a
    warning counting them."""
    path = Path(log_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing:
            log.info("no crawl log at %s: %s", path, missing)
        return []
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read the crawl log %s (%s)%s", path, exc, f"; {unreadable}" if unreadable else "")
        return []
    records, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(rec, dict) and isinstance(rec.get("url"), str):
            records.append(rec)
        else:
            bad += 1
    if bad:
        log.warning("%s: ignored %d unreadable line(s)", path, bad)
    return records


def record(url: str, domain: str | None, license: str | None, status: str, reason: str | None,
           *, http_status: int | None = None, nbytes: int | None = None, sha256: str | None = None,
           path: str | None = None, attempts: int = 0, source: str | None = None,
           detail: str | None = None, fetched_at: str | None = None) -> dict:
    """One crawl log record. The URL and the detail are redacted (no credentials)."""
    return {"url": redact(url), "domain": domain, "license": license, "status": status, "reason": reason,
            "detail": redact(detail) if detail else None, "http_status": http_status, "bytes": nbytes,
            "sha256": sha256, "path": path, "attempts": attempts, "source": source, "fetched_at": fetched_at}


def utc_now() -> str:
    """The current UTC time as ISO 8601 to the second: `2026-01-31T12:00:00Z`."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_log(log_path: Path) -> dict[str, dict]:
    """Last record per URL of a previous crawl log; unreadable lines are ignored."""
    return {rec["url"]: rec for rec in read_records(log_path, unreadable="fetching everything again")}


def write_log(log_path: Path, records: Iterable[dict]) -> None:
    """Write `records` as a crawl log, sorted by URL, atomically."""
    lines = [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in sorted(records, key=lambda r: r["url"])]
    write_text(log_path, "".join(line + "\n" for line in lines))
