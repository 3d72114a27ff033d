"""Which optional part of ToonLab (a pip extra, pyproject.toml) provides which import.

The core (`pip install toonlab`) holds configuration, the CLI and the pipeline tools; the
rest is an extra. A command that reaches a module of a missing extra ends with one line
naming it (`missing_extra`), never an internal error.
"""

from __future__ import annotations

# Top-level import name -> the extra that installs it.
EXTRA_OF: dict[str, str] = {
    "cv2": "data", "pyarrow": "data", "scipy": "data", "skimage": "data", "matplotlib": "data",
    "mediapipe": "faces", "animeface": "faces", "insightface": "faces", "rembg": "faces",
    "onnxruntime": "faces",
    "torch": "train", "torchvision": "train", "albumentations": "train", "albucore": "train",
    "dvclive": "train",
    "fastapi": "serve", "uvicorn": "serve", "multipart": "serve", "python_multipart": "serve", "onnx": "serve",
    "dvc": "pipeline", "snakemake": "pipeline", "pandas": "pipeline",
    "snakemake_executor_plugin_slurm": "cluster",
    "tensorflow": "tf",
}


def missing_extra(exc: BaseException) -> str | None:
    """The one-line message for an import of a missing extra, or None when `exc` is not one."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None
    return (f"this needs the '{extra}' extra, which is not installed (no module named '{top}'): "
            f"pip install 'toonlab[{extra}]'  (or 'toonlab[all]')")
