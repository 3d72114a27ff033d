"""Where `toonlab crawl` keeps its downloads: `<raw_dir>/<domain>/<sha256>.<ext>`, the
extension from the file's magic bytes (`sniff_image`) only, never from the URL or the
headers. `store` writes a download, `reusable` says whether a previous run's file can
stand for a URL."""

from __future__ import annotations

import re
from pathlib import Path

from toonlab.data.urllists import DOMAIN_RE, UrlEntry
from toonlab.util.fileio import sha256_bytes, write_bytes

EXTENSIONS = ("jpg", "png", "gif", "webp", "bmp", "tif")
STORED_PATH_RE = re.compile(r"^[a-z0-9_-]{1,64}/[0-9a-f]{64}\.(?:" + "|".join(EXTENSIONS) + r")$")


def sniff_image(data: bytes) -> str | None:
    """File extension from the magic bytes, or None if `data` is not a known image."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tif"
    if data[:2] == b"BM" and len(data) >= 26:
        dib = int.from_bytes(data[14:18], "little")
        if dib in (12, 40, 52, 56, 64, 108, 124):
            return "bmp"
    return None


def store(out_root: Path, domain: str, body: bytes) -> tuple[str, str]:
    """Write an image (unless the same file is there) and return (sha256, path relative to out_root)."""
    ext = sniff_image(body[:32])
    assert ext is not None and DOMAIN_RE.match(domain)
    digest = sha256_bytes(body)
    rel = f"{domain}/{digest}.{ext}"
    target = out_root / domain / f"{digest}.{ext}"
    if not (target.is_file() and target.stat().st_size == len(body)):
        write_bytes(target, body)
    return digest, rel


def reusable(prev: dict | None, entry: UrlEntry, out_root: Path) -> bool:
    """A previous ok record whose file is still on disk under the same domain."""
    if not prev or prev.get("status") != "ok":
        return False
    rel = prev.get("path")
    if not isinstance(rel, str) or not STORED_PATH_RE.match(rel) or not rel.startswith(entry.domain + "/"):
        return False
    f = out_root / rel
    try:
        return f.is_file() and (prev.get("bytes") is None or f.stat().st_size == prev["bytes"])
    except OSError:
        return False
