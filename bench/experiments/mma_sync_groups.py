"""Experiment: the mma.sync kernel at a row tile of one row with GROUPS (8) reduction tiles sharing its
accumulator, one MMA column a tile (gluon_emit._grouped_sums: X's row goes into column (t - lo) % 8,
the tiles' scales and zero points are loaded and applied once every 8 tiles, a lane its own columns'
tiles), against one tile at a time (each tile's MMA from zero, its coefficients loaded one tile ahead
by every lane of a column and applied at once: the kernel before). The variants:
  v0        as generated (GROUPS = 8 at BLOCK_M = 1);
  fresh     each tile's MMAs from zero, added to the group's accumulator (no MMA chain across tiles);
  one-tile  GROUPS = 1: the earlier loop.
Each variant's fastest mma.sync point is checked against the oracle and timed beside bf16 cuBLAS in one
run, 2 and 4 bits at M = 1 (bench/experiments/mma_sync_m1_parts.py found the per-tile coefficients and
update 7-10 % of the 2-bit time at 8192² and N = 28672). Not in the generator: the grouped loop read
slower or equal at five of the six shapes (up to 9 %) with its coefficients loaded at each group's end
(mma-sync-groups-a-*.json) and 1-6 % slower at all six with them loaded a group ahead
(mma-sync-groups-*.json, and mma-sync-groups-b-*.json, where "fresh" read the same as v0 but 6 %
slower at 2 bits, N = 28672); the patch renders the second form:

  git apply bench/experiments/mma_sync_groups.patch
  python bench/experiments/mma_sync_groups.py    (OUT=DIR for the JSON)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402

GROUPS = "GROUPS: ttgl.constexpr = MMA_N if BLOCK_M == 1 else 1"


CHAINED = "acc_g = mma_v2(w_op, x_op, acc_g)"


def patch(variant: str, src: str) -> str:
    if src.count(GROUPS) != 1 or src.count(CHAINED) != 1:
        raise SystemExit("the generated mma.sync kernel no longer sets GROUPS")
    if variant == "fresh":  # each tile's MMAs from zero, added to the group's sums: no chain across tiles
        return src.replace(CHAINED, "acc_g += mma_v2(w_op, x_op, zeros)")
    return src.replace(GROUPS, "GROUPS: ttgl.constexpr = 1") if variant == "one-tile" else src


VARIANTS = ["v0", "fresh", "one-tile"]
CASES = [(b, 1, n, k) for b in (2, 4) for n, k in ((4096, 4096), (8192, 8192), (28672, 8192))]


def candidates(m: int) -> list[dict]:
    return [lowbit.register_operand(1, bn, w, s, stages=st)
            for bn, w, s in ((128, 4, 8), (128, 4, 4), (256, 4, 8), (256, 4, 4), (64, 4, 8), (128, 8, 8),
                             (128, 4, 2)) for st in (2, 3)]


if __name__ == "__main__":
    sys.exit(pk.run_cases(patch, CASES, lambda bits, m: VARIANTS, candidates,
                          "mma-sync-groups-nvidia-h100-80gb-hbm3.json", __doc__.split("\n")[0]))
