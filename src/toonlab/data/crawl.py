"""`toonlab crawl`: fetch URL lists into `<raw_dir>/<domain>/<sha256>.<ext>`.

Input lists are plain text (one URL per line; blank lines and `#` comment lines are
ignored) or CSV with a header holding a `url` column and optional `domain` and
`license` columns. A folder stands for every `.txt` and `.csv` file below it.

Each URL is fetched at most once per run, by a pool of `concurrency` threads, on
urllib3 (connections, TLS, chunked framing), with:

* a per-host rate limit (`per_host_rate` requests per second, shared by all threads);
* a socket timeout for connecting and for each read (`timeout_s`) and one deadline per
  URL (`total_timeout_s`) covering every attempt, redirect and retry wait, so a server
  that trickles bytes or asks for long `Retry-After` waits is also stopped (a
  Retry-After beyond the deadline ends the URL with `retry_after_too_long`);
* retries with exponential backoff (`backoff_s * 2**n`) on connection errors, timeouts,
  truncated bodies, proxy failures, 5xx and 429 answers; never on other 4xx, on status
  codes outside 100-599 (`bad_status`), on a malformed chunked body (`bad_chunked`) or
  on a tunnel that the proxy refuses with a 4xx (`proxy_error`);
* an address policy (`AddressPolicy`): hosts resolving to loopback, private,
  link-local, multicast, unspecified or reserved addresses are refused
  (`blocked_address`) unless `allow_private` or `allow_hosts` says otherwise; it is
  checked on the address actually connected to, for the listed URL and every redirect;
* proxies from HTTP_PROXY, HTTPS_PROXY (a CONNECT tunnel), ALL_PROXY and NO_PROXY or
  their lower-case forms, as curl and requests read them (`Proxies`); through a proxy
  the target is judged by name (`AddressPolicy.refuses_name`), the proxy's own address
  is exempt, and proxy credentials go out as Proxy-Authorization, never into the log;
* redirects followed by hand, at most `max_redirects`, to http/https only, loops detected;
* credentials in a URL (`user:secret@host`) sent as HTTP basic auth to that URL's own
  origin only (never across a redirect to another origin) and redacted (`***`) in
  every log record and message;
* a size cap (`max_bytes`) checked on Content-Length and while streaming;
* a Content-Type check (image/* or application/octet-stream) and a magic-byte check
  (JPEG, PNG, GIF, WebP, BMP, TIFF); then ingest's safe decoder (`decode` rules): a
  truncated, corrupt or oversized (`decode.max_pixels`) image is logged `rejected` with
  the decoder's reason and never written. The file extension comes from the magic bytes only; nothing from
  the URL or the headers ever reaches a file name.

The crawl log is JSON Lines, one record per input URL, sorted by URL, written
atomically at the end and periodically during the run (URLs not fetched yet appear as
`skipped`/`pending`). A second run reads it and fetches only URLs whose last status is
not `ok` or whose file is gone; `ok` records are carried over.

Record fields: url (credentials redacted), domain, license, status (ok | failed |
rejected | skipped), reason (None for ok), detail (one line for people, or None),
http_status, bytes, sha256, path (relative to out_root), attempts, source (list file,
as `decode.path_text`, and line of the URL's first occurrence), fetched_at (UTC ISO 8601
time of the fetch, to the second, for every URL fetched in this run; an `ok` record
carried over from a previous run keeps its own; None for URLs not fetched).

This module drives the crawl; its pieces sit beside it: `urllists` (reading the lists),
`urls` (normalizing URLs, redacting and sending their credentials), `transport` (the
HTTP client, the address policy, the proxies), `crawl_store` (the downloaded files) and
`crawl_log` (the log's records).
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Iterable
from urllib.parse import unquote, urlsplit

from toonlab.data.crawl_log import STATUSES, read_log, record, utc_now, write_log
from toonlab.data.crawl_store import reusable, store
from toonlab.data.decode import decode_bytes
from toonlab.data.params import CrawlParams, DecodeParams
from toonlab.data.transport import Fetcher
from toonlab.data.urllists import KNOWN_DOMAINS, UrlEntry, read_url_lists
from toonlab.data.urls import redact
from toonlab.log import get_logger, progress
from toonlab.util.fileio import sha256_bytes

log = get_logger(__name__)

FLUSH_EVERY = 50  # results between periodic log writes (grows with the log, see _Flusher)
FLUSH_MAX_INTERVAL_S = 30.0


def _url_name(url: str) -> str:
    """The last path segment of a URL, for the decoder's messages."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return name[:100] if name.isprintable() and name else "download"


def crawl(lists: list[Path], out_root: Path, log_path: Path, params: CrawlParams,
          domains: Iterable[str] | None = KNOWN_DOMAINS, decode: DecodeParams | None = None) -> dict:
    """Fetch every URL of `lists` into `out_root/<domain>/`; write the log to `log_path`.

    A download is kept (and logged `ok`) only when ingest's safe decoder (`decode`
    rules: header, pixel limit, full decode) finds an intact image; otherwise it is
    logged `rejected` with the decoder's reason (truncated, corrupt, too_many_pixels,
    ...) and not written. Intact images that ingest's size, aspect or animation rules
    leave out are kept: ingest records why.

    Returns counts by status (ok, failed, rejected, skipped) plus total, downloaded
    (new ok this run) and resumed (ok records carried over from the previous log).
    """
    out_root, log_path = Path(out_root), Path(log_path)
    entries, rejected = read_url_lists(lists, params.default_domain, domains)
    previous = read_log(log_path)
    # Ingest's decoder without its selection rules: an intact image that ingest leaves out
    # (too small, extreme aspect, animated) is kept, and ingest records why, so another
    # decode.min_side needs no new crawl. Every other reason is a damaged or hostile file.
    check = (decode or DecodeParams()).model_copy(update={"min_side": 1, "max_aspect": 1e9, "allow_animated": True})
    records: dict[str, dict] = {r["url"]: r for r in rejected}  # keyed by the redacted URL
    todo: list[UrlEntry] = []
    resumed = 0
    for e in entries:
        prev = previous.get(redact(e.url))
        if reusable(prev, e, out_root):
            assert prev is not None
            records[redact(e.url)] = record(e.url, e.domain, e.license, "ok", None,
                                     http_status=prev.get("http_status"), nbytes=prev.get("bytes"),
                                     sha256=prev.get("sha256"), path=prev["path"],
                                     attempts=prev.get("attempts") or 0, source=e.source,
                                     fetched_at=prev.get("fetched_at"))
            resumed += 1
        else:
            todo.append(e)
    log.info("crawl: %d URL(s) in %d list(s): %d to fetch, %d already fetched, %d rejected",
             len(entries) + len(rejected), len(lists), len(todo), resumed, len(rejected))
    out_root.mkdir(parents=True, exist_ok=True)

    def pending(reason: str) -> dict[str, dict]:
        return {redact(e.url): record(e.url, e.domain, e.license, "skipped", reason, source=e.source)
                for e in todo if redact(e.url) not in records}

    fetcher = Fetcher(params)
    for scheme, proxy in fetcher.proxies.by_scheme.items():  # proxy.url never holds credentials
        log.info("crawl: %s:// URLs go through the proxy %s%s", scheme, proxy.url,
                 f" (except NO_PROXY {fetcher.proxies.no_proxy!r})" if fetcher.proxies.no_proxy else "")

    def work(e: UrlEntry) -> dict:
        fetched_at = utc_now()
        fields, body = fetcher.fetch(e.url)
        if body is None:
            return record(e.url, e.domain, e.license, fields["status"], fields["reason"],
                          http_status=fields["http_status"], attempts=fields["attempts"], source=e.source,
                          detail=fields.get("detail"), fetched_at=fetched_at)
        checked = decode_bytes(body, check, name=_url_name(e.url))
        if not checked.ok:  # truncated, corrupt, a bomb, ...: not kept
            return record(e.url, e.domain, e.license, "rejected", checked.reason,
                          http_status=fields["http_status"], nbytes=len(body), sha256=sha256_bytes(body),
                          attempts=fields["attempts"], source=e.source, detail=checked.detail,
                          fetched_at=fetched_at)
        del checked
        digest, rel = store(out_root, e.domain, body)
        return record(e.url, e.domain, e.license, "ok", None, http_status=fields["http_status"],
                      nbytes=len(body), sha256=digest, path=rel, attempts=fields["attempts"], source=e.source,
                      fetched_at=fetched_at)

    downloaded = 0
    since_flush, last_flush = 0, time.monotonic()
    pool = ThreadPoolExecutor(max_workers=params.concurrency, thread_name_prefix="crawl")
    try:
        # Submit in a bounded window so huge lists do not queue millions of futures.
        window = params.concurrency * 4
        queue = iter(todo)
        running: dict[Future, UrlEntry] = {}

        def refill() -> None:
            while len(running) < window:
                e = next(queue, None)
                if e is None:
                    return
                running[pool.submit(work, e)] = e

        refill()
        bar = progress(range(len(todo)), desc="crawl", total=len(todo), unit="url")
        bar_iter = iter(bar)
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            stop: BaseException | None = None
            for fut in done:
                e = running.pop(fut)
                try:
                    rec = fut.result()
                except Exception as exc:  # a bug or a disk error: record it, keep crawling
                    log.error("%s: %s: %s", redact(e.url), type(exc).__name__, redact(str(exc)))
                    rec = record(e.url, e.domain, e.license, "failed", "internal_error", source=e.source)
                except BaseException as exc:  # KeyboardInterrupt, SystemExit: keep the other results
                    stop = exc
                    continue
                records[rec["url"]] = rec
                downloaded += rec["status"] == "ok"
                since_flush += 1
                next(bar_iter, None)
            if stop is not None:
                raise stop
            refill()
            now = time.monotonic()
            if since_flush and (since_flush >= max(FLUSH_EVERY, len(records) // 10)
                                or now - last_flush >= FLUSH_MAX_INTERVAL_S):
                write_log(log_path, [*records.values(), *pending("pending").values()])
                since_flush, last_flush = 0, now
        getattr(bar, "close", lambda: None)()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        write_log(log_path, [*records.values(), *pending("interrupted").values()])
        log.warning("crawl interrupted; progress saved to %s (run again to resume)", log_path)
        raise
    pool.shutdown(wait=True)
    write_log(log_path, records.values())

    summary: dict[str, int] = {s: 0 for s in STATUSES}
    reasons: dict[str, int] = {}
    for r in records.values():
        summary[r["status"]] = summary.get(r["status"], 0) + 1
        if r["status"] != "ok":
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    summary.update(total=len(records), downloaded=downloaded, resumed=resumed)
    log.info("crawl done: %d ok (%d new, %d resumed), %d failed, %d rejected, %d skipped; log %s",
             summary["ok"], downloaded, resumed, summary["failed"], summary["rejected"], summary["skipped"],
             log_path)
    if reasons:
        log.info("crawl problems: %s", ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    return summary
