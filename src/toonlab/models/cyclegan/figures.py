"""Measured figures of CycleGAN's CPU training step (`CPU_COMPILE`: family -> CPU kind ->
`registry.CompileGain`; the format and how to measure: `toonlab.registry.CompileGain`)."""

from __future__ import annotations

from toonlab.registry import CompileGain

AMX = "benchmarks/train_step.py --compile, 2-core Intel Xeon with AMX, 2026-12-06"

CPU_COMPILE = {
    "cyclegan": {
        # 256 px 9 blocks: 3889 -> 3151 ms (bf16); 128 px 6 blocks: 743 -> 656 (bf16), 2622 -> 1952 (fp32)
        "amx": CompileGain((("bf16", 256, 1.23, 132.2), ("bf16", 128, 1.13, 128.0), ("fp32", 128, 1.34, 95.6)), AMX),
    },
}
