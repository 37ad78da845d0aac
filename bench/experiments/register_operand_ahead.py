"""Experiment behind bench/results/register-operand-ahead-*.json: the register-operand decode kernel
with X's tile and the group coefficients loaded one K tile ahead (as its packed words are) against
the kernel that loads them in the step that uses them, at the same points in the same device session,
each beside bf16 cuBLAS timed in its own process. Every point is checked against the semantics
oracle before it is timed.

  PYTHONPATH=<tree> python bench/experiments/register_operand_ahead.py BITS TAG [--quick]     (GPU)

with <tree> a checkout of either version (the earlier one: commit d9b3ca3); `git archive <rev> tilesched |
tar -x -C DIR` makes one. Files: register-operand-ahead-{before,ahead}-{4,2}bit-*.json.

Two further variants were measured the same way against the kernel with the prefetch (their
patches beside this script; results register-operand-{xops,ones}[-before]-4bit-*.json), and not kept:
  - register_operand_xops.patch: X's tile loaded straight into the MMA operand's register layout
    (gluon_layouts.x_bases; every warp loads the whole tile, one word's values a thread, vector
    loads) and X's row sums from an MMA with a ones operand: the loop's CTA barriers drop from 7 to
    1, but it is 3-8 % slower geomean per shape (the repacking of the pairs and every warp's loads);
  - register_operand_ones.patch: only the row sums from the ones MMA (4 barriers, more spills):
    0.94-1.02 geomean, slower at M = 16."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[1:1] = [str(ROOT / "bench")]

__import__("tilesched")  # first, from PYTHONPATH's tree: lowbit then puts this checkout first on the path
import lowbit  # noqa: E402
import spec_bench as sb  # noqa: E402

POINTS = [(128, 4, 8), (64, 4, 8), (128, 4, 4), (256, 8, 2), (256, 8, 4), (128, 8, 4)]


def main() -> int:
    import torch

    from tilesched import load_program
    from tilesched.backends.cuda.kernel import Kernel

    bits, tag = int(sys.argv[1]), sys.argv[2]
    points, stages = (POINTS[:4], (2, 3)) if "--quick" in sys.argv else (POINTS, (2, 3, 4))
    device = torch.cuda.get_device_name()
    report = sb.report_header(device, f"register-operand decode kernel, {tag}: {bits}-bit points beside bf16 cuBLAS")
    report["tilesched"] = str(Path(sys.modules["tilesched"].__file__).parent)
    out = Path(os.environ.get("OUT", "/tmp")) / f"register-operand-ahead-{tag}-{bits}bit-{sb.slug(device)}.json"
    program = load_program(sb.CONFIGS / f"{lowbit.BITS_SPECS[bits]}.yaml")
    kernel = Kernel(program)
    for n, k in lowbit.NK:
        for m in (1, 16):
            sizes = {"M": m, "N": n, "K": k}
            sets, cub = lowbit.sets_and_cublas(bits, m, n, k)
            rows = []
            for params, b in lowbit.register_operand_bindings(program, sizes, points, stages):
                err, why = sb.oracle_error(kernel, b, sets[0])
                row = {"params": params, "rel_err": err, "check": why or "ok"}
                if not why:
                    row["ms"] = sb.time_kernel(kernel, b, sets, 20)
                rows.append(row)
            good = [r for r in rows if "ms" in r]
            best = min(good, key=lambda r: r["ms"]) if good else None
            report["rows"].append({"shape": sizes, "cublas_ms": cub, "best": best, "points": rows,
                                   "x_cublas": cub / best["ms"] if best else None})
            print(f"== {tag} {bits} bits {sizes}: cuBLAS {cub * 1e3:.1f} us, best "
                  f"{best['ms'] * 1e3:.1f} us x{cub / best['ms']:.2f} {best['params']}" if best else "none", flush=True)
            sb.write_json(out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
