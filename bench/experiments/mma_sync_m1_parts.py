"""Experiment: which part of the mma.sync register-operand kernel's K step holds 2 bits at M = 1 below
the speed of light (0.56 at 8192², where a read-only floor reads 0.97 and deeper rings are slower:
lowbit-ring-depth-*.json). Variants of the generated kernel, each leaving out one part of the step
(wrong values by design but for v0; the same words loaded and dequantised into the same MMAs):
  v0         as generated;
  no-sums    X's two row sums a tile (sum x, sum BIAS_k x: reductions, shuffles, a layout conversion) zero;
  no-coef    the tile's scales and zero points loaded once, not per tile;
  x-once     every tile's X from the share's first tile (cache hits: its loads' latency hidden);
  core       the chain's factor and offset left out of the per-tile update (acc += the MMA's sum), so
             neither the sums nor the coefficients are computed, and X as in x-once: the words, their
             dequantisation and the MMAs alone.
Each variant's fastest mma.sync point is timed beside bf16 cuBLAS in one run (2 bits at the three
shapes, 4 bits at 4096²).

  python bench/experiments/mma_sync_m1_parts.py    (OUT=DIR for the JSON)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402

SUM = "x_sum = ttgl.convert_layout(ttgl.reduce(v_x.to(ttgl.float32), 1, _gl_add), rows)"
BIAS_SUM = "x_bias_sum = ttgl.convert_layout(ttgl.reduce(v_x.to(ttgl.float32) * x_bias[None, :], 1, _gl_add), rows)"
AHEAD = "k_ahead = (ttgl.minimum(it_K + 1, hi_K - 1)) * BLOCK_K"
UPDATE = re.compile(r"^(\s+)v_acc \+= \(r_S\)\[:, None\] \* t_sum \+ b_acc\[:, None\] \* x_sum\[None, :\]$", re.M)
COEF = re.compile(r"^(\s{8})r_([SZ])_ahead = .*$", re.M)  # the loop's loads (the prologue's are at 4 spaces)


def patch(variant: str, src: str) -> str:
    for needle in (SUM, AHEAD):
        if src.count(needle) != 1:
            raise SystemExit(f"the generated mma.sync kernel no longer has: {needle}")
    if variant in ("x-once", "core"):
        src = src.replace(AHEAD, "k_ahead = (ttgl.minimum(lo_K, hi_K - 1)) * BLOCK_K")
    if variant == "no-sums":
        src = src.replace(SUM, "x_sum = ttgl.zeros([MMA_N], ttgl.float32, rows)")
        src = src.replace(BIAS_SUM, "x_bias_sum = ttgl.zeros([MMA_N], ttgl.float32, rows)")
    if variant == "no-coef":
        src, n = COEF.subn(lambda m: f"{m.group(1)}r_{m.group(2)}_ahead = r_{m.group(2)}", src)
        assert n == 2, n
    if variant == "core":
        src, n = UPDATE.subn(lambda m: f"{m.group(1)}v_acc += t_sum", src)
        assert n == 1, n
    return src


VARIANTS = ["v0", "no-sums", "no-coef", "x-once", "core"]
CASES = [(2, 1, 4096, 4096), (2, 1, 8192, 8192), (2, 1, 28672, 8192), (4, 1, 4096, 4096)]


def candidates(m: int) -> list[dict]:
    return [lowbit.register_operand(1, bn, w, s, stages=st)
            for bn, w, s in ((128, 4, 8), (128, 4, 4), (256, 4, 8), (64, 4, 8)) for st in (2, 3)]


if __name__ == "__main__":
    sys.exit(pk.run_cases(patch, CASES, lambda bits, m: VARIANTS, candidates,
                          "mma-sync-m1-parts-nvidia-h100-80gb-hbm3.json", __doc__.split("\n")[0]))
