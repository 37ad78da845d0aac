"""Experiment: what X's tile costs the register-operand mma.sync kernel at M = 16 (where it trails its
own M = 1 time by 40 %). Variants of the generated 4-bit kernel, timed beside bf16 cuBLAS:
  v0      as generated (X's next tile loaded one tile ahead, in registers);
  x-once  every tile's X loaded from the share's first tile (cache hits after the first: wrong values,
          the same instructions; the bound of what hiding X's loads gives).
Each variant's fastest candidate is checked against the oracle (x-once fails it by design).

  python bench/experiments/mma_sync_x_bound.py    (OUT=DIR for the JSON)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402

AHEAD = "k_ahead = (ttgl.minimum(it_K + 1, hi_K - 1)) * BLOCK_K"


def patch(variant: str, src: str) -> str:
    if src.count(AHEAD) != 1:
        raise SystemExit("the generated mma.sync kernel no longer loads X one tile ahead")
    return src if variant == "v0" else src.replace(AHEAD, "k_ahead = (ttgl.minimum(lo_K, hi_K - 1)) * BLOCK_K")


VARIANTS = ["v0", "x-once"]
CASES = [(4, 16, n, k) for n, k in ((4096, 4096), (8192, 8192), (28672, 8192))]


def candidates(m: int) -> list[dict]:
    return [lowbit.register_operand(16, bn, w, split, stages=st)
            for bn, w in ((128, 4), (128, 8), (64, 4)) for st in (2, 3) for split in (2, 4, 8)]


if __name__ == "__main__":
    sys.exit(pk.run_cases(patch, CASES, lambda bits, m: VARIANTS, candidates,
                          "mma-sync-x-bound-nvidia-h100-80gb-hbm3.json", __doc__.split("\n")[0]))
