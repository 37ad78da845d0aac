"""Run one wgmma decode point a few times, for Nsight Compute to read its counters and the stall
samples per SASS instruction (the 4-bit M = 16, 8192² winner of lowbit-decode-cap-*.json by default):

  ncu --clock-control none --kernel-name regex:wgmma_kernel --launch-skip 2 --launch-count 1 \\
      --section WarpStateStats --section SourceCounters --section SpeedOfLight -o OUT/prof \\
      python bench/experiments/wgmma_decode_profile.py
  ncu --import OUT/prof.ncu-rep --page source --csv --print-source sass > OUT/sass.csv

Environment: M, N, K, WARPS, STAGES, SPLIT (defaults 16, 8192, 8192, 8, 4, 4), BITS (4), BK (128), BM (the row tile: 16
for M > 8, else 1; past 16 a wide tile of the wgmma kernel, as the register-operand schedule takes it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import lowbit  # noqa: E402
import spec_bench as sb  # noqa: E402

from tilesched import load_program  # noqa: E402
from tilesched.backends.cuda.kernel import Kernel  # noqa: E402

if __name__ == "__main__":
    import torch

    env = {k: int(os.environ.get(k, v)) for k, v in
           {"M": 16, "N": 8192, "K": 8192, "WARPS": 8, "STAGES": 4, "SPLIT": 4, "BITS": 4, "BK": 128}.items()}
    bm = int(os.environ.get("BM", 16 if env["M"] > 8 else 1))
    prog = load_program(sb.CONFIGS / f"{lowbit.BITS_SPECS[env['BITS']]}.yaml")
    sizes = {"M": env["M"], "N": env["N"], "K": env["K"]}
    point = {**lowbit.register_operand(bm, 64 * env["WARPS"] // 4, env["WARPS"], env["SPLIT"], bk=env["BK"],
                                       stages=env["STAGES"]),
             "REGISTER_OPERAND": "wgmma" if bm <= 16 else True}
    b = sb.legal(prog, sizes, point)
    kern = Kernel(prog)
    ins = lowbit.make_inputs(env["BITS"], env["M"], env["N"], env["K"], "cuda")
    for _ in range(4):
        kern(params=dict(b.params), sizes=dict(b.sizes), **ins)
    torch.cuda.synchronize()
    print("ran", sizes, point, flush=True)
