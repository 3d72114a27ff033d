"""URL lists for `toonlab crawl`: plain text (one URL per line; blank lines and `#`
comment lines are ignored) or CSV with a header holding a `url` column and optional
`domain` and `license` columns; a folder stands for every `.txt` and `.csv` file below
it. `read_url_lists` reads them into `UrlEntry`s (normalized, deduplicated) and crawl
log records for the lines it rejects."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from toonlab.data.crawl_log import record
from toonlab.data.decode import display_text, path_text
from toonlab.data.urls import MAX_URL_LEN, normalize_url, redact
from toonlab.errors import ToonlabError
from toonlab.log import get_logger

log = get_logger(__name__)

KNOWN_DOMAINS = ("photo", "anime")
DOMAIN_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
LIST_SUFFIXES = (".txt", ".csv")


@dataclass(frozen=True)
class UrlEntry:
    url: str
    domain: str
    license: str | None
    source: str


def _clip(text: str, n: int = MAX_URL_LEN) -> str:
    text = text.strip()
    return text if len(text) <= n else text[: n - 3] + "..."


def _list_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in LIST_SUFFIXES
                           and not f.name.startswith("."))
            if not found:
                log.warning("URL list folder %s holds no .txt or .csv file", display_text(path_text(p)))
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise ToonlabError(f"URL list {display_text(path_text(p))} not found (crawl.url_lists names files or "
                               "folders of .txt/.csv lists)")
    return files


def _read_rows(path: Path) -> Iterable[tuple[int, str, str | None, str | None]]:
    """Yield (line number, url text, domain or None, license or None)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ToonlabError(f"URL list {display_text(path_text(path))} is not a UTF-8 text file") from None
    except OSError as exc:
        raise ToonlabError(f"cannot read URL list {display_text(path_text(path))}: {exc.strerror or exc}") from None
    if path.suffix.lower() != ".csv":
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                yield n, line, None, None
        return
    reader = csv.reader(text.splitlines())
    header: list[str] | None = None
    for row in reader:
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        header = [c.strip().lower() for c in row]
        break
    if header is None:
        return
    if "url" not in header:
        raise ToonlabError(f"URL list {display_text(path_text(path))}: CSV header {header!r} has no 'url' column")
    iu = header.index("url")
    idom = header.index("domain") if "domain" in header else None
    ilic = header.index("license") if "license" in header else None

    def cell(row: list[str], i: int | None) -> str | None:
        if i is None or i >= len(row):
            return None
        return row[i].strip() or None

    for row in reader:
        url = cell(row, iu)
        if url is None or url.startswith("#"):
            continue
        yield reader.line_num, url, cell(row, idom), cell(row, ilic)


def read_url_lists(
    paths: Iterable[str | Path],
    default_domain: str = "photo",
    domains: Iterable[str] | None = KNOWN_DOMAINS,
) -> tuple[list[UrlEntry], list[dict]]:
    """Read URL lists. Returns (entries, rejected records).

    Entries are deduplicated on the normalized URL (the first occurrence wins), in input
    order. Bad lines never raise: they come back as log records with status `rejected`
    and a reason (bad_scheme, malformed_url, url_too_long, bad_domain, unknown_domain).
    `domains=None` accepts any domain name that matches DOMAIN_RE. A missing list, a
    non-UTF-8 file or a CSV without a `url` column raises ToonlabError.
    """
    allowed = None if domains is None else set(domains)
    entries: dict[str, UrlEntry] = {}
    rejected: dict[str, dict] = {}
    duplicates = 0
    for path in _list_files(paths):
        for line_no, raw, dom, lic in _read_rows(path):
            source = f"{path_text(path)}:{line_no}"
            domain = (dom or default_domain).strip().lower()
            url, reason = normalize_url(raw)
            if reason is None:
                if not DOMAIN_RE.match(domain):
                    reason = "bad_domain"
                elif allowed is not None and domain not in allowed:
                    reason = "unknown_domain"
            if reason is not None:
                key = redact(url or _clip(raw))
                rejected.setdefault(key, record(
                    key, _clip(domain, 64) if DOMAIN_RE.match(domain) else None, lic, "rejected", reason,
                    source=source))
                continue
            assert url is not None
            if url in entries:
                duplicates += 1
                prev = entries[url]
                if prev.domain != domain:
                    log.warning("%s: %s listed again with domain '%s'; keeping '%s' from %s",
                                display_text(source), redact(url), domain, prev.domain,
                                display_text(prev.source))
                continue
            entries[url] = UrlEntry(url, domain, lic, source)
    for url in entries:  # a URL accepted somewhere is not also reported as rejected
        rejected.pop(redact(url), None)
    if duplicates:
        log.info("dropped %d duplicate URL(s) from the lists", duplicates)
    return list(entries.values()), [rejected[k] for k in sorted(rejected)]
