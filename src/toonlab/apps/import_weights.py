"""`toonlab import-weights`: checkpoints of the reference implementations as ToonLab runs.

`toonlab import-weights FORMAT FILE... --out RUN_DIR [--set key=value ...]` reads the
weights of a reference implementation, infers the architecture's hyperparameters from the
tensors' names and shapes, checks every tensor against ToonLab's network of those
hyperparameters (names and shapes: a missing, unexpected or mis-shaped tensor is an error
listing them) and writes a normal run folder: `checkpoints/step-<N>.pt` (tensors and plain
data: loads with `torch.load(weights_only=True)`), `config.json` and `summary.json`.
`evaluate`, `cartoonize`, `export`, `serve` and the report then use it like a trained run
(it cannot be resumed: it has no optimizer state).

Formats (the first argument):

* `cyclegan`: junyanz/pytorch-CycleGAN-and-pix2pix, `latest_net_G_A.pth`,
  `latest_net_G_B.pth` [, `latest_net_D_A.pth`, `latest_net_D_B.pth`]. The reference's
  D_A judges domain B (it sees G_A's output): it becomes ToonLab's D_B, and its D_B ToonLab's
  D_A. InstanceNorm running-stat keys of older files are dropped. ngf, n_blocks, ndf and
  n_layers_d come from the shapes.
* `ugatit`: znxlwm/UGATIT-pytorch, `<dataset>_params_<step>.pt` (genA2B, genB2A, disGA,
  disGB, disLA, disLB). light / full, ch, n_res, the discriminator depths and (full model)
  the image size come from the shapes.
* `photo2cartoon`: minivision-ai/photo2cartoon, `photo2cartoon_weights.pt` (at least
  genA2B; `module.` prefixes stripped): family ugatit, model.variant soft_adalin. With
  genA2B alone the run translates photo -> cartoon only (no backward network).
* `dcgan`: chenyuntc/pytorch-book chapter 7 (AnimeGAN), `netg_<epoch>.pth` [, `netd_<epoch>.pth`].
* `whitebox`: SystemErrors/White-box-Cartoonization, the TensorFlow checkpoint
  (`saved_models/model-33999` or the `saved_models` folder); needs TensorFlow (`pip install
  tensorflow-cpu`), which only reads the variables: the mapping (`whitebox_state_dict`) is
  plain numpy.

The hyperparameters inferred are set in the family's params section (the base: the
params file's section); `--set model.ch=32` (dotted, inside the section) overrides them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toonlab.errors import ToonlabError, UsageError
from toonlab.log import get_logger
from toonlab.util import keys

log = get_logger(__name__)

TF_EXTRA = "pip install 'toonlab[tf]' (tensorflow-cpu)"
MAX_LISTED = 5


class WeightsMismatchError(ToonlabError):
    """Tensors of a reference checkpoint that do not fit ToonLab's network (exit 1)."""


@dataclass
class Imported:
    """A reference checkpoint, read and renamed: the family, the inferred params (raw, the
    section's layout), the ToonLab nets' state dicts and the networks it does not hold."""

    family: str
    inferred: dict[str, Any]
    nets: dict[str, dict[str, Any]]
    step: int = 0
    absent: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- helpers


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return f"{shown} (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else shown


def _load_torch(path: Path) -> Any:
    import torch

    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a foreign or damaged file, reported with its cause
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ToonlabError(f"{path}: not a readable PyTorch weights file ({first})") from None


def _state_dict(obj: Any, where: str) -> dict[str, Any]:
    import torch

    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsMismatchError(f"{where}: not a state dict (a mapping of names to tensors)")
    return dict(obj)


def strip_prefix(sd: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """`sd` with `prefix` removed from the names that start with it (DataParallel's `module.`)."""
    return {k.removeprefix(prefix): v for k, v in sd.items()}


def _drop_running_stats(sd: dict[str, Any], keep: set[str]) -> tuple[dict[str, Any], int]:
    """`sd` without InstanceNorm running statistics (names the network does not have)."""
    stats = (".running_mean", ".running_var", ".num_batches_tracked")
    out = {k: v for k, v in sd.items() if k in keep or not k.endswith(stats)}
    return out, len(sd) - len(out)


def conform(expected: Mapping[str, Any], sd: Mapping[str, Any], label: str) -> dict[str, Any]:
    """`sd` checked against `expected` (a ToonLab network's state dict): the same names and
    shapes, values converted to the expected dtype. WeightsMismatchError listing the
    missing, unexpected and mis-shaped tensors otherwise."""
    sd = dict(sd)
    missing = [k for k in expected if k not in sd]
    # BatchNorm counters absent from files of older PyTorch versions: not weights, start at 0.
    for k in [k for k in missing if k.endswith(".num_batches_tracked")]:
        sd[k] = expected[k].new_zeros(expected[k].shape)
        missing.remove(k)
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k} {tuple(sd[k].shape)} (expected {tuple(expected[k].shape)})"
              for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_listing(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} with another shape: {_listing(shapes)}")
    if problems:
        raise WeightsMismatchError(f"{label} does not fit ToonLab's network: " + "; ".join(problems))
    return {k: sd[k].detach().to(expected[k].dtype).clone().contiguous() for k in expected}


def _indices(sd: Mapping[str, Any], pattern: str) -> set[int]:
    rx = re.compile(pattern)
    return {int(m.group(1)) for k in sd if (m := rx.match(k))}


def _need(sd: Mapping[str, Any], key: str, label: str) -> Any:
    if key not in sd:
        raise WeightsMismatchError(f"{label}: no tensor {key!r}, so not a {label} state dict "
                                   f"(it holds {len(sd)} tensors: {_listing(sorted(sd))})")
    return sd[key]


def _step_of(path: Path, pattern: str) -> int:
    m = re.search(pattern, path.name)
    return int(m.group(1)) if m else 0


# ----------------------------------------------------------------------------- CycleGAN


def _cyclegan_g_params(sd: Mapping[str, Any], label: str) -> dict[str, int]:
    ngf = int(_need(sd, "model.1.weight", label).shape[0])
    blocks = _indices(sd, r"^model\.(\d+)\.conv_block\.")
    return {"ngf": ngf, "n_blocks": len(blocks)}


def _cyclegan_d_params(sd: Mapping[str, Any], label: str) -> dict[str, int]:
    ndf = int(_need(sd, "model.0.weight", label).shape[0])
    convs = [k for k, v in sd.items() if re.match(r"^model\.\d+\.weight$", k) and v.dim() == 4]
    return {"ndf": ndf, "n_layers_d": max(1, len(convs) - 2)}


def read_cyclegan(files: list[Path]) -> _Pending:
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
    for need in ("G_A", "G_B"):
        if need not in found:
            raise UsageError(f"cyclegan: no net_{need}.pth among the files (both generators are needed)")
    if ("D_A" in found) != ("D_B" in found):
        raise UsageError("cyclegan: give both discriminators (net_D_A.pth and net_D_B.pth) or neither")
    sds = {ref: _state_dict(_load_torch(p), p.name) for ref, p in found.items()}
    inferred = _cyclegan_g_params(sds["G_A"], found["G_A"].name)
    if "D_A" in sds:
        inferred |= _cyclegan_d_params(sds["D_A"], found["D_A"].name)
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

    return _Pending("cyclegan", {"model": inferred}, nets, build,
                    {"G_A": "G", "G_B": "G", "D_A": "D", "D_B": "D"},
                    step=_step_of(found["G_A"], r"^(\d+)_net_"), notes=notes)


# ----------------------------------------------------------------------------- U-GAT-IT / photo2cartoon

UGATIT_NETS = {"genA2B": "G_A", "genB2A": "G_B", "disGA": "D_GA", "disGB": "D_GB",
               "disLA": "D_LA", "disLB": "D_LB"}


def _ugatit_inferred(g: Mapping[str, Any], nets: Mapping[str, Any], soft: bool, label: str) -> dict[str, Any]:
    first = "ConvBlock1.1.weight" if soft else "DownBlock.1.weight"
    ch = int(_need(g, first, label).shape[0])
    blocks = _indices(g, r"^EncodeBlock(\d+)\." if soft else r"^UpBlock1_(\d+)\.")
    model: dict[str, Any] = {"variant": "soft_adalin" if soft else "ugatit", "ch": ch, "n_res": len(blocks),
                             "norm": "adalin", "cam_g": True}
    out: dict[str, Any] = {"model": model}
    fc_in = int(_need(g, "FC.0.weight", label).shape[1])
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
            convs = _indices(nets[ref], r"^model\.(\d+)\.weight_orig$")
            model[key] = len(convs) + 1
            model["cam_d"] = any(k.startswith("gap_fc.") for k in nets[ref])
    return out


def _read_ugatit_dict(path: Path, label: str, need_all: bool) -> dict[str, dict[str, Any]]:
    obj = _load_torch(path)
    if not isinstance(obj, Mapping):
        raise WeightsMismatchError(f"{path.name}: holds a {type(obj).__name__}, not the {label} dict")
    unknown = [k for k in obj if k not in UGATIT_NETS]
    if unknown:
        raise WeightsMismatchError(f"{path.name}: {len(unknown)} unexpected entr(ies) {_listing(list(map(str, unknown)))}"
                                   f" (a {label} file holds {', '.join(UGATIT_NETS)})")
    missing = [k for k in UGATIT_NETS if k not in obj] if need_all else \
        [k for k in ("genA2B",) if k not in obj]
    if missing:
        raise WeightsMismatchError(f"{path.name}: {len(missing)} missing entr(ies): {_listing(missing)}")
    return {k: strip_prefix(_state_dict(v, f"{path.name}[{k}]")) for k, v in obj.items()}


def _ugatit_pending(family_format: str, path: Path, sds: dict[str, dict[str, Any]], soft: bool,
                    step: int) -> _Pending:
    from toonlab.models.ugatit import model as ug

    inferred = _ugatit_inferred(sds["genA2B"], sds, soft, f"{path.name}[genA2B]")
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
    return _Pending("ugatit", inferred, nets, build, {k: kinds[k] for k in nets}, step=step, absent=absent,
                    fmt=family_format)


def read_ugatit(files: list[Path]) -> _Pending:
    """<dataset>_params_<step>.pt: {genA2B, genB2A, disGA, disGB, disLA, disLB}."""
    if len(files) != 1:
        raise UsageError("ugatit: give one file, <dataset>_params_<step>.pt")
    path = files[0]
    sds = _read_ugatit_dict(path, "U-GAT-IT", need_all=False)
    if "genB2A" not in sds:
        raise WeightsMismatchError(f"{path.name}: 1 missing entr(ies): genB2A")
    return _ugatit_pending("ugatit", path, sds, soft=False, step=_step_of(path, r"_params_(\d+)\.pt$"))


def read_photo2cartoon(files: list[Path]) -> _Pending:
    """photo2cartoon_weights.pt: at least genA2B (Soft-AdaLIN generator)."""
    if len(files) != 1:
        raise UsageError("photo2cartoon: give one file, photo2cartoon_weights.pt")
    path = files[0]
    sds = _read_ugatit_dict(path, "photo2cartoon", need_all=False)
    return _ugatit_pending("photo2cartoon", path, sds, soft=True, step=_step_of(path, r"_params_(\d+)\.pt$"))


# ----------------------------------------------------------------------------- DCGAN


def read_dcgan(files: list[Path]) -> _Pending:
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
    sds = {r: strip_prefix(_state_dict(_load_torch(p), p.name)) for r, p in found.items()}
    w = _need(sds["G"], "main.0.weight", found["G"].name)
    inferred: dict[str, Any] = {"nz": int(w.shape[0]), "ngf": max(1, int(w.shape[1]) // 8)}
    if "D" in sds:
        inferred["ndf"] = int(_need(sds["D"], "main.0.weight", found["D"].name).shape[0])

    def build(params: Any) -> dict[str, Any]:
        m = params.model
        return {"G": dc.NetG(m.nz, m.ngf).state_dict(), "D": dc.NetD(m.ndf).state_dict()}

    nets = {r: (sd, found[r].name) for r, sd in sds.items()}
    return _Pending("dcgan", {"model": inferred}, nets, build, {r: r for r in nets},
                    step=_step_of(found["G"], r"(\d+)\.pth$"), absent=[] if "D" in nets else ["D"])


# ----------------------------------------------------------------------------- White-box

WHITEBOX_LAYERS = {"Conv": "conv0", "Conv_1": "down1", "Conv_2": "conv1", "Conv_3": "down2", "Conv_4": "conv2",
                   "Conv_5": "conv3", "Conv_6": "up1a", "Conv_7": "up1b", "Conv_8": "up2a", "Conv_9": "out"}
_TF_SKIP = re.compile(r"(/Adam(_\d+)?|/ExponentialMovingAverage|/Momentum|/RMSProp)$")


def whitebox_state_dict(variables: Mapping[str, Any], scope: str = "generator") -> tuple[dict[str, Any], dict[str, int]]:
    """{TensorFlow variable name: numpy array} of the reference's `unet_generator` ->
    (ToonLab `UNetGenerator` state dict, {"ch", "n_res"}). Weights HWIO -> OIHW; the
    reference works on BGR images, so the first conv's input channels and the last conv's
    output channels (and bias) are reversed to RGB. Variables outside `scope` and optimizer
    slots are ignored; anything else in the scope that is not a generator layer is an error."""
    import numpy as np
    import torch

    prefix = scope.rstrip("/") + "/"
    mine = {k[len(prefix):]: np.asarray(v) for k, v in variables.items()
            if k.startswith(prefix) and not _TF_SKIP.search(k)}
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for name, arr in mine.items():
        m = re.match(r"^(Conv(?:_\d+)?|block_(\d+)/conv([12]))/(weights|biases)$", name)
        if not m:
            unknown.append(prefix + name)
            continue
        if m.group(2) is not None:
            layer = f"blocks.{int(m.group(2))}.conv{m.group(3)}"
        elif m.group(1) in WHITEBOX_LAYERS:
            layer = WHITEBOX_LAYERS[m.group(1)]
        else:
            unknown.append(prefix + name)
            continue
        if m.group(4) == "weights":
            if arr.ndim != 4:
                raise WeightsMismatchError(f"{prefix}{name}: a {arr.ndim}-d array, expected a 4-d HWIO kernel")
            arr = arr.transpose(3, 2, 0, 1)   # HWIO -> OIHW
            if layer == "conv0":
                arr = arr[:, ::-1]
            if layer == "out":
                arr = arr[::-1]
            out[f"{layer}.weight"] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        else:
            if layer == "out":
                arr = arr[::-1]
            out[f"{layer}.bias"] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if unknown:
        raise WeightsMismatchError(f"White-box checkpoint: {len(unknown)} unexpected variable(s): {_listing(sorted(unknown))}")
    if "conv0.weight" not in out:
        raise WeightsMismatchError(f"White-box checkpoint: no variable {prefix}Conv/weights "
                                   f"(its variables: {_listing(sorted(variables))})")
    hp = {"ch": int(out["conv0.weight"].shape[0]), "n_res": len(_indices(out, r"^blocks\.(\d+)\."))}
    return out, hp


def read_tf_checkpoint(path: Path) -> tuple[str, dict[str, Any]]:
    """(the checkpoint prefix, every variable) of a TensorFlow checkpoint (a prefix such as
    saved_models/model-33999, or a folder holding a `checkpoint` file); needs TensorFlow."""
    try:
        import tensorflow as tf  # optional extra
    except ImportError as exc:
        if not (isinstance(exc, ModuleNotFoundError) and exc.name == "tensorflow"):
            # installed but broken (e.g. a protobuf or numpy of another version beside it)
            raise ToonlabError(f"reading the White-box TensorFlow checkpoint needs TensorFlow, which is "
                               f"installed but does not import ({type(exc).__name__}: {exc})") from None
        raise ToonlabError(f"reading the White-box TensorFlow checkpoint needs TensorFlow, which is not "
                           f"installed: {TF_EXTRA} (only to import; ToonLab itself does not use it)") from None
    prefix = str(path)
    if path.is_dir():
        prefix = tf.train.latest_checkpoint(str(path)) or ""
        if not prefix:
            raise UsageError(f"{path}: no TensorFlow checkpoint in this folder (no 'checkpoint' file)")
    try:
        reader = tf.train.load_checkpoint(prefix)
        # the values are read here: a missing or truncated .data-* file fails now, not at load_checkpoint
        variables = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    except Exception as exc:  # noqa: BLE001 - TF's own error types
        raise ToonlabError(f"{path}: not a readable TensorFlow checkpoint ({type(exc).__name__}: {exc})") from None
    return prefix, variables


def read_whitebox(files: list[Path]) -> _Pending:
    from toonlab.models.whitebox import model as wb

    if len(files) != 1:
        raise UsageError("whitebox: give one checkpoint (saved_models/model-33999, or the saved_models folder)")
    path = files[0]
    prefix, variables = read_tf_checkpoint(path)
    sd, hp = whitebox_state_dict(variables)

    def build(params: Any) -> dict[str, Any]:
        return {"G": wb.UNetGenerator(params.model.ch, params.model.n_res).state_dict()}

    return _Pending("whitebox", {"model": hp}, {"G": (sd, path.name)}, build, {"G": "G"},
                    step=_step_of(Path(prefix), r"model-(\d+)"),
                    notes=["converted from TensorFlow (HWIO -> OIHW, BGR -> RGB)"])


# ----------------------------------------------------------------------------- driver


@dataclass
class _Pending:
    """Read and renamed, not yet checked: nets {ToonLab name: (state dict, where from)};
    `build(params)` gives the expected state dicts by kind, `kinds` the kind of each net."""

    family: str
    inferred: dict[str, Any]
    nets: dict[str, tuple[dict[str, Any], str]]
    build: Callable[[Any], dict[str, Any]]
    kinds: dict[str, str]
    step: int = 0
    absent: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fmt: str = ""


FORMATS: dict[str, Callable[[list[Path]], _Pending]] = {
    "cyclegan": read_cyclegan, "ugatit": read_ugatit, "photo2cartoon": read_photo2cartoon,
    "dcgan": read_dcgan, "whitebox": read_whitebox,
}


def parse_sets(sets: list[str] | None) -> dict[str, Any]:
    """["model.ch=32", "data.crop_px=128"] -> {"model": {"ch": 32}, "data": {"crop_px": 128}}
    (values read as YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    for item in sets or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected key=value (e.g. model.ch=32)")
        value = yaml.safe_load(raw) if raw.strip() else ""
        try:
            keys.put(out, key.strip(), value)
        except ValueError as exc:
            raise UsageError(f"--set {item!r}: {exc.args[0]} is set both as a value and as a section") from None
    return out


def convert(fmt: str, files: list[str | Path], sets: list[str] | None = None,
            base: Mapping[str, Any] | None = None) -> tuple[Any, Imported]:
    """Read `files` of format `fmt` into (the family's validated params, Imported), every
    tensor checked; nothing is written."""
    from pydantic import ValidationError

    from toonlab.models import registry

    if fmt not in FORMATS:
        raise UsageError(f"no import format {fmt!r}; formats: {', '.join(FORMATS)}")
    if not files:
        raise UsageError(f"{fmt}: give the reference checkpoint file(s)")
    pending = FORMATS[fmt]([Path(f) for f in files])
    fam = registry.get(pending.family)
    raw = keys.merge(dict(base or {}), pending.inferred)
    raw = keys.merge(raw, parse_sets(sets))
    try:
        params = fam.params_cls.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc'])) or '(section)'}: {e['msg']}" for e in exc.errors()]
        raise UsageError(f"{fmt}: the inferred / --set settings are not valid {fam.name} params:\n  "
                         + "\n  ".join(lines)) from None
    expected = pending.build(params)
    nets = {name: conform(expected[pending.kinds[name]], sd, f"{where} (as {name})")
            for name, (sd, where) in pending.nets.items()}
    return params, Imported(pending.family, pending.inferred, nets, pending.step, pending.absent, pending.notes)


def _sha256(path: Path) -> str:
    """Of a file; of a TensorFlow checkpoint prefix (model-N: its .index and .data-* files) or
    folder (every .index and .data-* file in it): over the names and contents, in order."""
    h = hashlib.sha256()
    if path.is_file():
        parts = [path]
    elif path.is_dir():
        parts = sorted(p for p in path.iterdir() if p.is_file() and (p.suffix == ".index" or ".data-" in p.name))
    else:
        parts = sorted(p for p in path.parent.glob(path.name + ".*") if p.is_file())
    for part in parts:
        if len(parts) > 1 or part != path:
            h.update(part.name.encode() + b"\0")
        with part.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def import_weights(fmt: str, files: list[str | Path], out: str | Path, sets: list[str] | None = None,
                   base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Convert and write the run folder `out` (all at once: nothing is written on an error);
    returns its summary. UsageError when `out` exists and is not empty."""
    import io

    import torch

    from toonlab.util import fileio

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out}: exists and is not empty; give a new or empty folder "
                         "(an import never replaces a run)")
    params, imp = convert(fmt, files, sets, base)
    sources = [{"file": Path(f).name, "sha256": _sha256(Path(f))} for f in files]
    meta = {"format": fmt, "sources": sources, "inferred": imp.inferred, "sets": list(sets or []),
            "absent_nets": imp.absent, "notes": imp.notes}
    config = {"family": imp.family, "params": params.model_dump(mode="json"), "train": {}, "data": {},
              "imported": meta}
    ckpt_name = f"step-{imp.step:08d}.pt"
    state = {"step": imp.step, "family": imp.family, "config": config, "nets": imp.nets,
             "optimizers": {}, "schedulers": {}, "extra": {}, "data": {}, "total_steps": imp.step,
             "metrics": {}, "imported": meta}
    buf = io.BytesIO()
    torch.save(state, buf)
    summary = {"family": imp.family, "steps": imp.step, "metrics": {},
               "checkpoint": str(out / "checkpoints" / ckpt_name), "world_size": 1, "imported": meta}
    with fileio.atomic_dir(out) as tmp:
        fileio.write_bytes(tmp / "checkpoints" / ckpt_name, buf.getvalue())
        fileio.write_json(tmp / "config.json", config)
        fileio.write_json(tmp / "summary.json", summary)
    log.info("imported %s (%s) into %s: nets %s%s", fmt, imp.family, out, ", ".join(imp.nets),
             f"; without {', '.join(imp.absent)}" if imp.absent else "")
    for note in imp.notes:
        log.info("%s", note)
    return summary
