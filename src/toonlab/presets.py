"""Presets: named settings of a model family's params.yaml section, switched in one
versioned step (`toonlab preset reference ugatit`).

A family package may hold a `presets.py` next to its `params.py`
(`toonlab.models.<family>/presets.py`, found by that name): data only, imported by no
training code, so editing a preset changes no stage's code. It defines `PRESETS`
(preset name -> nested values of the family's section) and `ABOUT` (preset name ->
one line). Every family has `demo` (the small, fast values committed in params.yaml) and
`reference` (the paper's / reference implementation's settings); a section's presets
all set the same keys, so switching back and forth is exact.

`apply_preset` rewrites only the keys whose value changes: a round trip through
ruamel.yaml (load, set the values, dump) keeps the comments, key order, quoting and the
file's indentation; an end-of-line comment keeps its column (or goes back to its
neighbours' column when a longer value had pushed it right, so a switch back restores
the bytes). Only the switched top-level sections are taken from ruamel's output: every
other section keeps its bytes (ruamel would join a flow list wrapped over two lines). A key
missing from the file is added only when its effective value (the default) differs. The
result is validated like any params file (read with PyYAML, as everywhere else) and
checked to hold exactly the intended values before it is written (atomically). params.yaml
is versioned (git; DVC tracks the sections as stage params), so a switch is one commit:
`toonlab preset reference ugatit && git commit params.yaml`.

Light: PyYAML, ruamel.yaml and pydantic only (no torch), like the rest of the configuration layer.
"""

from __future__ import annotations

import copy
import io
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, ScalarString, SingleQuotedScalarString
from ruamel.yaml.tokens import CommentToken
from ruamel.yaml.util import load_yaml_guess_indent

from toonlab import registry
from toonlab.errors import ParamsError, ToonlabError, UsageError
from toonlab.params import validate_params
from toonlab.util import fileio
from toonlab.util.keys import find, flatten, put

ALL = "all"


@dataclass(frozen=True)
class Change:
    key: str            # dotted, from the top: ugatit.model.ch
    old: Any
    new: Any
    added: bool = False  # the key was not in the file (its old value is the default)

    def __str__(self) -> str:
        old = f"{format_value(self.old)} (default, not in the file)" if self.added else format_value(self.old)
        return f"{self.key}: {old} -> {format_value(self.new)}"


# ----------------------------------------------------------------------------- the presets


def smoke(fam: registry.Family) -> dict[str, Any]:
    """The family's smoke settings (`SMOKE` of its presets module: the smallest values of its
    section that train; {}, its defaults, where it declares none)."""
    module = fam.part("presets")
    return copy.deepcopy(getattr(module, "SMOKE", {}).get(fam.name, {})) if module is not None else {}


def tiny() -> dict[str, dict[str, Any]]:
    """The tiny end-to-end project's values of every family section (`TINY` of each presets
    module: a few steps at the smallest size), params.yaml section -> values. A family
    without them keeps its section's values there."""
    out: dict[str, dict[str, Any]] = {}
    for module in sections().values():
        out.update(copy.deepcopy(getattr(module, "TINY", {})))
    return out


def sections() -> dict[str, ModuleType]:
    """params.yaml section -> its presets module, for every family that has one (a section
    shared by two families, as White-box's two stages share `whitebox`, once)."""
    out: dict[str, ModuleType] = {}
    for fam in registry.FAMILIES:
        if fam.params_section not in out:
            module = fam.part("presets")
            if module is not None:
                out[fam.params_section] = module
    return out


def presets(section: str) -> dict[str, dict[str, Any]]:
    """The presets of a section: name -> nested values."""
    return sections()[section].PRESETS


def about(section: str) -> dict[str, str]:
    module = sections()[section]
    return {name: getattr(module, "ABOUT", {}).get(name, "") for name in module.PRESETS}


def targets(names: list[str]) -> list[str]:
    """Family names (or section names, or `all`) -> the sections they switch, in registry order."""
    known = sections()
    if not names:
        raise UsageError(f"name the families to switch (or {ALL}): {', '.join(_family_names(known))}")
    by_family = {f.name: f.params_section for f in registry.FAMILIES}
    wanted: set[str] = set()
    for name in names:
        if name == ALL:
            wanted |= set(known)
            continue
        section = by_family.get(name, name)
        if section not in known:
            raise UsageError(f"no presets for {name!r}; families with presets: "
                             f"{', '.join(_family_names(known))} (or {ALL})")
        wanted.add(section)
    return [s for s in known if s in wanted]


def _family_names(known: dict[str, ModuleType]) -> list[str]:
    return [f.name for f in registry.FAMILIES if f.params_section in known]


def _same(a: Any, b: Any) -> bool:
    return (type(a) is type(b) and a == b) or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def matching(params: Any, section: str) -> tuple[str, dict[str, list[str]]]:
    """Which preset the section's effective values match ("custom" when none), and for
    each preset the keys that differ."""
    current = getattr(params, section).model_dump(mode="python")
    differs: dict[str, list[str]] = {}
    for name, values in presets(section).items():
        differs[name] = [".".join(path) for path, value in flatten(values).items()
                         if not _same(find(current, path)[1], value)]
    name = next((n for n, d in differs.items() if not d), "custom")
    return name, differs


def status(params: Any) -> list[str]:
    """One line per section with presets: the preset it matches, and the ones it has."""
    lines = []
    for section in sections():
        name, differs = matching(params, section)
        if name == "custom":
            closest = min(differs, key=lambda n: len(differs[n]))
            keys = differs[closest]
            name = (f"custom ({len(keys)} key{'s differ' if len(keys) != 1 else ' differs'} from {closest}: "
                    f"{', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})")
        lines.append(f"{section}: {name}")
        lines += [f"  {n:<15} {text}" for n, text in about(section).items()]
    return lines


# ----------------------------------------------------------------------------- values as YAML text

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")


def format_value(value: Any, style: str | None = None) -> str:
    """A scalar as params.yaml writes it (PyYAML reads it back as the same value and type)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        if text in ("inf", "-inf", "nan"):
            return {"inf": ".inf", "-inf": "-.inf", "nan": ".nan"}[text]
        if "e" in text and "." not in text.split("e")[0]:   # PyYAML (YAML 1.1) floats need a dot
            mantissa, exp = text.split("e")
            text = f"{mantissa}.0e{exp if exp[0] in '+-' else '+' + exp}"
        return text
    if isinstance(value, str):
        if style == "'":
            return "'" + value.replace("'", "''") + "'"
        if style != '"' and _PLAIN.fullmatch(value) and yaml.safe_load(value) == value:
            return value
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"presets hold scalars only, got {type(value).__name__}")


# ----------------------------------------------------------------------------- rewriting the file


class _Representer(RoundTripRepresenter):
    """ruamel's round-trip representer, writing new floats as `format_value` does: YAML 1.2
    floats such as `1e-05` are strings to PyYAML (YAML 1.1), which reads params.yaml."""

    def represent_plain_float(self, data: float) -> Any:
        return self.represent_scalar("tag:yaml.org,2002:float", format_value(data))


_Representer.add_representer(float, _Representer.represent_plain_float)


def _round_trip(text: str, source: str) -> tuple[YAML, Any]:
    """A round-trip YAML set up to write `text` back as it was (its indentation, long lines
    unwrapped, quotes kept), and the document loaded with it."""
    rt = YAML(typ="rt")
    rt.Representer = _Representer
    rt.width = 1 << 30
    rt.preserve_quotes = True
    try:
        root, indent, dash = load_yaml_guess_indent(text, yaml=rt)
    except DuplicateKeyError as exc:
        raise UsageError(f"{source}: {exc.problem}; remove one (a preset switch would not know which to set)"
                         ) from None
    except YAMLError as exc:
        raise UsageError(f"{source}: not valid YAML: {exc}") from None
    mapping = _mapping_indent(root)
    rt.indent(mapping=mapping, sequence=indent if dash is not None else mapping + 2,
              offset=dash if dash is not None else mapping)
    return rt, root


def _mapping_indent(root: Any) -> int:
    """The file's mapping indentation, from its first nested block mapping (2 without one)."""
    for key, value in root.items() if isinstance(root, CommentedMap) else ():
        if isinstance(value, CommentedMap) and value and not value.fa.flow_style():
            return value.lc.key(next(iter(value)))[1] - root.lc.key(key)[1]
    return 2


def _yaml_value(value: Any, old: Any = None) -> Any:
    """A new value as ruamel should write it: a string double-quoted where PyYAML would not
    read it back as the same string (`yes`, `1e3`, ``), unless it replaces a quoted one (whose
    quotes ruamel's CommentedMap keeps)."""
    quote = isinstance(value, str) and not isinstance(old, ScalarString) and format_value(value)[0] == '"'
    return DoubleQuotedScalarString(value) if quote else value


def _eol_comment(mapping: CommentedMap, key: Any) -> CommentToken | None:
    """The comment after a key's value on its line (not one that only holds the lines below)."""
    token = mapping.ca.items.get(key, [None] * 3)[2]
    return token if token is not None and not token.value.startswith("\n") else None


def _comment_column(mapping: CommentedMap, key: Any, new: Any) -> int | None:
    """Where the end-of-line comment of a changed value goes: its column, or one space after a
    longer value; and back to the neighbours' column when a longer value had pushed it right
    (so that switching back gives the file's bytes)."""
    token = _eol_comment(mapping, key)
    if token is None:
        return None
    old = mapping[key]
    style = "'" if isinstance(old, SingleQuotedScalarString) else '"' if isinstance(old, ScalarString) else None
    needed = mapping.lc.value(key)[1] + len(format_value(new, style if isinstance(new, str) else None)) + 1
    keys = list(mapping)
    at = keys.index(key)
    near = [_eol_comment(mapping, k) for k in keys[max(0, at - 2):at] + keys[at + 1:at + 3]]
    left = [t.column for t in near if t is not None and needed <= t.column < token.column]
    return max(left) if left else max(token.column, needed)


def _last_leaf(mapping: CommentedMap) -> tuple[CommentedMap, Any]:
    """The innermost last entry of a block mapping: the one whose comment slot holds the
    comment lines that follow the mapping."""
    key = next(reversed(mapping))
    while isinstance(mapping[key], CommentedMap) and mapping[key] and not mapping[key].fa.flow_style():
        mapping = mapping[key]
        key = next(reversed(mapping))
    return mapping, key


def _append(mapping: CommentedMap, missing: dict[str, Any], move_comments: bool) -> None:
    """Add nested keys at the end of a mapping, below its last line: the comment lines that
    followed it (the next section's heading) stay after the added keys, unless not
    `move_comments` (a new top-level section goes at the end of the file: see `_splice`)."""
    leaf_map, leaf = _last_leaf(mapping) if mapping else (None, None)
    for key, value in missing.items():
        mapping[key] = _nested(value)
    token = leaf_map.ca.items.get(leaf, [None] * 3)[2] if leaf_map is not None else None
    if token is None or not move_comments or mapping.fa.flow_style():
        return
    line, _, below = token.value.partition("\n")
    if not below:
        return
    if line:
        token.value = line + "\n"
    else:
        leaf_map.ca.items[leaf][2] = None
    new_map, new_leaf = _last_leaf(mapping)
    new_map.ca.items.setdefault(new_leaf, [None] * 4)[2] = CommentToken("\n" + below, CommentMark(0), None)


def _nested(value: Any) -> Any:
    if isinstance(value, dict):
        out = CommentedMap()
        for key, sub in value.items():
            out[key] = _nested(sub)
        return out
    return _yaml_value(value)


class _Edit:
    """Sets a preset's values in the round-trip document, and collects the changes."""

    def __init__(self, loaded: Any, source: str):
        self.loaded = loaded                    # PyYAML's reading: the values as ToonLab sees them
        self.source = source
        self.changes: list[Change] = []
        self.columns: list[tuple[CommentToken, int]] = []

    def set(self, node: Any, values: dict[str, Any], prefix: tuple[str, ...],
            effective: dict[tuple[str, ...], Any]) -> None:
        """Give `values` (nested, under `prefix`) to `node`, the mapping at `prefix`."""
        missing: dict[str, Any] = {}
        added: list[Change] = []
        for key, value in values.items():
            path = (*prefix, key)
            if not isinstance(node, CommentedMap) or key not in node:
                wanted = flatten(value, path) if isinstance(value, dict) else {path: value}
                for leaf, v in wanted.items():   # only the keys whose default differs
                    if not _same(effective.get(leaf), v):
                        put(missing, leaf[len(prefix):], v)
                        added.append(Change(".".join(leaf), effective.get(leaf), v, added=True))
            elif isinstance(value, dict):
                if not isinstance(node[key], CommentedMap):
                    raise UsageError(f"{self.source}: {'.'.join(path)} is not a mapping; fix it by hand")
                self.set(node[key], value, path, effective)
            else:
                old = find(self.loaded, path)[1]
                if not _same(old, value):
                    column = _comment_column(node, key, value)
                    if column is not None:
                        self.columns.append((_eol_comment(node, key), column))
                    node[key] = _yaml_value(value, node[key])
                    self.changes.append(Change(".".join(path), old, value))
        if missing:
            if not isinstance(node, CommentedMap):
                raise UsageError(f"{self.source}: {'.'.join(prefix) or 'the file'} is empty; "
                                 "write the section in block style first")
            _append(node, missing, move_comments=bool(prefix))
            self.changes += added

    def place_comments(self) -> None:
        """Move the changed values' comments (after every column was worked out from the file's)."""
        for token, column in self.columns:
            token.start_mark = CommentMark(column)


def _key_lines(text: str) -> dict[str, int]:
    """The line of each top-level key (libyaml's composer where PyYAML has it: a fast look)."""
    root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return {key.value: key.start_mark.line for key, _ in root.value}


def _splice(text: str, new_text: str, rewritten: list[str]) -> str:
    """`text` with only the top-level sections in `rewritten` (and any new ones) taken from
    ruamel's output: every other byte as it was (ruamel joins wrapped flow lists, for one)."""
    old_lines, new_lines = text.splitlines(keepends=True), new_text.splitlines(keepends=True)
    old_at, new_at = _key_lines(text), _key_lines(new_text)

    def region(lines: list[str], at: dict[str, int], key: str) -> list[str]:
        end = min((line for line in at.values() if line > at[key]), default=len(lines))
        return lines[at[key]:end]

    out = old_lines[:min(old_at.values())]
    for key in new_at:
        if key in old_at and key not in rewritten:
            out += region(old_lines, old_at, key)
        else:
            if out and not out[-1].endswith("\n"):
                out[-1] += "\n"
            out += region(new_lines, new_at, key)
    return "".join(out)


def _parse(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: not valid YAML: {exc}") from None


def plan_preset(text: str, section_names: list[str], preset: str, source: str = "params.yaml"
                 ) -> tuple[str, list[Change]]:
    """The new text of a params file with `preset` applied to the sections, and the changes."""
    known = sections()
    for section in section_names:
        if preset not in known[section].PRESETS:
            raise UsageError(f"no preset {preset!r} for {section}; its presets: "
                             f"{', '.join(known[section].PRESETS)}")
    loaded = _parse(text, source)
    params = validate_params(loaded if loaded is not None else {}, source=source)
    crlf = "\r\n" in text
    text_lf = text.replace("\r\n", "\n") if crlf else text
    rt, root = _round_trip(text_lf, source)
    edit = _Edit(loaded, source)
    for section in section_names:
        values = {section: presets(section)[preset]}
        effective = flatten({section: getattr(params, section).model_dump(mode="python")})
        edit.set(root, values, (), effective)
    if not edit.changes:
        return text, []
    edit.place_comments()
    out = io.StringIO()
    rt.dump(root, out)
    new_text = out.getvalue()
    if isinstance(root, CommentedMap) and root and not root.fa.flow_style():
        new_text = _splice(text_lf, new_text, section_names)
    if text_lf.endswith("\n") and not new_text.endswith("\n"):   # ruamel ends a flow mapping without one
        new_text += "\n"
    if crlf:
        new_text = new_text.replace("\n", "\r\n")
    _check(new_text, loaded, params, section_names, preset, source)
    return new_text, edit.changes


def _check(new_text: str, loaded: Any, params: Any, section_names: list[str], preset: str, source: str) -> None:
    """The new text is valid, its sections hold the preset and nothing else changed."""
    new_loaded = _parse(new_text, source)
    try:
        new_params = validate_params(new_loaded if new_loaded is not None else {}, source=source)
    except ParamsError as exc:   # e.g. an ablation variant that does not fit the new sizes
        where = "" if exc.source == source else f"{exc.source}: "
        raise ParamsError([f"{where}{p}" for p in exc.problems],
                          source=f"{source} with the {preset} preset (nothing written)") from None
    expected = copy.deepcopy(params.model_dump(mode="python"))
    for section in section_names:
        for path, value in flatten({section: presets(section)[preset]}).items():
            put(expected, path, value)
    if new_params.model_dump(mode="python") != expected:
        raise ToonlabError(f"{source}: rewriting for preset {preset!r} went wrong (a bug); nothing written")


def apply_preset(params_path: str | Path, names: list[str], preset: str, dry_run: bool = False) -> list[Change]:
    """Set `preset` in the sections of the families `names` (or `all`) of the params file,
    in place; returns the changed keys (written unless dry_run)."""
    path = Path(params_path)
    if not path.is_file():
        raise UsageError(f"{path}: file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a UTF-8 text file") from None
    section_names = targets(names)
    new_text, changes = plan_preset(text, section_names, preset, source=str(path))
    if changes and not dry_run:
        fileio.write_bytes(path, new_text.encode("utf-8"))
    return changes


def dvc_exp_command(changes: list[Change]) -> str:
    """`dvc exp run -S key=value ...`: the same switch as a DVC experiment (params.yaml
    unchanged in git; DVC applies the values in the experiment's workspace)."""
    sets = " ".join(f"-S {shlex.quote(f'{c.key}={format_value(c.new)}')}" for c in changes)
    return f"dvc exp run {sets}".rstrip()
