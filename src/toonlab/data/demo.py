"""The embedded demo crawl: real photos shipped inside installed packages, deterministic
variants of them, and generated anime-style portraits, written as a raw crawl.

Layout (the same as a real crawl, so every later stage runs exactly as on real data)::

    <out>/photo/*.jpg|png     photos and their variants (plus crawl-like junk when messy)
    <out>/anime/*.png|jpg     anime-style portraits
    <out>/demo.json           what was written, with sha256 and provenance of each file

Same seed, same bytes: every random choice comes from a NumPy generator seeded with
(seed, file index), and the encoders are called with fixed settings and no metadata.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from toonlab.data.anime_draw import draw_portrait
from toonlab.data.params import DemoParams
from toonlab.errors import ToonlabError, UsageError
from toonlab.log import get_logger, progress
from toonlab.util import codec, fileio

log = get_logger(__name__)
MANIFEST = "demo.json"
# Marks a folder as written by demo-data even while Snakemake has removed demo.json
# (it deletes a job's declared outputs before re-running it).
MARKER = ".toonlab-demo"

# Real photos of people that ship inside installed packages: (package, path in package).
PACKAGE_PHOTOS = (
    ("skimage", "data/astronaut.png"),
    ("insightface", "data/images/Tom_Hanks_54745.png"),
    ("insightface", "data/images/t1.jpg"),  # a group photo: several faces
)
# A real photo with no face in it (a face mask on a table), as crawls contain.
NO_FACE_PHOTO = ("insightface", "data/images/mask_blue.jpg")


@dataclass(frozen=True)
class SourcePhoto:
    ref: str      # e.g. "skimage:data/astronaut.png"
    image: Image.Image


def package_file(package: str, rel: str) -> Path | None:
    """Path of a data file inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root) / rel
        if p.is_file():
            return p
    return None


def load_source_photos() -> list[SourcePhoto]:
    out = []
    for package, rel in PACKAGE_PHOTOS:
        p = package_file(package, rel)
        if p is None:
            log.debug("demo photo %s:%s not installed, skipped", package, rel)
            continue
        with Image.open(p) as im:
            out.append(SourcePhoto(f"{package}:{rel}", ImageOps.exif_transpose(im).convert("RGB")))
    if not out:
        raise ToonlabError("no demo photos found: install the project's dependencies "
                           "(scikit-image and insightface ship the photos), e.g. `make install`")
    return out


def _encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    return codec.jpeg_bytes(img, quality, subsampling=0) if fmt == "JPEG" else codec.png_bytes(img)


def _fit(img: Image.Image, max_px: int) -> Image.Image:
    scale = max_px / max(img.size)
    if scale >= 1:
        return img
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)


def photo_variant(src: Image.Image, rng: np.random.Generator, max_px: int, index: int) -> Image.Image:
    """Variant 0 is the photo itself (fitted); others add the variety of a crawl:
    mild crops, flips, small rotations, colour and exposure changes, rescaling."""
    img = src
    if index > 0:
        w, h = img.size
        keep = rng.uniform(0.72, 0.95)
        cw, ch = int(w * keep), int(h * keep)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = img.crop((x0, y0, x0 + cw, y0 + ch))
        if index % 2 == 1:  # alternate mirrored and upright variants
            img = ImageOps.mirror(img)
        angle = float(rng.uniform(-12, 12))
        img = img.rotate(angle, resample=Image.BICUBIC, expand=False, fillcolor=(0, 0, 0))
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
        img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.2))
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.3))
        if rng.random() < 0.1:
            img = ImageOps.grayscale(img).convert("RGB")
        img = _fit(img, int(max_px * rng.uniform(0.7, 1.0)))
    return _fit(img, max_px)


def build_demo_files(demo: DemoParams) -> list[tuple[str, bytes, dict]]:
    """All files of the demo crawl as (relative path, bytes, provenance), in a fixed order."""
    files: list[tuple[str, bytes, dict]] = []
    sources = load_source_photos()
    jobs = [(s, k) for s in sources for k in range(demo.variants_per_photo)]
    for n, (src, k) in enumerate(progress(jobs, "demo photos", unit="img")):
        rng = np.random.default_rng([demo.seed, 1, n])
        img = photo_variant(src.image, rng, demo.photo_max_px, k)
        fmt = "JPEG" if (k == 0 or rng.random() < 0.7) else "PNG"
        stem = Path(src.ref.split(":", 1)[1]).stem.lower()
        name = f"photo/{stem}_{k:02d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        files.append((name, _encode(img, fmt, int(rng.integers(80, 96))), {"source": src.ref, "variant": k}))

    for n in progress(range(demo.anime_count), "demo anime", unit="img"):
        rng = np.random.default_rng([demo.seed, 2, n])
        img = draw_portrait(rng, demo.anime_px)
        fmt = "PNG" if rng.random() < 0.6 else "JPEG"
        name = f"anime/portrait_{n:04d}.{'png' if fmt == 'PNG' else 'jpg'}"
        files.append((name, _encode(img, fmt, 92), {"source": "generated", "variant": n}))

    if demo.messy:
        files += _crawl_junk(files, np.random.default_rng([demo.seed, 3]))
    return files


def _crawl_junk(files: list[tuple[str, bytes, dict]], rng: np.random.Generator) -> list[tuple[str, bytes, dict]]:
    """What real crawls contain besides good images; ingest must cope with each."""
    photos = [f for f in files if f[0].startswith("photo/") and f[0].endswith(".jpg")]
    anime = [f for f in files if f[0].startswith("anime/")]
    junk = []
    name, data, _ = photos[int(rng.integers(len(photos)))]
    junk.append(("photo/copy_of_" + Path(name).name, data, {"source": name, "defect": "exact_duplicate"}))
    name, data, _ = photos[int(rng.integers(len(photos)))]
    with Image.open(io.BytesIO(data)) as im:
        small = im.convert("RGB").resize((im.width * 3 // 4, im.height * 3 // 4), Image.LANCZOS)
    junk.append(("photo/resized_" + Path(name).stem + ".jpg", _encode(small, "JPEG", 70),
                 {"source": name, "defect": "near_duplicate"}))
    name, data, _ = photos[int(rng.integers(len(photos)))]
    junk.append(("photo/truncated_" + Path(name).name, data[: len(data) * 3 // 5],
                 {"source": name, "defect": "truncated"}))
    junk.append(("photo/not_an_image.jpg", b"<!DOCTYPE html><html><body>403 Forbidden</body></html>\n",
                 {"source": "generated", "defect": "html_not_image"}))
    name, data, _ = anime[int(rng.integers(len(anime)))]
    junk.append(("anime/mirror_" + Path(name).name, data, {"source": name, "defect": "exact_duplicate"}))
    no_face = package_file(*NO_FACE_PHOTO)
    if no_face is not None:
        junk.append(("photo/" + no_face.name, no_face.read_bytes(),
                     {"source": ":".join(NO_FACE_PHOTO), "defect": "no_face"}))
    return junk


def write_demo_crawl(out: str | Path, demo: DemoParams, force: bool = False) -> dict[str, int]:
    """Write the demo crawl to `out`, replacing a previous demo crawl there atomically."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    ours = (out / MANIFEST).is_file() or (out / MARKER).is_file()
    if out.is_dir() and any(out.iterdir()) and not ours and not force:
        raise UsageError(f"{out} holds files not written by demo-data (no {MANIFEST}); refusing to "
                         "replace them. Use another --out, or --force to replace the folder.")
    files = build_demo_files(demo)
    entries = []
    with fileio.atomic_dir(out) as tmp:
        for rel, data, meta in files:
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)  # inside a temporary folder that is renamed at the end
            entries.append({"path": rel, "sha256": fileio.sha256_bytes(data), "bytes": len(data), **meta})
        (tmp / MARKER).write_text("written by `toonlab demo-data`; replaced on every run\n")
        fileio.write_json(tmp / MANIFEST, {"generator": "toonlab demo-data", "params": demo.model_dump(),
                                        "files": entries})
    counts: dict[str, int] = {}
    for e in entries:
        key = "junk" if "defect" in e else e["path"].split("/", 1)[0]
        counts[key] = counts.get(key, 0) + 1
    return counts
