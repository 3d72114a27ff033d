"""`toonlab import-weights ugatit | photo2cartoon`: U-GAT-IT and photo2cartoon checkpoints as
ugatit runs (the importer interface: `toonlab.models.importing`).

* `ugatit`: znxlwm/UGATIT-pytorch, `<dataset>_params_<step>.pt` (genA2B, genB2A, disGA,
  disGB, disLA, disLB). light / full, ch, n_res, the discriminator depths and (full model)
  the image size come from the shapes.
* `photo2cartoon`: minivision-ai/photo2cartoon, `photo2cartoon_weights.pt` (at least
  genA2B; `module.` prefixes stripped): model.variant soft_adalin. With genA2B alone the
  run translates photo -> cartoon only (no backward network).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toonlab.errors import UsageError
from toonlab.models.importing import (
    Format,
    Pending,
    WeightsMismatchError,
    indices,
    listing,
    load_torch,
    need,
    state_dict,
    step_of,
    strip_prefix,
)

UGATIT_NETS = {"genA2B": "G_A", "genB2A": "G_B", "disGA": "D_GA", "disGB": "D_GB",
               "disLA": "D_LA", "disLB": "D_LB"}


def _inferred(g: Mapping[str, Any], nets: Mapping[str, Any], soft: bool, label: str) -> dict[str, Any]:
    first = "ConvBlock1.1.weight" if soft else "DownBlock.1.weight"
    ch = int(need(g, first, label).shape[0])
    blocks = indices(g, r"^EncodeBlock(\d+)\." if soft else r"^UpBlock1_(\d+)\.")
    model: dict[str, Any] = {"variant": "soft_adalin" if soft else "ugatit", "ch": ch, "n_res": len(blocks),
                             "norm": "adalin", "cam_g": True}
    out: dict[str, Any] = {"model": model}
    fc_in = int(need(g, "FC.0.weight", label).shape[1])
    dim = 4 * ch
    model["light"] = fc_in == dim
    if not model["light"]:
        side = round((fc_in / dim) ** 0.5)
        if side * side * dim != fc_in:
            raise WeightsMismatchError(f"{label}: FC.0.weight has {fc_in} inputs, neither {dim} (light) nor "
                                       f"{dim} x side^2 (full model)")
        out["data"] = {"crop_px": side * 4}
    for ref, key in (("disGA", "n_dis_global"), ("disLA", "n_dis_local")):
        if ref in nets:
            convs = indices(nets[ref], r"^model\.(\d+)\.weight_orig$")
            model[key] = len(convs) + 1
            model["cam_d"] = any(k.startswith("gap_fc.") for k in nets[ref])
    return out


def _read_dict(path: Path, label: str, need_all: bool) -> dict[str, dict[str, Any]]:
    obj = load_torch(path)
    if not isinstance(obj, Mapping):
        raise WeightsMismatchError(f"{path.name}: holds a {type(obj).__name__}, not the {label} dict")
    unknown = [k for k in obj if k not in UGATIT_NETS]
    if unknown:
        raise WeightsMismatchError(f"{path.name}: {len(unknown)} unexpected entr(ies) {listing(list(map(str, unknown)))}"
                                   f" (a {label} file holds {', '.join(UGATIT_NETS)})")
    missing = [k for k in UGATIT_NETS if k not in obj] if need_all else \
        [k for k in ("genA2B",) if k not in obj]
    if missing:
        raise WeightsMismatchError(f"{path.name}: {len(missing)} missing entr(ies): {listing(missing)}")
    return {k: strip_prefix(state_dict(v, f"{path.name}[{k}]")) for k, v in obj.items()}


def _pending(path: Path, sds: dict[str, dict[str, Any]], soft: bool, step: int) -> Pending:
    from toonlab.models.ugatit import model as ug

    inferred = _inferred(sds["genA2B"], sds, soft, f"{path.name}[genA2B]")
    nets = {UGATIT_NETS[k]: (sd, f"{path.name}[{k}]") for k, sd in sds.items()}
    kinds = {"G_A": "G", "G_B": "G", "D_GA": "DG", "D_GB": "DG", "D_LA": "DL", "D_LB": "DL"}

    def build(params: Any) -> dict[str, Any]:
        m = params.model
        out = {"G": ug.build_generator(m, params.data.crop_px).state_dict()}
        if any(k.startswith("D_") for k in nets):
            out["DG"] = ug.build_discriminator(m, m.n_dis_global).state_dict()
            out["DL"] = ug.build_discriminator(m, m.n_dis_local).state_dict()
        return out

    absent = [] if "G_B" in nets else ["G_B"]
    return Pending(inferred, nets, build, {k: kinds[k] for k in nets}, step=step, absent=absent)


def read_ugatit(files: list[Path]) -> Pending:
    """<dataset>_params_<step>.pt: {genA2B, genB2A, disGA, disGB, disLA, disLB}."""
    if len(files) != 1:
        raise UsageError("ugatit: give one file, <dataset>_params_<step>.pt")
    path = files[0]
    sds = _read_dict(path, "U-GAT-IT", need_all=False)
    if "genB2A" not in sds:
        raise WeightsMismatchError(f"{path.name}: 1 missing entr(ies): genB2A")
    return _pending(path, sds, soft=False, step=step_of(path, r"_params_(\d+)\.pt$"))


def read_photo2cartoon(files: list[Path]) -> Pending:
    """photo2cartoon_weights.pt: at least genA2B (Soft-AdaLIN generator)."""
    if len(files) != 1:
        raise UsageError("photo2cartoon: give one file, photo2cartoon_weights.pt")
    path = files[0]
    sds = _read_dict(path, "photo2cartoon", need_all=False)
    return _pending(path, sds, soft=True, step=step_of(path, r"_params_(\d+)\.pt$"))


FORMATS = {
    "ugatit": Format("ugatit", read_ugatit, "znxlwm/UGATIT-pytorch, <dataset>_params_<step>.pt"),
    "photo2cartoon": Format("ugatit", read_photo2cartoon, "minivision-ai/photo2cartoon, photo2cartoon_weights.pt "
                            "(ugatit, variant soft_adalin)"),
}
