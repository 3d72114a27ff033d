"""Measured figures of White-box's CPU training step (`CPU_COMPILE`: family -> CPU kind ->
`registry.CompileGain`; the format and how to measure: `toonlab.registry.CompileGain`)."""

from __future__ import annotations

from toonlab.registry import CompileGain

AMX = "benchmarks/train_step.py --compile, 2-core Intel Xeon with AMX, 2026-12-06"

CPU_COMPILE = {
    # The pre-training (whitebox_pretrain) was not measured.
    "whitebox": {
        # batch 16 at 256 px: 14520 -> 17037 ms (slower); batch 4 at 128 px: 1096 -> 1006 (bf16),
        # 1638 -> 1781 (fp32, slower)
        "amx": CompileGain((("bf16", 256, 0.85, 74.5), ("bf16", 128, 1.09, 85.6), ("fp32", 128, 0.92, 73.7)), AMX),
    },
}
