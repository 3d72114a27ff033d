"""`toonlab import-weights cyclegan`: junyanz/pytorch-CycleGAN-and-pix2pix checkpoints as a
cyclegan run (the importer interface: `toonlab.models.importing`).

`latest_net_G_A.pth`, `latest_net_G_B.pth` [, `latest_net_D_A.pth`, `latest_net_D_B.pth`].
The reference's D_A judges domain B (it sees G_A's output): it becomes ToonLab's D_B, and
its D_B ToonLab's D_A. InstanceNorm running-stat keys of older files are dropped. ngf,
n_blocks, ndf and n_layers_d come from the shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toonlab.errors import UsageError
from toonlab.models.importing import Format, Pending, indices, load_torch, need, state_dict, step_of, strip_prefix


def _g_params(sd: Mapping[str, Any], label: str) -> dict[str, int]:
    ngf = int(need(sd, "model.1.weight", label).shape[0])
    blocks = indices(sd, r"^model\.(\d+)\.conv_block\.")
    return {"ngf": ngf, "n_blocks": len(blocks)}


def _d_params(sd: Mapping[str, Any], label: str) -> dict[str, int]:
    ndf = int(need(sd, "model.0.weight", label).shape[0])
    convs = [k for k, v in sd.items() if re.match(r"^model\.\d+\.weight$", k) and v.dim() == 4]
    return {"ndf": ndf, "n_layers_d": max(1, len(convs) - 2)}


def _drop_running_stats(sd: dict[str, Any], keep: set[str]) -> tuple[dict[str, Any], int]:
    """`sd` without InstanceNorm running statistics (names the network does not have)."""
    stats = (".running_mean", ".running_var", ".num_batches_tracked")
    out = {k: v for k, v in sd.items() if k in keep or not k.endswith(stats)}
    return out, len(sd) - len(out)


def read_cyclegan(files: list[Path]) -> Pending:
    """latest_net_G_A/G_B[/D_A/D_B].pth (the reference names them by the generator that feeds
    its discriminator: its D_A judges domain B, ToonLab's D_B)."""
    from toonlab.models.cyclegan import model as cg

    roles = {"G_A": "G_A", "G_B": "G_B", "D_A": "D_B", "D_B": "D_A"}   # reference -> ToonLab
    found: dict[str, Path] = {}
    for f in files:
        m = re.search(r"net_(G_A|G_B|D_A|D_B)\.pth$", f.name)
        if not m:
            raise UsageError(f"{f.name}: not a CycleGAN reference file (expected <epoch>_net_G_A.pth, "
                             "_net_G_B.pth, optionally _net_D_A.pth, _net_D_B.pth)")
        if m.group(1) in found:
            raise UsageError(f"two files for net_{m.group(1)}: {found[m.group(1)].name}, {f.name}")
        found[m.group(1)] = f
    for needed in ("G_A", "G_B"):
        if needed not in found:
            raise UsageError(f"cyclegan: no net_{needed}.pth among the files (both generators are needed)")
    if ("D_A" in found) != ("D_B" in found):
        raise UsageError("cyclegan: give both discriminators (net_D_A.pth and net_D_B.pth) or neither")
    sds = {ref: state_dict(load_torch(p), p.name) for ref, p in found.items()}
    inferred = _g_params(sds["G_A"], found["G_A"].name)
    if "D_A" in sds:
        inferred |= _d_params(sds["D_A"], found["D_A"].name)
    nets, dropped = {}, 0
    for ref, sd in sds.items():
        sd, n = _drop_running_stats(strip_prefix(sd), set())
        dropped += n
        nets[roles[ref]] = (sd, found[ref].name)
    notes = [f"dropped {dropped} InstanceNorm running-stat tensor(s)"] if dropped else []

    def build(params: Any) -> dict[str, Any]:
        m = params.model
        return {"G": cg.ResnetGenerator(ngf=m.ngf, n_blocks=m.n_blocks).state_dict(),
                "D": cg.NLayerDiscriminator(ndf=m.ndf, n_layers=m.n_layers_d).state_dict()}

    return Pending({"model": inferred}, nets, build, {"G_A": "G", "G_B": "G", "D_A": "D", "D_B": "D"},
                   step=step_of(found["G_A"], r"^(\d+)_net_"), notes=notes)


FORMATS = {
    "cyclegan": Format("cyclegan", read_cyclegan, "junyanz/pytorch-CycleGAN-and-pix2pix, <epoch>_net_G_A.pth "
                       "<epoch>_net_G_B.pth [<epoch>_net_D_A.pth <epoch>_net_D_B.pth]"),
}
