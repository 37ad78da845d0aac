"""What holds the 3-bit register-operand wgmma kernel below the 4-bit one at M = 1024: its consumers
step five K tiles at a time (each tile's offset in its first word a compile-time constant), five
copies of the tile's decode in the loop. STEP = 1 renders one copy for every tile (the offset-0
decode: wrong values, the same work a tile) to time the loop's code size apart from its work; the
4-bit kernel at the same points and bf16 cuBLAS are timed in the same rounds.

  python bench/experiments/lowbit_3bit_step.py --out DIR
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
from tilesched.backends.cuda import gluon_wgmma  # noqa: E402
from tilesched.backends.cuda.kernel import Kernel, compiled  # noqa: E402

SHAPES = [(1024, 4096, 4096), (1024, 8192, 8192), (1024, 28672, 8192)]
POINTS = [lowbit.register_operand(256, 128, 8, 1, 128, 2), lowbit.register_operand(256, 128, 8, 1, 64, 4)]


def kernel_with_step(step: int) -> Kernel:
    gluon_wgmma.TEN_STEP = step
    compiled.cache_clear()
    kernel = Kernel(load_program(ROOT / "configs" / "w3a16_gemm.yaml"))
    assert f"for i5 in range(-(t0 % {step}), k_tiles, {step}):" in compiled(kernel.program)[1]
    return kernel


def main() -> int:
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--out", default=".")
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    kernels = {"3-bit step 5": kernel_with_step(5), "3-bit step 1 (wrong values)": kernel_with_step(1)}
    gluon_wgmma.TEN_STEP = 5
    four = Kernel(load_program(ROOT / "configs" / "w4a16_gemm.yaml"))
    rows = []
    for m, n, k in SHAPES:
        sizes = {"M": m, "N": n, "K": k}
        sets = {b: [lowbit.make_inputs(b, m, n, k, "cuda") for _ in range(sb.n_sets(lowbit.weight_bytes(b, m, n, k)))]
                for b in (3, 4)}
        blas = lowbit.cublas_calls(sets[4], k, n, torch.bfloat16)
        timers = {"cublas": lambda blas=blas: sb.time_fns(blas, a.repeats)}
        for i, point in enumerate(POINTS):
            for name, kern in kernels.items():
                b = sb.legal(kern.program, sizes, point)
                timers[f"{name} #{i}"] = lambda kern=kern, b=b, s=sets[3]: sb.time_kernel(kern, b, s, a.repeats)
            b4 = sb.legal(four.program, sizes, point)
            timers[f"4-bit #{i}"] = lambda b4=b4, s=sets[4]: sb.time_kernel(four, b4, s, a.repeats)
        for name, kern in kernels.items():  # the shipped kernel is right (the other only times)
            if "step 5" in name:
                err, why = sb.oracle_error(kern, sb.legal(kern.program, sizes, POINTS[0]), sets[3][0])
                print(f"  {name}: oracle {why or 'ok'} ({err:.1e})", flush=True)
        ms = sb.interleaved(timers)  # medians of 3 rounds, the timers taking turns
        for t, v in ms.items():
            print(f"M={m} N={n} K={k} {t:32s} {v * 1e3:8.1f} us  x{ms['cublas'] / v:.2f} cuBLAS", flush=True)
            rows.append({"shape": sizes, "variant": t, "ms": v, "cublas_ms": ms["cublas"], "ratio": ms["cublas"] / v,
                         "points": POINTS})
    dev = torch.cuda.get_device_name()
    sb.write_json(Path(a.out) / f"lowbit-3bit-step-{sb.slug(dev)}.json",
                  {"what": __doc__.split("\n\n")[0], "date": sb.now(), "device": dev, "versions": sb.versions(),
                   "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
