"""Experiment behind bench/results/register-operand-wgmma-*.json: the register-operand schedule on
Hopper's wgmma (X's tile from shared memory, written once per CTA and K tile) against the same
schedule on mma.sync (X's tile loaded and permuted into registers by every warp), the same points,
the same run, beside bf16 cuBLAS. Every point of either variant is checked against the semantics
oracle before it is timed.

The wgmma variant is not in the renderer (it lost at every shape measured); it is kept as a patch
of tilesched/backends/cuda/gluon_emit.py and gluon_layouts.py that selects it when
TILESCHED_RO_WGMMA=1:

  git checkout d9b3ca3 && git apply bench/experiments/register_operand_wgmma.patch   (the renderer it was measured on)
  python bench/experiments/register_operand_wgmma.py [--quick]        (GPU)
  TILESCHED_RO_WGMMA=1 python bench/lowbit.py check --register-operand --out DIR   (its oracle check)

What the patch renders: wgmma's register operand takes mma.sync's fragments (a thread holds
indices 2t, 2t + 1 and 8 up of every 16), and X comes from shared memory in the order the kernel
stores it, so a thread still holds whole words (word t of each block of four, pair j at index
8 j + 2 t + half) and X's tile is stored permuted to match, once per CTA and K tile; the MMA
starts from zero each tile so the group's scale and zero point still apply per tile.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import lowbit  # noqa: E402
import spec_bench as sb  # noqa: E402

POINTS = [(128, 4, 8), (128, 8, 8), (64, 4, 8), (128, 4, 4), (256, 8, 2), (256, 8, 4), (128, 8, 4)]
VARIANTS = {"mma_sync": "0", "wgmma": "1"}


def main() -> int:
    import torch

    from tilesched import load_program
    from tilesched.backends.cuda.kernel import Kernel

    quick = "--quick" in sys.argv
    device = torch.cuda.get_device_name()
    report = sb.report_header(device, "register-operand schedule: wgmma (X from shared memory) vs mma.sync, "
                              "same points, same run, beside bf16 cuBLAS")
    report["commit"] = os.popen(f"git -C {ROOT} rev-parse --short HEAD 2>/dev/null").read().strip()
    out = Path(os.environ.get("OUT", "/tmp")) / f"register-operand-wgmma-{sb.slug(device)}.json"
    stages = (2, 3) if not quick else (3,)
    for bits in (4, 2):
        program = load_program(sb.CONFIGS / f"{lowbit.BITS_SPECS[bits]}.yaml")
        kernel = Kernel(program)
        for n, k in (lowbit.NK if not quick else lowbit.NK[1:]):
            for m in (1, 16):
                sizes = {"M": m, "N": n, "K": k}
                sets, cub = lowbit.sets_and_cublas(bits, m, n, k)
                rows = []
                for params, b in lowbit.register_operand_bindings(program, sizes, POINTS, stages):
                    row = {"params": params}
                    for name, flag in VARIANTS.items():
                        os.environ["TILESCHED_RO_WGMMA"] = flag
                        try:
                            err, why = sb.oracle_error(kernel, b, sets[0])
                            row[name] = {"ms": sb.time_kernel(kernel, b, sets, 20), "rel_err": err,
                                         "check": why or "ok"}
                        except Exception as exc:  # noqa: BLE001 - a point that fails is a row
                            row[name] = {"error": f"{type(exc).__name__}: {str(exc)[-300:]}"}
                    rows.append(row)
                    print(bits, sizes, {kk: params[kk] for kk in ("BLOCK_N", "NUM_WARPS", "SPLIT_K", "NUM_STAGES")},
                          {v: (f"{r['ms'] * 1e3:.1f} us {r['check']}" if "ms" in r else r["error"][-160:])
                           for v, r in ((v, row[v]) for v in VARIANTS)}, flush=True)
                best = {v: min((r[v]["ms"] for r in rows if r[v].get("check") == "ok"), default=None) for v in VARIANTS}
                report["rows"].append({"bits": bits, "shape": sizes, "cublas_ms": cub, "best_ms": best,
                                       "x_cublas": {v: cub / t if t else None for v, t in best.items()},
                                       "points": rows})
                print(f"== {bits} bits {sizes}: cuBLAS {cub * 1e3:.1f} us; best "
                      + ", ".join(f"{v} {t * 1e3:.1f} us (x{cub / t:.2f})" for v, t in best.items() if t), flush=True)
                sb.write_json(out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
