"""Experiment: how the mma.sync register-operand kernel brings X's one row (a row tile of 1) into its
second operand. As generated ("v0") each thread loads the row's indices its operand holds, 16 bytes at
a time (gluon_layouts.x_row_bases), permutes them in registers and broadcasts them along the MMA's n;
each warp's lanes load the row again for its sums (shuffles). Variant "smem" is the previous form, which
row tiles of 16 keep: the [8, BLOCK_K] tile (seven rows masked) summed per row and permuted into the
operand through shared memory (three layout conversions a tile, each with barriers: 6 BAR a K tile in an
sm_90 compile of the 2-bit M = 1, 8192² point, none in v0; v0 285 instructions a K tile against 299,
4 bits 353 against 351). Both at the mma.sync points of the 2- and 4-bit specs at M = 1, timed in turns, each
winner checked against the oracle, beside bf16 cuBLAS in the same run. Writes
OUT/mma-sync-x-row-<device>.json. The one-row path is not in the generator (within 1 % at four of the
six shapes, 4 % faster at 4 bits 4096², 3 % slower at 2 bits N = 28672: bench/results/mma-sync-x-row-*.json);
the patch adds it:

  git apply bench/experiments/mma_sync_x_row.patch
  OUT=DIR python bench/experiments/mma_sync_x_row.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

ONE_ROW = "ONE_ROW: ttgl.constexpr = BLOCK_M == 1"


def patch(variant: str, src: str) -> str:
    if src.count(ONE_ROW) != 1:
        raise SystemExit("the generated source no longer picks the one-row path by ONE_ROW")
    return src.replace(ONE_ROW, "ONE_ROW: ttgl.constexpr = False")


def candidates(m: int) -> list[dict]:
    return [p for p in lowbit.candidates(m, 4) if p.get("REGISTER_OPERAND") is True]


CASES = [(b, 1, n, k) for b in (4, 2) for n, k in ((4096, 4096), (8192, 8192), (28672, 8192))]

if __name__ == "__main__":
    import torch

    sys.exit(pk.run_cases(patch, CASES, lambda b, m: ("v0", "smem", "v0", "smem"), candidates,
                          f"mma-sync-x-row-{sb.slug(torch.cuda.get_device_name())}.json", __doc__.split("\n")[0]))
