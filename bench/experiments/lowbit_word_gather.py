"""Experiment: 3-bit weights (10 to an int32 word along K) from a tile of words. A power-of-two K tile
does not hold whole words, so the generated kernel loads each value's word (ten loads of every
word, from L1). Variant `gather`: load the tile's words once (16 rows from the tile's first word,
masked past the end), then tl.gather each value's word from them along K, then shift. Times both at
M = 1, 16 and 128 beside cuBLAS bf16, each checked against the oracle. Writes
OUT/lowbit-word-gather-exp.json. `TRITON_INTERPRET=1 python bench/experiments/lowbit_word_gather.py`
checks the patched source on the CPU. It patches the renderer's output as of commit 07a52ab."""

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

PER, BITS = 10, 3
GATHERED = f"""        if EVEN_K and EVEN_N:
            v_w = tl.load(p_W + (o_K // {PER})[:, None] * s_W_K + o_N[None, :] * s_W_N)
        else:
            v_w = tl.load(p_W + (o_K // {PER})[:, None] * s_W_K + o_N[None, :] * s_W_N, mask=(o_K < n_K)[:, None] & (o_N < n_N)[None, :], other=0)
"""
WORDS = f"""        g_first = (it_K * BLOCK_K) // {PER}  # experiment: the tile's words once, then a gather along K
        g_W = g_first + tl.arange(0, 16)
        v_words = tl.load(p_W + g_W[:, None] * s_W_K + o_N[None, :] * s_W_N, mask=(g_W < (n_K + {PER - 1}) // {PER})[:, None] & (o_N < n_N)[None, :], other=0)
        v_w = tl.gather(v_words, tl.broadcast_to(((o_K // {PER}) - g_first)[:, None], (BLOCK_K, BLOCK_N)), 0)
"""


def patch(variant: str, src: str) -> str:
    assert src.count(GATHERED) == 1, "gathered word load not found"
    return src.replace(GATHERED, WORDS)


CASES = [(1, 8192, 8192), (1, 28672, 8192), (16, 28672, 8192), (128, 28672, 8192)]
VARIANTS = ("v0", "gather")


def candidates(m: int) -> list[dict]:
    return [p for p in lowbit.candidates(m) if not p["MATERIALIZE"] and p["BLOCK_K"] <= 128 and p["BLOCK_M"] <= m][:10]


def main() -> int:
    if os.environ.get("TRITON_INTERPRET"):
        from tests.cuda_util import run_against_oracle
        from tilesched.backends.cuda.io import retyped

        pk.use(patch, "gather")
        prog = retyped(load_program(sb.CONFIGS / "w3a16_gemm.yaml"), "bf16", "fp16")
        bad = 0
        for p in (lowbit.cfg(16, 32, 128, 4, 2), lowbit.cfg(1, 32, 128, 4, 2, 2), lowbit.cfg(16, 32, 64, 4, 2),
                  lowbit.cfg(16, 32, 32, 4, 2)):
            v = run_against_oracle(K.Kernel(prog), {"M": 20, "N": 40, "K": 530}, p, seed=1)
            bad += not v.ok
            print(p["BLOCK_M"], p["BLOCK_K"], v.ok, v.why, flush=True)
        return 1 if bad else 0
    return pk.run_cases(patch, [(3, m, n, k) for m, n, k in CASES], lambda b, m: VARIANTS, candidates,
                        "lowbit-word-gather-exp.json", __doc__.split("\n")[0])

if __name__ == "__main__":
    raise SystemExit(main())
