"""Run the register-operand schedule once per listed point, for a profiler to read its counters:

  ncu --clock-control none --kernel-name regex:gluon python bench/experiments/register_operand_profile.py

(the points are the lock-file winners at N = 28672, K = 8192: M = 1 and 16, 4 bits). Behind the
stall and issue figures in bench/results/register-operand-profile-*.json."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import lowbit  # noqa: E402
import torch  # noqa: E402

from tilesched import load_program  # noqa: E402
from tilesched.backends.cuda.kernel import Kernel  # noqa: E402

POINTS = [(1, {"BLOCK_M": 1, "BLOCK_N": 256, "NUM_WARPS": 8, "SPLIT_K": 2}),
          (16, {"BLOCK_M": 16, "BLOCK_N": 128, "NUM_WARPS": 4, "SPLIT_K": 8})]

if __name__ == "__main__":
    kernel = Kernel(load_program(ROOT / "configs" / "w4a16_gemm.yaml"))
    for m, p in POINTS:
        ins = lowbit.make_inputs(4, m, 28672, 8192, "cuda")
        params = {"BLOCK_K": 128, "GROUP_M": 8, "NUM_STAGES": 4, "MATERIALIZE": False, "REGISTER_OPERAND": True, **p}
        for _ in range(3):
            kernel(params=params, **ins)
        torch.cuda.synchronize()
        print(f"ran M={m} {p}", flush=True)
