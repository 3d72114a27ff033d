"""What CPU this is, from /proc/cpuinfo (light: no torch): its feature flags, its model
name and its kind for keying measured figures.

Kinds (what decides the speed of a training step here): `amx` (Intel with AMX tiles: native
bf16 matrix units), `avx512-bf16` (native bf16 dot products without AMX) and `no-bf16`
(e.g. AMD EPYC Zen 2/3, older Intel: bf16 would be emulated). Figures measured on one kind
are never applied to another."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


@lru_cache(maxsize=1)
def _fields() -> dict[str, str]:
    """The first processor's `key: value` lines (empty where there is no /proc/cpuinfo)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if out:
                break
            continue
        key, _, value = line.partition(":")
        out.setdefault(key.strip(), value.strip())
    return out


def flags() -> set[str] | None:
    """The CPU's feature flags (None where /proc/cpuinfo does not say)."""
    fields = _fields()
    line = fields.get("flags", fields.get("Features"))
    return set(line.split()) if line is not None else None


def model_name() -> str:
    return _fields().get("model name", "") or "unknown CPU"


def kind() -> str:
    """`amx`, `avx512-bf16` or `no-bf16` (also where the flags are unknown)."""
    found = flags() or set()
    if "amx_bf16" in found:
        return "amx"
    if "avx512_bf16" in found:
        return "avx512-bf16"
    return "no-bf16"
