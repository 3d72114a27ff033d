"""Cartoonize latency per stage (decode, detect, align, translate, paste) for one photo,
PyTorch against ONNX Runtime, on CPU, in one process.

    python benchmarks/cartoonize.py [--image-px 1024] [--px 256] [--ngf 64] [--blocks 9] [--repeat 5]

The photo is skimage's astronaut upscaled to --image-px (PNG on disk, so decode is the
real safe decode). The model is an untrained CycleGAN generator at reference size
(256 px, ngf 64, 9 residual blocks) from freshly initialised weights, written as a
one-checkpoint run; nothing is trained. The ONNX column uses `toonlab.apps.export`
(export_run + load_onnx_inference) when that module and onnxruntime are installed.
Times are medians over --repeat runs after one warm-up, in milliseconds per image;
ratios are against the PyTorch column.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import random_cyclegan_run


def _photo(root: Path, image_px: int) -> Path:
    from PIL import Image
    from skimage import data

    path = root / "astronaut.png"
    Image.fromarray(data.astronaut()).resize((image_px, image_px), Image.BICUBIC).save(path)
    return path


def _time(fn, repeat: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), out


def _stages(car, path: Path, repeat: int) -> dict[str, float]:
    ms: dict[str, float] = {}
    ms["decode"], dec = _time(lambda: car.decode(path), repeat)
    rgb = dec.image
    ms["detect"], faces = _time(lambda: car.detect(rgb), repeat)
    if not faces:
        raise SystemExit("no face found in the benchmark photo")
    ms["align"], pairs = _time(lambda: [car.align(rgb, f) for f in faces], repeat)
    crops = np.stack([c for c, _ in pairs])
    matrices = [m for _, m in pairs]
    ms["translate"], cartoons = _time(lambda: car.translate(crops), repeat)
    ms["paste"], _ = _time(lambda: car.paste(rgb, cartoons, matrices), repeat)
    ms["total"] = sum(ms.values())
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-px", type=int, default=1024)
    ap.add_argument("--px", type=int, default=256, help="model resolution")
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=9)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-onnx", action="store_true", help="PyTorch column only")
    args = ap.parse_args()

    from toonlab.apps.cartoonize import Cartoonizer
    from toonlab.apps.params import CartoonizeParams
    from toonlab.runs.load import read_run, resolve_run

    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = random_cyclegan_run(root / "cyclegan", args.ngf, args.blocks, args.px)
        path = _photo(root, args.image_px)
        settings = CartoonizeParams(paste_back=True, faces="largest")
        columns: dict[str, dict[str, float]] = {}

        inf = read_run(resolve_run(run, root)).inference(cpu)
        car = Cartoonizer(inf, settings, device=cpu)
        columns["pytorch"] = _stages(car, path, args.repeat)
        car.close()

        if not args.no_onnx:
            try:
                from toonlab.apps.export import export_run, load_onnx_inference
            except ImportError as exc:
                print(f"(no ONNX column: {exc})")
            else:
                export_run(run, root / "export")
                car = Cartoonizer(load_onnx_inference(root / "export"), settings, device=cpu)
                columns["onnxruntime"] = _stages(car, path, args.repeat)
                car.close()

    print(f"cartoonize, one {args.image_px}x{args.image_px} photo, CycleGAN {args.px} px ngf {args.ngf} "
          f"{args.blocks} blocks, CPU ({torch.get_num_threads()} threads), median of {args.repeat}, ms/image")
    names = list(columns)
    head = f"{'stage':<10}" + "".join(f"{n:>14}" for n in names)
    if len(names) > 1:
        head += "".join(f"{n + '/pt':>18}" for n in names[1:])
    print(head)
    for stage in columns["pytorch"]:
        base = columns["pytorch"][stage]
        row = f"{stage:<10}" + "".join(f"{columns[n][stage]:>14.1f}" for n in names)
        row += "".join(f"{columns[n][stage] / base:>18.2f}" for n in names[1:])
        print(row)


if __name__ == "__main__":
    main()
