"""Where ToonLab finds its optional pretrained models, and how it fetches a missing one.

Each file lives in the standard cache folder of the library that owns it (torch.hub's
checkpoints, ~/.insightface/models, ~/.u2net, ToonLab's own ~/.cache/toonlab), so a copy
the owning library already downloaded is used as is, and a copy ToonLab downloads serves
that library too. `toonlab doctor` prints the table; stages call `require(name)`.

`require(name)` fetches a missing file when `runtime.fetch_weights` is `auto` (the
default; set for the process by `configure`, overridden by TOONLAB_FETCH_WEIGHTS=auto|never,
which subprocess stages and the tests use). A fetch that fails for any reason (offline,
refused, 404, wrong hash) ends in the same MissingWeightsError as without fetching: the
file, the folder, the offline alternative, plus one clause saying why the fetch failed.
`toonlab weights fetch NAME|all` fetches explicitly, whatever the setting.

A fetch (`fetch`):

* downloads from the URL the owning library uses, or from `$TOONLAB_WEIGHTS_MIRROR/<file>`
  (a base URL: a mirror behind a firewall, or the tests' loopback server);
* goes through requests, which honours HTTP_PROXY / HTTPS_PROXY / NO_PROXY (and their
  lower-case forms) the way curl does; connecting times out after CONNECT_TIMEOUT_S, so an
  offline machine fails fast, and a stalled transfer after READ_TIMEOUT_S;
* writes to `<file>.part` beside the destination and resumes a partial one with a Range
  request (a server answering 200 to it is read from the start again); a body cut off
  mid-way is resumed at once, up to RESUME_ATTEMPTS times, and by the next run after that;
* checks the hash its owner pins (the sha256 prefix in torchvision's and pytorch-fid's file
  names, which torch.hub checks; rembg's md5), deleting the download on a mismatch so
  nothing is left behind; where no hash is published it checks the file format instead
  (an ONNX or torch file of at least `min_bytes`; a zip whose CRCs hold);
* moves the file into place with one atomic rename (an archive: unpacked into a temporary
  sibling folder, renamed into place), under a lock on the folder so that two processes
  fetching at once (Snakemake jobs) do not write the same `.part`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from toonlab.errors import MissingWeightsError, ToonlabError, UsageError
from toonlab.log import bar_wanted, get_logger, lines_wanted
from toonlab.util.fileio import CHUNK, atomic_dir, file_digest

log = get_logger(__name__)

MIRROR_ENV = "TOONLAB_WEIGHTS_MIRROR"
FETCH_ENV = "TOONLAB_FETCH_WEIGHTS"
FETCH_MODES = ("auto", "never")
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
RESUME_ATTEMPTS = 3
ONNX_MAGIC = b"\x08"  # an ONNX ModelProto starts with field 1 (ir_version, a varint): tag byte 0x08
TORCH_MAGICS = (b"PK\x03\x04", b"\x80")  # torch.save: a zip archive, or (legacy format) a pickle


def torch_hub_dir() -> Path:
    """torch.hub's checkpoint folder: $TORCH_HOME/hub/checkpoints (default ~/.cache/torch)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(home) / "hub" / "checkpoints"


def insightface_dir() -> Path:
    """insightface's model root: $INSIGHTFACE_HOME or ~/.insightface, models under models/<pack>."""
    return Path(os.environ.get("INSIGHTFACE_HOME") or os.path.expanduser("~/.insightface")) / "models"


def rembg_dir() -> Path:
    """rembg's model folder: $U2NET_HOME or ~/.u2net."""
    return Path(os.environ.get("U2NET_HOME") or os.path.expanduser("~/.u2net"))


def toonlab_weights_dir() -> Path:
    """ToonLab's own folder for weights no library owns: $TOONLAB_WEIGHTS or ~/.cache/toonlab."""
    return Path(os.environ.get("TOONLAB_WEIGHTS") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "toonlab"))


class FetchError(ToonlabError):
    """A pretrained file could not be fetched (no network, refused, HTTP error, wrong hash,
    bad archive, no direct download). The message is one line for people."""


@dataclass(frozen=True)
class WeightFile:
    name: str            # key used in params and messages
    purpose: str
    files: tuple[str, ...]  # every file that must be present (relative to the folder)
    folder: str          # which resolver above
    alternative: str     # what to do without it
    url: str | None = None  # the owning library's download URL; None: no direct, pinned link exists
    digest: str | None = None  # "sha256:<hex prefix>" or "md5:<hex>" as the owner pins it; None: none published
    pinned_by: str = ""  # who pins `digest` (or why there is none), for doctor
    min_bytes: int = 0   # files without a digest: the least size a real one has
    manual: str = ""     # where to get it by hand when `url` is None

    def directory(self) -> Path:
        return {"torch": torch_hub_dir, "insightface": insightface_dir, "rembg": rembg_dir,
                "toonlab": toonlab_weights_dir}[self.folder]()

    def missing(self) -> list[Path]:
        d = self.directory()
        return [d / f for f in self.files if not (d / f).is_file()]

    def available(self) -> bool:
        return not self.missing()

    @property
    def download_name(self) -> str:
        """The file fetched: the URL's last part (an archive for insightface packs), or the file itself."""
        return self.url.rsplit("/", 1)[-1] if self.url else self.files[0]

    @property
    def archive(self) -> bool:
        return self.download_name.endswith(".zip")

    def source(self) -> str | None:
        """Where a fetch reads from: the mirror when TOONLAB_WEIGHTS_MIRROR is set, else `url`."""
        mirror = os.environ.get(MIRROR_ENV, "").strip()
        if mirror:
            return f"{mirror.rstrip('/')}/{self.download_name}"
        return self.url


WEIGHTS: dict[str, WeightFile] = {w.name: w for w in (
    # URL and hash: pytorch/vision torchvision/models/vgg.py (VGG16_Weights.IMAGENET1K_V1); torch.hub checks the
    # sha256 prefix in the file name (torch/hub.py HASH_REGEX, check_hash=True in torchvision's get_state_dict).
    WeightFile("vgg16", "CycleGAN perceptual loss (torchvision ImageNet VGG16)",
               ("vgg16-397923af.pth",), "torch",
               "set cyclegan perceptual weight to 0, or `perceptual.weights: random` for smoke tests only",
               url="https://download.pytorch.org/models/vgg16-397923af.pth", digest="sha256:397923af",
               pinned_by="torchvision (sha256 prefix in the file name)"),
    # URL and hash: pytorch/vision torchvision/models/vgg.py (VGG19_Weights.IMAGENET1K_V1), as for vgg16.
    WeightFile("vgg19", "White-box content/structure losses (torchvision ImageNet VGG19)",
               ("vgg19-dcbb9e9d.pth",), "torch", "none: White-box training needs VGG19",
               url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", digest="sha256:dcbb9e9d",
               pinned_by="torchvision (sha256 prefix in the file name)"),
    # URL: mseitzer/pytorch-fid src/pytorch_fid/inception.py (FID_WEIGHTS_URL); hash: the sha256 prefix in the
    # file name, torch.hub's convention (pytorch-fid itself loads it with check_hash off; no full hash published).
    WeightFile("inception_fid", "FID/KID (pytorch-fid Inception-v3 weights)",
               ("pt_inception-2015-12-05-6726825d.pth",), "torch",
               "FID/KID are reported as unavailable with this reason",
               url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth",
               digest="sha256:6726825d", pinned_by="pytorch-fid (sha256 prefix in the file name)"),
    # URL: deepinsight/insightface python-package/insightface/utils/storage.py of insightface 2.1 (the pinned
    # version: MODEL_ZOO_RELEASE_DOWNLOAD_URL + "buffalo_l.zip"; 0.7.x used releases/download/v0.7/). insightface
    # pins no hash for packs (download_file is called without sha1_hash), so the zip's CRCs and the three .onnx
    # files (ONNX header, at least min_bytes each) are what is checked.
    WeightFile("buffalo_l", "insightface SCRFD detection, 106-point landmarks, ArcFace identity",
               ("buffalo_l/det_10g.onnx", "buffalo_l/2d106det.onnx", "buffalo_l/w600k_r50.onnx"),
               "insightface", "face backend `mediapipe` (bundled, offline); identity metrics unavailable",
               url="https://github.com/deepinsight/insightface/releases/download/model-zoo/buffalo_l.zip",
               pinned_by="no hash published by insightface: zip CRCs and ONNX files checked", min_bytes=1 << 20),
    # URL and md5: danielgatis/rembg rembg/sessions/u2net_human_seg.py (download_models, pooch.retrieve).
    WeightFile("u2net_human_seg", "rembg background removal for photos",
               ("u2net_human_seg.onnx",), "rembg", "matte backend `mediapipe` (selfie segmentation, bundled)",
               url="https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net_human_seg.onnx",
               digest="md5:c09ddc2e0104f800e3e1bb4652583d1f", pinned_by="rembg (md5 in its source)"),
    # URL and md5: danielgatis/rembg rembg/sessions/dis_anime.py (download_models, pooch.retrieve).
    WeightFile("isnet_anime", "rembg background removal for anime",
               ("isnet-anime.onnx",), "rembg", "matte backend `floodfill` (flat backgrounds, lower quality)",
               url="https://github.com/danielgatis/rembg/releases/download/v0.0.0/isnet-anime.onnx",
               digest="md5:6f184e756bb3bd901c8849220a83e38e", pinned_by="rembg (md5 in its source)"),
    # minivision-ai/photo2cartoon README_EN.md: model_mobilefacenet.pth comes only in a Google Drive / Baidu Cloud
    # folder (no direct link, no hash), so it is fetched only from a mirror, checked as a torch file.
    WeightFile("mobilefacenet", "Soft-AdaLIN face-identity loss (MobileFaceNet, 512-d, photo2cartoon's "
               "model_mobilefacenet.pth)", ("model_mobilefacenet.pth",), "toonlab", "set ugatit.loss.faceid_weight: 0",
               pinned_by="no hash published by photo2cartoon: torch file format checked", min_bytes=1 << 20,
               manual="no direct download: get model_mobilefacenet.pth from photo2cartoon's Google Drive "
                      "(https://drive.google.com/open?id=1lsQS8hOCquMFKJFhK_z-n03ixWGkjT2P) or Baidu Cloud "
                      "(https://pan.baidu.com/s/1MsT3-He3UGipKhUi4OcCJw, code y2ch) folder, see "
                      "https://github.com/minivision-ai/photo2cartoon#download"),
)}


# ----------------------------------------------------------------------------- the fetch setting

_configured: str = "auto"


def configure(fetch_weights: str) -> None:
    """Set this process's `runtime.fetch_weights` (the CLI calls it once params are loaded;
    TOONLAB_FETCH_WEIGHTS still wins, so a test or a parent process can pin it)."""
    if fetch_weights not in FETCH_MODES:
        raise UsageError(f"runtime.fetch_weights must be one of {', '.join(FETCH_MODES)}, not {fetch_weights!r}")
    global _configured
    _configured = fetch_weights


def fetch_mode() -> str:
    """auto | never: TOONLAB_FETCH_WEIGHTS if set, else what `configure` was given (default auto)."""
    env = os.environ.get(FETCH_ENV, "").strip().lower()
    if env:
        if env not in FETCH_MODES:
            raise UsageError(f"{FETCH_ENV} must be one of {', '.join(FETCH_MODES)}, not {env!r}")
        return env
    return _configured


# ----------------------------------------------------------------------------- require


def _missing_message(w: WeightFile, missing: list[Path], why: str) -> str:
    files = ", ".join(p.name for p in missing)
    return (f"{w.purpose}: missing {files} in {w.directory()} (searched there; {why}). "
            f"Copy the file(s) to that folder, or set the folder's environment variable. "
            f"Offline alternative: {w.alternative}.")


def require(name: str) -> Path:
    """Return the folder holding `name`'s files, fetching them first when the setting is auto;
    otherwise raise a message that says what is missing, where, why it was not fetched and how
    to fix it."""
    w = WEIGHTS[name]
    missing = w.missing()
    if not missing:
        return w.directory()
    if fetch_mode() == "never":
        why = (f"nothing is downloaded with runtime.fetch_weights: never; `toonlab weights fetch {name}` "
               f"fetches it")
    elif w.source() is None:
        why = f"{w.manual}; or set {MIRROR_ENV} to a mirror that has {w.download_name}"
    else:
        try:
            return fetch(name)
        except FetchError as exc:
            why = (f"fetching it failed: {exc}; run `toonlab weights fetch {name}` where the network answers, "
                   f"or set {MIRROR_ENV} to a mirror's base URL")
        missing = w.missing()
    raise MissingWeightsError(_missing_message(w, missing, why))


# ----------------------------------------------------------------------------- fetch


def fetch(name: str) -> Path:
    """Make `name`'s files present (download, verify, move into place) and return their folder.

    Already present: nothing is fetched. Raises FetchError (one line) on any failure, with
    nothing left behind but a resumable `.part` of a cut-off transfer."""
    w = WEIGHTS[name]
    if w.available():
        return w.directory()
    url = w.source()
    if url is None:
        raise FetchError(f"{w.manual}; put it in {w.directory()} (or set {MIRROR_ENV} to a mirror that has "
                         f"{w.download_name})")
    if not url.lower().startswith(("http://", "https://")):
        raise FetchError(f"{url}: only http:// and https:// URLs can be fetched (check {MIRROR_ENV})")
    folder = w.directory()
    created = [d for d in (folder, *folder.parents) if not d.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create {folder}: {exc.strerror or exc}") from None
    try:
        with _folder_lock(folder):
            if w.available():  # another process fetched it while this one waited
                return folder
            part = folder / f"{w.download_name}.part"
            log.info("%s: fetching %s into %s", w.name, url, folder)
            _download(url, part, w.name)
            try:
                _verify(w, part)
                if w.archive:
                    _unpack(w, part, folder)
                    part.unlink()
                else:
                    os.replace(part, folder / w.files[0])
            except FetchError:
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()
                raise
    except FetchError:
        for d in created:  # a failed first fetch leaves no empty cache folders behind either
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    log.info("%s: verified (%s) and in place in %s", w.name, w.digest or w.pinned_by, folder)
    return folder


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the destination folder (flock; none where fcntl is missing), so that
    concurrent fetches into one folder take turns instead of writing the same `.part`."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _why(exc: BaseException) -> str:
    """A short, one-line reason for a requests exception (its own text nests three wrappers)."""
    import requests
    import urllib3

    text = str(exc)
    if isinstance(exc, _CutOff):
        return text
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)):
        return "connection broken mid-transfer"
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return f"the server sent nothing for {READ_TIMEOUT_S:g} s"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"no answer within {CONNECT_TIMEOUT_S:g} s (offline or blocked?)"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"the server sent nothing for {READ_TIMEOUT_S:g} s"
    if isinstance(exc, requests.exceptions.ProxyError):
        return f"the proxy refused or failed ({_errno_text(text) or type(exc).__name__})"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed (a proxy or firewall intercepting HTTPS?)"
    if "NameResolutionError" in text or "Name or service not known" in text or "getaddrinfo" in text:
        return "host name not resolved (offline?)"
    return _errno_text(text) or f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _errno_text(text: str) -> str:
    m = re.search(r"\[Errno (-?\d+)\] ([^'\"\)\]]+)", text)
    return m.group(2).strip().lower() if m else ""


def _download(url: str, part: Path, label: str) -> None:
    """Fetch `url` into `part`, resuming from its current size; retry a cut-off body."""
    import requests
    import urllib3

    with requests.Session() as session:  # trust_env: *_PROXY / NO_PROXY, as curl reads them
        session.headers["User-Agent"] = f"toonlab/{_package_version('toonlab') or 'dev'}"
        for attempt in range(1, RESUME_ATTEMPTS + 1):
            before = part.stat().st_size if part.exists() else 0
            try:
                _transfer(session, url, part, label)
                return
            except FetchError:
                raise
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, _CutOff) as exc:
                now = part.stat().st_size if part.exists() else 0
                if now > before and attempt < RESUME_ATTEMPTS:  # bytes arrived, then the body was cut off
                    log.warning("%s: transfer interrupted at %d bytes (%s); resuming", label, now, _why(exc))
                    continue
                where = f" after {now} bytes (kept in {part.name}: the next fetch resumes)" if now else ""
                raise FetchError(f"{url}: {_why(exc)}{where}") from None
            except OSError as exc:  # the destination: disk full, permissions
                raise FetchError(f"cannot write {part}: {exc.strerror or exc}") from None


def _transfer(session: Any, url: str, part: Path, label: str) -> None:
    """One GET: a Range request from the `.part`'s size when there is one, 206 appends, 200 restarts."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}  # byte ranges of the file itself, never of a gzip stream
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=headers, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)) as r:
        if r.status_code == 416 and offset:
            # Nothing past the end: the .part is complete already (or longer than the file); the hash decides.
            log.info("%s: %s already holds the whole file", label, part.name)
            return
        if r.status_code == 206 and offset and _range_start(r.headers.get("Content-Range")) == offset:
            mode = "ab"
        elif r.status_code == 200:
            if offset:
                log.info("%s: the server ignored the resume request; downloading from the start", label)
            mode, offset = "wb", 0
        elif r.status_code == 206:  # a range other than the one asked for: start again next time
            part.unlink(missing_ok=True)
            raise FetchError(f"{url}: answered the resume request with {r.headers.get('Content-Range')!r} "
                             f"instead of bytes {offset}-; the partial download was deleted, fetch again")
        else:
            raise FetchError(f"{url}: HTTP {r.status_code} {r.reason or ''}".rstrip())
        length = r.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        if offset:
            log.info("%s: resuming %s at %d bytes", label, part.name, offset)
        n = offset
        with open(part, mode) as fh, _ByteProgress(f"fetch {label}", total, offset) as bar:
            # read1: whatever has arrived, so a connection cut mid-way loses no received byte (iter_content
            # drops the partly filled chunk it was reading) and the resume starts exactly where it broke.
            while block := r.raw.read1(CHUNK):
                fh.write(block)
                n += len(block)
                bar.update(len(block))
            fh.flush()
            os.fsync(fh.fileno())
        if total is not None and n < total:
            raise _CutOff(f"connection closed at {n} of {total} bytes")


class _CutOff(Exception):
    """The body ended before its Content-Length: resumable."""


def _range_start(content_range: str | None) -> int | None:
    m = re.match(r"bytes (\d+)-", content_range or "")
    return int(m.group(1)) if m else None


class _ByteProgress:
    """Download progress on stderr: a tqdm bar on a terminal (TOONLAB_PROGRESS=1), else an
    INFO line every tenth of the file or TOONLAB_PROGRESS_SECONDS (30 s); none with
    TOONLAB_PROGRESS=none. The same rules as `toonlab.log.progress`, counted in bytes."""

    def __init__(self, desc: str, total: int | None, initial: int):
        self.desc, self.total, self.n = desc, total, initial
        self.bar = None
        self.lines = False
        if bar_wanted():
            from tqdm.auto import tqdm

            self.bar = tqdm(desc=desc, total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                            dynamic_ncols=True, file=sys.stderr)
        elif lines_wanted():
            self.lines = True
            self.seconds = float(os.environ.get("TOONLAB_PROGRESS_SECONDS", 30.0))
            self.step = max(1, total // 10) if total else 16 * CHUNK
            self.t0 = self.last = time.monotonic()
            self.start = self.shown = initial

    def __enter__(self) -> "_ByteProgress":
        return self

    def update(self, k: int) -> None:
        self.n += k
        if self.bar is not None:
            self.bar.update(k)
        elif self.lines:
            now = time.monotonic()
            if self.n - self.shown >= self.step or now - self.last >= self.seconds:
                self._line(now)

    def _line(self, now: float) -> None:
        rate = (self.n - self.start) / max(now - self.t0, 1e-9) / 2**20
        of = f" of {self.total / 2**20:.1f} MiB ({100 * self.n // max(1, self.total)}%)" if self.total else ""
        log.info("%s: %.1f MiB%s, %.3g MiB/s", self.desc, self.n / 2**20, of, rate)
        self.shown, self.last = self.n, now

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.lines and self.n != self.shown:
            self._line(time.monotonic())


# ----------------------------------------------------------------------------- verify and unpack


def _verify(w: WeightFile, part: Path) -> None:
    """The pinned hash when there is one (a sha256 prefix matches the digest's start, as
    torch.hub checks it); else the format: a zip's CRCs (its members are checked when
    unpacked), an ONNX / torch file of at least `min_bytes`."""
    if w.digest:
        algorithm, expected = w.digest.split(":", 1)
        actual = file_digest(part, algorithm)
        if not actual.startswith(expected.lower()):
            raise FetchError(f"{w.download_name}: {algorithm} mismatch (expected {expected}, got {actual}); "
                             f"the download was deleted")
        if not w.archive:
            return
    if w.archive:
        try:
            with zipfile.ZipFile(part) as zf:
                bad = zf.testzip()
        except (zipfile.BadZipFile, OSError) as exc:
            raise FetchError(f"{w.download_name}: not a valid zip archive ({exc}); the download was deleted") from None
        if bad is not None:
            raise FetchError(f"{w.download_name}: corrupt member {bad} (CRC mismatch); the download was deleted")
        return
    _check_format(part, w.files[0], w.min_bytes, w.download_name)


def _check_format(path: Path, name: str, min_bytes: int, label: str) -> None:
    size = path.stat().st_size
    if size < max(1, min_bytes):
        raise FetchError(f"{label}: {name} has {size} bytes, a real one has at least {min_bytes}; "
                         f"the download was deleted")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if name.endswith(".onnx") and not head.startswith(ONNX_MAGIC):
        raise FetchError(f"{label}: {name} is not an ONNX model; the download was deleted")
    if name.endswith((".pth", ".pt")) and not head.startswith(TORCH_MAGICS):
        raise FetchError(f"{label}: {name} is not a torch file; the download was deleted")


def _unpack(w: WeightFile, archive: Path, folder: Path) -> None:
    """Unpack an insightface pack into <folder>/<pack> through a temporary sibling folder
    renamed into place. The zip's files sit at its top (buffalo_l) or under a folder named
    after the pack (antelopev2); either way they land in <pack>/ directly. Members with
    absolute paths or `..` are refused."""
    pack = PurePosixPath(w.files[0]).parts[0]
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        for m in members:
            p = PurePosixPath(m.filename)
            if p.is_absolute() or ".." in p.parts or "\\" in m.filename:
                raise FetchError(f"{w.download_name}: unsafe member path {m.filename!r}; the download was deleted")
        prefix = f"{pack}/" if members and all(m.filename.startswith(f"{pack}/") for m in members) else ""
        try:
            with atomic_dir(folder / pack) as tmp:
                for m in members:
                    dest = tmp / m.filename[len(prefix):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(m) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
                for f in w.files:
                    inner = tmp / PurePosixPath(f).relative_to(pack)
                    if not inner.is_file():
                        raise FetchError(f"{w.download_name}: has no {inner.name}; the download was deleted")
                    _check_format(inner, inner.name, w.min_bytes, w.download_name)
        except OSError as exc:
            raise FetchError(f"cannot unpack {w.download_name} into {folder / pack}: {exc.strerror or exc}") from None


# ----------------------------------------------------------------------------- doctor


def _package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# Backends whose models ship inside the wheel (work offline).
BUNDLED = (
    ("mediapipe", "mediapipe", "photo face detection (BlazeFace), 478-point face mesh, selfie segmentation"),
    ("animeface", "animeface", "anime face detection with eyes, nose, mouth, chin"),
    ("rembg", "rembg", "background removal runtime (its models are listed above)"),
    ("insightface", "insightface", "face analysis runtime (its models are listed above)"),
    ("onnxruntime", "onnxruntime", "ONNX inference"),
    ("torch", "torch", "training and inference"),
    ("torchvision", "torchvision", "model zoo architectures"),
)


def weights_table() -> list[str]:
    """The pretrained files: present or missing, where looked for, where a fetch reads from, what is checked."""
    try:
        mode = fetch_mode()
    except UsageError as exc:
        mode = f"? ({exc})"
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    lines = [f"Pretrained model files (looked up where their libraries keep them; fetched when missing: "
             f"runtime.fetch_weights {mode}; `toonlab weights fetch NAME|all`"
             + (f"; mirror {mirror}" if mirror else "") + "):"]
    for w in WEIGHTS.values():
        missing = w.missing()
        state = "ok     " if not missing else "MISSING"
        lines.append(f"  [{state}] {w.name:16s} {w.purpose}")
        lines.append(f"            looked in {w.directory()} for {', '.join(w.files)}")
        source = w.source()
        if source is None:
            lines.append(f"            fetch: {w.manual}")
        else:
            lines.append(f"            fetch: {source}" + (" (mirror)" if mirror else ""))
        check = f"{w.digest} pinned by {w.pinned_by}" if w.digest else w.pinned_by
        lines.append(f"            check: {check}")
        if missing:
            lines.append(f"            without it: {w.alternative}")
    return lines


def doctor_report() -> str:
    lines = weights_table()
    lines.append("Offline backends and runtimes (models bundled in the wheel where noted):")
    for module, dist, purpose in BUNDLED:
        version = _package_version(dist)
        found = importlib.util.find_spec(module) is not None
        state = f"ok {version}" if (found and version) else "not installed"
        lines.append(f"  [{state:>14s}] {module:12s} {purpose}")
    try:
        import torch

        cuda = torch.cuda.is_available()
        lines.append(f"Device: {'CUDA ' + torch.cuda.get_device_name(0) if cuda else 'CPU only'} "
                     f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
    except ImportError:
        lines.append("Device: torch not installed")
    return "\n".join(lines)
