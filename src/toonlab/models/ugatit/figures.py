"""Measured figures of U-GAT-IT's CPU training step (`CPU_COMPILE`: family -> CPU kind ->
`registry.CompileGain`; the format and how to measure: `toonlab.registry.CompileGain`)."""

from __future__ import annotations

from toonlab.registry import CompileGain

AMX = "benchmarks/train_step.py --compile, 2-core Intel Xeon with AMX, 2026-12-06"

CPU_COMPILE = {
    "ugatit": {
        # U-GAT-IT light ch 64: 256 px 9858 -> 8251 ms, 128 px 5914 -> 4747 ms (bf16)
        "amx": CompileGain((("bf16", 256, 1.19, 302.7), ("bf16", 128, 1.25, 330.6)), AMX),
    },
}
