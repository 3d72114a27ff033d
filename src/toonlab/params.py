"""Typed parameters: the one schema for `params.yaml`.

Every stage reads its section from here. Validation happens at load time: an unknown
key, a wrong type or an out-of-range value stops the run with one line per problem,
each naming the key path, e.g.::

    cyclegan.loss.cycle_weight: expected a number >= 0, got 'ten'

The sections live with their packages (`toonlab.data.params`, `toonlab.faces.params`,
`toonlab.train.params`, `toonlab.eval.params`, `toonlab.apps.params`) and the model
families' sections with the families (`toonlab.models.<name>.params`, one field per
registered family, see `toonlab.registry`). This module imports only those
light modules: pydantic, never torch or OpenCV, so `toonlab --help`, `toonlab params`
and the Snakefile load quickly.

Never name a parameter `size` or `nfiles`: DVC leaves those out of its run-cache key
(treeverse/dvc#10296). Use e.g. `crop_px`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, create_model, model_validator

from toonlab import registry
from toonlab.ablations import AblationsParams, apply_overrides
from toonlab.apps.params import ServeParams
from toonlab.data.params import CrawlParams, DataParams, DecodeParams, DemoParams, IngestParams
from toonlab.errors import ParamsError
from toonlab.eval.params import EvaluateParams, ReportParams
from toonlab.faces.params import AlignParams, CurateParams, DetectParams, MatteParams, PackParams, PreprocessParams
from toonlab.schema import Section, validate
from toonlab.train.params import TrainParams

DEFAULT_PARAMS = "params.yaml"


class RuntimeParams(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: Annotated[int, Field(ge=0, le=256)] = 2
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Trained networks translating / generating on CPU (evaluate, cartoonize, serve; not
    # export): auto (bf16 where native, within the parity tolerance and faster) | fp32 | bf16
    # (toonlab.runs.precision). Training: train.cpu_precision.
    cpu_precision: Literal["auto", "fp32", "bf16"] = "auto"
    # A pretrained file a stage needs and cannot find (toonlab.weights): auto fetches it from its
    # owner's URL (or $TOONLAB_WEIGHTS_MIRROR), hash-checked; never only says where to put it.
    # TOONLAB_FETCH_WEIGHTS=auto|never overrides this.
    fetch_weights: Literal["auto", "never"] = "auto"


class _Checks(Section):
    """Checks across sections, run after every section is valid."""

    @model_validator(mode="after")
    def _check_ablations(self) -> "_Checks":
        """Every ablation variant's overrides must be valid settings of its family."""
        for name, v in self.ablations.variants.items():  # type: ignore[attr-defined]
            section = registry.get(v.family).params_section
            apply_overrides(getattr(self, section), v.overrides, f"ablations.variants.{name}.overrides")
        return self


def _field(cls: type) -> tuple[type, Any]:
    return (cls, cls())


# The sections in params.yaml's order: data, faces, training, the families, evaluation, apps.
Params = create_model(
    "Params",
    __base__=_Checks,
    __module__=__name__,
    seed=(Annotated[int, Field(ge=0)], 0),
    runtime=_field(RuntimeParams),
    data=_field(DataParams),
    demo=_field(DemoParams),
    crawl=_field(CrawlParams),
    decode=_field(DecodeParams),
    ingest=_field(IngestParams),
    detect=_field(DetectParams),
    matte=_field(MatteParams),
    preprocess=_field(PreprocessParams),
    align=_field(AlignParams),
    curate=_field(CurateParams),
    pack=_field(PackParams),
    train=_field(TrainParams),
    **{section: _field(cls) for section, cls in registry.sections().items()},
    evaluate=_field(EvaluateParams),
    report=_field(ReportParams),
    ablations=_field(AblationsParams),
    serve=_field(ServeParams),
)
Params.__doc__ = "Every section of params.yaml."


# ----------------------------------------------------------------------------- loading


def load_params(path: str | Path | None = None) -> Any:
    """Read and validate a params file (a `Params`). Raises ParamsError naming every bad key."""
    path = Path(path or DEFAULT_PARAMS)
    if not path.is_file():
        raise ParamsError([f"{path}: file not found"], source=str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ParamsError([f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"], source=str(path)) from None
    except UnicodeDecodeError:
        raise ParamsError([f"{path}: not a UTF-8 text file"], source=str(path)) from None
    return validate_params(raw if raw is not None else {}, source=str(path))


def validate_params(raw: Any, source: str = "params", model: type | None = None, strict: bool = True) -> Any:
    """Validate an already-parsed mapping against `model` (default: the whole `Params`).

    strict=False accepts numbers and booleans written as strings ('3', 'false'), as
    Snakemake's `--config KEY=VALUE` delivers nested values; the types are still checked.
    """
    return validate(raw, model or Params, source=source, strict=strict)
