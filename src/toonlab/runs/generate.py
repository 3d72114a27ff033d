"""`toonlab generate`: images from a trained unconditional model (DCGAN), best first by
the discriminator's score, as a grid and as single files (deterministic for a seed).

The run is named as everywhere (`toonlab.runs.load`); its family's model module gives
`best_samples(params, nets, num=, search=, mean=, std=, seed=, device=)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toonlab import registry
from toonlab.errors import UsageError
from toonlab.runs.load import read_run, resolve_run
from toonlab.util import codec, fileio


def generate_images(run: str, params: Any, out: str | Path | None = None, *, checkpoint: str | None = None,
                    num: int = 64, search: int = 512, mean: float | None = None, std: float | None = None,
                    seed: int = 0, device: Any = "cpu") -> tuple[int, Path]:
    """Write `<out>` (default `<run folder>/generated`): NNNN.png best first, grid.png and
    scores.json; returns (images written, the folder). Noise mean / std default to the
    family's `sample` settings."""
    if num < 1 or search < num:
        raise UsageError(f"need 1 <= --num <= --search, got --num {num} --search {search}")
    loaded = read_run(resolve_run(run, params.train.out_dir, checkpoint))
    fam = loaded.family
    if fam.kind != "unconditional":
        raise UsageError(f"{loaded.ref.name} is a {fam.name} run: `toonlab generate` draws from unconditional "
                         f"models ({', '.join(registry.names('unconditional'))}); translate photos with "
                         "`toonlab cartoonize` instead")
    sample = getattr(loaded.params, "sample", None)
    mean = getattr(sample, "noise_mean", 0.0) if mean is None else mean
    std = getattr(sample, "noise_std", 1.0) if std is None else std
    best, scores = fam.module().best_samples(loaded.params, loaded.nets, num=num, search=search,
                                             mean=mean, std=std, seed=seed, device=device)
    out = Path(out) if out else loaded.ref.run_dir / "generated"
    with fileio.atomic_dir(out) as tmp:
        for k, img in enumerate(best):
            (tmp / f"{k:04d}.png").write_bytes(codec.png_bytes(img))  # inside the folder renamed at the end
        cols = int(np.ceil(np.sqrt(len(best))))
        rows = int(np.ceil(len(best) / cols))
        h, w = best.shape[1:3]
        grid = np.full((rows * h, cols * w, 3), 255, np.uint8)
        for k, img in enumerate(best):
            grid[(k // cols) * h:(k // cols + 1) * h, (k % cols) * w:(k % cols + 1) * w] = img
        (tmp / "grid.png").write_bytes(codec.png_bytes(grid))
        fileio.write_json(tmp / "scores.json", {"checkpoint": str(loaded.checkpoint), "step": loaded.step,
                                               "seed": seed, "mean": mean, "std": std, "search": search,
                                               "scores": [float(s) for s in scores]})
    return len(best), out

