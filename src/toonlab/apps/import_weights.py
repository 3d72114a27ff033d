"""`toonlab import-weights`: checkpoints of the reference implementations as ToonLab runs.

`toonlab import-weights FORMAT FILE... --out RUN_DIR [--set key=value ...]` reads the
weights of a reference implementation, infers the architecture's hyperparameters from the
tensors' names and shapes, checks every tensor against ToonLab's network of those
hyperparameters (names and shapes: a missing, unexpected or mis-shaped tensor is an error
listing them) and writes a normal run folder: `checkpoints/step-<N>.pt` (tensors and plain
data: loads with `torch.load(weights_only=True)`), `config.json` and `summary.json`.
`evaluate`, `cartoonize`, `export`, `serve` and the report then use it like a trained run
(it cannot be resumed: it has no optimizer state).

Formats (the first argument) are declared by the families: a family folder with an
`importer.py` (`toonlab.models.<family>.importer`, found by name with
`Family.part("importer")`) defines `FORMATS = {name: Format(family, read, help)}`, the
reader turning the files into a `Pending` (renamed tensors, inferred params, the expected
networks); the interface and the shared helpers are in `toonlab.models.importing`.
`formats()` collects them (registry order); the command line's choices and their help come
from it. Today: `cyclegan` (models/cyclegan), `dcgan` (models/dcgan), `ugatit` and
`photo2cartoon` (models/ugatit), `whitebox` (models/whitebox, needs TensorFlow).

This module is the generic part: it validates the params, checks every tensor
(`conform`) and writes the run folder at once. The hyperparameters inferred are set in the
family's params section (the base: the params file's section); `--set model.ch=32`
(dotted, inside the section) overrides them. Light at import (the command line lists the
formats at start-up): torch is loaded when a format is read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toonlab import registry
from toonlab.errors import ToonlabError, UsageError
from toonlab.log import get_logger
from toonlab.models.importing import Format, WeightsMismatchError, listing
from toonlab.util import keys

log = get_logger(__name__)


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


def formats() -> dict[str, Format]:
    """Every import format -> its Format, from the importer of each family folder that has
    one (registry order; a folder of two families, as White-box's, once)."""
    out: dict[str, Format] = {}
    seen: set[str] = set()
    for fam in registry.FAMILIES:
        if fam.package in seen:
            continue
        seen.add(fam.package)
        module = fam.part("importer")
        if module is None:
            continue
        for name, fmt in module.FORMATS.items():
            if name in out:
                raise ToonlabError(f"import format {name!r} is declared twice ({module.__name__})")
            out[name] = fmt
    return out


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
        problems.append(f"{len(missing)} missing: {listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {listing(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} with another shape: {listing(shapes)}")
    if problems:
        raise WeightsMismatchError(f"{label} does not fit ToonLab's network: " + "; ".join(problems))
    return {k: sd[k].detach().to(expected[k].dtype).clone().contiguous() for k in expected}


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

    known = formats()
    if fmt not in known:
        raise UsageError(f"no import format {fmt!r}; formats: {', '.join(known)}")
    if not files:
        raise UsageError(f"{fmt}: give the reference checkpoint file(s)")
    pending = known[fmt].read([Path(f) for f in files])
    fam = registry.get(known[fmt].family)
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
    return params, Imported(fam.name, pending.inferred, nets, pending.step, pending.absent, pending.notes)


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
