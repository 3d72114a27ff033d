"""`toonlab cartoonize`: any photo to cartoon portraits with a trained translation run.

Per image: safe decode (the ingest rules) -> face detection (the pipeline's photo
backend) -> per face, the similarity alignment onto the 256 px template of the face
pipeline, resized to the model's resolution -> translation -> either the aligned
cartoon crop, or (paste-back) the cartoon warped back into the photo with the inverse
similarity and blended through a feathered mask: the warped crop region eroded, then
Gaussian-blurred (the usual face-swap / GFPGAN-style paste-back), optionally times a
background matte. Pixels outside every face's mask keep their input bytes.

One bad file never stops a batch: each failure is recorded with its reason (the decode
reason codes, `no_face`, `error`) in `<out>/summary.json`. Paths there are
`toonlab.data.decode.path_text` (lossless for any file name, even invalid UTF-8); output
names replace a name's undecodable bytes with `_`. An `--out` that is not a folder, or
cannot be created, is a usage error before any work.
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from toonlab.apps.params import CartoonizeParams
from toonlab.errors import ToonlabError, UsageError
from toonlab.faces.align import OUT_PX, align_face
from toonlab.log import get_logger, progress
from toonlab.util import codec, fileio

log = get_logger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


@dataclass
class ImageResult:
    """The faces of one photo, translated."""

    crops: np.ndarray            # N x px x px x 3 uint8 aligned input crops
    cartoons: np.ndarray         # N x px x px x 3 uint8 translations
    matrices: list[np.ndarray]   # source -> 256 px template, one per face
    alpha: np.ndarray | None = None                 # the photo's matte (HxW float) with --matte
    pasted: np.ndarray | None = None                # HxWx3 uint8 with paste-back
    mask: np.ndarray | None = None                  # HxW float union blend mask with paste-back
    extra: dict[str, Any] = field(default_factory=dict)


class Cartoonizer:
    """The cartoonize stages, callable one by one (see benchmarks/cartoonize.py)."""

    def __init__(self, inf, settings: CartoonizeParams | None = None, *, detect_params=None,
                 decode_params=None, matte_params=None, device: torch.device | str = "cpu"):
        if inf.forward is None:
            raise UsageError(f"the {inf.family} run is an unconditional model: nothing to cartoonize "
                             "(use `toonlab generate` for it)")
        if inf.source not in (None, "photo"):
            raise UsageError(f"the {inf.family} run translates {inf.source} images, not photos")
        self.inf = inf
        self.settings = settings or CartoonizeParams()
        self.px = int(inf.px)
        self.device = torch.device(device)
        self.detect_params, self.decode_params, self.matte_params = detect_params, decode_params, matte_params
        self._faces = None
        self._matte = None

    # ------------------------------------------------------------------ stages

    def decode(self, path: str | os.PathLike):
        from toonlab.data.decode import decode_file

        return decode_file(path, self.decode_params)

    def detect(self, rgb: np.ndarray) -> list:
        """Faces to translate, largest first (only the largest with faces=largest)."""
        if self._faces is None:
            from toonlab.faces.detectors import make_face_backend

            self._faces = make_face_backend("photo", self.detect_params)
        faces = list(self._faces.detect(rgb))
        return faces[:1] if self.settings.faces == "largest" else faces

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        if self._matte is None:
            from toonlab.faces.matte_backends import make_matte_backend

            self._matte = make_matte_backend("photo", self.matte_params)
        return np.asarray(self._matte.matte(rgb), np.float32)

    def align(self, rgb: np.ndarray, face) -> tuple[np.ndarray, np.ndarray]:
        """(px x px x 3 uint8 aligned crop, 2x3 source -> 256 px template matrix)."""
        a = align_face(rgb, None, face.five, face.landmarks, "photo")
        crop = a.rgba256[..., :3]
        if self.px != OUT_PX:
            interp = cv2.INTER_AREA if self.px < OUT_PX else cv2.INTER_CUBIC
            crop = cv2.resize(crop, (self.px, self.px), interpolation=interp)
        return np.ascontiguousarray(crop), a.matrix

    @torch.inference_mode()
    def translate(self, crops: np.ndarray) -> np.ndarray:
        """N x px x px x 3 uint8 -> N x px x px x 3 uint8 through the model's forward."""
        crops = np.asarray(crops)
        if len(crops) == 0:
            return crops.copy()
        outs = []
        for i in range(0, len(crops), self.settings.batch_faces):
            x = codec.from_uint8(crops[i:i + self.settings.batch_faces]).to(self.device)
            y = self.inf.forward(x)
            if not isinstance(y, torch.Tensor):
                y = torch.as_tensor(np.asarray(y))
            outs.append(codec.to_uint8(y))
        return np.concatenate(outs)

    def face_mask(self, shape: tuple[int, ...], matrix: np.ndarray) -> np.ndarray:
        """HxW float32 feathered blend mask of one face: 0 outside its warped crop region."""
        h, w = shape[:2]
        inv = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
        region = cv2.warpAffine(np.ones((OUT_PX, OUT_PX), np.uint8), inv, (w, h), flags=cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        side = OUT_PX / math.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2])))  # crop side in photo px
        sigma = self.settings.feather * side
        r = int(math.ceil(3 * sigma))
        e = r + 1
        # A square element at least as large as the blur kernel's (square) support, so the
        # blurred mask cannot reach outside the region.
        region = cv2.erode(region, np.ones((2 * e + 1, 2 * e + 1), np.uint8))
        mask = region.astype(np.float32)
        if r > 0:
            mask = cv2.GaussianBlur(mask, (2 * r + 1, 2 * r + 1), sigma, borderType=cv2.BORDER_CONSTANT)
        return mask

    def paste(self, rgb: np.ndarray, cartoons: np.ndarray, matrices: list[np.ndarray],
              alpha: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Warp each cartoon back into `rgb` and blend; returns (image, union mask).
        Pixels where the mask is 0 keep their input bytes."""
        h, w = rgb.shape[:2]
        out = np.array(rgb, np.float32, copy=True)
        union = np.zeros((h, w), np.float32)
        scale = np.diag([self.px / OUT_PX, self.px / OUT_PX, 1.0])
        for cartoon, m in zip(cartoons, matrices):
            m_px = (scale @ np.vstack([m, [0, 0, 1]]))[:2]          # source -> model px crop
            inv = cv2.invertAffineTransform(m_px)
            back = cv2.warpAffine(np.ascontiguousarray(cartoon), inv, (w, h), flags=cv2.INTER_CUBIC,
                                  borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
            mask = self.face_mask(rgb.shape, m)
            if alpha is not None:
                mask = mask * np.clip(alpha, 0.0, 1.0)
            out += (back - out) * mask[..., None]
            union = np.maximum(union, mask)
        result = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        keep = union <= 0
        result[keep] = rgb[keep]
        return result, union

    # ------------------------------------------------------------------ whole image

    def process(self, rgb: np.ndarray, faces: list | None = None) -> ImageResult:
        faces = self.detect(rgb) if faces is None else faces
        pairs = [self.align(rgb, f) for f in faces]
        crops = np.stack([c for c, _ in pairs]) if pairs else np.zeros((0, self.px, self.px, 3), np.uint8)
        matrices = [m for _, m in pairs]
        cartoons = self.translate(crops)
        res = ImageResult(crops, cartoons, matrices)
        if self.settings.matte and pairs:
            res.alpha = self.matte(rgb)
        if self.settings.paste_back and pairs:
            res.pasted, res.mask = self.paste(rgb, cartoons, matrices, res.alpha)
        return res

    def crop_alpha(self, alpha: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """The matte warped to one face's px crop, uint8."""
        scale = np.diag([self.px / OUT_PX, self.px / OUT_PX, 1.0])
        m_px = (scale @ np.vstack([matrix, [0, 0, 1]]))[:2]
        a = cv2.warpAffine(alpha.astype(np.float32), m_px, (self.px, self.px), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)

    def run_file(self, path: str | os.PathLike, out_dir: Path, stem: str) -> dict[str, Any]:
        """Cartoonize one file; a dict entry for the summary (never raises for bad input)."""
        entry: dict[str, Any] = {"path": str(path)}
        dec = self.decode(path)
        if not dec.ok:
            return {**entry, "status": "failed", "reason": dec.reason, "detail": dec.detail}
        rgb = dec.image
        faces = self.detect(rgb)
        if not faces:
            return {**entry, "status": "failed", "reason": "no_face", "detail": f"{path}: no face found"}
        res = self.process(rgb, faces)
        outputs = []
        if self.settings.paste_back:
            target = out_dir / f"{stem}_cartoon.png"
            fileio.write_bytes(target, codec.png_bytes(res.pasted))
            outputs.append(target.name)
        else:
            for k, (cartoon, m) in enumerate(zip(res.cartoons, res.matrices)):
                img = cartoon if res.alpha is None else np.dstack([cartoon, self.crop_alpha(res.alpha, m)])
                target = out_dir / f"{stem}_face{k}.png"
                fileio.write_bytes(target, codec.png_bytes(img))
                outputs.append(target.name)
        return {**entry, "status": "ok", "faces": len(faces), "outputs": outputs}

    def close(self) -> None:
        for b in (self._faces, self._matte):
            close = getattr(b, "close", None)
            if close:
                close()
        self._faces = self._matte = None


# ----------------------------------------------------------------------------- inputs


def expand_inputs(inputs: list[str], skip: Path | None = None) -> tuple[list[Path], list[dict[str, Any]]]:
    """Files named, found in folders (recursively, image suffixes) or matched by globs,
    in order without repeats; plus a failure entry for each input that matched nothing."""
    files: list[Path] = []
    missing: list[dict[str, Any]] = []
    seen: set[Path] = set()
    skip = skip.resolve() if skip else None

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            files.append(p)

    def scan(folder: Path) -> int:
        found = 0
        for p in sorted(folder.rglob("*")):
            if skip is not None and skip in p.resolve().parents:
                continue
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                add(p)
                found += 1
        return found

    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            if not scan(p):
                log.warning("%s: a folder without image files (%s); skipped",
                            _display(raw), ", ".join(sorted(IMAGE_SUFFIXES)))
        elif p.exists() or p.is_symlink():
            add(p)
        elif glob.has_magic(raw):
            matches = sorted(glob.glob(raw, recursive=True))
            if not matches:
                missing.append({"path": raw, "status": "failed", "reason": "missing",
                                "detail": f"{raw}: no file matches this pattern"})
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    scan(mp)
                elif mp.is_file():
                    add(mp)
        else:
            missing.append({"path": raw, "status": "failed", "reason": "missing", "detail": f"{raw}: no such file"})
    return files, missing


def _unique_stem(path: Path, used: set[str]) -> str:
    base = path.stem.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\ufffd", "_")
    stem, n = base, 2
    while stem in used:
        stem, n = f"{base}_{n}", n + 1
    used.add(stem)
    return stem


def _display(text: str | os.PathLike) -> str:
    from toonlab.data.decode import display_text

    return display_text(os.fspath(text))


def _storable(entry: dict[str, Any]) -> dict[str, Any]:
    """A summary entry as JSON can hold for any file name: `path` as lossless `path_text`,
    other text with undecodable bytes shown as `\\xNN`."""
    from toonlab.data.decode import path_text

    out = {k: _display(v) if isinstance(v, str) else v for k, v in entry.items()}
    out["path"] = path_text(os.fspath(entry["path"]))
    return out


def check_out_dir(out_dir: str | Path) -> None:
    """UsageError, naming the path, when `out_dir` is not a folder and cannot be created
    as one (no side effects: nothing is created)."""
    out_dir = Path(out_dir)
    p = out_dir
    while not os.path.lexists(p) and p.parent != p:
        p = p.parent
    if not p.is_dir():
        raise UsageError(f"--out {_display(out_dir)}: " + ("exists and is not a folder" if p == out_dir
                         else f"cannot be created, {_display(p)} is not a folder"))
    if not os.access(p, os.W_OK | os.X_OK):
        raise UsageError(f"--out {_display(out_dir)}: cannot be written ({_display(p)} is not writable)")


def _make_out_dir(out_dir: Path) -> None:
    check_out_dir(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {_display(out_dir)}: cannot create the folder ({exc.strerror or exc})") from None


def cartoonize_files(cartoonizer: Cartoonizer, inputs: list[str], out_dir: str | Path,
                     source: str = "", expanded: tuple[list[Path], list[dict[str, Any]]] | None = None,
                     ) -> dict[str, Any]:
    """Cartoonize every input into `out_dir`; write and return the summary. `expanded`:
    `expand_inputs(inputs, skip=out_dir)` when the caller has it already."""
    out_dir = Path(out_dir)
    _make_out_dir(out_dir)  # before any work
    files, missing = expanded if expanded is not None else expand_inputs(inputs, skip=out_dir)
    if not files and not missing:
        raise UsageError(f"no image files found in {', '.join(_display(i) for i in inputs)}")
    entries = [_storable(e) for e in missing]
    used: set[str] = set()
    for path in progress(files, desc="cartoonize", unit="img"):
        try:
            entry = cartoonizer.run_file(path, out_dir, _unique_stem(path, used))
        except Exception as exc:  # noqa: BLE001 - one bad file never stops the batch
            log.debug("cartoonize %s failed", path, exc_info=True)
            entry = {"path": str(path), "status": "failed", "reason": "error",
                     "detail": f"{path}: {type(exc).__name__}: {exc}"}
        entry = _storable(entry)
        if entry["status"] != "ok":
            log.warning("%s: %s (%s)", entry["path"], entry["reason"], entry["detail"])
        entries.append(entry)
    ok = [e for e in entries if e["status"] == "ok"]
    failed = [e for e in entries if e["status"] != "ok"]
    reasons: dict[str, int] = {}
    for e in failed:
        reasons[e["reason"]] = reasons.get(e["reason"], 0) + 1
    summary = {
        "run": source, "family": cartoonizer.inf.family, "px": cartoonizer.px,
        "settings": cartoonizer.settings.model_dump(mode="json"),
        "inputs": len(entries), "succeeded": len(ok), "failed": len(failed),
        "faces": sum(e["faces"] for e in ok), "reasons": reasons, "files": entries,
    }
    fileio.write_json(out_dir / "summary.json", summary)
    log.info("cartoonize: %d of %d files done, %d faces -> %s%s", len(ok), len(entries), summary["faces"],
             out_dir, "" if not failed else "; failed: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    return summary


# ----------------------------------------------------------------------------- runs


def load_inference(run: str | None, train_out_dir: str | Path, device: torch.device,
                   onnx: str | None = None, cpu_precision: str = "fp32", images: int | None = None):
    """(Inference, description) from a run / checkpoint (in `cpu_precision` on CPU, for a
    job of `images` photos: `toonlab.runs.precision`), or from an ONNX export
    folder (fp32)."""
    if onnx:
        try:
            from toonlab.apps.export import load_onnx_inference
        except ImportError as exc:
            raise ToonlabError(f"ONNX inference is not available in this installation ({exc}); "
                               "install it with `pip install 'toonlab[serve]'`") from None
        return load_onnx_inference(onnx), f"onnx:{onnx}"
    if not run:
        raise UsageError("say which model to use: --run RUN_OR_CHECKPOINT (or --onnx EXPORT_DIR)")
    from toonlab.runs.load import read_run, resolve_run

    loaded = read_run(resolve_run(run, train_out_dir))
    inf = loaded.inference(device, cpu_precision, images)
    return inf, f"{loaded.ref.run_dir} ({loaded.checkpoint.name})"


def run_cartoonize(params, run: str | None, inputs: list[str], out: str | Path,
                   settings: CartoonizeParams, device: torch.device, onnx: str | None = None) -> dict[str, Any]:
    """The `toonlab cartoonize` command: returns the summary; ToonlabError when every file failed."""
    if not inputs:
        raise UsageError("give at least one INPUT (image files, folders or globs)")
    check_out_dir(out)
    expanded = expand_inputs(inputs, skip=Path(out))      # how many photos: the precision may depend on it
    inf, source = load_inference(run, params.train.out_dir, device, onnx, params.runtime.cpu_precision,
                                 len(expanded[0]))
    car = Cartoonizer(inf, settings, detect_params=params.detect, decode_params=params.decode,
                      matte_params=params.matte, device="cpu" if onnx else device)
    try:
        summary = cartoonize_files(car, inputs, out, source, expanded)
    finally:
        car.close()
    if summary["succeeded"] == 0:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary["reasons"].items()))
        raise ToonlabError(f"all {summary['inputs']} inputs failed ({reasons}); "
                           f"per-file reasons in {Path(out) / 'summary.json'}")
    return summary
