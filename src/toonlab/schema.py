"""Base class of every params section and the validation that names each bad key.

Kept apart from the root params module so that every package can define its sections
(`toonlab.<package>.params`) without importing the whole schema, and so that code which
validates one section (ablation overrides, Snakemake config) imports nothing else.
Pydantic only: no torch, no OpenCV.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Annotated, Any, Literal, TypeVar, Union

import annotated_types as at
from pydantic import BaseModel, ConfigDict, ValidationError

from toonlab.errors import ParamsError

# DVC leaves parameters with these names out of its run-cache key (treeverse/dvc#10296).
FORBIDDEN_NAMES = {"size", "nfiles"}
M = TypeVar("M", bound=BaseModel)


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, no silent coercion."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        bad = FORBIDDEN_NAMES & set(getattr(cls, "__annotations__", {}))
        if bad:
            raise TypeError(f"{cls.__name__}: parameter names {sorted(bad)} break DVC's run cache")


def validate(raw: Any, model: type[M], source: str = "params", strict: bool = True) -> M:
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


# ----------------------------------------------------------------------------- messages


def format_errors(exc: ValidationError, model: type[BaseModel]) -> list[str]:
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
