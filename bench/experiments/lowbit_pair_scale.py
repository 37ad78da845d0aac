"""Experiment: how the wgmma register-operand kernel turns 8-bit weights into its bf16 operand. As
generated ("v0") v - z is formed in fp32 (exact), its pairs truncate to their top halves (one PRMT:
|v - z| <= 255 is exact in bf16) and one bf16x2 multiply by the scale rounds the exact product once
(gluon_wgmma.PAIR_SCALE). Variant "cvt" is the previous form: the product in fp32, then a conversion
to bf16 (F2FP: an sm_90 compile of the 256-row point held 32 a K tile and thread). Both give the same
bits. Both at the wgmma points of the 8-bit spec (256-row tiles and decode row tiles), timed in turns,
each winner checked against the oracle, beside bf16 cuBLAS in the same run. Writes
OUT/lowbit-pair-scale-m<first M>-<device>.json (MS=1024,16,1: the row counts)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

PAIRED = 'a = ttgl.inline_asm_elementwise("{ .reg .b32 t; prmt.b32 t, $1, $2, 0x7632;'
CVT = "a = (f * o_s.to(ttgl.float32)).to(ttgl.bfloat16)  # the product in fp32, then F2FP"


def patch(variant: str, src: str) -> str:
    out = [ln[:len(ln) - len(ln.lstrip())] + CVT if ln.strip().startswith(PAIRED) else ln for ln in src.split("\n")]
    new = "\n".join(out)
    if new == src:
        raise SystemExit("the generated source no longer multiplies in bf16 pairs")
    return new


def candidates(m: int) -> list[dict]:
    if m <= 16:
        return [p for p in lowbit.decode_wgmma(1 if m <= 8 else 16) if p["SPLIT_K"] in (1, 2, 4)]
    return [lowbit.register_operand(256, 128, 8, 1, bk=bk, stages=st) for bk, st in ((128, 2), (64, 3), (64, 4))]


MS = [int(m) for m in os.environ.get("MS", "1024,16,1").split(",")]  # the row counts of this run
CASES = [(8, m, n, k) for m in MS for n, k in ((4096, 4096), (8192, 8192), (28672, 8192))]

if __name__ == "__main__":
    import torch

    sys.exit(pk.run_cases(patch, CASES, lambda b, m: ("v0", "cvt", "v0", "cvt") if m > 16 else ("v0", "cvt"),
                          candidates, f"lowbit-pair-scale-m{MS[0]}-{sb.slug(torch.cuda.get_device_name())}.json",
                          __doc__.split("\n")[0]))
