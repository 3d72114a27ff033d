"""Per-content result cache: one small file per (stage, settings fingerprint, sha256).

Stages that work image by image keep their per-image results here, keyed by the
image's content hash and a fingerprint of everything that changes the result (stage
params, backend name and version), so a re-run only processes new images. The cache
lives outside the DVC outputs (default `.toonlab-cache/`); deleting it only costs time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from toonlab.util import fileio


class ContentCache:
    def __init__(self, root: str | Path, stage: str, settings: Any):
        key = json.dumps(settings, sort_keys=True, default=str)
        self.fingerprint = hashlib.sha256(f"{stage}\n{key}".encode()).hexdigest()[:16]
        self.dir = Path(root) / stage / self.fingerprint

    def path(self, sha256: str, suffix: str) -> Path:
        return self.dir / sha256[:2] / f"{sha256}{suffix}"

    def get_json(self, sha256: str) -> Any | None:
        try:
            return json.loads(self.path(sha256, ".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # missing or damaged: recompute

    def put_json(self, sha256: str, obj: Any) -> None:
        fileio.write_text(self.path(sha256, ".json"), json.dumps(obj, separators=(",", ":")))

    def has(self, sha256: str, suffix: str) -> bool:
        return self.path(sha256, suffix).is_file()

    def put_bytes(self, sha256: str, suffix: str, data: bytes) -> None:
        fileio.write_bytes(self.path(sha256, suffix), data)
