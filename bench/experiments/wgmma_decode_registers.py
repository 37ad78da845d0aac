"""The register-operand wgmma kernel at decode row tiles (REGISTER_OPERAND: wgmma) under register
budgets: the consumers' setmaxnreg and the kernel's maxnreg (BUDGETS; 0 = the compiler's choice,
which at 168-255 registers a thread leaves one CTA per SM, each consumer waiting on its own small
MMAs), set by wrapping the generated `wgmma_launch_args`. Times each point (CUDA-graph replays,
rotated inputs; NUM_STAGES from STAGES) beside the mma.sync winner of the same shape, and checks the
fastest against the oracle. Behind gluon_wgmma.DECODE_REGISTERS.

  BUDGETS=0,128,96,80 STAGES=4,8 python bench/experiments/wgmma_decode_registers.py --out DIR
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import lowbit  # noqa: E402
import spec_bench as sb  # noqa: E402

from tilesched import load_program  # noqa: E402
from tilesched.backends.cuda.kernel import Kernel  # noqa: E402

SHAPES = [(16, 4096, 4096), (16, 8192, 8192), (16, 28672, 8192), (1, 8192, 8192), (1, 28672, 8192)]
MMA_SYNC = {16: lowbit.register_operand(16, 128, 8, 4, stages=2), 1: lowbit.register_operand(1, 128, 4, 8, stages=2)}
BUDGETS = tuple(int(r) for r in os.environ.get("BUDGETS", "0,128,96,80").split(","))
BUDGET = [0]  # the budget the wrapped launch arguments take


def with_budget(launch_args):
    def wrapped(cfg, t, n, c):
        args, kw = launch_args(cfg, t, n, c)
        kw.pop("maxnreg", None)
        kw.update(dict(maxnreg=BUDGET[0], CONSUMER_REGS=BUDGET[0]) if BUDGET[0] else dict(CONSUMER_REGS=232))
        return args, kw
    return wrapped


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=".")
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    program = load_program(ROOT / "configs" / "w4a16_gemm.yaml")
    kernel = Kernel(program)
    kernel.module.wgmma_launch_args = with_budget(kernel.module.wgmma_launch_args)
    rows = []
    for m, n, k in SHAPES:
        sizes = {"M": m, "N": n, "K": k}
        sets = [lowbit.make_inputs(4, m, n, k, "cuda") for _ in range(sb.n_sets(n * k // 2))]
        ref = sb.time_kernel(kernel, sb.legal(program, sizes, MMA_SYNC[m]), sets, a.repeats)
        best = None
        stages = [int(x) for x in os.environ.get("STAGES", "4,8").split(",")]
        points = [{**p, "NUM_STAGES": st} for p in lowbit.decode_wgmma(1 if m <= 8 else 16) if p["NUM_STAGES"] == 4
                  for st in stages]
        for regs in BUDGETS:
            BUDGET[0] = regs
            _, table, _ = sb.search(kernel, program, sizes, points, sets, a.repeats)
            table = [{**r, "shape": sizes, "regs": regs, "mma_sync_ms": ref} for r in table]
            rows += table
            best = min([r for r in table if "ms" in r] + ([best] if best else []), key=lambda r: r["ms"])
        BUDGET[0] = best["regs"]
        err, why = sb.oracle_error(kernel, sb.legal(program, sizes, best["params"]), sets[0])
        best["check"], best["rel_err"] = why or "ok", err
        print(f"M={m} N={n} K={k}: mma.sync {ref * 1e3:.1f} us; best wgmma {best['ms'] * 1e3:.1f} us "
              f"(regs {best['regs']}, {best['params']}) check {best['check']}", flush=True)
        for regs in BUDGETS:
            got = [r["ms"] for r in rows if r.get("regs") == regs and r["shape"] == sizes and "ms" in r]
            print(f"   regs {regs}: best {min(got) * 1e3:.1f} us" if got else f"   regs {regs}: none ran", flush=True)
    import torch

    dev = torch.cuda.get_device_name()
    report = {"what": "wgmma decode points under register budgets vs the mma.sync kernel", "date": sb.now(),
              "device": dev, "versions": sb.versions(), "rows": rows}
    sb.write_json(Path(a.out) / f"wgmma-decode-registers{os.environ.get('TAG', '')}-{sb.slug(dev)}.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
