"""`toonlab export <run>`: each generator of a trained run as an ONNX file, checked
against PyTorch, and an onnxruntime inference path that stands in for the torch one.

Export uses the TorchScript-tracing exporter (`torch.onnx.export(..., dynamo=False)`;
the dynamo exporter needs onnxscript, which toonlab does not depend on). Files:

* translation runs (cyclegan, ugatit, whitebox): `forward.onnx` (source -> target) and
  `backward.onnx` when the family has a cycle; input "input" and output "output",
  N x 3 x px x px in [-1, 1], the batch axis dynamic, px fixed (U-GAT-IT's full
  generator has px-dependent fully connected layers);
* dcgan: `generate.onnx`, noise N x nz x 1 x 1 -> N x 3 x 96 x 96, dynamic batch.

Opset: 17 by default. The lowest opset every family exports with is 11 (`MIN_OPSET`):
White-box's TensorFlow-style SAME padding computes its pad sizes from the input shape,
and ONNX `Pad` takes non-constant pads only from opset 11; CycleGAN, U-GAT-IT and DCGAN
export from opset 9. 17 is the default because every current onnxruntime runs it and
it keeps InstanceNormalization / reductions in their modern forms.

Parity: every file is run with onnxruntime (CPU) on random inputs (batch 2) and on real
images (default: skimage's astronaut, centre-cropped, resized to px, and its mirror
image) and compared with the PyTorch network; a max absolute difference above
`PARITY_TOL` (1e-3, in the [-1, 1] image scale) fails the export and leaves no folder.
The folder is built atomically with `export.json` (family, run, checkpoint, step, px,
domains, opset, versions, parity numbers).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from toonlab.errors import ToonlabError, UsageError
from toonlab.log import get_logger
from toonlab.runs.inference import Inference
from toonlab.runs.load import RunRef
from toonlab.util import codec, fileio

log = get_logger(__name__)

DEFAULT_OPSET = 17
MIN_OPSET = 11
PARITY_TOL = 1e-3
MANIFEST = "export.json"


# ----------------------------------------------------------------------------- onnxruntime side


def _providers(cuda: bool) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if cuda:
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        log.warning("onnxruntime has no CUDA execution provider here (%s); running on the CPU",
                    ", ".join(available))
    return ["CPUExecutionProvider"]


class OnnxModule(nn.Module):
    """An onnxruntime session called like the torch network it was exported from:
    a float tensor in, a float32 tensor out on the input's device. `.to()`/`.eval()`
    are no-ops (it has no parameters), so it can stand in for `Inference.forward`."""

    def __init__(self, path: str | Path, cuda: bool = False):
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ToonlabError(f"{self.path}: no such ONNX file")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=_providers(cuda))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ToonlabError(f"{self.path}: onnxruntime cannot load it ({exc})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        out = self.session.run([self.output_name], {self.input_name: arr})[0]
        return torch.from_numpy(np.asarray(out, np.float32)).to(x.device)


def load_onnx_inference(export_dir: str | Path, cuda: bool = False) -> Inference:
    """The `Inference` of an export folder (`toonlab export` output), networks as OnnxModules."""
    export_dir = Path(export_dir)
    manifest = export_dir / MANIFEST
    if not manifest.is_file():
        raise ToonlabError(f"{export_dir} holds no {MANIFEST}: it is not an export folder; "
                           "run `toonlab export --run <run folder>` first")
    try:
        meta = json.loads(manifest.read_text())
        files = meta["files"]
        fam, px = str(meta["family"]), int(meta["px"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ToonlabError(f"{manifest}: unreadable export manifest ({exc}); export the run again") from None

    def net(role: str) -> OnnxModule | None:
        name = files.get(role)
        return OnnxModule(export_dir / name, cuda=cuda) if name else None

    return Inference(fam, meta.get("source"), str(meta["target"]), px, net("forward"), net("backward"),
                     generate=net("generate"), nz=int(meta.get("nz", 0)))


# ----------------------------------------------------------------------------- parity inputs


def default_parity_images(px: int) -> torch.Tensor:
    """skimage's astronaut, centre-cropped to a square and resized to px, and its mirror
    image: 2 x 3 x px x px in [-1, 1]."""
    from skimage import data

    rgb = np.asarray(data.astronaut())[..., :3]
    h, w = rgb.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = codec.from_uint8(rgb[None, top:top + s, left:left + s])
    x = torch.nn.functional.interpolate(x, size=(px, px), mode="bilinear", align_corners=False, antialias=True)
    x = x.clamp(-1, 1)
    return torch.cat([x, x.flip(-1)])


def _check_images(images: torch.Tensor, px: int) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1:] != (3, px, px) \
            or images.shape[0] < 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise UsageError(f"parity images must be N x 3 x {px} x {px} tensors in [-1, 1], got {shape}")
    return images.detach().float().cpu()


# ----------------------------------------------------------------------------- export


def _export_one(net: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (example,), str(path), input_names=["input"], output_names=["output"],
                              opset_version=opset, dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                              do_constant_folding=True, dynamo=False)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds; first line says why
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ToonlabError(f"ONNX export of {path.name} at opset {opset} failed: {first}") from None
    import onnx

    onnx.checker.check_model(str(path))


def _max_diff(net: nn.Module, onnx_net: OnnxModule, x: torch.Tensor) -> float:
    with torch.no_grad():
        ref = net(x).float()
    got = onnx_net(x)
    if got.shape != ref.shape:
        raise ToonlabError(f"{onnx_net.path.name}: onnxruntime gives shape {tuple(got.shape)}, "
                           f"PyTorch {tuple(ref.shape)}")
    return float((got - ref).abs().max())


def export_run(run: str | Path | RunRef, out_dir: str | Path | None = None, opset: int = DEFAULT_OPSET,
               checkpoint: str | Path | None = None, parity_images: torch.Tensor | None = None,
               tol: float = PARITY_TOL, train_out_dir: str | Path = ".") -> dict[str, Any]:
    """Export the run's generators (a run name under `train_out_dir`, a run folder or a
    checkpoint file, see `toonlab.runs.load`) to `out_dir` (default `<run folder>/export`),
    check parity with PyTorch, write export.json; returns its content. Raises ToonlabError
    when a file's max abs difference exceeds `tol` (nothing is written then)."""
    import onnx
    import onnxruntime as ort

    from toonlab.runs.load import read_run, resolve_run

    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise UsageError(f"opset {opset!r}: toonlab exports need opset {MIN_OPSET} or newer "
                         f"(White-box's shape-dependent padding); the default is {DEFAULT_OPSET}")
    max_opset = onnx.defs.onnx_opset_version()
    if opset > max_opset:
        raise UsageError(f"opset {opset}: the installed onnx {onnx.__version__} knows opsets up to {max_opset}")
    ref = run if isinstance(run, RunRef) else resolve_run(run, train_out_dir, checkpoint)
    run_dir = ref.run_dir
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "export"
    loaded = read_run(ref)
    fam, inf = loaded.family, loaded.inference("cpu")
    meta = {"path": str(loaded.checkpoint), "step": loaded.step}

    gen = torch.Generator().manual_seed(0)
    if inf.generate is not None and inf.forward is None:
        nets = {"generate": inf.generate}
        example = torch.randn(2, inf.nz, 1, 1, generator=gen)
        real = None
    else:
        nets = {"forward": inf.forward}
        if inf.backward is not None:
            nets["backward"] = inf.backward
        example = torch.rand(2, 3, inf.px, inf.px, generator=gen) * 2 - 1
        real = default_parity_images(inf.px) if parity_images is None else _check_images(parity_images, inf.px)

    files: dict[str, str] = {}
    parity: dict[str, dict[str, float]] = {}
    with fileio.atomic_dir(out_dir) as tmp:
        for role, net in nets.items():
            net = net.eval()
            name = f"{role}.onnx"
            _export_one(net, example, tmp / name, opset)
            onnx_net = OnnxModule(tmp / name)
            diffs = {"random": _max_diff(net, onnx_net, example)}
            if real is not None:
                diffs["images"] = _max_diff(net, onnx_net, real)
            bad = {k: v for k, v in diffs.items() if not v <= tol}
            if bad:
                raise ToonlabError(f"{name}: onnxruntime and PyTorch disagree, max abs difference "
                                   + ", ".join(f"{v:.3g} on {k} inputs" for k, v in bad.items())
                                   + f" (tolerance {tol:g}); no export written")
            files[role], parity[name] = name, diffs
            log.info("%s: parity max abs diff %s", name, ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()))
        manifest = {
            "family": inf.family, "run": run_dir.name, "run_dir": str(run_dir), "checkpoint": meta["path"],
            "step": meta["step"], "px": inf.px, "source": inf.source, "target": inf.target, "nz": inf.nz,
            "opset": opset, "files": files, "input": "input", "output": "output",
            "parity": parity, "parity_tol": tol,
            "parity_images": "given" if parity_images is not None else "skimage astronaut + mirror",
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
            "sha256": {name: fileio.sha256_file(tmp / name) for name in files.values()},
        }
        fileio.write_json(tmp / MANIFEST, manifest)
    log.info("exported %s run %s (step %d) to %s", fam.name, run_dir.name, meta["step"], out_dir)
    return manifest
