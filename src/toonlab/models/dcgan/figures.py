"""Measured figures of DCGAN's CPU training step (`CPU_COMPILE`: family -> CPU kind ->
`registry.CompileGain`; the format and how to measure: `toonlab.registry.CompileGain`)."""

from __future__ import annotations

from toonlab.registry import CompileGain

AMX = "benchmarks/train_step.py --compile, 2-core Intel Xeon with AMX, 2026-12-06"

CPU_COMPILE = {
    "dcgan": {
        # batch 256: 2717 -> 1954 ms (1.39x, 47.5 s); batch 32: 294 -> 246 (1.20x, 53.1 s); the
        # lower is kept (one px for both); fp32 batch 32: 548 -> 520 ms
        "amx": CompileGain((("bf16", 96, 1.20, 53.1), ("fp32", 96, 1.05, 37.6)), AMX),
    },
}
