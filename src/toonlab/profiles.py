"""Profiles: named settings of a model family's params.yaml section, switched in one
versioned step (`toonlab profile reference ugatit`).

A family package may hold a `profiles.py` next to its `params.py`
(`toonlab.models.<family>/profiles.py`, found by that name): data only, imported by no
training code, so editing a profile changes no stage's code. It defines `PROFILES`
(profile name -> nested values of the family's section) and `ABOUT` (profile name ->
one line). Every family has `demo` (the small, fast values committed in params.yaml) and
`reference` (the paper's / reference implementation's settings); a section's profiles
all set the same keys, so switching back and forth is exact.

`apply_profile` rewrites only the keys whose value changes, in place: the value's text
is replaced where it stands (PyYAML's node positions), a trailing comment keeps its
column, and every other byte of the file (comments, blank lines, key order, quoting)
stays as it was. A key missing from the file is added only when its effective value
(the default) differs. The result is validated like any params file and checked to hold
exactly the intended values before it is written (atomically). params.yaml is
versioned (git; DVC tracks the sections as stage params), so a switch is one commit:
`toonlab profile reference ugatit && git commit params.yaml`.

Light: PyYAML and pydantic only (no torch), like the rest of the configuration layer.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from toonlab.errors import ParamsError, ToonlabError, UsageError
from toonlab.models import registry
from toonlab.params import validate_params
from toonlab.util import fileio

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


# ----------------------------------------------------------------------------- the profiles


def _profiles_module(fam: registry.Family) -> ModuleType | None:
    package = fam.params_module.rpartition(".")[0]
    name = f"{package}.profiles"
    try:
        if not package or importlib.util.find_spec(name) is None:
            return None
    except ModuleNotFoundError:
        return None
    return importlib.import_module(name)


def sections() -> dict[str, ModuleType]:
    """params.yaml section -> its profiles module, for every family that has one (a section
    shared by two families, as White-box's two stages share `whitebox`, once)."""
    out: dict[str, ModuleType] = {}
    for fam in registry.FAMILIES:
        if fam.params_section not in out:
            module = _profiles_module(fam)
            if module is not None:
                out[fam.params_section] = module
    return out


def profiles(section: str) -> dict[str, dict[str, Any]]:
    """The profiles of a section: name -> nested values."""
    return sections()[section].PROFILES


def about(section: str) -> dict[str, str]:
    module = sections()[section]
    return {name: getattr(module, "ABOUT", {}).get(name, "") for name in module.PROFILES}


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
            raise UsageError(f"no profiles for {name!r}; families with profiles: "
                             f"{', '.join(_family_names(known))} (or {ALL})")
        wanted.add(section)
    return [s for s in known if s in wanted]


def _family_names(known: dict[str, ModuleType]) -> list[str]:
    return [f.name for f in registry.FAMILIES if f.params_section in known]


def flatten(values: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Nested values -> {(key, path, ...): value} of the leaves."""
    out: dict[tuple[str, ...], Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out


def _lookup(data: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return False, None
        data = data[part]
    return True, data


def _same(a: Any, b: Any) -> bool:
    return (type(a) is type(b) and a == b) or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def matching(params: Any, section: str) -> tuple[str, dict[str, list[str]]]:
    """Which profile the section's effective values match ("custom" when none), and for
    each profile the keys that differ."""
    current = getattr(params, section).model_dump(mode="python")
    differs: dict[str, list[str]] = {}
    for name, values in profiles(section).items():
        differs[name] = [".".join(path) for path, value in flatten(values).items()
                         if not _same(_lookup(current, path)[1], value)]
    name = next((n for n, d in differs.items() if not d), "custom")
    return name, differs


def status(params: Any) -> list[str]:
    """One line per section with profiles: the profile it matches, and the ones it has."""
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
    raise TypeError(f"profiles hold scalars only, got {type(value).__name__}")


# ----------------------------------------------------------------------------- rewriting the text


def _entry(node: MappingNode, key: str) -> tuple[Node, Node] | None:
    found = None
    for k, v in node.value:
        if isinstance(k, ScalarNode) and k.value == key:
            found = (k, v)           # the last one wins, as when loading
    return found


def _line_end(text: str, index: int) -> int:
    end = text.find("\n", index)
    end = len(text) if end < 0 else end
    return end - 1 if end > 0 and text[end - 1] == "\r" else end


_TRAILING_COMMENT = re.compile(r"^\s*[^\s#].*?\S( +)#")


def _comment_columns(text: str, index: int, around: int = 2) -> list[int]:
    """Columns of the trailing comments on the lines next to the one holding `index`."""
    lines = text[:index].split("\n")
    row = len(lines) - 1
    all_lines = text.split("\n")
    out = []
    for r in (*range(row - around, row), *range(row + 1, row + around + 1)):
        if 0 <= r < len(all_lines):
            m = _TRAILING_COMMENT.match(all_lines[r])
            if m:
                out.append(m.end() - 1)
    return out


def _last_line_end(node: Node, text: str) -> int:
    """End of the last line of a block mapping's content (before its line break)."""
    while isinstance(node, (MappingNode, SequenceNode)) and not node.flow_style and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(node, MappingNode) else last
    return _line_end(text, node.end_mark.index)


def _render(values: dict[str, Any], indent: int, newline: str) -> str:
    lines = []
    for key, value in values.items():
        if isinstance(value, dict):
            lines.append(f"{' ' * indent}{key}:")
            lines.append(_render(value, indent + 2, newline))
        else:
            lines.append(f"{' ' * indent}{key}: {format_value(value)}")
    return newline.join(lines)


class _Plan:
    """The edits that set `values` in the text: (start, end, replacement, order)."""

    def __init__(self, text: str, source: str):
        self.text = text
        self.source = source
        self.newline = "\r\n" if "\r\n" in text else "\n"
        self.edits: list[tuple[int, int, str, int]] = []
        self.changes: list[Change] = []

    def replace(self, key: str, node: Node, old: Any, new: Any) -> None:
        if not isinstance(node, ScalarNode) or node.style in ("|", ">"):
            raise UsageError(f"{self.source}: {key} is not a single value on one line; set it to "
                             f"{format_value(new)} by hand")
        text = self.text
        start, end = node.start_mark.index, node.end_mark.index
        value = format_value(new, node.style if isinstance(new, str) else None)
        if start == end:                   # `key:` with nothing after it (null)
            value = " " + value
        rest = text[end:_line_end(text, end)]
        gap = len(rest) - len(rest.lstrip(" "))
        if gap and rest[gap:].startswith("#"):   # a trailing comment: keep it in its column
            column = node.end_mark.column + gap
            needed = node.start_mark.column + len(value) + 1
            # Back to the column of the neighbours' comments when it was pushed right before.
            left = [c for c in _comment_columns(text, start) if needed <= c < column]
            column = max(left) if left else max(column, needed)
            width = column - node.start_mark.column - len(value)
            self.edits.append((start, end + gap, value + " " * width, len(self.edits)))
        else:
            self.edits.append((start, end, value, len(self.edits)))
        self.changes.append(Change(key, old, new))

    def insert(self, prefix: tuple[str, ...], parent: Node, missing: dict[str, Any],
               defaults: dict[tuple[str, ...], Any]) -> None:
        where = ".".join(prefix) or "(top level)"
        if not isinstance(parent, MappingNode) or parent.flow_style or not parent.value:
            raise UsageError(f"{self.source}: cannot add {', '.join(missing)} to {where} (not a block mapping); "
                             "add the keys by hand")
        indent = parent.value[0][0].start_mark.column
        at = _last_line_end(parent, self.text)
        self.edits.append((at, at, self.newline + _render(missing, indent, self.newline), len(self.edits)))
        for path, value in flatten(missing, prefix).items():
            self.changes.append(Change(".".join(path), defaults.get(path), value, added=True))

    def apply(self) -> str:
        text = self.text
        for start, end, value, _ in sorted(self.edits, key=lambda e: (e[0], e[3]), reverse=True):
            text = text[:start] + value + text[end:]
        return text


def _plan(plan: _Plan, node: Node | None, values: dict[str, Any], prefix: tuple[str, ...],
          loaded: Any, effective: dict[tuple[str, ...], Any]) -> None:
    """Add the edits that give `values` (nested, under `prefix`) to the plan."""
    missing: dict[str, Any] = {}
    for key, value in values.items():
        path = (*prefix, key)
        entry = _entry(node, key) if isinstance(node, MappingNode) else None
        if entry is None:
            wanted = {k: v for k, v in flatten(value, path).items() if not _same(effective.get(k), v)} \
                if isinstance(value, dict) else ({path: value} if not _same(effective.get(path), value) else {})
            for leaf, v in wanted.items():   # only the keys whose default differs
                sub = missing
                for part in leaf[len(prefix):-1]:
                    sub = sub.setdefault(part, {})
                sub[leaf[-1]] = v
        elif isinstance(value, dict):
            if not isinstance(entry[1], MappingNode):
                raise UsageError(f"{plan.source}: {'.'.join(path)} is not a mapping; fix it by hand")
            _plan(plan, entry[1], value, path, loaded, effective)
        else:
            old = _lookup(loaded, path)[1]
            if not _same(old, value):
                plan.replace(".".join(path), entry[1], old, value)
    if missing:
        if node is None:
            raise UsageError(f"{plan.source}: {'.'.join(prefix) or 'the file'} is empty; "
                             "write the section in block style first")
        plan.insert(prefix, node, missing, effective)


def _parse(text: str, source: str) -> tuple[Node | None, Any]:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: not valid YAML: {exc}") from None


def plan_profile(text: str, section_names: list[str], profile: str, source: str = "params.yaml"
                 ) -> tuple[str, list[Change]]:
    """The new text of a params file with `profile` applied to the sections, and the changes."""
    known = sections()
    for section in section_names:
        if profile not in known[section].PROFILES:
            raise UsageError(f"no profile {profile!r} for {section}; its profiles: "
                             f"{', '.join(known[section].PROFILES)}")
    root, loaded = _parse(text, source)
    params = validate_params(loaded if loaded is not None else {}, source=source)
    plan = _Plan(text, source)
    for section in section_names:
        values = {section: profiles(section)[profile]}
        effective = flatten({section: getattr(params, section).model_dump(mode="python")})
        _plan(plan, root, values, (), loaded, effective)
    new_text = plan.apply()
    _check(new_text, loaded, params, section_names, profile, source)
    return new_text, plan.changes


def _check(new_text: str, loaded: Any, params: Any, section_names: list[str], profile: str, source: str) -> None:
    """The new text is valid, its sections hold the profile and nothing else changed."""
    _, new_loaded = _parse(new_text, source)
    try:
        new_params = validate_params(new_loaded if new_loaded is not None else {}, source=source)
    except ParamsError as exc:   # e.g. an ablation variant that does not fit the new sizes
        where = "" if exc.source == source else f"{exc.source}: "
        raise ParamsError([f"{where}{p}" for p in exc.problems],
                          source=f"{source} with the {profile} profile (nothing written)") from None
    expected = copy.deepcopy(params.model_dump(mode="python"))
    for section in section_names:
        for path, value in flatten({section: profiles(section)[profile]}).items():
            _lookup(expected, path[:-1])[1][path[-1]] = value
    if new_params.model_dump(mode="python") != expected:
        raise ToonlabError(f"{source}: rewriting for profile {profile!r} went wrong (a bug); nothing written")


def apply_profile(params_path: str | Path, names: list[str], profile: str, dry_run: bool = False) -> list[Change]:
    """Set `profile` in the sections of the families `names` (or `all`) of the params file,
    in place; returns the changed keys (written unless dry_run)."""
    path = Path(params_path)
    if not path.is_file():
        raise UsageError(f"{path}: file not found")
    text = path.read_bytes().decode("utf-8")
    section_names = targets(names)
    new_text, changes = plan_profile(text, section_names, profile, source=str(path))
    if changes and not dry_run:
        fileio.write_bytes(path, new_text.encode("utf-8"))
    return changes


def dvc_exp_command(changes: list[Change]) -> str:
    """`dvc exp run -S key=value ...`: the same switch as a DVC experiment (params.yaml
    unchanged in git; DVC applies the values in the experiment's workspace)."""
    sets = " ".join(f"-S {shlex.quote(f'{c.key}={format_value(c.new)}')}" for c in changes)
    return f"dvc exp run {sets}".rstrip()
