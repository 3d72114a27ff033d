"""What the per-image face stages (detect, matte, align) share: worker processes, one
backend per process, the backend's identity, the per-content cache and the copy of
cached files into an output folder.

Backends are made by a factory `(domain, params_json, device) -> backend`, a module-level
function (it crosses into spawned worker processes by name), so this module imports no
backend itself; `device` is `runtime.device` (onnxruntime backends pick their providers
from it).
"""

from __future__ import annotations

import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from toonlab.errors import ToonlabError
from toonlab.log import progress
from toonlab.util.cache import ContentCache

Factory = Callable[[str, dict, str], Any]
_BACKENDS: dict[tuple, Any] = {}


def backend(factory: Factory, domain: str, params_json: dict, device: str = "auto") -> Any:
    """The backend of this process for (factory, domain, settings, device), built on first use."""
    key = (factory.__module__, factory.__qualname__, domain, repr(sorted(params_json.items())), device)
    if key not in _BACKENDS:
        _BACKENDS[key] = factory(domain, params_json, device)
    return _BACKENDS[key]


def limit_threads() -> None:
    """In a worker process: one OpenCV thread, so N workers use N cores without contention."""
    import cv2

    cv2.setNumThreads(1)


def run_jobs(fn: Callable, jobs: list, workers: int, desc: str) -> Iterable:
    """`fn` over `jobs` in order, in `workers` spawned processes (inline for 0/1 or one job)."""
    if workers <= 1 or len(jobs) <= 1:
        yield from progress(map(fn, jobs), desc, total=len(jobs), unit="img")
        return
    ctx = multiprocessing.get_context("spawn")  # backends hold threads: never fork them
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=limit_threads) as pool:
        yield from progress(pool.map(fn, jobs, chunksize=1), desc, total=len(jobs), unit="img")


def backend_info(factory: Factory, domain: str, params_json: dict, device: str = "auto") -> tuple[str, str]:
    info = backend(factory, domain, params_json, device).info
    return info.name, info.version


def backend_version(kind: str, factory: Factory, domain: str, params_json: dict,
                    device: str = "auto") -> tuple[str, str]:
    """Backend name and version, asked in a throw-away process so this one stays fork-free."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        try:
            return pool.submit(backend_info, factory, domain, params_json, device).result()
        except ToonlabError:
            raise
        except Exception as exc:  # surfaced as a clean failure with its cause
            raise ToonlabError(f"{kind} backend for {domain} failed to start: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class BackendStage:
    """What a per-image backend stage (detect, matte) starts with: its settings and the
    decode settings as JSON, the backend's name and version, the per-content cache keyed
    by all of them, the domain's raw folder and `runtime.device`."""

    settings: dict
    decode: dict
    name: str
    version: str
    cache: ContentCache
    raw_root: Path
    device: str

    @classmethod
    def open(cls, params: Any, kind: str, factory: Factory, domain: str) -> BackendStage:
        settings = getattr(params, kind).model_dump(mode="json")
        decode = params.decode.model_dump(mode="json")
        device = params.runtime.device
        name, version = backend_version(kind, factory, domain, settings, device)
        cache = ContentCache(params.preprocess.cache_dir, f"{kind}-{domain}",
                             {kind: settings, "decode": decode, "backend": [name, version], "v": 1})
        return cls(settings, decode, name, version, cache, Path(params.data.raw_dir) / domain, device)


def copy_cached(src: Path, dst: Path) -> None:
    """Copy a cached file into an output folder being built. Not a hard link: DVC re-copies
    files that have other links when it records outputs, which would touch them."""
    shutil.copyfile(src, dst)


def count_reasons(rows: list[dict]) -> dict[str, int]:
    """Rows per reason ("ok" for kept rows), sorted: the stages' summaries."""
    counts: dict[str, int] = {}
    for r in rows:
        key = r["reason"] or "ok"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
