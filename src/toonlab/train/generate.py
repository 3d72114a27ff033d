"""`toonlab generate`: images from a trained unconditional model, best first by the
discriminator's score, as a grid and as single files (deterministic for a seed)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from toonlab import io as tio
from toonlab.errors import UsageError
from toonlab.train import checkpoint as ckpt


def generate_images(family: str, fparams, run_dir: Path, checkpoint: Path | None, out: Path, *, num: int,
                    search: int, mean: float, std: float, seed: int, device: torch.device) -> int:
    from toonlab.models import dcgan

    path = checkpoint or ckpt.latest(run_dir / "checkpoints")
    if path is None or not Path(path).is_file():
        raise UsageError(f"no checkpoint to generate from (looked for {checkpoint or run_dir / 'checkpoints'}); "
                         f"train first: toonlab train {family}")
    state = ckpt.load(path)
    if state.get("family") != family:
        raise UsageError(f"{path} is a {state.get('family')} checkpoint, not {family}")
    m = fparams.model
    G, D = dcgan.NetG(m.nz, m.ngf).to(device), dcgan.NetD(m.ndf).to(device)
    G.load_state_dict(state["nets"]["G"])
    D.load_state_dict(state["nets"]["D"])
    images, scores = dcgan.generate(G, D, num, search, mean, std, seed, device)
    with tio.atomic_dir(out) as tmp:
        for k, (img, score) in enumerate(zip(images, scores)):
            _save_png(tmp / f"{k:04d}.png", img)
        cols = int(np.ceil(np.sqrt(len(images))))
        rows = int(np.ceil(len(images) / cols))
        h, w = images.shape[1:3]
        grid = np.full((rows * h, cols * w, 3), 255, np.uint8)
        for k, img in enumerate(images):
            grid[(k // cols) * h:(k // cols + 1) * h, (k % cols) * w:(k % cols + 1) * w] = img
        _save_png(tmp / "grid.png", grid)
        tio.write_json(tmp / "scores.json", {"checkpoint": str(path), "step": state["step"], "seed": seed,
                                             "mean": mean, "std": std, "search": search,
                                             "scores": [float(s) for s in scores]})
    return len(images)


def _save_png(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    path.write_bytes(buf.getvalue())  # inside the temporary folder that is renamed at the end
