"""`toonlab import-weights whitebox`: SystemErrorWang/White-box-Cartoonization's TensorFlow
checkpoint as a whitebox run (generator only; the importer interface:
`toonlab.models.importing`).

The checkpoint is `saved_models/model-33999` (a prefix) or the `saved_models` folder.
Reading it needs TensorFlow (`pip install tensorflow-cpu`), which only reads the
variables: the mapping (`whitebox_state_dict`) is plain numpy. ch and n_res come from the
shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toonlab.errors import ToonlabError, UsageError
from toonlab.models.importing import Format, Pending, WeightsMismatchError, indices, listing, step_of

TF_EXTRA = "pip install 'toonlab[tf]' (tensorflow-cpu)"

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
        raise WeightsMismatchError(f"White-box checkpoint: {len(unknown)} unexpected variable(s): {listing(sorted(unknown))}")
    if "conv0.weight" not in out:
        raise WeightsMismatchError(f"White-box checkpoint: no variable {prefix}Conv/weights "
                                   f"(its variables: {listing(sorted(variables))})")
    hp = {"ch": int(out["conv0.weight"].shape[0]), "n_res": len(indices(out, r"^blocks\.(\d+)\."))}
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


def read_whitebox(files: list[Path]) -> Pending:
    """saved_models/model-<step> (a checkpoint prefix) or the saved_models folder."""
    from toonlab.models.whitebox import model as wb

    if len(files) != 1:
        raise UsageError("whitebox: give one checkpoint (saved_models/model-33999, or the saved_models folder)")
    path = files[0]
    prefix, variables = read_tf_checkpoint(path)
    sd, hp = whitebox_state_dict(variables)

    def build(params: Any) -> dict[str, Any]:
        return {"G": wb.UNetGenerator(params.model.ch, params.model.n_res).state_dict()}

    return Pending({"model": hp}, {"G": (sd, path.name)}, build, {"G": "G"},
                   step=step_of(Path(prefix), r"model-(\d+)"),
                   notes=["converted from TensorFlow (HWIO -> OIHW, BGR -> RGB)"])


FORMATS = {
    "whitebox": Format("whitebox", read_whitebox, "SystemErrorWang/White-box-Cartoonization (TensorFlow), "
                       "saved_models/model-<step> or the saved_models folder (needs TensorFlow)"),
}
