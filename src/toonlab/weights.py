"""Where ToonLab looks for optional pretrained models, and what it says when one is missing.

Nothing here downloads anything: the files are looked up in the standard cache
locations of the libraries that own them. `toonlab doctor` prints this table; stages
call `require(name)` to fail fast with the file name, the folders searched and the
offline alternative.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from toonlab.errors import MissingWeightsError


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


@dataclass(frozen=True)
class WeightFile:
    name: str            # key used in params and messages
    purpose: str
    files: tuple[str, ...]  # every file that must be present (relative to the folder)
    folder: str          # which resolver above
    alternative: str     # what to do without it

    def directory(self) -> Path:
        return {"torch": torch_hub_dir, "insightface": insightface_dir, "rembg": rembg_dir,
                "toonlab": toonlab_weights_dir}[self.folder]()

    def missing(self) -> list[Path]:
        d = self.directory()
        return [d / f for f in self.files if not (d / f).is_file()]

    def available(self) -> bool:
        return not self.missing()


WEIGHTS: dict[str, WeightFile] = {w.name: w for w in (
    WeightFile("vgg16", "CycleGAN perceptual loss (torchvision ImageNet VGG16)",
               ("vgg16-397923af.pth",), "torch",
               "set cyclegan perceptual weight to 0, or `perceptual.weights: random` for smoke tests only"),
    WeightFile("vgg19", "White-box content/structure losses (torchvision ImageNet VGG19)",
               ("vgg19-dcbb9e9d.pth",), "torch", "none: White-box training needs VGG19"),
    WeightFile("inception_fid", "FID/KID (pytorch-fid Inception-v3 weights)",
               ("pt_inception-2015-12-05-6726825d.pth",), "torch",
               "FID/KID are reported as unavailable with this reason"),
    WeightFile("buffalo_l", "insightface SCRFD detection, 106-point landmarks, ArcFace identity",
               ("buffalo_l/det_10g.onnx", "buffalo_l/2d106det.onnx", "buffalo_l/w600k_r50.onnx"),
               "insightface", "face backend `mediapipe` (bundled, offline); identity metrics unavailable"),
    WeightFile("u2net_human_seg", "rembg background removal for photos",
               ("u2net_human_seg.onnx",), "rembg", "matte backend `mediapipe` (selfie segmentation, bundled)"),
    WeightFile("isnet_anime", "rembg background removal for anime",
               ("isnet-anime.onnx",), "rembg", "matte backend `floodfill` (flat backgrounds, lower quality)"),
    WeightFile("mobilefacenet", "Soft-AdaLIN face-identity loss (MobileFaceNet, 512-d, photo2cartoon's "
               "model_mobilefacenet.pth)", ("model_mobilefacenet.pth",), "toonlab", "set ugatit.loss.faceid_weight: 0"),
)}


def require(name: str) -> Path:
    """Return the folder holding `name`'s files, or raise a message that says how to fix it."""
    w = WEIGHTS[name]
    missing = w.missing()
    if missing:
        files = ", ".join(p.name for p in missing)
        raise MissingWeightsError(
            f"{w.purpose}: missing {files} in {w.directory()} (searched there; nothing is downloaded). "
            f"Copy the file(s) to that folder, or set the folder's environment variable. "
            f"Offline alternative: {w.alternative}."
        )
    return w.directory()


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


def doctor_report() -> str:
    lines = ["Pretrained model files (never downloaded; looked up where their libraries keep them):"]
    for w in WEIGHTS.values():
        missing = w.missing()
        state = "ok     " if not missing else "MISSING"
        lines.append(f"  [{state}] {w.name:16s} {w.purpose}")
        lines.append(f"            looked in {w.directory()} for {', '.join(w.files)}")
        if missing:
            lines.append(f"            without it: {w.alternative}")
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
