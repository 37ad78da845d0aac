"""Experiment: which of this session's two decode-path changes pays at M = 1 and 16 (4 bits)? Renders
w4a16_gemm four ways: as generated (small integers to float through the mantissa of 2^23, CUDA-core
products kept per K index), without the per-K products (triton_rules.WIDE_DOT_MAX = 0), without the
mantissa trick (plain int-to-float conversions), and without both; each searched over the bench's
candidates, its winner checked against the oracle, timed beside bf16 cuBLAS in the same run. Split-K
is the one-launch form in every variant. Writes OUT/lowbit-decode-variants.json."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import lowbit  # noqa: E402
import spec_bench as sb  # noqa: E402

import tilesched.backends.cuda.kernel as K  # noqa: E402
import tilesched.backends.cuda.triton_rules as R  # noqa: E402
from tilesched import load_program  # noqa: E402

WIDE, MAGIC = R.WIDE_DOT_MAX, R._magic
VARIANTS = {"generated": (WIDE, MAGIC), "no-wide": (0, MAGIC), "no-magic": (WIDE, lambda *a: None),
            "neither": (0, lambda *a: None)}
SHAPES = [(1, 4096, 4096), (1, 8192, 8192), (1, 28672, 8192), (16, 8192, 8192), (16, 28672, 8192)]


def use(variant: str) -> None:
    R.WIDE_DOT_MAX, R._magic = VARIANTS[variant]
    K.compiled.cache_clear()


def main() -> int:
    import torch

    prog = load_program(sb.CONFIGS / "w4a16_gemm.yaml")
    rows = []
    for m, n, k in SHAPES:
        sizes = {"M": m, "N": n, "K": k}
        nbytes = lowbit.weight_bytes(4, m, n, k)
        sets = [lowbit.make_inputs(4, m, n, k, "cuda") for _ in range(sb.n_sets(nbytes))]
        bw = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
        cub = sb.time_fns([lambda t=t, bw=bw: t["X"] @ bw for t in sets], 20)
        for variant in VARIANTS:
            use(variant)
            kern = K.Kernel(prog)
            best, table, _ = sb.search(kern, prog, sizes, lowbit.candidates(m), sets, 20)
            err, why = sb.oracle_error(kern, sb.legal(prog, sizes, best["params"]), sets[0])
            rows.append({"shape": sizes, "variant": variant, "ms": best["ms"], "params": best["params"], "cublas_ms": cub,
                         "ratio_vs_cublas": cub / best["ms"], "bytes": nbytes, "GBs": nbytes / best["ms"] / 1e6,
                         "rel_err": err, "check": why or "ok", "candidates": table})
            print(f"M={m} N={n} K={k} {variant:9s} {best['ms'] * 1e3:7.1f} us  cuBLAS {cub * 1e3:7.1f} us "
                  f"x{cub / best['ms']:.2f}  {nbytes / best['ms'] / 1e6:.0f} GB/s  err {err:.1e} {why} {best['params']}",
                  flush=True)
        use("generated")
    out = {"what": __doc__.split("\n")[0], "device": torch.cuda.get_device_name(), "versions": sb.versions(),
           "date": sb.now(), "rows": rows}
    Path(os.environ.get("OUT", "/tmp"), "lowbit-decode-variants.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
