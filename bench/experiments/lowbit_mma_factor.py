"""Experiment: the factor pass's idea on the tensor-core path (row tiles of 16 and more). Variants of
the generated kernel's tensor-core branch, where a K tile lies in one group:
  v0     as generated: dequantise every weight ((w - z) s, rounded to bf16), tl.dot into the accumulator
  zero   the zero point leaves the sum: tl.dot of bf16(w s) into the accumulator, then
         acc -= (sum_k x) (z s) per tile (one multiply fewer per weight, the MMAs still chained)
  whole  scale and zero point leave the sum, the weights converted by OR-ing them into a bf16
         mantissa (0x4300 | w = 128 + w, exact below 128): tl.dot into a fresh accumulator per K tile,
         then acc += (part - (sum_k x)(z + 128)) s
Times each at M = 16 and 128 beside cuBLAS bf16, each checked against the oracle. Writes
OUT/lowbit-mma-factor-exp.json. `TRITON_INTERPRET=1 python bench/experiments/lowbit_mma_factor.py` checks
the patched sources on the CPU (fp16: 0x6400 | w = 1024 + w). It patches the renderer's output as of
commit 07a52ab."""

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

TC = "            else:\n                v_acc = tl.dot(v_x, v_wd, v_acc)\n"
MAGIC = {"bfloat16": ("0x4300", "128.0"), "float16": ("0x6400", "1024.0")}


def patch(variant: str, src: str) -> str:
    act = "float16" if "v_wd = x_wd.to(tl.float16)" in src else "bfloat16"
    assert src.count(TC) == 1, "tensor-core branch not found"
    xs = "tl.reduce(v_x.to(tl.float32), 1, _add)"
    if variant == "zero":
        body = ("            elif G_Z_K % BLOCK_K == 0 and G_S_K % BLOCK_K == 0:  # experiment: the zero point out of the sum\n"
                f"                v_acc = tl.dot(v_x, (v_w.to(tl.float32) * v_S.to(tl.float32)).to(tl.{act}), v_acc)\n"
                f"                v_acc = v_acc - {xs}[:, None] * (row_v_Z.to(tl.float32) * row_v_S.to(tl.float32))[None, :]\n")
    else:
        word, bias = MAGIC[act]
        body = ("            elif G_Z_K % BLOCK_K == 0 and G_S_K % BLOCK_K == 0:  # experiment: both out of the sum\n"
                f"                m_part = tl.dot(v_x, (v_w | {word}).to(tl.int16).to(tl.{act}, bitcast=True))\n"
                f"                v_acc = v_acc + (m_part - {xs}[:, None] * (row_v_Z.to(tl.float32) + {bias})[None, :])"
                " * row_v_S.to(tl.float32)[None, :]\n")
    return src.replace(TC, body + TC)


CASES = [(4, 16, 8192, 8192), (4, 16, 28672, 8192), (2, 16, 28672, 8192), (4, 128, 8192, 8192),
         (4, 128, 28672, 8192)]
VARIANTS = ("v0", "zero", "whole")


def candidates(m: int) -> list[dict]:
    c = lowbit.candidates(m) + ([lowbit.cfg(16, 128, 128, 4, 4, 4), lowbit.cfg(16, 256, 128, 8, 3, 2)] if m == 16 else [])
    return [p for p in c if not p["MATERIALIZE"] and p["BLOCK_M"] <= m][:10]


def main() -> int:
    if os.environ.get("TRITON_INTERPRET"):
        from tests.cuda_util import run_against_oracle
        from tilesched.backends.cuda.io import retyped

        bad = 0
        for variant in VARIANTS[1:]:
            for bits in (4, 2, 3):
                pk.use(patch, variant)
                prog = retyped(load_program(sb.CONFIGS / f"{lowbit.BITS_SPECS[bits]}.yaml"), "bf16", "fp16")
                for p in (lowbit.cfg(16, 32, 128, 4, 2), lowbit.cfg(32, 32, 64, 4, 2, 2)):
                    v = run_against_oracle(K.Kernel(prog), {"M": 20, "N": 40, "K": 520}, p, seed=1)
                    bad += not v.ok
                    print(variant, bits, p["BLOCK_M"], p["BLOCK_K"], v.ok, v.why, flush=True)
        return 1 if bad else 0
    return pk.run_cases(patch, CASES, lambda b, m: VARIANTS, candidates, "lowbit-mma-factor-exp.json",
                        __doc__.split("\n")[0])

if __name__ == "__main__":
    raise SystemExit(main())
