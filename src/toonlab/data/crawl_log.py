"""The crawl log (`<raw_dir>/crawl_log.jsonl`, written by `toonlab crawl`) as records:
one reader for the crawler (resume) and for ingest (provenance). Light: standard library
only, so ingest does not depend on the crawler's code."""

from __future__ import annotations

import json
from pathlib import Path

from toonlab.log import get_logger

log = get_logger(__name__)


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
