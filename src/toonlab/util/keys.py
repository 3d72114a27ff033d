"""Nested settings (dicts of dicts, as params.yaml reads) by key path: a dotted key
(`train.out_dir`) or a sequence of keys (`("train", "out_dir")`).

- `find` / `get`: the value at a path (`find`: (found, value); `get`: KeyError without one);
- `attr`: the same along attributes (a params object);
- `put`: set a value, making the dicts on the way; `replace`: set an existing key only;
- `merge`: one dict over another, dicts merged key by key (copies; the inputs stay as they are);
- `flatten`: {path: leaf} of every leaf.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

KeyPath = str | Sequence[str]


def split(path: KeyPath) -> tuple[str, ...]:
    """A dotted key or a sequence of keys -> the keys."""
    return tuple(path.split(".")) if isinstance(path, str) else tuple(path)


def find(data: Any, path: KeyPath) -> tuple[bool, Any]:
    """(True, the value at `path`), or (False, None) where a step is missing or not a dict."""
    for part in split(path):
        if not isinstance(data, dict) or part not in data:
            return False, None
        data = data[part]
    return True, data


def get(data: Any, path: KeyPath) -> Any:
    """The value at `path`; KeyError(path) where there is none."""
    found, value = find(data, path)
    if not found:
        raise KeyError(path)
    return value


def attr(obj: Any, path: KeyPath) -> Any:
    """The attribute at `path` (`params.train.out_dir`); AttributeError where there is none."""
    for part in split(path):
        obj = getattr(obj, part)
    return obj


def put(data: dict[str, Any], path: KeyPath, value: Any) -> None:
    """Set the value at `path`, making the dicts on the way; ValueError(key) where a key on
    the way holds a value that is not a dict."""
    *above, last = split(path)
    for part in above:
        data = data.setdefault(part, {})
        if not isinstance(data, dict):
            raise ValueError(part)
    data[last] = value


def replace(data: dict[str, Any], path: KeyPath, value: Any) -> None:
    """Set the value of the key at `path`, which must exist; KeyError(path) where it does not."""
    if not find(data, path)[0]:
        raise KeyError(path)
    *above, last = split(path)
    get(data, above)[last] = value


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with the values of `over`: where both hold a dict, merged (recursively), else
    `over`'s value. The dicts merged are copies; any other value is shared."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def flatten(values: Mapping[Any, Any], prefix: tuple[Any, ...] = (), empty: bool = False,
            sep: str | None = None) -> dict[Any, Any]:
    """Nested dicts -> {(key, key, ...): leaf} (`prefix` before every path). An empty dict
    is a leaf with `empty`, else it has none. With `sep`, the paths are joined by it
    (`"."`: dotted keys)."""
    out: dict[Any, Any] = {}
    for key, value in values.items():
        path = (*prefix, key)
        if isinstance(value, dict) and (value or not empty):
            out.update(flatten(value, path, empty))
        else:
            out[path] = value
    return out if sep is None else {sep.join(map(str, path)): value for path, value in out.items()}
