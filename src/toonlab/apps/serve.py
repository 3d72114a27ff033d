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

The server binds 127.0.0.1 by default (a warning is logged for any other address: the
page has no authentication). One photo is processed at a time (CPU inference and the
detectors are not re-entrant); at most `serve.max_loaded` runs stay in memory.
"""


import html
import json
import socket
import string
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from toonlab.apps.params import ServeParams
from toonlab.errors import ToonlabError, UsageError
from toonlab.log import get_logger
from toonlab.models import registry
from toonlab.train.runs import RunRef, resolve_run
from toonlab.util import codec

log = get_logger(__name__)

_FORM_OVERHEAD = 64 * 1024    # bytes allowed on top of the photo for the other form fields
# A refused upload's body is read and dropped (never stored) up to this size before the
# answer, so that a client still sending gets the 413 instead of a broken connection.
_DISCARD_MAX = 512 * 2**20


# ----------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunInfo:
    """A trained run the page offers."""

    ref: RunRef
    family: str
    step: int

    @property
    def name(self) -> str:          # what the page and the API call it: "cyclegan", "ablations/x"
        return self.ref.name

    def label(self) -> str:
        return f"{self.name} ({self.family}, step {self.step})"


def _run_family(run_dir: Path, checkpoint: Path) -> str:
    """The family of a run: from its summary.json when it has one, else from the checkpoint."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            fam = json.loads(summary.read_text(encoding="utf-8")).get("family")
            if isinstance(fam, str) and fam:
                return fam
        except (OSError, ValueError, AttributeError):
            pass
    from toonlab.train import checkpoint as ckpt

    return str(ckpt.load(checkpoint).get("family", ""))


def _run_info(ref: RunRef) -> tuple[RunInfo | None, str]:
    """(RunInfo, "") for a run that translates photos, else (None, why not)."""
    from toonlab.train import checkpoint as ckpt

    try:
        path = ref.checkpoint_path()
    except UsageError:
        return None, f"{ref.run_dir} has no checkpoint yet"
    try:
        family = _run_family(ref.run_dir, path)
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint is skipped, with its reason
        return None, f"{path} cannot be read ({type(exc).__name__}: {exc})"
    fam = registry.families().get(family)
    if fam is None:
        return None, f"{ref.run_dir}: unknown model family {family!r}"
    if not fam.translates:
        return None, f"{ref.name} is a {family} run: it does not translate photos"
    found = ckpt.list_checkpoints(ref.run_dir / "checkpoints")
    step = next((s for s, p in found if p == path), 0)
    if ref.checkpoint is not None and step == 0:
        step = int(ckpt.load(path).get("step", 0))
    return RunInfo(ref, family, step), ""


def discover_runs(out_dir: str | Path) -> list[RunInfo]:
    """Every run under `out_dir` (one or two levels deep, e.g. cyclegan and
    ablations/cyclegan_base) with a checkpoint, whose family translates photos."""
    out_dir = Path(out_dir)
    runs = []
    for ck in sorted(out_dir.glob("*/checkpoints")) + sorted(out_dir.glob("*/*/checkpoints")):
        info, why = _run_info(resolve_run(ck.parent, out_dir))
        if info is None:
            log.debug("serve: skipping %s: %s", ck.parent, why)
        else:
            runs.append(info)
    return runs


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
        info, why = _run_info(resolve_run(name, out_dir))
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


class Studio:
    """The trained runs on offer and the loaded ones, behind one lock: one photo at a time."""

    def __init__(self, params, runs: list[RunInfo], device: torch.device):
        self.params = params
        self.settings: ServeParams = params.serve
        self.runs = {r.name: r for r in runs}
        self.device = device
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

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

    def _cartoonizer(self, name: str):
        """The loaded run (least recently used one dropped beyond max_loaded). Caller holds the lock."""
        from toonlab.apps.cartoonize import Cartoonizer
        from toonlab.train.runs import read_run

        if name in self._loaded:
            self._loaded.move_to_end(name)
            return self._loaded[name]
        info = self.runs[name]
        t0 = time.perf_counter()
        try:
            inf = read_run(info.ref).inference(self.device)
            car = Cartoonizer(inf, detect_params=self.params.detect, decode_params=self._decode_params(),
                              matte_params=self.params.matte, device=self.device)
        except ToonlabError as exc:
            raise UploadError(500, "run_unavailable", f"run {name} cannot be loaded: {exc}") from None
        self._loaded[name] = car
        while len(self._loaded) > self.settings.max_loaded:
            _, old = self._loaded.popitem(last=False)
            old.close()
        log.info("serve: loaded %s in %.1f s", info.label(), time.perf_counter() - t0)
        return car

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
        from toonlab.apps.params import CartoonizeParams
        from toonlab.data.decode import decode_bytes

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
        t_decode = time.perf_counter() - t0
        with self._lock:
            car = self._cartoonizer(run)
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
            "paste_back": bool(paste_back), "flags": list(dec.flags),
            "ms": {"decode": round(t_decode * 1000, 1), "faces": round(t_total * 1000, 1)},
            "original": codec.jpeg_uri(_fit(rgb, px), quality=92),
            "cartoon": codec.png_uri(_fit(cartoon, px), compress_level=3),
            "crops": [{"input": codec.png_uri(c, compress_level=3), "cartoon": codec.png_uri(y, compress_level=3)}
                      for c, y in zip(res.crops, res.cartoons)],
        }

    def close(self) -> None:
        with self._lock:
            for car in self._loaded.values():
                car.close()
            self._loaded.clear()


# ----------------------------------------------------------------------------- the app


def create_app(studio: Studio):
    """The FastAPI application around a Studio."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="ToonLab", docs_url=None, redoc_url=None, openapi_url=None)

    def error(status: int, reason: str, message: str) -> JSONResponse:
        return JSONResponse({"error": message, "reason": reason}, status_code=status)

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
        length = request.headers.get("content-length")
        if length is None:
            return error(411, "length_required", "send the upload with a Content-Length header")
        try:
            n = int(length)
        except ValueError:
            return error(400, "bad_request", f"Content-Length is not a number: {length!r}")
        if n > studio.max_bytes + _FORM_OVERHEAD:
            if n <= _DISCARD_MAX:
                async for _ in request.stream():
                    pass
            return error(413, "too_large", f"the upload is {n / 2**20:.1f} MB; the limit is "
                         f"{studio.settings.max_upload_mb:g} MB (serve.max_upload_mb)")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return error(400, "bad_request", "send the photo as a multipart/form-data upload "
                         "(field 'photo'), as the page's form does")
        try:
            form = await request.form(max_files=1, max_fields=16)
        except Exception as exc:  # noqa: BLE001 - malformed multipart bodies of every kind
            detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
            return error(400, "malformed_upload", f"the upload is not a readable multipart form ({detail})")
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
            result = await run_in_threadpool(studio.cartoonize, data, photo.filename or "upload", run,
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


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"cannot serve on {host!r}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        hint = " (another program uses it: pick another with --port, or --port 0 for any free one)" \
            if exc.errno in (98, 48) else ""
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(params, runs: list[str], device: torch.device, host: str | None = None, port: int | None = None,
          on_ready=print) -> None:
    """The `toonlab serve` command: runs until interrupted."""
    try:
        import uvicorn
    except ImportError as exc:
        raise ToonlabError(f"the web page needs FastAPI and uvicorn ({exc}); install them with "
                           "`pip install fastapi uvicorn python-multipart` (make install does)") from None
    host = host or params.serve.host
    port = params.serve.port if port is None else port
    chosen = select_runs(runs or list(params.serve.runs), params.train.out_dir)
    studio = Studio(params, chosen, device)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serve: listening on %s: anyone who can reach this address can upload photos "
                    "(the page has no authentication)", host)
    sock = bind(host, port)
    config = uvicorn.Config(create_app(studio), log_level="warning", access_log=False, timeout_keep_alive=5)
    server = uvicorn.Server(config)
    on_ready(f"ToonLab serving {len(chosen)} run(s) ({', '.join(r.name for r in chosen)}) on "
             f"{url_of(sock)}  (Ctrl+C to stop)")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        studio.close()


# ----------------------------------------------------------------------------- the page


def render_page(studio: Studio) -> str:
    """The single page (assets/serve.html, .css, .js): upload form, error box, original |
    cartoon, per-face crops."""
    desc = studio.describe()
    esc = html.escape
    options = "".join(f'<option value="{esc(r["name"])}">{esc(r["label"])}</option>' for r in desc["runs"])
    formats = desc["limits"]["formats"]
    mimes = ",".join({"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp",
                      "GIF": "image/gif", "TIFF": "image/tiff"}[f] for f in formats)
    limits_text = (f"{', '.join(formats)}; up to {studio.settings.max_upload_mb:g} MB and "
                   f"{desc['limits']['max_pixels'] / 1e6:g} megapixels")
    return string.Template(_asset("serve.html")).substitute(
        css=_asset("serve.css"), js=_asset("serve.js"), mimes=mimes, limits_text=esc(limits_text), options=options,
        limits_json=json.dumps(desc["limits"]).replace("</", "<\\/"))


def _asset(name: str) -> str:
    return resources.files("toonlab.apps").joinpath("assets", name).read_text(encoding="utf-8")
