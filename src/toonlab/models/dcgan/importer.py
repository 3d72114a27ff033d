"""`toonlab import-weights dcgan`: chenyuntc/pytorch-book chapter 7 (AnimeGAN) checkpoints as
a dcgan run (the importer interface: `toonlab.models.importing`).

`netg_<epoch>.pth` [, `netd_<epoch>.pth`]; nz, ngf and ndf come from the shapes. Without
netd the run generates but has no discriminator.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from toonlab.errors import UsageError
from toonlab.models.importing import Format, Pending, load_torch, need, state_dict, step_of, strip_prefix


def read_dcgan(files: list[Path]) -> Pending:
    """netg_<epoch>.pth [, netd_<epoch>.pth] (pytorch-book chapter 7, AnimeGAN)."""
    from toonlab.models.dcgan import model as dc

    found: dict[str, Path] = {}
    for f in files:
        m = re.match(r"^net([gd])", f.name.lower())
        if not m:
            raise UsageError(f"{f.name}: not a DCGAN (AnimeGAN) file (expected netg_<epoch>.pth, netd_<epoch>.pth)")
        role = m.group(1).upper()
        if role in found:
            raise UsageError(f"two files for net{m.group(1)}: {found[role].name}, {f.name}")
        found[role] = f
    if "G" not in found:
        raise UsageError("dcgan: no netg_<epoch>.pth among the files")
    sds = {r: strip_prefix(state_dict(load_torch(p), p.name)) for r, p in found.items()}
    w = need(sds["G"], "main.0.weight", found["G"].name)
    inferred: dict[str, Any] = {"nz": int(w.shape[0]), "ngf": max(1, int(w.shape[1]) // 8)}
    if "D" in sds:
        inferred["ndf"] = int(need(sds["D"], "main.0.weight", found["D"].name).shape[0])

    def build(params: Any) -> dict[str, Any]:
        m = params.model
        return {"G": dc.NetG(m.nz, m.ngf).state_dict(), "D": dc.NetD(m.ndf).state_dict()}

    nets = {r: (sd, found[r].name) for r, sd in sds.items()}
    return Pending({"model": inferred}, nets, build, {r: r for r in nets},
                   step=step_of(found["G"], r"(\d+)\.pth$"), absent=[] if "D" in nets else ["D"])


FORMATS = {
    "dcgan": Format("dcgan", read_dcgan, "chenyuntc/pytorch-book ch. 7 (AnimeGAN), netg_<epoch>.pth "
                    "[netd_<epoch>.pth]"),
}
