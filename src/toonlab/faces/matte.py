"""`toonlab matte`: background removal of every image with a kept face ->
`<preprocess.work_dir>/matte/<domain>/<sha256>.png` (alpha) and
`<preprocess.work_dir>/matte/<domain>.parquet`. The backends are in `toonlab.faces.matte_backends`
(photos) and `toonlab.faces.matte_floodfill` (the anime fallback); per-image results are
cached by content hash."""

from __future__ import annotations

from typing import Any

import numpy as np

from toonlab.data.decode import decode_file, path_from_text
from toonlab.data.params import DecodeParams
from toonlab.errors import ToonlabError
from toonlab.faces import jobs
from toonlab.faces.params import MatteParams, PreprocessParams
from toonlab.log import get_logger
from toonlab.util import codec, fileio, tables

log = get_logger(__name__)


def matte_backend(domain: str, params_json: dict, device: str = "auto") -> Any:
    """The matte backend of a domain (the factory the worker processes call)."""
    from toonlab.faces.matte_backends import make_matte_backend

    return make_matte_backend(domain, MatteParams.model_validate(params_json), device)


def matte_schema() -> list[tuple[str, Any]]:
    import pyarrow as pa

    return [("sha256", pa.string()), ("raw_path", pa.string()), ("matte", pa.string()),
            ("bg_fraction", pa.float32()), ("matte_backend", pa.string()), ("matte_version", pa.string())]


def _matte_one(job: tuple) -> bytes | dict:
    path, decode_json, domain, matte_json, device = job
    res = decode_file(path, DecodeParams.model_validate(decode_json))
    if not res.ok:
        return {"error": res.reason, "detail": res.detail}
    alpha = jobs.backend(matte_backend, domain, matte_json, device).matte(res.image)
    return codec.png_bytes_as(np.clip(np.rint(alpha * 255), 0, 255).astype(np.uint8), matte_json["png_compression"])


def run_matte(params: Any, domain: str) -> dict:
    pp: PreprocessParams = params.preprocess
    detected = tables.read_rows(f"{pp.work_dir}/detect/{domain}.parquet", f"face detections for '{domain}'",
                                "run `toonlab detect` first")
    shas = sorted({r["sha256"]: r["raw_path"] for r in detected if r["status"] == "ok"}.items())
    stage = jobs.BackendStage.open(params, "matte", matte_backend, domain)
    cache = stage.cache
    todo = [(sha, rel) for sha, rel in shas if not cache.has(sha, ".png")]
    work = [(str(stage.raw_root / path_from_text(rel)), stage.decode, domain, stage.settings, stage.device)
            for _, rel in todo]
    for (sha, _), result in zip(todo, jobs.run_jobs(_matte_one, work, params.runtime.workers, f"matte {domain}")):
        if isinstance(result, dict):
            raise ToonlabError(f"matte {domain}: {result['detail']}")
        cache.put_bytes(sha, ".png", result)
    rows = []
    with fileio.atomic_dir(f"{pp.work_dir}/matte/{domain}") as tmp:
        for sha, rel in shas:
            src = cache.path(sha, ".png")
            jobs.copy_cached(src, tmp / f"{sha}.png")
            alpha = codec.read_png(src.read_bytes())
            rows.append({"sha256": sha, "raw_path": rel, "matte": f"{domain}/{sha}.png",
                         "bg_fraction": float(1.0 - alpha.mean() / 255.0), "matte_backend": stage.name,
                         "matte_version": stage.version})
    tables.write_parquet(rows, f"{pp.work_dir}/matte/{domain}.parquet", matte_schema())
    log.info("matte %s (%s %s): %d images, %d processed now", domain, stage.name, stage.version, len(shas), len(work))
    return {"images": len(shas), "processed": len(work)}
