"""`toonlab serve`: a local web page that cartoonizes one uploaded photo with a trained run.

The page (GET /) lets the user pick a photo and one of the trained runs that translate
photos, and shows the original and the cartoon side by side, plus each face's aligned
crop and its translation. The same work is a JSON API:

    POST /api/cartoonize   multipart form: photo (file), run, faces (all|largest),
                           paste_back (0|1), matte (0|1)
    GET  /api/runs         the runs offered
    GET  /healthz          liveness

Uploads are checked cheapest first, before any pixel is decoded: the request size
(Content-Length, `serve.max_upload_mb`: 413), the file type sniffed from the first bytes
(`serve.formats`: 415), the declared pixel count (`serve.max_pixels`, and the ingest
rules of `decode`: 413 / 400). A photo without a face is 422. Every error is a JSON
``{"error": message, "reason": code}``; nothing a client sends stops the server.

Hostile or broken clients are bounded in time and memory. What both local pages share
(`toonlab serve`, `toonlab review`) lives in `toonlab.apps.web`:

* Requests naming another host than a loopback name, the bound address or one of
  `serve.allowed_hosts` are refused (403 ``bad_host``: DNS rebinding), and so are uploads
  a page of another origin sends (403 ``bad_origin``, from ``Origin`` / ``Sec-Fetch-Site``),
  before any byte of their body is read.
* The connection's protocol closes a connection whose request head is not complete
  within `serve.idle_timeout_s` (408 when part of a head arrived), and drains and drops
  the body of a request answered early (403, 411, 413, 503, ...) only while bytes keep
  coming and for at most `serve.upload_timeout_s`, so that the client reads the answer
  instead of a reset. Beyond `serve.max_connections` open connections uvicorn answers
  503; idle keep-alive connections close after 5 s; request heads are limited to 64 KiB.
* An accepted upload's body is read into one bytes object (at most the request limit)
  under two deadlines: no byte for `serve.idle_timeout_s`, or the whole body not there
  after `serve.upload_timeout_s` (a Content-Length larger than what is sent, a client
  trickling bytes): 408 ``upload_timeout`` and the connection is closed (`web.read_body`).

This page adds:

* At most `serve.max_concurrent_uploads` uploads are in flight (body being read, waiting
  for or in the cartoonize work); one more is answered 503 with ``Retry-After`` before
  its body is read.
* Nothing blocks the event loop: bodies are read asynchronously, and the decode, face
  detection, translation and encoding run in a worker thread, one photo at a time behind
  one lock (CPU inference and the detectors are not re-entrant), so at most one decoded
  photo exists at a time; uploads waiting for the lock hold only their bytes.

The server binds 127.0.0.1 by default (a warning is logged for any other address: the
page has no authentication). At most `serve.max_loaded` runs and `serve.max_loaded_mb`
MiB of their parameters and buffers stay in memory (least recently used dropped first; a
larger run still loads, alone, with a warning: `toonlab.apps.model_cache`).

This module holds the routes, the work behind them (`Studio`) and the command; the runs
on offer are found by `toonlab.runs.discover` and the page is `toonlab.apps.serve_page`.
"""


import asyncio
import ctypes
import functools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from toonlab.apps import web
from toonlab.apps.model_cache import ModelCache, run_bytes
from toonlab.apps.params import ServeParams
from toonlab.apps.serve_page import render_page
from toonlab.apps.web import LOOPBACK
from toonlab.errors import ToonlabError, UsageError
from toonlab.log import get_logger
from toonlab.runs.discover import RunInfo, discover_runs, run_info
from toonlab.runs.load import resolve_run
from toonlab.util import codec

log = get_logger(__name__)

_FORM_OVERHEAD = 64 * 1024    # bytes allowed on top of the photo for the other form fields
# The body of an upload refused from its headers (413, 503, ...) is drained and dropped
# (never stored) after the answer, up to this size (larger: the connection is closed), so
# that a client still sending reads the answer instead of a reset connection.
_DISCARD_MAX = 512 * 2**20
_RETRY_AFTER_S = 5            # the Retry-After of a 503 (too many uploads in flight)


# ----------------------------------------------------------------------------- runs


def select_runs(names: list[str], out_dir: str | Path) -> list[RunInfo]:
    """The runs to offer: `names` (run names, folders or checkpoint files) or, when
    empty, every trained run found under `out_dir`. UsageError when there is none."""
    if not names:
        runs = discover_runs(out_dir)
        if not runs:
            raise UsageError(f"no trained run that translates photos under {out_dir}/: train one first "
                             "(e.g. `snakemake -c2 train_cyclegan` or `toonlab train cyclegan`) "
                             "or name one with --run")
        return runs
    runs, seen = [], set()
    for name in names:
        info, why = run_info(resolve_run(name, out_dir))
        if info is None:
            raise UsageError(f"cannot serve {name!r}: {why}")
        if info.name not in seen:
            seen.add(info.name)
            runs.append(info)
    return runs


# ----------------------------------------------------------------------------- the work


class UploadError(Exception):
    """A request the server refuses: HTTP status, reason code, one-line message."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def _fit(img: np.ndarray, long_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _malloc_trim():
    """glibc's malloc_trim, or None: freed heap pages are handed back to the system after
    each photo, so that the server's RSS falls back after a large one."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):      # not glibc
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class Studio:
    """The trained runs on offer and the loaded ones, behind one lock: one photo at a time.

    The work runs on one worker thread of its own (`submit`): the decoded photos and the
    tensors of every upload are allocated by that one thread (one malloc arena, trimmed
    after each photo) and uploads waiting for their turn hold no thread."""

    def __init__(self, params, runs: list[RunInfo], device: torch.device):
        self.params = params
        self.settings: ServeParams = params.serve
        self.runs = {r.name: r for r in runs}
        self.device = device
        self._cache = ModelCache(self.settings, self._load_run, lambda name: self.runs[name].label())
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="toonlab-serve")
        self._trim = _malloc_trim()

    async def submit(self, fn, *args):
        """fn(*args) on the worker thread, awaited without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, functools.partial(fn, *args))

    @property
    def max_bytes(self) -> int:
        return int(self.settings.max_upload_mb * 1024 * 1024)

    def describe(self) -> dict[str, Any]:
        return {"runs": [{"name": r.name, "family": r.family, "step": r.step, "label": r.label()}
                         for r in self.runs.values()],
                "default": next(iter(self.runs)),
                "limits": {"max_upload_bytes": self.max_bytes, "max_pixels": self._decode_params().max_pixels,
                           "formats": list(self.settings.formats)}}

    def _decode_params(self):
        d = self.params.decode
        return d.model_copy(update={"max_pixels": min(d.max_pixels, self.settings.max_pixels)})

    def loaded_runs(self) -> dict[str, int]:
        """The runs in memory, least recently used first: name -> parameter + buffer bytes."""
        with self._lock:
            return self._cache.sizes()

    def load(self, name: str):
        """The run's Cartoonizer, loaded if needed (as an upload would)."""
        with self._lock:
            return self._cache.get(name)

    def _load_run(self, name: str):
        """(the run's Cartoonizer, its parameter + buffer bytes), for the cache. Caller holds the lock."""
        from toonlab.apps.cartoonize import Cartoonizer
        from toonlab.runs.load import read_run

        info = self.runs[name]
        try:
            inf = read_run(info.ref).inference(self.device, self.params.runtime.cpu_precision)
            car = Cartoonizer(inf, detect_params=self.params.detect, decode_params=self._decode_params(),
                              matte_params=self.params.matte, device=self.device)
        except ToonlabError as exc:
            raise UploadError(500, "run_unavailable", f"run {name} cannot be loaded: {exc}") from None
        return car, run_bytes(inf)

    def check_type(self, data: bytes) -> None:
        """415 unless the first bytes name an accepted format (nothing decoded yet)."""
        from toonlab.data.decode import decode_bytes, sniff_format

        accepted = ", ".join(self.settings.formats)
        fmt = sniff_format(data[:4096])
        if fmt is None:
            dec = decode_bytes(data[:4096], self._decode_params())
            what = {"html_not_image": "an HTML page", "not_an_image_text": "a text file"}.get(dec.reason,
                                                                                               "not a recognised image")
            raise UploadError(415, "unsupported_type", f"the upload is {what}, not a photo (accepted: {accepted})")
        if fmt not in self.settings.formats:
            raise UploadError(415, "unsupported_type", f"{fmt} files are not accepted here (accepted: {accepted})")

    def cartoonize(self, data: bytes, filename: str, run: str, faces: str, paste_back: bool,
                   matte: bool) -> dict[str, Any]:
        """One uploaded photo -> the page's JSON answer; UploadError for anything refused."""
        if run not in self.runs:
            raise UploadError(404, "unknown_run", f"no run {run!r} is served here (choose one of: "
                              f"{', '.join(self.runs)})")
        if faces not in ("all", "largest"):
            raise UploadError(400, "bad_field", f"faces must be 'all' or 'largest', not {faces!r}")
        if not data:
            raise UploadError(400, "empty_file", "the uploaded file is empty")
        if len(data) > self.max_bytes:
            raise UploadError(413, "too_large", f"the photo is {len(data) / 2**20:.1f} MB; the limit is "
                              f"{self.settings.max_upload_mb:g} MB (serve.max_upload_mb)")
        self.check_type(data)
        # Everything that holds decoded pixels runs behind the lock: uploads waiting for
        # their turn hold only their bytes, never a decoded copy.
        with self._lock:
            try:
                return self._cartoonize_locked(data, filename, run, faces, paste_back, matte)
            finally:
                if self._trim is not None:
                    self._trim(0)

    def _cartoonize_locked(self, data: bytes, filename: str, run: str, faces: str, paste_back: bool,
                           matte: bool) -> dict[str, Any]:
        from toonlab.apps.params import CartoonizeParams
        from toonlab.data.decode import decode_bytes

        t0 = time.perf_counter()
        dec = decode_bytes(data, self._decode_params(), name=filename)
        if not dec.ok:
            if dec.reason == "too_many_pixels":
                limit = self._decode_params().max_pixels
                raise UploadError(413, dec.reason, f"the photo is {dec.width} x {dec.height} = "
                                  f"{dec.width * dec.height / 1e6:.1f} megapixels; the limit is "
                                  f"{limit / 1e6:g} megapixels (serve.max_pixels)")
            raise UploadError(400, dec.reason, f"cannot use this photo: {dec.detail}")
        rgb = np.asarray(dec.image)
        flags = list(dec.flags)
        del dec
        t_decode = time.perf_counter() - t0
        car = self._cache.get(run)
        car.settings = CartoonizeParams(faces=faces, paste_back=paste_back, matte=matte)
        t1 = time.perf_counter()
        found = car.detect(rgb)
        if not found:
            raise UploadError(422, "no_face", "no face was found in this photo: try one where a face "
                              "is clearly visible and at least ~40 pixels wide")
        res = car.process(rgb, found)
        t_total = time.perf_counter() - t1
        px = self.settings.display_px
        if res.pasted is not None:
            cartoon = res.pasted
        else:  # the cartoon faces side by side
            cartoon = np.concatenate(list(res.cartoons), axis=1)
        return {
            "run": run, "family": car.inf.family, "filename": filename,
            "width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "faces": len(found),
            "paste_back": bool(paste_back), "flags": flags,
            "ms": {"decode": round(t_decode * 1000, 1), "faces": round(t_total * 1000, 1)},
            "original": codec.jpeg_uri(_fit(rgb, px), quality=92),
            "cartoon": codec.png_uri(_fit(cartoon, px), compress_level=3),
            "crops": [{"input": codec.png_uri(c, compress_level=3), "cartoon": codec.png_uri(y, compress_level=3)}
                      for c, y in zip(res.crops, res.cartoons)],
        }

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._cache.clear()


# ----------------------------------------------------------------------------- the app


def create_app(studio: Studio, hosts: frozenset[str] | None = None):
    """The FastAPI application around a Studio, answering to `hosts` (default: the
    loopback names and serve.allowed_hosts; `web.LocalOnly`)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse

    app = FastAPI(title="ToonLab", docs_url=None, redoc_url=None, openapi_url=None)
    settings = studio.settings
    app.add_middleware(web.LocalOnly, hosts=hosts or web.allowed_hosts(LOOPBACK[0], settings.allowed_hosts))
    in_flight = [0]      # uploads admitted and not yet answered (one event loop: no lock needed)
    error, closing = web.error, web.closing

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(render_page(studio))

    @app.get("/api/runs")
    def runs() -> dict[str, Any]:
        return studio.describe()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/cartoonize")
    async def cartoonize(request: Request):
        # Everything up to the cap is decided from the headers, before any body byte is
        # read; the body of a request answered here is drained and dropped by the protocol.
        length = request.headers.get("content-length")
        if length is None:
            return error(411, "length_required", "send the upload with a Content-Length header")
        try:
            n = int(length)
        except ValueError:
            return error(400, "bad_request", f"Content-Length is not a number: {length!r}")
        limit = studio.max_bytes + _FORM_OVERHEAD
        if n > limit:
            message = f"the upload is {n / 2**20:.1f} MB; the limit is {settings.max_upload_mb:g} MB (serve.max_upload_mb)"
            return closing(request, 413, "too_large", message) if n > _DISCARD_MAX else error(413, "too_large", message)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return error(400, "bad_request", "send the photo as a multipart/form-data upload "
                         "(field 'photo'), as the page's form does")
        if in_flight[0] >= settings.max_concurrent_uploads:
            return error(503, "busy", f"the server is busy with {in_flight[0]} uploads (serve.max_concurrent_uploads); "
                         f"try again in {_RETRY_AFTER_S} s", headers={"Retry-After": str(_RETRY_AFTER_S)})
        in_flight[0] += 1
        try:
            return await _admitted(request, limit)
        finally:
            in_flight[0] -= 1

    async def _admitted(request: Request, limit: int):
        body = await web.read_body(request, limit, settings)
        if isinstance(body, JSONResponse):
            return body
        box = [body]
        del body

        async def replay() -> dict[str, Any]:     # the body once, then the form parser's end
            return {"type": "http.request", "body": box.pop() if box else b"", "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
        except Exception as exc:  # noqa: BLE001 - malformed multipart bodies of every kind
            detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
            return error(400, "malformed_upload", f"the upload is not a readable multipart form ({detail})")
        box.clear()     # the parsed form holds the photo (spooled to a file beyond 1 MB); the body goes
        try:
            photo = form.get("photo")
            if photo is None or isinstance(photo, str):
                return error(400, "no_file", "no photo in the upload: send the image in the 'photo' field")
            data = await photo.read()
            fields = {k: form.get(k) for k in ("run", "faces", "paste_back", "matte")}
            if any(v is not None and not isinstance(v, str) for v in fields.values()):
                return error(400, "bad_field", "run, faces, paste_back and matte must be text fields")
            run = fields["run"] or next(iter(studio.runs))
            flag = {"1": True, "true": True, "on": True, "0": False, "false": False, "off": False}
            try:
                paste_back = flag[(fields["paste_back"] or "1").lower()]
                matte = flag[(fields["matte"] or "0").lower()]
            except KeyError:
                return error(400, "bad_field", "paste_back and matte must be 0 or 1")
            result = await studio.submit(studio.cartoonize, data, photo.filename or "upload", run,
                                         fields["faces"] or "all", paste_back, matte)
            return JSONResponse(result)
        except UploadError as exc:
            return error(exc.status, exc.reason, exc.message)
        except Exception as exc:  # noqa: BLE001 - a bug answers 500; the server keeps serving
            log.exception("serve: cartoonizing an upload failed")
            return error(500, "internal_error", f"cartoonizing failed on the server: {type(exc).__name__}: {exc}")
        finally:
            await form.close()

    return app


# ----------------------------------------------------------------------------- running


def serve(params, runs: list[str], device: torch.device, host: str | None = None, port: int | None = None,
          on_ready=print) -> None:
    """The `toonlab serve` command: runs until interrupted."""
    web.need_server("the web page")
    host = host or params.serve.host
    port = params.serve.port if port is None else port
    chosen = select_runs(runs or list(params.serve.runs), params.train.out_dir)
    studio = Studio(params, chosen, device)
    app = create_app(studio, web.allowed_hosts(host, params.serve.allowed_hosts))
    sock = web.listen(host, port, "serve", "upload photos")
    on_ready(f"ToonLab serving {len(chosen)} run(s) ({', '.join(r.name for r in chosen)}) on "
             f"{web.url_of(sock)}  (Ctrl+C to stop)")
    try:
        web.run(app, sock, params.serve)
    finally:
        studio.close()
