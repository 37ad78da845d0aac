"""The register-operand wgmma kernel with a persistent grid (one CTA an SM walking the output tiles,
the ring filled once) against one CTA a tile, at M = 1024 (row tiles of 256, no split-K: where the
launcher makes it persistent), for 4, 3, 8 and 2 bits at the issue's three shapes, timed in turns
with bf16 cuBLAS (3 rounds, medians). The one-CTA-a-tile launch is the same generated kernel with
its PERSISTENT argument off (the launch arguments wrapped). Each persistent point is checked against
the oracle first. The persistent kernel is not shipped (bench/results/lowbit-wgmma-persistent-*.json:
+1-4 % at 8192², 4-7 % slower at N = 28672, and its tile loop left ptxas copying BIAS's pair from a
uniform register before each use); the patch renders it:

  git apply bench/experiments/lowbit_wgmma_persistent.patch
  python bench/experiments/lowbit_wgmma_persistent.py --out DIR [--bits 4,3,8,2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import lowbit  # noqa: E402
import spec_bench as sb  # noqa: E402

from tilesched import load_program  # noqa: E402
from tilesched.backends.cuda.kernel import Kernel  # noqa: E402

SHAPES = [(1024, 4096, 4096), (1024, 8192, 8192), (1024, 28672, 8192)]
POINTS = {4: [lowbit.register_operand(256, 128, 8, 1, 128, 2)], 2: [lowbit.register_operand(256, 128, 8, 1, 128, 2)],
          3: [lowbit.register_operand(256, 128, 8, 1, 128, 2), lowbit.register_operand(256, 128, 8, 1, 64, 4)],
          8: [lowbit.register_operand(256, 128, 8, 1, 128, 2), lowbit.register_operand(256, 128, 8, 1, 64, 4)]}
PERSISTENT = [True]


def switched(launch_args):
    def wrapped(cfg, t, n, c):
        args, kw = launch_args(cfg, t, n, c)
        kw["PERSISTENT"] = kw["PERSISTENT"] and PERSISTENT[0]
        return args, kw
    return wrapped


def main() -> int:
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--out", default=".")
    p.add_argument("--bits", default="4,3,8,2")
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    rows = []
    for bits in (int(b) for b in a.bits.split(",")):
        kernel = Kernel(load_program(ROOT / "configs" / f"{lowbit.BITS_SPECS[bits]}.yaml"))
        kernel.module.wgmma_launch_args = switched(kernel.module.wgmma_launch_args)
        for m, n, k in SHAPES:
            sizes = {"M": m, "N": n, "K": k}
            sets = [lowbit.make_inputs(bits, m, n, k, "cuda") for _ in range(sb.n_sets(lowbit.weight_bytes(bits, m, n, k)))]
            blas = lowbit.cublas_calls(sets, k, n, torch.bfloat16)
            timers = {"cublas": lambda blas=blas: sb.time_fns(blas, a.repeats)}
            for i, point in enumerate(POINTS[bits]):
                b = sb.legal(kernel.program, sizes, point)
                PERSISTENT[0] = True
                err, why = sb.oracle_error(kernel, b, sets[0])
                print(f"{bits}-bit M={m} N={n} K={k} #{i} persistent: oracle {why or 'ok'} ({err:.1e})", flush=True)

                def timed(on, b=b, sets=sets, kernel=kernel):
                    PERSISTENT[0] = on
                    return sb.time_kernel(kernel, b, sets, a.repeats)
                timers[f"#{i} persistent"] = lambda timed=timed: timed(True)
                timers[f"#{i} a CTA a tile"] = lambda timed=timed: timed(False)
            ms = sb.interleaved(timers)  # medians of 3 rounds, the timers taking turns
            for t, v in ms.items():
                print(f"{bits}-bit M={m} N={n} K={k} {t:18s} {v * 1e3:8.1f} us  x{ms['cublas'] / v:.3f} cuBLAS", flush=True)
                rows.append({"bits": bits, "shape": sizes, "variant": t, "ms": v, "cublas_ms": ms["cublas"],
                             "ratio": ms["cublas"] / v, "points": POINTS[bits]})
    dev = torch.cuda.get_device_name()
    sb.write_json(Path(a.out) / f"lowbit-wgmma-persistent-{sb.slug(dev)}.json",
                  {"what": __doc__.split("\n\n")[0], "date": sb.now(), "device": dev, "versions": sb.versions(),
                   "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
