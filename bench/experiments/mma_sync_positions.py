"""Experiment: how many shifts the mma.sync register-operand kernel spends on 2-bit words. As generated
("v0") one shift of a word serves three value pairs (bf16's 7 mantissa bits hold three 2-bit
positions): each pair is AND-ed at its own position and OR-ed with its own BIAS (128, 32, 8), and the
MMA starts from -sum(BIAS_k x_k) (gluon_emit.positions). Variant "shift-a-pair" is the previous form:
a shift a pair, one BIAS of 128, taken out after the MMA with the offset's sum. An sm_90 compile
(Triton 3.9) of the 2-bit M = 1, 8192² point (256 columns, 4 warps) held 574 instructions a K tile in
the previous form, 496 in this one (122 -> 42 shifts). Both at the mma.sync points of the 2-bit spec,
timed in turns, each winner checked against the oracle, beside bf16 cuBLAS in the same run. Writes
OUT/mma-sync-positions-<device>.json (MS=1,16: the row counts)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

# (pattern, replacement) turning the generated 2-bit bf16 kernel into the shift-a-pair form, in order
TO_SHIFT_A_PAIR = [
    (r"( *)# pair j \(values j, j \+ 8\) at position j % 3 [^\n]*\n *j = (ttgl\.arange\(0, 8, [^\n]*\)\)\))\n"
     r" *at = [^\n]*\n *shifts = [^\n]*\n",
     r"\1shifts = ttgl.expand_dims(ttgl.expand_dims(\2 * 2, 0), 1)\n"),
    (r" *masks = ttgl\.full\([^\n]*\n *bias_pairs = bias_pairs - at [^\n]*\n *# BIAS_k of [^\n]*\n *x_bias = [^\n]*\n",
     ""),
    (r" *x_bias_sum = [^\n]*\n", ""),
    (re.escape('"lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,r,r", [ttgl.expand_dims(v_words, 2) >> shifts, masks, '),
     '"lop3.b32 $0, $1, 0x00030003, $2, 0xEA;", "=r,r,r", [ttgl.expand_dims(v_words, 2) >> shifts, '),
    (re.escape("mma_v2(w_op, x_op, zeros - x_bias_sum[None, :])"), "mma_v2(w_op, x_op, zeros)"),
    (re.escape("b_acc = ((-r_Z) * r_S) + ttgl.zeros("), "b_acc = (((-r_Z) * r_S) - 128.0 * r_S) + ttgl.zeros("),
]


def patch(variant: str, src: str) -> str:
    for pattern, replacement in TO_SHIFT_A_PAIR:
        src, count = re.subn(pattern, lambda m, r=replacement: m.expand(r), src)
        if count != 1:
            raise SystemExit(f"the generated source no longer has one match of {pattern[:60]!r}")
    return src


def candidates(m: int) -> list[dict]:
    return [p for p in lowbit.candidates(m, 2) if p.get("REGISTER_OPERAND") is True]


MS = [int(m) for m in os.environ.get("MS", "1,16").split(",")]  # the row counts of this run
CASES = [(2, m, n, k) for m in MS for n, k in ((4096, 4096), (8192, 8192), (28672, 8192))]

if __name__ == "__main__":
    import torch

    sys.exit(pk.run_cases(patch, CASES, lambda b, m: ("v0", "shift-a-pair", "v0", "shift-a-pair"), candidates,
                          f"mma-sync-positions-{sb.slug(torch.cuda.get_device_name())}.json", __doc__.split("\n")[0]))
