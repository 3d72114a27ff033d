"""Typed parameters: the one schema for `params.yaml`.

Every stage reads its section from here. Validation happens at load time: an unknown
key, a wrong type or an out-of-range value stops the run with one line per problem,
each naming the key path, e.g.::

    cyclegan.loss.cycle_weight: expected a number >= 0, got 'ten'

Later stages add their section as a `Section` subclass and a field on `Params`.
Never name a parameter `size` or `nfiles`: DVC leaves those out of its run-cache key
(treeverse/dvc#10296). Use e.g. `crop_px`.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import annotated_types as at
import yaml
from pydantic import model_validator, BaseModel, Field, ValidationError

from toonlab.errors import ParamsError
from toonlab.crawl import CrawlParams
from toonlab.decode import DecodeParams
from toonlab.curate import CurateParams
from toonlab.faces.detect import DetectParams
from toonlab.faces.matte import MatteParams
from toonlab.ingest import IngestParams
from toonlab.pack import PackParams
from toonlab.preprocess import AlignParams, PreprocessParams
from toonlab.ablations import AblationsParams
from toonlab.evaluate import EvaluateParams
from toonlab.models.cyclegan import CycleGANParams
from toonlab.models.dcgan import DCGANParams
from toonlab.models.landmarker import LandmarkerParams
from toonlab.models.ugatit import UGATITParams
from toonlab.models.whitebox import WhiteboxParams
from toonlab.report import ReportParams
from toonlab.serve import ServeParams
from toonlab.schema import Section
from toonlab.train.trainer import TrainParams

DEFAULT_PARAMS = "params.yaml"
M = TypeVar("M", bound=BaseModel)




class RuntimeParams(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: Annotated[int, Field(ge=0, le=256)] = 2
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class DataParams(Section):
    # Where raw crawls live, one sub-folder per domain (photo/, anime/).
    raw_dir: str = "data/raw"
    # demo: raw_dir is written by `toonlab demo-data`; crawl: fetched from URL lists by
    # `toonlab crawl`; folder: your own files, put there by hand.
    source: Literal["demo", "crawl", "folder"] = "demo"
    domains: Annotated[list[Literal["photo", "anime"]], Field(min_length=1)] = ["photo", "anime"]


class DemoParams(Section):
    seed: Annotated[int, Field(ge=0)] = 0
    # Generated variants of each real photo shipped inside installed packages.
    variants_per_photo: Annotated[int, Field(ge=1, le=100)] = 8
    # Procedurally drawn anime-style portraits.
    anime_count: Annotated[int, Field(ge=1, le=10000)] = 24
    anime_px: Annotated[int, Field(ge=64, le=2048)] = 512
    # Longest side of the photo variants.
    photo_max_px: Annotated[int, Field(ge=64, le=4096)] = 640
    # Add what real crawls contain: exact and near duplicates, a truncated JPEG, a non-image.
    messy: bool = True


class Params(Section):
    seed: Annotated[int, Field(ge=0)] = 0
    runtime: RuntimeParams = RuntimeParams()
    data: DataParams = DataParams()
    demo: DemoParams = DemoParams()
    crawl: CrawlParams = CrawlParams()
    decode: DecodeParams = DecodeParams()
    ingest: IngestParams = IngestParams()
    detect: DetectParams = DetectParams()
    matte: MatteParams = MatteParams()
    preprocess: PreprocessParams = PreprocessParams()
    align: AlignParams = AlignParams()
    curate: CurateParams = CurateParams()
    pack: PackParams = PackParams()
    train: TrainParams = TrainParams()
    cyclegan: CycleGANParams = CycleGANParams()
    dcgan: DCGANParams = DCGANParams()
    ugatit: UGATITParams = UGATITParams()
    landmarker: LandmarkerParams = LandmarkerParams()
    whitebox: WhiteboxParams = WhiteboxParams()
    evaluate: EvaluateParams = EvaluateParams()
    report: ReportParams = ReportParams()
    ablations: AblationsParams = AblationsParams()
    serve: ServeParams = ServeParams()

    @model_validator(mode="after")
    def _check_ablations(self) -> "Params":
        """Every ablation variant's overrides must be valid settings of its family."""
        from toonlab.ablations import apply_overrides

        for name, v in self.ablations.variants.items():
            apply_overrides(getattr(self, v.family), v.overrides, f"ablations.variants.{name}.overrides")
        return self


# ----------------------------------------------------------------------------- loading


def load_params(path: str | Path | None = None) -> Params:
    """Read and validate a params file. Raises ParamsError naming every bad key."""
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


def validate_params(raw: Any, source: str = "params", model: type[M] = Params,  # type: ignore[assignment]
                    strict: bool = True) -> M:
    """Validate an already-parsed mapping against `model`.

    strict=False accepts numbers and booleans written as strings ('3', 'false'), as
    Snakemake's `--config KEY=VALUE` delivers nested values; the types are still checked.
    """
    if not isinstance(raw, dict):
        raise ParamsError([f"(top level): expected a mapping of sections, got {_short(raw)}"], source=source)
    try:
        return model.model_validate(raw, strict=strict)
    except ValidationError as exc:
        raise ParamsError(format_errors(exc, model), source=source) from None


def params_to_dict(params: Params) -> dict:
    return params.model_dump(mode="json")


# ----------------------------------------------------------------------------- messages


def format_errors(exc: ValidationError, model: type[BaseModel] = Params) -> list[str]:
    """One line per problem: `<key.path>: <what was expected>, got <value>`."""
    lines: list[str] = []
    seen: set[str] = set()
    for err in exc.errors(include_url=False):
        loc = _clean_loc(err["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            msg = f"{path}: unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else "")
            if allowed:
                msg += f"; allowed here: {', '.join(allowed)}"
        elif kind == "missing":
            msg = f"{path}: required key is missing"
        elif kind == "value_error":  # a cross-field check of a section (model validator)
            msg = f"{path}: {str(err['msg']).removeprefix('Value error, ')}"
        else:
            annotation, meta = _resolve(model, loc)
            expected = _describe(annotation, meta) if annotation is not None else err["msg"]
            msg = f"{path}: expected {expected}, got {_short(err.get('input'))}"
        if msg not in seen:  # unions report one error per member
            seen.add(msg)
            lines.append(msg)
    return lines


def _clean_loc(loc: tuple) -> tuple:
    # Pydantic adds tags like 'literal[...]' or type names for union members; keep keys and indices.
    out = []
    for part in loc:
        if isinstance(part, str) and ("[" in part or part in {"int", "float", "str", "bool"}) and out:
            continue
        out.append(part)
    return tuple(out)


def _resolve(model: type[BaseModel], loc: tuple) -> tuple[Any, list]:
    """Walk the schema along `loc`; return (annotation, constraint metadata) of the leaf."""
    annotation: Any = model
    meta: list = []
    for part in loc:
        annotation, extra = _unwrap(annotation)
        if isinstance(part, int):
            args = typing.get_args(annotation)
            if not args:
                return None, []
            annotation, meta = args[0], []
            continue
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None, []
        field = annotation.model_fields.get(part)
        if field is None:
            return None, []
        annotation, meta = field.annotation, list(field.metadata)
    annotation, extra = _unwrap(annotation)
    return annotation, meta + extra


def _unwrap(annotation: Any) -> tuple[Any, list]:
    meta: list = []
    while typing.get_origin(annotation) is Annotated:
        args = typing.get_args(annotation)
        annotation = args[0]
        for m in args[1:]:
            meta.extend(getattr(m, "metadata", [m]))
    return annotation, meta


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    annotation, _ = _resolve(model, loc)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _describe(annotation: Any, meta: list) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        parts = [_describe(a, []) for a in typing.get_args(annotation) if a is not type(None)]
        base = " or ".join(parts)
        if type(None) in typing.get_args(annotation):
            base += " or null"
        return base + _constraints(meta)
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        inner, inner_meta = _unwrap(item)
        text = f"a list of {_plural(_describe(inner, inner_meta))}"
        for m in meta:
            if isinstance(m, at.MinLen) and m.min_length:
                text += f" (at least {m.min_length})"
        return text
    if origin is dict:
        return "a mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a mapping of " + ", ".join(annotation.model_fields)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation))) + _constraints(meta)


def _constraints(meta: list) -> str:
    ops = []
    for m in meta:
        for cls, op, attr in ((at.Ge, ">=", "ge"), (at.Gt, ">", "gt"), (at.Le, "<=", "le"), (at.Lt, "<", "lt")):
            if isinstance(m, cls):
                ops.append(f"{op} {getattr(m, attr)}")
    return (" " + " and ".join(ops)) if ops else ""


def _plural(desc: str) -> str:
    for article in ("an ", "a "):
        if desc.startswith(article):
            head, _, rest = desc[len(article):].partition(" ")
            return f"{head}s" + (f" {rest}" if rest else "")
    return desc


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
