"""`toonlab evaluate <run>`: every trained run measured on the same held-out faces.

For a translation run (CycleGAN, U-GAT-IT, White-box) each image of the fixed test
split of the source domain is translated at the model's resolution, then:

* FID and KID (x100, as in the U-GAT-IT paper) between the translations and the
  target domain's test images, with the pytorch-fid Inception-v3 weights. Without the
  weights file both are reported unavailable with the reason, never computed with
  another network.
* Landmark preservation: the target domain's detector (animeface for anime outputs,
  the photo backend for photo outputs) runs on each output upscaled to
  `evaluate.detect_px`; the five points of the largest face are compared with the
  input's five points (from the face pipeline), normalised by the input's inter-ocular
  distance; plus the detection rate (share of outputs with a face at all).
* Identity preservation: cosine similarity of ArcFace embeddings (insightface
  buffalo_l) of input and output, when that model is present.
* Cycle reconstruction PSNR / SSIM where the model has a way back.

Unconditional runs (DCGAN) get FID/KID of generated images against the domain's test
set and the detection rate. Results go to `<metrics_dir>/<run>.json` (DVC metrics)
with the backends and versions used; the translations of the first
`evaluate.fixed_inputs` test images go to `<out_dir>/<run>/` for the report's
side-by-side grids.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toonlab.errors import ToonlabError, UsageError
from toonlab.eval.params import EvaluateParams
from toonlab.log import get_logger, progress
from toonlab.util import codec, fileio

log = get_logger(__name__)


# ----------------------------------------------------------------------------- images


def _resize(x: torch.Tensor, px: int) -> torch.Tensor:
    if x.shape[-1] == px and x.shape[-2] == px:
        return x
    return torch.nn.functional.interpolate(x, size=(px, px), mode="bilinear", align_corners=False, antialias=True)


def _split(packed_dir: str, domain: str, split: str, px: int) -> dict[str, np.ndarray]:
    from toonlab.faces.pack import load_split

    bucket = 128 if px <= 128 else 256
    try:
        arrays = load_split(packed_dir, domain, split, bucket)
    except (ToonlabError, OSError) as exc:
        raise UsageError(f"no packed {domain} {split} split at {bucket} px ({exc}); run `dvc repro pack` first") from None
    if len(arrays["rgb"]) == 0:
        raise UsageError(f"the {domain} {split} split is empty: nothing to evaluate on "
                         "(give curate.split a test share)")
    return {"rgb": np.asarray(arrays["rgb"]), "five": np.asarray(arrays["five"], np.float32) * (px / bucket)}


# ----------------------------------------------------------------------------- measures


class _Detector:
    """The pipeline's face backend for a domain, on outputs upscaled to `px`."""

    def __init__(self, domain: str, detect_params, px: int):
        from toonlab.faces.detectors import make_face_backend

        self.px = px
        self.backend = make_face_backend("anime" if domain == "anime" else "photo", detect_params)

    def five(self, rgb: np.ndarray) -> np.ndarray | None:
        """Five points of the largest face (backends list faces largest first), in `rgb` pixels."""
        from PIL import Image

        scale = self.px / rgb.shape[0]
        big = np.asarray(Image.fromarray(rgb).resize((self.px, self.px), Image.BICUBIC))
        faces = self.backend.detect(big)
        return np.asarray(faces[0].five, np.float32) / scale if faces else None

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close:
            close()

    def describe(self) -> str:
        return f"{self.backend.info.name} {self.backend.info.version}"


def _fid_kid(fakes: np.ndarray, reals: np.ndarray, p: EvaluateParams, device: torch.device) -> dict[str, Any]:
    from toonlab.eval.inception import fid_inception_available, load_fid_inception
    from toonlab.eval.metrics import fid_from_features, kid_from_features

    ok, reason = fid_inception_available()
    if not ok:
        return {"unavailable": reason}
    net = load_fid_inception(device)

    def feats(batch: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(batch), p.batch_size):
            x = codec.from_uint8(batch[i:i + p.batch_size]).to(device)
            with torch.no_grad():
                f = net(x)
            out.append(np.asarray(f.detach().cpu().numpy() if torch.is_tensor(f) else f, np.float64))
        return np.concatenate(out)

    f1, f2 = feats(fakes), feats(reals)
    result: dict[str, Any] = {}
    if min(len(f1), len(f2)) >= 2:
        result["fid"] = float(fid_from_features(f1, f2))
        kid, kid_std = kid_from_features(f1, f2, subsets=p.kid_subsets, subset_size=p.kid_subset_px, seed=p.seed)
        result["kid_x100"], result["kid_std_x100"] = 100 * float(kid), 100 * float(kid_std)
    else:
        result["unavailable"] = "fewer than 2 images on one side"
    return result


def _identity(inputs: np.ndarray, outputs: np.ndarray, fives: np.ndarray) -> dict[str, Any]:
    """ArcFace cosine similarity of input and output faces (insightface buffalo_l)."""
    from toonlab.weights import WEIGHTS

    w = WEIGHTS["buffalo_l"]
    missing = w.missing()
    if missing:
        return {"unavailable": f"face-recognition model missing: {', '.join(p.name for p in missing)} "
                               f"in {w.directory()} (see `toonlab doctor`)"}
    try:
        from insightface.model_zoo import get_model
        from insightface.utils import face_align
    except ImportError as exc:
        return {"unavailable": f"insightface not importable ({exc})"}
    from toonlab.eval.metrics import cosine_similarity_embeddings

    rec = get_model(str(w.directory() / "buffalo_l" / "w600k_r50.onnx"), providers=["CPUExecutionProvider"])
    rec.prepare(ctx_id=-1)

    def emb(images: np.ndarray) -> np.ndarray:
        out = []
        for img, five in zip(images, fives):
            crop = face_align.norm_crop(np.ascontiguousarray(img[:, :, ::-1]), landmark=five, image_size=112)
            out.append(rec.get_feat(crop).ravel())
        return np.stack(out)

    sims = cosine_similarity_embeddings(emb(inputs), emb(outputs))
    return {"identity_cosine": float(np.mean(sims)), "backend": "insightface buffalo_l w600k_r50"}


def _save_fixed(out: Path, pictures: dict[str, np.ndarray]) -> None:
    with fileio.atomic_dir(out) as tmp:
        for name, batch in pictures.items():
            for i, img in enumerate(batch):
                (tmp / f"{name}-{i:03d}.png").write_bytes(codec.png_bytes(img))


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("torch", "torchvision", "mediapipe", "animeface", "insightface", "scipy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# ----------------------------------------------------------------------------- main


def evaluate_run(run: str, params, device: torch.device, checkpoint: str | None = None) -> dict[str, Any]:
    """Evaluate a run (a name under train.out_dir, a run folder or a checkpoint file, see
    `toonlab.runs.load`); write `<metrics_dir>/<run name>.json` and the fixed translations
    to `<out_dir>/<run name>/`; return the metrics."""
    from toonlab.eval.metrics import landmark_preservation, psnr, ssim
    from toonlab.runs.load import read_run, resolve_run

    p: EvaluateParams = params.evaluate
    loaded = read_run(resolve_run(run, params.train.out_dir, checkpoint))
    run, fam, inf = loaded.ref.name, loaded.family, loaded.inference(device, params.runtime.cpu_precision)
    meta = {"path": str(loaded.checkpoint), "step": loaded.step}
    px = inf.px
    target = _split(params.pack.out_dir, inf.target, p.split, px)
    gen = torch.Generator().manual_seed(p.seed)
    result: dict[str, Any] = {"run": run, "family": fam.name, "checkpoint": meta["path"], "step": meta["step"],
                              "source": inf.source, "target": inf.target, "px": px, "split": p.split,
                              "precision": loaded.precision.name, "precision_reason": loaded.precision.reason}
    unavailable: dict[str, str] = {}
    detector = _Detector(inf.target, params.detect, p.detect_px)
    backends = {"landmarks": detector.describe()}
    try:
        if inf.forward is None:   # unconditional
            n = p.generated if not p.max_images else min(p.generated, p.max_images)
            outs = []
            for i in range(0, n, p.batch_size):
                z = torch.randn(min(p.batch_size, n - i), inf.nz, 1, 1, generator=gen).to(device)
                with torch.no_grad():
                    outs.append(codec.to_uint8(_resize(inf.generate(z), px)))
            fakes = np.concatenate(outs)
            found = [detector.five(img) is not None for img in progress(fakes, f"evaluate {run}: detect", unit="img")]
            result["n_images"] = int(len(fakes))
            result["detection_rate"] = float(np.mean(found))
            unavailable["landmarks"] = "unconditional model: no input landmarks to compare with"
            unavailable["identity"] = "unconditional model: no input face"
            unavailable["cycle"] = "unconditional model: no cycle"
            fixed = {"output": fakes[:p.fixed_inputs]}
        else:
            source = _split(params.pack.out_dir, inf.source, p.split, px)
            rgb, fives = source["rgb"], source["five"]
            if p.max_images:
                rgb, fives = rgb[:p.max_images], fives[:p.max_images]
            ins, fakes, recs = [], [], []
            for i in progress(range(0, len(rgb), p.batch_size), f"evaluate {run}: translate", unit="batch"):
                x = _resize(codec.from_uint8(rgb[i:i + p.batch_size]), px).to(device)
                with torch.no_grad():
                    y = inf.forward(x)
                    if inf.backward is not None:
                        recs.append(inf.backward(y).float().cpu())
                ins.append(x.float().cpu())
                fakes.append(y.float().cpu())
            x_all, y_all = torch.cat(ins), torch.cat(fakes)
            inputs_u8, fakes = codec.to_uint8(x_all), codec.to_uint8(y_all)
            result["n_images"] = int(len(fakes))
            pred = [detector.five(img) for img in progress(fakes, f"evaluate {run}: landmarks", unit="img")]
            lm = landmark_preservation(pred, list(fives))
            result.update({"landmark_nme": _finite_or_none(float(lm["nme_mean"])),
                           "landmark_nme_median": _finite_or_none(float(lm["nme_median"])),
                           "detection_rate": float(lm["detection_rate"])})
            if result["landmark_nme"] is None:
                unavailable["landmarks"] = f"no {inf.target} face found on any output (detection rate 0)"
            if recs:
                r_all = torch.cat(recs)
                result["cycle_psnr"] = _finite_or_none(float(psnr(r_all, x_all).mean()))
                result["cycle_ssim"] = float(ssim(r_all, x_all).mean())
            else:
                unavailable["cycle"] = f"{fam.name} has no way back (no cycle)"
            ident = _identity(inputs_u8, fakes, fives)
            if "unavailable" in ident:
                unavailable["identity"] = ident["unavailable"]
            else:
                result["identity_cosine"] = ident["identity_cosine"]
                backends["identity"] = ident["backend"]
            fixed = {"input": inputs_u8[:p.fixed_inputs], "output": fakes[:p.fixed_inputs]}
            if recs:
                fixed["reconstruction"] = codec.to_uint8(torch.cat(recs)[:p.fixed_inputs])
        reals = np.stack([codec.to_uint8(_resize(codec.from_uint8(target["rgb"][i:i + 1]), px))[0]
                          for i in range(len(target["rgb"]))])
        fk = _fid_kid(fakes, reals, p, device)
        if "unavailable" in fk:
            unavailable["fid"] = unavailable["kid"] = fk["unavailable"]
        else:
            result.update(fk)
            backends["fid"] = "pytorch-fid Inception-v3 (pt_inception-2015-12-05)"
    finally:
        detector.close()
    result["unavailable"] = unavailable
    result["backends"] = backends
    result["versions"] = _versions()
    fileio.write_json(Path(p.metrics_dir) / f"{run}.json", result)
    _save_fixed(Path(p.out_dir) / run, fixed)
    log.info("%s: %s", run, ", ".join(f"{k} {v:.4g}" for k, v in result.items()
                                      if isinstance(v, float)) or "no numeric metrics")
    for k, why in unavailable.items():
        log.info("%s: %s unavailable: %s", run, k, why)
    return result
