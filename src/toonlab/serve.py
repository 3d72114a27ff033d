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


import base64
import html
import io
import json
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
import torch
from pydantic import Field

from toonlab.errors import ToonlabError, UsageError
from toonlab.log import get_logger
from toonlab.schema import Section

log = get_logger(__name__)

UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
_FORM_OVERHEAD = 64 * 1024    # bytes allowed on top of the photo for the other form fields
# A refused upload's body is read and dropped (never stored) up to this size before the
# answer, so that a client still sending gets the 413 instead of a broken connection.
_DISCARD_MAX = 512 * 2**20


class ServeParams(Section):
    """The local web page: address, upload limits and the runs it offers."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000       # 0: any free port (the URL is printed)
    max_upload_mb: Annotated[float, Field(gt=0.0, le=1024.0)] = 15.0
    max_pixels: Annotated[int, Field(ge=1)] = 25_000_000      # the lower of this and decode.max_pixels wins
    formats: Annotated[list[Literal[UPLOAD_FORMATS]], Field(min_length=1)] = ["JPEG", "PNG", "WEBP"]  # type: ignore[valid-type]
    runs: list[str] = []          # offered runs; empty: every trained run under train.out_dir that translates photos
    max_loaded: Annotated[int, Field(ge=1, le=16)] = 2        # runs kept in memory (least recently used dropped)
    display_px: Annotated[int, Field(ge=64, le=8192)] = 1600  # long side of the images sent back to the page


# ----------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunInfo:
    """A trained run the page offers."""

    name: str                   # what the page and the API call it: "cyclegan", "ablations/x"
    run_dir: Path
    family: str
    step: int
    checkpoint: Path | None     # None: the run's latest

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


def _run_info(name: str, run_dir: Path, checkpoint: Path | None) -> tuple[RunInfo | None, str]:
    """(RunInfo, "") for a run that translates photos, else (None, why not)."""
    from toonlab.models import families
    from toonlab.train import checkpoint as ckpt

    found = ckpt.list_checkpoints(run_dir / "checkpoints")
    path = checkpoint or (found[-1][1] if found else None)
    if path is None:
        return None, f"{run_dir} has no checkpoint yet"
    try:
        family = _run_family(run_dir, path)
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint is skipped, with its reason
        return None, f"{path} cannot be read ({type(exc).__name__}: {exc})"
    fam = families().get(family)
    if fam is None:
        return None, f"{run_dir}: unknown model family {family!r}"
    if fam.inference is None or not fam.translates:
        return None, f"{name} is a {family} run: it does not translate photos"
    step = next((s for s, p in found if p == path), 0)
    if checkpoint is not None and step == 0:
        step = int(ckpt.load(checkpoint).get("step", 0))
    return RunInfo(name, run_dir, family, step, checkpoint), ""


def discover_runs(out_dir: str | Path) -> list[RunInfo]:
    """Every run under `out_dir` (one or two levels deep, e.g. cyclegan and
    ablations/cyclegan_base) with a checkpoint, whose family translates photos."""
    out_dir = Path(out_dir)
    runs = []
    for ck in sorted(out_dir.glob("*/checkpoints")) + sorted(out_dir.glob("*/*/checkpoints")):
        run_dir = ck.parent
        info, why = _run_info(run_dir.relative_to(out_dir).as_posix(), run_dir, None)
        if info is None:
            log.debug("serve: skipping %s: %s", run_dir, why)
        else:
            runs.append(info)
    return runs


def select_runs(names: list[str], out_dir: str | Path) -> list[RunInfo]:
    """The runs to offer: `names` (run names, folders or checkpoint files) or, when
    empty, every trained run found under `out_dir`. UsageError when there is none."""
    from toonlab.cartoonize import resolve_run

    if not names:
        runs = discover_runs(out_dir)
        if not runs:
            raise UsageError(f"no trained run that translates photos under {out_dir}/: train one first "
                             "(e.g. `snakemake -c2 train_cyclegan` or `toonlab train cyclegan`) "
                             "or name one with --run")
        return runs
    runs, seen = [], set()
    for name in names:
        run_dir, checkpoint = resolve_run(name, out_dir)
        info, why = _run_info(name, run_dir, checkpoint)
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


def _data_url(img: np.ndarray, fmt: Literal["PNG", "JPEG"]) -> str:
    from PIL import Image

    buf = io.BytesIO()
    kwargs = {"quality": 92} if fmt == "JPEG" else {"compress_level": 3}
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format=fmt, **kwargs)
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


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
        from toonlab.cartoonize import Cartoonizer
        from toonlab.evaluate import load_run

        if name in self._loaded:
            self._loaded.move_to_end(name)
            return self._loaded[name]
        info = self.runs[name]
        t0 = time.perf_counter()
        try:
            _, _, inf, _ = load_run(info.run_dir, self.device, info.checkpoint)
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
        from toonlab.decode import decode_bytes, sniff_format

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
        from toonlab.cartoonize import CartoonizeParams
        from toonlab.decode import decode_bytes

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
            "original": _data_url(_fit(rgb, px), "JPEG"),
            "cartoon": _data_url(_fit(cartoon, px), "PNG"),
            "crops": [{"input": _data_url(c, "PNG"), "cartoon": _data_url(y, "PNG")}
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


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f6f8;color:#222}
header{background:#2d2a4a;color:#fff;padding:14px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.8;font-size:14px}
main{max-width:1200px;margin:0 auto;padding:20px 24px}
form{background:#fff;border-radius:8px;padding:16px;display:flex;flex-wrap:wrap;gap:14px 24px;
align-items:flex-end;box-shadow:0 1px 3px rgba(0,0,0,.1)}
label{display:flex;flex-direction:column;font-size:13px;gap:4px}label.inline{flex-direction:row;align-items:center}
button{background:#5b4bdb;color:#fff;border:0;border-radius:6px;padding:9px 20px;font-size:15px;cursor:pointer}
button:disabled{background:#999;cursor:progress}
#status{margin:14px 0;min-height:20px;font-size:14px}
#error{background:#fde8e8;border:1px solid #e0a0a0;color:#8a1c1c;padding:10px 14px;border-radius:6px}
.pair{display:flex;gap:16px;flex-wrap:wrap}.pair figure{flex:1 1 360px;margin:0;background:#fff;padding:10px;
border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.1)}
.pair img{width:100%;height:auto;display:block;image-rendering:auto}
figcaption{font-size:13px;color:#555;margin-top:6px}
#crops{display:flex;flex-wrap:wrap;gap:10px;margin-top:16px}#crops div{background:#fff;padding:6px;border-radius:6px}
#crops img{width:128px;height:128px;image-rendering:pixelated}
small{color:#666}
"""

_JS = """
const form = document.getElementById('form');
const statusBox = document.getElementById('status');
const errorBox = document.getElementById('error');
const result = document.getElementById('result');
const button = form.querySelector('button');
const LIMITS = JSON.parse(document.getElementById('limits').textContent);
function showError(msg) {
  errorBox.textContent = msg; errorBox.hidden = false; statusBox.textContent = '';
}
form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  errorBox.hidden = true;
  const file = form.elements.photo.files[0];
  if (!file) { showError('Choose a photo first.'); return; }
  if (file.size > LIMITS.max_upload_bytes) {
    showError(`The photo is ${(file.size / 1048576).toFixed(1)} MB; the limit is ` +
              `${(LIMITS.max_upload_bytes / 1048576).toFixed(0)} MB.`);
    return;
  }
  const body = new FormData(form);
  body.set('paste_back', form.elements.paste_back.checked ? '1' : '0');
  body.set('matte', form.elements.matte.checked ? '1' : '0');
  button.disabled = true;
  statusBox.textContent = 'Cartoonizing ' + file.name + ' ... (the first photo of a run also loads it)';
  try {
    const resp = await fetch('api/cartoonize', {method: 'POST', body});
    let data;
    try { data = await resp.json(); } catch (e) { data = {error: 'the server answered ' + resp.status}; }
    if (!resp.ok) { showError(data.error || ('the server answered ' + resp.status)); return; }
    document.getElementById('original').src = data.original;
    document.getElementById('cartoon').src = data.cartoon;
    document.getElementById('download').href = data.cartoon;
    document.getElementById('cap-original').textContent =
      `${data.filename}: ${data.width} x ${data.height}, ${data.faces} face(s)`;
    document.getElementById('cap-cartoon').textContent =
      `${data.run} (${data.family})${data.paste_back ? ', pasted back' : ', aligned faces'}`;
    const crops = document.getElementById('crops');
    crops.replaceChildren(...data.crops.map((c, i) => {
      const d = document.createElement('div');
      for (const [src, alt] of [[c.input, 'face ' + i], [c.cartoon, 'cartoon ' + i]]) {
        const im = document.createElement('img'); im.src = src; im.alt = alt; d.appendChild(im);
      }
      return d;
    }));
    result.hidden = false;
    statusBox.textContent = `Done in ${(data.ms.decode + data.ms.faces).toFixed(0)} ms.`;
  } catch (e) {
    showError('Could not reach the ToonLab server: ' + e);
  } finally {
    button.disabled = false;
  }
});
"""


def render_page(studio: Studio) -> str:
    """The single page: upload form, error box, original | cartoon, per-face crops."""
    desc = studio.describe()
    esc = html.escape
    options = "".join(f'<option value="{esc(r["name"])}">{esc(r["label"])}</option>' for r in desc["runs"])
    formats = desc["limits"]["formats"]
    mimes = ",".join({"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp",
                      "GIF": "image/gif", "TIFF": "image/tiff"}[f] for f in formats)
    limits_json = json.dumps(desc["limits"]).replace("</", "<\\/")
    limits_text = (f"{', '.join(formats)}; up to {studio.settings.max_upload_mb:g} MB and "
                   f"{desc['limits']['max_pixels'] / 1e6:g} megapixels")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>ToonLab: cartoonize a photo</title><style>{_CSS}</style></head>
<body><header><h1>ToonLab</h1><p>Upload a photo: every face is aligned, translated by the chosen run
and pasted back. Nothing leaves this machine.</p></header>
<main>
<form id="form" method="post" action="api/cartoonize" enctype="multipart/form-data">
  <label>Photo <input type="file" id="photo" name="photo" accept="{mimes}" required>
    <small>{esc(limits_text)}</small></label>
  <label>Model <select id="run" name="run">{options}</select></label>
  <label>Faces <select id="faces" name="faces"><option value="all">all</option>
    <option value="largest">largest</option></select></label>
  <label class="inline"><input type="checkbox" id="paste_back" name="paste_back" value="1" checked>
    paste back into the photo</label>
  <label class="inline"><input type="checkbox" id="matte" name="matte" value="1">
    person only (background matte)</label>
  <button type="submit" id="submit">Cartoonize</button>
</form>
<div id="status" role="status"></div>
<div id="error" role="alert" hidden></div>
<section id="result" hidden>
  <div class="pair">
    <figure><img id="original" alt="original photo"><figcaption id="cap-original"></figcaption></figure>
    <figure><img id="cartoon" alt="cartoon"><figcaption><span id="cap-cartoon"></span>
      &middot; <a id="download" download="cartoon.png">download</a></figcaption></figure>
  </div>
  <div id="crops"></div>
</section>
</main>
<script type="application/json" id="limits">{limits_json}</script>
<script>{_JS}</script>
</body></html>
"""
