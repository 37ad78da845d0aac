"""Run one wgmma decode point a few times under compute-sanitizer (racecheck / synccheck), the register
cap patched (CAP env: 80, 96; unset: as generated), to look for shared-memory hazards behind the wrong
columns seen at a cap of 80 with one consumer and 4 stages.

  CAP=80 compute-sanitizer --tool racecheck python bench/experiments/wgmma_decode_sanitize.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

from tilesched import load_program  # noqa: E402

CAP = os.environ.get("CAP")


def patch(variant: str, src: str) -> str:
    old = "cap = {1: 96, 2: 80}[consumers]"
    assert old in src
    return src if variant == "v0" else src.replace(old, f"cap = {CAP}")


if __name__ == "__main__":
    import torch

    pk.use(patch, "cap" if CAP else "v0")
    m, n, k = int(os.environ.get("M", 1)), int(os.environ.get("N", 4096)), int(os.environ.get("K", 8192))
    prog = load_program(sb.CONFIGS / "w4a16_gemm.yaml")
    point = {**lowbit.register_operand(1 if m <= 8 else 16, 64, 4, int(os.environ.get("SPLIT", 1)),
                                       stages=int(os.environ.get("STAGES", 4))), "REGISTER_OPERAND": "wgmma"}
    ins = lowbit.make_inputs(4, m, n, k, "cuda")
    kern = pk.K.Kernel(prog)
    b = sb.legal(prog, {"M": m, "N": n, "K": k}, point)
    for _ in range(int(os.environ.get("CALLS", 2))):
        kern(params=dict(b.params), sizes=dict(b.sizes), **ins)
    torch.cuda.synchronize()
    print("ran", CAP, m, n, k, point, flush=True)
