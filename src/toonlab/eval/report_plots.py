"""The loss curves of `toonlab report`: each run's DVCLive TSVs (what training logged),
thinned to `report.curve_points` points, drawn by matplotlib as one SVG line chart per
run and embedded as a data URI.
"""

from __future__ import annotations

import math
from pathlib import Path

from toonlab.util import codec


def read_curve(tsv: Path, max_points: int) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for line in tsv.read_text().splitlines()[1:]:
        parts = line.split("\t")
        try:
            x, y = float(parts[0]), float(parts[-1])
        except (ValueError, IndexError):
            continue
        if math.isfinite(y):
            xs.append(x)
            ys.append(y)
    if len(xs) > max_points:
        idx = [round(i * (len(xs) - 1) / (max_points - 1)) for i in range(max_points)]
        xs, ys = [xs[i] for i in idx], [ys[i] for i in idx]
    return xs, ys


NOT_LOSSES = {"images_per_s", "step_time_s"}   # logged beside the losses, on other scales


def loss_chart(curves: dict[str, tuple[list[float], list[float]]]) -> bytes | None:
    """Loss curves of one run as an SVG line chart (shared axes, legend: the loss names),
    drawn by matplotlib under the pages' chart setup; None when nothing was logged. The
    page shows it as an <img> data URI: an image's SVG runs no script and shares no ids
    with the page, and matplotlib escapes the names it writes as <text>."""
    from toonlab.util.templates import figure, figure_bytes

    curves = {k: v for k, v in sorted(curves.items()) if v[0]}
    if not curves:
        return None
    with figure(5.8, 2.5, layout="constrained") as fig:
        ax = fig.subplots()
        for name, (xs, ys) in curves.items():
            # A label starting with "_" would be left out of the legend by matplotlib.
            ax.plot(xs, ys, linewidth=1.2, label=" " + name if name.startswith("_") else name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(True, linewidth=0.4, alpha=0.5)
        legend = fig.legend(loc="outside right upper", frameon=False)
        for text in legend.get_texts():
            text.set_parse_math(False)     # a "$" in a loss name is text, not mathtext
        return figure_bytes(fig, "svg")


def run_curves(run_dir: Path, max_points: int) -> dict[str, str]:
    """{"uri": the loss chart's data URI, or "" and "message": why there is none}."""
    folder = run_dir / "dvclive" / "plots" / "metrics" / "train"
    if not folder.is_dir():
        return {"uri": "", "message": "no DVCLive logs"}
    losses = {p.stem: read_curve(p, max_points) for p in sorted(folder.glob("*.tsv"))
              if p.stem not in NOT_LOSSES}
    svg = loss_chart(losses)
    if svg is None:
        return {"uri": "", "message": "no logged losses"}
    return {"uri": codec.data_uri(svg, "image/svg+xml"), "message": ""}
