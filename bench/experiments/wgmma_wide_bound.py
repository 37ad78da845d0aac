"""Experiment (a bound, wrong values by construction): how fast the wgmma register-operand kernel's
256-row tiles run at M = 1024 without their dequantisation. Variant "no-decode" hands every MMA the
same constant operand (the words still land in the ring, unread; X's tile is read by the MMA as
always), so its time is that of the ring, the barriers and the MMAs alone; "v0" is the generated kernel.
The 8-bit spec's 256-row point (K tiles of 128, two stages) at the issue's three shapes, timed in
turns beside bf16 cuBLAS in the same run (the oracle check of "no-decode" fails by design; "v0"'s winner
is checked). Writes OUT/wgmma-wide-bound-<device>.json."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

PRODUCT = r"( *)a = ttgl\.inline_asm_elementwise\(\"\{ \.reg \.b32 t; prmt\.b32 t, \$1, \$2, 0x7632; mul\.rn\.bf16x2[^\n]*"


def patch(variant: str, src: str) -> str:
    src, count = re.subn(PRODUCT, r"\1a = ttgl.full([64, BLOCK_K], 1.0, ttgl.bfloat16, a_l)  # no dequantisation", src)
    if count != 1:
        raise SystemExit("the generated source no longer ends the 8-bit chain in one bf16x2 product")
    return src


def candidates(m: int) -> list[dict]:
    return [lowbit.register_operand(256, 128, 8, 1, bk=128, stages=2)]


CASES = [(8, 1024, n, k) for n, k in ((4096, 4096), (8192, 8192), (28672, 8192))]

if __name__ == "__main__":
    import torch

    sys.exit(pk.run_cases(patch, CASES, lambda b, m: ("v0", "no-decode", "v0", "no-decode"), candidates,
                          f"wgmma-wide-bound-{sb.slug(torch.cuda.get_device_name())}.json", __doc__.split("\n")[0]))
