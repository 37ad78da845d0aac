"""Experiment: a materialising schedule for low-bit GEMMs at large M. Instead of dequantising the
weight tile inside every output tile's K loop (every row tile repeats it, and the dequantised
tile goes registers -> shared memory -> MMA between the pipelined loads), dequantise the weights
once per call into a bf16 workspace (specs/w4_dequant.yaml) and run the Hopper bf16 GEMM
(configs/gemm_bf16_hopper.yaml: TMA, persistent grid) on it. Both kernels come from specs; the
pair's output is checked against the semantics oracle of configs/w4a16_gemm.yaml (the same
meaning: wd rounded to bf16, then the product). Times the pair (one CUDA graph), each part, the
fused w4a16 kernel (bench candidates) and bf16 cuBLAS in the same run. Writes
OUT/lowbit-materialise.json."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import gemm  # noqa: E402
import lowbit  # noqa: E402
import spec_bench as sb  # noqa: E402

from tilesched import load_program  # noqa: E402

SHAPES = [(1024, 4096, 4096), (1024, 8192, 8192), (1024, 28672, 8192), (4096, 8192, 8192)]
DEQUANT = [{"BLOCK_K": bk, "BLOCK_N": bn, "NUM_WARPS": w} for bk, bn, w in
           ((64, 128, 4), (128, 128, 8), (64, 256, 8), (32, 256, 4), (128, 64, 4), (128, 256, 8))]


def main() -> int:
    import torch

    from tilesched.backends.cuda.io import check_outputs
    from tilesched.backends.cuda.kernel import Kernel
    from tilesched.ir.bind import bind
    from tilesched.semantics import run_spec
    from tilesched.semantics.arrays import TorchOps

    dq_prog = load_program(ROOT / "bench" / "experiments" / "specs" / "w4_dequant.yaml")
    mm_prog = load_program(sb.CONFIGS / "gemm_bf16_hopper.yaml")
    fused_prog = load_program(sb.CONFIGS / "w4a16_gemm.yaml")
    dq, mm, fused = Kernel(dq_prog), Kernel(mm_prog), Kernel(fused_prog)
    rows = []
    for m, n, k in SHAPES:
        sets = [lowbit.make_inputs(4, m, n, k, "cuda") for _ in range(2)]
        for s in sets:
            s["WD"] = torch.empty(k, n, device="cuda", dtype=torch.bfloat16)
        dq_sizes, mm_sizes = {"K": k, "N": n}, {"M": m, "N": n, "K": k}
        dq_best, dq_table, _ = sb.search(dq, dq_prog, dq_sizes, DEQUANT, [{x: s[x] for x in ("W", "Z", "S")}
                                                                        for s in sets], 20)
        mm_sets = [{"A": s["X"], "B": s["WD"]} for s in sets]
        mm_best, mm_table, _ = sb.search(mm, mm_prog, mm_sizes, gemm.candidates(m), mm_sets, 20)
        dqp, mmp = dq_best["params"], mm_best["params"]

        def pair(s, dqp=dqp, mmp=mmp, k=k, n=n, m=m):
            dq(W=s["W"], Z=s["Z"], S=s["S"], WD=s["WD"], params=dqp)
            return mm(A=s["X"], B=s["WD"], params=mmp)

        pair_ms = sb.time_fns([lambda s=s: pair(s) for s in sets], 20)
        # the pair against the fused spec's oracle (first 512 rows: the float64 product stays small)
        mc = min(m, 512)
        sub = {"X": sets[0]["X"][:mc].contiguous(), "W": sets[0]["W"], "Z": sets[0]["Z"], "S": sets[0]["S"]}
        y = pair({**sets[0], "X": sub["X"]})
        torch.cuda.synchronize()
        b = bind(fused_prog, {"M": mc, "N": n, "K": k, **lowbit.cfg(16, 64, 128, 4, 4)})
        want = run_spec(b, {x: (t.double() if t.is_floating_point() else t) for x, t in sub.items()},
                        xp=TorchOps(torch.device("cuda")))
        verdict = check_outputs(b, {"Y": y}, want)[0]
        fused_best, _, _ = sb.search(fused, fused_prog, mm_sizes, lowbit.candidates(m),
                                     [{x: s[x] for x in ("X", "W", "Z", "S")} for s in sets], 20)
        wb = torch.randn(k, n, device="cuda").to(torch.bfloat16)
        cublas = sb.time_fns([lambda s=s, wb=wb: s["X"] @ wb for s in sets], 20)
        row = {"shape": mm_sizes, "pair_ms": pair_ms, "dequant_ms": dq_best["ms"], "gemm_ms": mm_best["ms"],
               "fused_ms": fused_best["ms"], "cublas_ms": cublas, "pair_vs_cublas": cublas / pair_ms,
               "fused_vs_cublas": cublas / fused_best["ms"], "check": "ok" if verdict.ok else verdict.why,
               "rel_err": verdict.rel_error, "dequant_params": dqp, "gemm_params": mmp,
               "fused_params": fused_best["params"], "dequant_candidates": dq_table, "gemm_candidates": mm_table}
        rows.append(row)
        print(f"M={m} N={n} K={k}: pair {pair_ms * 1e3:.1f} us (dequant {dq_best['ms'] * 1e3:.1f} + gemm "
              f"{mm_best['ms'] * 1e3:.1f}) x{cublas / pair_ms:.2f} cuBLAS; fused {fused_best['ms'] * 1e3:.1f} us "
              f"x{cublas / fused_best['ms']:.2f}; cuBLAS {cublas * 1e3:.1f} us; check {row['check']} "
              f"err {verdict.rel_error:.1e} {dqp} {mmp}", flush=True)
    report = {**sb.report_header(torch.cuda.get_device_name(), __doc__.split("\n")[0]), "rows": rows}
    sb.write_json(Path(os.environ.get("OUT", "/tmp")) / "lowbit-materialise.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
