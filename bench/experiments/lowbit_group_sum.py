"""Experiment: the factored decode kernel with the K loop stepping one group (128 rows) at a time and
its K tiles unrolled inside, so a group's products add into a [BLOCK_K, BLOCK_N] register tile (one
multiply-add per weight) that is reduced over K and scaled once per group, instead of a tree
reduction per K tile (an sm_90 compile of the factored loop shows one multiply, one multiply-add and
one add per two weights for the tree). Variant `group` of the generated kernel (BLOCK_M = 1, shapes
whose split-K shares hold whole groups) beside it as generated, both checked against the oracle,
with cuBLAS bf16. Writes OUT/lowbit-group-sum-exp.json. `TRITON_INTERPRET=1 python
bench/experiments/lowbit_group_sum.py` checks the patched source on the CPU. It patches the
renderer's output as of commit 3c3f594."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

import tilesched.backends.cuda.kernel as K  # noqa: E402
from tilesched import load_program  # noqa: E402

SHARE = """        per_split = (tiles_K + SPLIT_K - 1) // SPLIT_K
"""
LOOP = "    for it_K in tl.range(lo_K, hi_K):\n"
FACTORED = ("            xw_acc = tl.reduce(v_x.to(tl.float32)[:, :, None] * v_w.to(tl.float32)[None, :, :], 1, _add)\n"
            "            xs_acc = tl.reduce(v_x.to(tl.float32), 1, _add)\n")
MEET = "    if SPLIT_K > 1:\n        # the shares"


def patch(variant: str, src: str) -> str:
    for part in (SHARE, LOOP, FACTORED, MEET):
        assert src.count(part) >= 1, part
    # shares of whole groups
    src = src.replace(SHARE, "        per_split = ((tiles_K + SPLIT_K - 1) // SPLIT_K + G_S_K // BLOCK_K - 1) // (G_S_K // BLOCK_K)"
                             " * (G_S_K // BLOCK_K)\n", 1)
    start = src.index(LOOP)
    end = src.index(MEET)
    body = src[start + len(LOOP):end]
    i = body.index(FACTORED)
    j = body.index("\n", i + len(FACTORED))
    scaled = body[i + len(FACTORED):j + 1]  # v_acc = v_acc + xw_acc * ... + xs_acc * ...
    body = (body[:i] + "            g_acc = g_acc + v_x.to(tl.float32)[:, :, None] * v_w.to(tl.float32)[None, :, :]\n"
            "            g_xs = g_xs + v_x.to(tl.float32)\n" + body[j + 1:])
    inner = "".join("    " + ln + "\n" if ln.strip() else "\n" for ln in body.rstrip("\n").split("\n"))
    group = ("    g_acc = tl.zeros((BLOCK_M, BLOCK_K, BLOCK_N), tl.float32)  # experiment: a group's products\n"
             "    g_xs = tl.zeros((BLOCK_M, BLOCK_K), tl.float32)\n"
             "    for it_G in tl.range(lo_K // (G_S_K // BLOCK_K), (hi_K + G_S_K // BLOCK_K - 1) // (G_S_K // BLOCK_K)):\n"
             "        for r_K in tl.static_range(G_S_K // BLOCK_K):\n"
             "            it_K = it_G * (G_S_K // BLOCK_K) + r_K\n" + inner +
             "        xw_acc = tl.reduce(g_acc, 1, _add)\n"
             "        xs_acc = tl.reduce(g_xs, 1, _add)\n"
             "    " + scaled.replace("            ", "    ", 1) +
             "        g_acc = tl.zeros((BLOCK_M, BLOCK_K, BLOCK_N), tl.float32)\n"
             "        g_xs = tl.zeros((BLOCK_M, BLOCK_K), tl.float32)\n")
    return src[:start] + group + src[end:]


CASES = [(4, 1, 28672, 8192), (4, 1, 8192, 8192), (2, 1, 28672, 8192), (8, 1, 28672, 8192)]
VARIANTS = ("v0", "group")


def candidates(m: int) -> list[dict]:
    return [lowbit.cfg(1, 128, 128, 4, 4, 4), lowbit.cfg(1, 128, 64, 4, 4, 8), lowbit.cfg(1, 128, 32, 4, 4, 4),
            lowbit.cfg(1, 64, 64, 4, 4, 4), lowbit.cfg(1, 128, 64, 4, 4, 4), lowbit.cfg(1, 256, 32, 8, 4, 4),
            lowbit.cfg(1, 128, 32, 4, 3, 8), lowbit.cfg(1, 64, 32, 4, 4, 4)]


def main() -> int:
    if os.environ.get("TRITON_INTERPRET"):
        from tests.cuda_util import run_against_oracle
        from tilesched.backends.cuda.io import retyped

        pk.use(patch, "group")
        bad = 0
        for bits in (4, 2, 8):
            prog = retyped(load_program(sb.CONFIGS / f"{lowbit.BITS_SPECS[bits]}.yaml"), "bf16", "fp16")
            for p in (lowbit.cfg(1, 32, 32, 4, 2), lowbit.cfg(1, 32, 64, 4, 2, 2), lowbit.cfg(1, 32, 128, 4, 2, 2)):
                v = run_against_oracle(K.Kernel(prog), {"M": 1, "N": 40, "K": 512}, p, seed=1)
                bad += not v.ok
                print(bits, p["BLOCK_K"], p["SPLIT_K"], v.ok, v.why, flush=True)
        return 1 if bad else 0
    return pk.run_cases(patch, CASES, lambda b, m: VARIANTS, candidates, "lowbit-group-sum-exp.json",
                        __doc__.split("\n")[0])

if __name__ == "__main__":
    raise SystemExit(main())
