"""`toonlab review`: a local page to overrule curate's automatic checks, face by face.

It shows the faces of each domain as the last `toonlab curate` left them (kept: in the
curated manifest; rejected: the others of the processed manifest, with their reason),
filterable by state, reason, split and a range of one measurement (detector score, face
size, yaw, blur, matte background fraction; optionally sorted by it), in pages of 200
(`?per_page=N`), with those measurements, the aligned crop,
and on demand its matte, the raw image and, beside it, the other members of the image's
near-duplicate group from ingest (the copies ingest set aside, with their reason). Keys:
j / right / down next, k / left / up previous, n / PageDown and p / PageUp a page, r
reject, a keep, u undo, o raw image and near-duplicates on/off, m matte on/off.

Every decision is written at once to `<curate.review_dir>/<domain>.csv`
(`toonlab.faces.review_decisions`; temporary file + rename, re-read before each write so edits by
hand are kept), so closing the page loses nothing; `dvc repro curate` (or `snakemake -c2
curate`) applies them. The page shows how many faces a re-run would move
(`toonlab.faces.review_decisions.pending`).

    GET  /                    the page
    GET  /api/faces?domain=D  the faces, their decisions and the pending count
    POST /api/decide          JSON {domain, sha256, face_index, decision: reject|keep|"", reason, note}
    GET  /crop/D/I, /raw/D/I  the aligned crop (PNG) / the raw image (JPEG, box drawn) of face I
    GET  /matte/D/I           the crop's matte (its alpha channel, grey PNG)
    GET  /dup/D/I/K           the K-th other member of face I's near-duplicate group (JPEG)
    GET  /healthz             liveness

Same safety as `toonlab serve`, from the same layer (`toonlab.apps.web`, the `serve`
section of params.yaml): 127.0.0.1 by default and a warning for any other address (the
page has no authentication); requests naming another host than a loopback name, the
bound address or one of `serve.allowed_hosts` are refused (403 ``bad_host``: DNS
rebinding), and so are decisions a page of another origin sends (403 ``bad_origin``); a
request head or body that stalls is answered 408 after `serve.idle_timeout_s`, and at
most `serve.max_connections` connections are open. Decisions must be JSON (no
cross-site form posts), at most 16 KiB, and name a face of the processed manifest.
Images are read only from inside their folders (`data.raw_dir`, `align.out_dir`): a
file or folder swapped for a symbolic link after ingest is not followed (404).
"""


import getpass
import io
import json
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from toonlab.apps import web
from toonlab.apps.web import LOOPBACK, asset
from toonlab.faces.review_decisions import (
    DECISIONS,
    Decision,
    ReviewError,
    load_review,
    pending,
    review_file,
    review_lock,
    write_review,
)
from toonlab.log import get_logger
from toonlab.util.templates import render

log = get_logger(__name__)

DEFAULT_PORT = 8001          # `toonlab serve` has 8000
_MAX_BODY = 16 * 1024
_SCORES = ("score", "face_px", "yaw", "blur", "bg_fraction")


def _key(r: dict) -> tuple[str, int]:
    return (str(r.get("sha256") or ""), int(r["face_index"]))


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return round(f, 3) if f == f else None


@dataclass
class _Domain:
    stamp: tuple = ()
    processed: list[dict] = field(default_factory=list)
    curated: dict[tuple[str, int], dict] = field(default_factory=dict)
    has_curated: bool = False
    # raw path -> the other members of its ingest duplicate group: {"path", "reason"}
    dups: dict[str, list[dict]] = field(default_factory=dict)


class Reviewer:
    """The manifests of each domain (re-read when curate or align rewrite them) and the
    review files."""

    def __init__(self, params: Any, domains: list[str]):
        self.params = params
        self.domains = list(dict.fromkeys(domains))
        self.lock = threading.Lock()
        self._cache: dict[str, _Domain] = {}
        self.who = _text(os.environ.get("TOONLAB_REVIEWER") or _user())
        for d in self.domains:
            self.load(d)  # fail at start-up when a manifest is missing

    def _paths(self, domain: str) -> tuple[Path, Path, Path]:
        return (Path(self.params.align.out_dir) / domain / "manifest.parquet",
                Path(self.params.curate.out_dir) / f"{domain}.parquet",
                Path(self.params.ingest.out_dir) / domain / "manifest.parquet")

    def review_path(self, domain: str) -> Path:
        return review_file(self.params.curate.review_dir, domain)

    def load(self, domain: str) -> _Domain:
        from toonlab.util import tables

        proc, cur, ing = self._paths(domain)

        def mtime(p: Path):
            try:
                return p.stat().st_mtime_ns
            except FileNotFoundError:
                return None

        stamp = (mtime(proc), mtime(cur), mtime(ing))
        got = self._cache.get(domain)
        if got is not None and got.stamp == stamp:
            return got
        rows = tables.read_rows(proc, f"processed manifest for '{domain}'", "run the face stages first "
                                "(`dvc repro align` or `snakemake -c2 preprocess`)")
        rows.sort(key=lambda r: (r["raw_path"], int(r["face_index"])))
        curated = {_key(r): r for r in tables.read_rows(cur)} if stamp[1] is not None else {}
        got = _Domain(stamp, rows, curated, stamp[1] is not None, _dup_groups(tables.read_rows(ing)) if stamp[2] else {})
        self._cache[domain] = got
        return got

    def dup(self, domain: str, i: int, k: int) -> str:
        """Raw path (text) of the k-th other member of face i's near-duplicate group."""
        data = self.load(domain)
        members = data.dups.get(self.row(domain, i)["raw_path"], [])
        if not 0 <= k < len(members):
            raise KeyError(k)
        return members[k]["path"]

    def _split(self, r: dict) -> str:
        from toonlab.faces.curate import assign_split

        c = self.params.curate
        return assign_split(r.get("sha256") or f"path:{r['raw_path']}", int(r["face_index"]), c.split, c.salt)

    def faces(self, domain: str) -> dict[str, Any]:
        data = self.load(domain)
        decisions = load_review(self.review_path(domain))
        out = []
        for i, r in enumerate(data.processed):
            key = _key(r)
            cur = data.curated.get(key)
            kept = cur is not None if data.has_curated else r["status"] == "ok"
            if kept:
                reason = ""
            elif r["status"] == "ok":
                reason = "human_reject"
            else:
                reason = r.get("reason") or "(none)"
            d = decisions.get(key)
            out.append({
                "i": i, "sha256": key[0], "face_index": key[1], "raw_path": r["raw_path"],
                "state": "kept" if kept else "rejected", "reason": reason,
                "auto": "kept" if r["status"] == "ok" else (r.get("reason") or "(none)"),
                "detail": (cur or r).get("detail") or "",
                "split": (cur or {}).get("split") or self._split(r),
                "scores": {k: _num(r.get(k)) for k in _SCORES if _num(r.get(k)) is not None},
                "crop": bool(r.get("crop_256") or r.get("crop_128")),
                "decision": d.decision if d else "", "decision_reason": d.reason if d else "",
                "note": d.note if d else "", "dups": data.dups.get(r["raw_path"], [])})
        return {"domain": domain, "faces": out, "curated": data.has_curated, **self.status(domain, decisions)}

    def status(self, domain: str, decisions: dict | None = None) -> dict[str, Any]:
        data = self.load(domain)
        decisions = load_review(self.review_path(domain)) if decisions is None else decisions
        waiting = pending(decisions, data.processed, set(data.curated)) if data.has_curated else \
            [{"change": d.decision} for d in decisions.values()]
        return {"decisions": len(decisions), "pending": len(waiting), "pending_faces": waiting,
                "review_file": str(self.review_path(domain))}

    def row(self, domain: str, i: int) -> dict:
        rows = self.load(domain).processed
        if not 0 <= i < len(rows):
            raise KeyError(i)
        return rows[i]

    def decide(self, domain: str, sha256: str, face_index: int, decision: str, reason: str = "",
               note: str = "") -> dict[str, Any]:
        """Record (or with decision "" remove) the decision on one face: it is in the file
        when this returns (a failed write is a ReviewError). The whole read-modify-write
        holds the file's OS lock (`review_lock`), so that review pages in other processes
        on the same project take turns with this one instead of overwriting its decisions."""
        path = self.review_path(domain)
        with self.lock, review_lock(path):
            data = self.load(domain)
            row = next((r for r in data.processed if _key(r) == (sha256, face_index)), None)
            if row is None:
                raise KeyError((sha256, face_index))
            if decision == "keep" and face_index < 0 and row["status"] != "ok":
                raise ValueError(f"{row['raw_path']} was rejected as a whole ({row.get('reason') or 'no reason'}): "
                                 "there is no face to keep")
            decisions = load_review(path)   # the file as it is now (other pages' and hand edits included)
            if decision:
                when = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
                decisions[(sha256, face_index)] = Decision(sha256, face_index, decision, _text(reason), _text(note),
                                                           self.who, when)
            else:
                decisions.pop((sha256, face_index), None)
            write_review(path, decisions.values())
        log.info("review %s: %s face %d of %s -> %s", domain, "set" if decision else "cleared", face_index,
                 sha256[:12], decision or "(no decision)")
        return {"ok": True, "decision": decision, **self.status(domain, decisions)}


def _dup_groups(ingest_rows: list[dict]) -> dict[str, list[dict]]:
    """Raw path -> the other members of its exact / near-duplicate group (ingest's
    `dup_group`), each {"path", "reason"} (the representative's reason is "kept")."""
    groups: dict[str, list[dict]] = {}
    for r in ingest_rows:
        if r.get("dup_group"):
            groups.setdefault(r["dup_group"], []).append(
                {"path": r["path"], "reason": "kept" if r["status"] == "ok" else (r.get("reason") or "")})
    out: dict[str, list[dict]] = {}
    for members in groups.values():
        for m in members:
            out[m["path"]] = sorted((o for o in members if o["path"] != m["path"]), key=lambda o: o["path"])
    return out


def _text(s: str) -> str:
    """`s` as UTF-8 can hold it: a lone surrogate (from JSON's \\udXXX or an undecodable
    environment) becomes U+FFFD; everything else, control characters included, is kept."""
    return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


# ----------------------------------------------------------------------------- the app


def create_app(rv: Reviewer, hosts: frozenset[str] | None = None):
    """The FastAPI application around a Reviewer, answering to `hosts` (default: the
    loopback names and serve.allowed_hosts; `web.LocalOnly`)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="ToonLab review", docs_url=None, redoc_url=None, openapi_url=None)
    settings = rv.params.serve
    app.add_middleware(web.LocalOnly, hosts=hosts or web.allowed_hosts(LOOPBACK[0], settings.allowed_hosts))
    error = web.error
    max_file = int(rv.params.ingest.max_file_mb * 2**20)   # what ingest reads at most

    class Answer(Exception):
        """Raised by the lookups below: the route answers `response` (a 404) at once."""

        def __init__(self, response: JSONResponse):
            self.response = response

    @app.exception_handler(Answer)
    async def answer(request: Request, exc: Answer) -> JSONResponse:
        return exc.response

    def domain_of(domain: str) -> str:
        if domain not in rv.domains:
            raise Answer(error(404, "no_domain", f"no domain {domain!r} (reviewing {', '.join(rv.domains)})"))
        return domain

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(render_page(rv))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/faces")
    def faces(domain: str):
        d = domain_of(domain)
        try:
            return rv.faces(d)
        except ReviewError as exc:
            return error(409, "bad_review_file", str(exc))

    def face_of(domain: str, i: int) -> tuple[str, dict]:
        """(domain, row) of face `i` of the processed manifest; a 404 answer otherwise."""
        d = domain_of(domain)
        try:
            return d, rv.row(d, i)
        except KeyError:
            raise Answer(error(404, "no_face", f"no face {i}")) from None

    @app.get("/crop/{domain}/{i}")
    def crop(domain: str, i: int):
        d, r = face_of(domain, i)
        rel = r.get("crop_256") or r.get("crop_128")
        if not rel:
            return error(404, "no_crop", "this face has no aligned crop")
        data = web.read_inside(Path(rv.params.align.out_dir) / d, rel, max_file)
        if data is None:
            return error(404, "no_crop", "the crop file is missing or not a file inside align.out_dir "
                         "(re-run `toonlab align`)")
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-cache"})

    def raw_jpeg(domain: str, raw_path: str, box: Any = None, px: int = 640):
        import numpy as np
        from PIL import Image

        from toonlab.data.decode import decode_bytes, path_from_text
        from toonlab.data.params import DecodeParams
        from toonlab.faces.curate_report import _raw_thumb

        data = web.read_inside(Path(rv.params.data.raw_dir) / domain, path_from_text(raw_path), max_file)
        # Ingest's size and aspect limits are for training data, not for looking at files.
        dec = decode_bytes(data, DecodeParams(min_side=1, max_aspect=1e6)) if data else None
        if dec is None or not dec.ok or dec.image is None:
            return error(404, "no_raw", "the raw image cannot be read (missing, not an image, or not a file "
                         "inside data.raw_dir)")
        im = Image.fromarray(np.ascontiguousarray(dec.image[..., :3]))
        thumb = _raw_thumb(im, px, tuple(float(v) for v in box) if box is not None and len(box) == 4 else None)
        buf = io.BytesIO()
        thumb.save(buf, format="JPEG", quality=88)
        return Response(buf.getvalue(), media_type="image/jpeg")

    @app.get("/raw/{domain}/{i}")
    def raw(domain: str, i: int):
        d, r = face_of(domain, i)
        return raw_jpeg(d, r["raw_path"], r.get("box"))

    @app.get("/dup/{domain}/{i}/{k}")
    def dup(domain: str, i: int, k: int):
        d, _ = face_of(domain, i)
        try:
            path = rv.dup(d, i, k)
        except KeyError:
            return error(404, "no_duplicate", f"face {i} has no near-duplicate {k}")
        return raw_jpeg(d, path, None, 300)

    @app.get("/matte/{domain}/{i}")
    def matte(domain: str, i: int):
        import numpy as np

        from toonlab.util import codec

        got = crop(domain, i)
        if got.status_code != 200:
            return got
        alpha = codec.read_png(got.body)
        alpha = alpha[..., 3] if alpha.ndim == 3 and alpha.shape[2] == 4 else np.full(alpha.shape[:2], 255, np.uint8)
        return Response(codec.png_bytes(alpha), media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.post("/api/decide")
    async def decide(request: Request):
        if (request.headers.get("content-type") or "").split(";")[0].strip() != "application/json":
            return error(415, "not_json", "send the decision as application/json")
        length = request.headers.get("content-length")
        if length is not None and int(length) > _MAX_BODY:    # h11 checked that it is a number
            return error(413, "too_large", "a decision is a small JSON object")
        body = await web.read_body(request, _MAX_BODY, settings, "decision")
        if not isinstance(body, bytes):
            return body     # 408 or 413
        try:
            msg = json.loads(body)
            domain, sha, fi = str(msg["domain"]), str(msg["sha256"]).lower(), int(msg["face_index"])
            decision = str(msg.get("decision") or "")
            reason, note = str(msg.get("reason") or "")[:200], str(msg.get("note") or "")[:1000]
        except (ValueError, KeyError, TypeError):
            return error(400, "bad_request", "expected {domain, sha256, face_index, decision, reason, note}")
        if decision and decision not in DECISIONS:
            return error(400, "bad_decision", f"decision must be one of {', '.join(DECISIONS)} or empty")
        d = domain_of(domain)
        try:   # on a worker thread: the write waits for other pages' turns (the file's lock)
            return await run_in_threadpool(rv.decide, d, sha, fi, decision, reason.replace("\n", " "),
                                           note.replace("\n", " "))
        except KeyError:
            return error(404, "no_face", f"no face {fi} of {sha[:12]} in the processed manifest")
        except ReviewError as exc:
            return error(409, "bad_review_file", str(exc))
        except ValueError as exc:
            return error(422, "image_level", str(exc))

    return app


def render_page(rv: Reviewer) -> str:
    """The page (templates/review.html.j2 with assets/review.css and .js); the faces come
    from /api/faces."""
    from markupsafe import Markup

    # The package's own style sheet and script, inlined as they are: no user data in them.
    return render("review.html.j2", domains=rv.domains, css=Markup(asset("review.css")), js=Markup(asset("review.js")))


# ----------------------------------------------------------------------------- the server


def review(params: Any, domains: list[str], host: str | None = None, port: int | None = None,
           on_ready=print) -> None:
    """The `toonlab review` command: runs until interrupted."""
    web.need_server("the review page")
    host = host or params.serve.host
    port = DEFAULT_PORT if port is None else port
    rv = Reviewer(params, domains)
    for d in rv.domains:
        load_review(rv.review_path(d))  # a broken review file: the error now, not on the page
    app = create_app(rv, web.allowed_hosts(host, params.serve.allowed_hosts))
    sock = web.listen(host, port, "review", "change the review decisions")
    on_ready(f"ToonLab review of {', '.join(rv.domains)} (decisions in {params.curate.review_dir}/) on "
             f"{web.url_of(sock)}  (Ctrl+C to stop)")
    web.run(app, sock, params.serve)
