#!/usr/bin/env python3
"""fp8 GEMM from a spec (configs/fp8_gemm.yaml: e4m3 operands, fp32 accumulation, row-wise scales,
bf16 output) against torch._scaled_mm with the same row-wise scaling, in one run.

  python bench/fp8.py check --out DIR    the fp8 spec vs the semantics oracle (GPU, ragged shapes)
  python bench/fp8.py bench --out DIR    per shape: a small candidate search, the winner checked
                                         against the oracle, then timed beside torch._scaled_mm

Writes DIR/fp8-<device>.json in the rows format of bench/ops.py ("ratio" = baseline_ms / ours_ms)
with the cost model's prediction per candidate and its Spearman, and the winners to
DIR/fp8-lock-<device>.json. Target (issue 16): >= 0.95x torch._scaled_mm. Needs an sm_89+ GPU;
--quick for 4096³ only.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import spec_bench as sb  # noqa: E402

from tilesched import load_program  # noqa: E402

SPEC = "fp8_gemm"
# the target: the square and LLM shapes of bench/gemm.py (M, N, K)
SHAPES = [(m, n, k) for _, m, n, k in __import__("gemm").bench_shapes(False)]
CHECK = {SPEC: {"M": 300, "N": 528, "K": 1040}}  # ragged; TMA needs 16-byte rows: N, K multiples of 16


def cfg(bm, bn, bk, w, s, persistent=True, subtile=True, group=8, split=1) -> dict:
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group, "NUM_WARPS": w, "NUM_STAGES": s,
            "PERSISTENT": persistent, "EPILOGUE_SUBTILE": subtile, "SPLIT_K": split}


def candidates(m: int) -> list[dict]:
    if m < 16:  # a row tile of 1: CUDA cores, memory-bound (a tile may not exceed its axis); split-K
        # gives the few column tiles of a decode shape enough programs
        return [cfg(1, 64, 256, 4, 4, False, False), cfg(1, 128, 128, 4, 4, False, False),
                cfg(1, 64, 128, 4, 5, False, False), cfg(1, 128, 256, 8, 3, False, False)] + \
            [cfg(1, bn, bk, 4, 4, False, False, split=sk) for bn in (64, 128) for bk in (128, 256) for sk in (2, 4, 8)]
    if m < 64:
        return [cfg(16, 64, 256, 4, 4, False, False), cfg(16, 128, 128, 4, 4, False, False),
                cfg(16, 64, 128, 4, 5, False, False), cfg(16, 128, 256, 4, 3, False, False),
                cfg(16, 64, 256, 4, 4, False, False, split=2), cfg(16, 64, 256, 4, 4, False, False, split=4)]
    if m <= 256:
        return [cfg(64, 128, 128, 4, 4, False, False), cfg(64, 256, 128, 4, 3, False, False),
                cfg(128, 128, 128, 8, 4, False, False), cfg(64, 128, 256, 4, 3, False, False),
                cfg(128, 64, 256, 4, 3, False, False), cfg(64, 64, 256, 4, 4, False, False)]
    return [cfg(128, 256, 128, 8, 3), cfg(128, 256, 128, 8, 4), cfg(128, 256, 64, 8, 4), cfg(256, 128, 128, 8, 3),
            cfg(128, 128, 128, 8, 4), cfg(128, 256, 128, 8, 3, False, True), cfg(128, 256, 128, 8, 3, True, False),
            cfg(128, 128, 256, 8, 3)]


def make_inputs(m: int, n: int, k: int, device) -> dict:
    """A [M, K] and B stored [N, K] (passed as the column-major [K, N] view) in e4m3, scales fp32."""
    import torch

    e4m3 = torch.float8_e4m3fn
    a = torch.randn(m, k, device=device).to(e4m3)
    b_nk = (torch.randn(n, k, device=device) / math.sqrt(k) * 8).to(e4m3)
    return {"A": a, "B": b_nk.mT, "sa": torch.rand(m, device=device) + 0.5, "sb": torch.rand(n, device=device) + 0.5}


def scaled_mm(t: dict):
    """torch._scaled_mm with the spec's row-wise scales: (A @ B) * sa[:, None] * sb[None, :] in bf16."""
    import torch

    return torch._scaled_mm(t["A"], t["B"], scale_a=t["sa"][:, None], scale_b=t["sb"][None, :],
                            out_dtype=torch.bfloat16)


def bench_one(args, report, lock, m: int, n: int, k: int):
    from tilesched.backends.cuda.kernel import Kernel

    program = load_program(sb.CONFIGS / f"{SPEC}.yaml")
    kernel = Kernel(program)
    sizes = {"M": m, "N": n, "K": k}
    cands = candidates(m)
    sb.warm_compile(sb.CONFIGS / f"{SPEC}.yaml", sizes, cands, program, args.workers)
    sets = [make_inputs(m, n, k, "cuda") for _ in range(sb.n_sets(m * k + n * k + 2 * m * n))]
    best, table, rho = sb.search(kernel, program, sizes, cands, sets, args.repeats)
    if best is None:
        print(f"{SPEC} {sizes}: no candidate ran", flush=True)
        return lock
    mc = min(m, 1024)
    sub = {**sets[0], "A": sets[0]["A"][:mc].contiguous(), "sa": sets[0]["sa"][:mc].contiguous()}
    err, why = sb.oracle_error(kernel, sb.legal(program, {**sizes, "M": mc}, best["params"]), sub)
    fl = 2.0 * m * n * k
    winner = sb.legal(program, sizes, best["params"])
    timers = {"ours": lambda: sb.time_kernel(kernel, winner, sets, args.repeats)}
    bad = None
    try:
        scaled_mm(sets[0])
        timers["base"] = lambda: sb.time_fns([lambda t=t: scaled_mm(t) for t in sets], args.repeats)
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        bad = f"{type(exc).__name__}: {str(exc)[:300]}"
    times = sb.interleaved(timers)  # the winner and the baseline in turns
    ms = times["ours"]
    row = {"op": SPEC, "shape": sizes, "dtype": "fp8e4m3 -> bf16", "ours_ms": ms, "search_ms": best["ms"], "flops": fl,
           "ours_TFLOPs": fl / ms / 1e9, "rel_err": err, "check": why or "ok", "params": best["params"],
           "spearman": rho, "candidates": table, "baseline": "torch._scaled_mm (row-wise scales, bf16 out)"}
    line = f"{SPEC} M={m:5d} N={n:5d} K={k:5d}  ours {ms:.4f} ms ({fl / ms / 1e9:.0f} TFLOP/s; search {best['ms']:.4f})"
    if bad is None:
        base = times["base"]
        row.update(baseline_ms=base, ratio=base / ms, baseline_TFLOPs=fl / base / 1e9)
        line += f"  _scaled_mm {base:.4f} ms x{base / ms:.3f}"
    else:
        row["baseline_error"] = bad
        line += f"  _scaled_mm unavailable ({bad.split(':')[0]})"
    report["rows"].append(row)
    print(line + f"  err {err:.1e} rho {rho} {best['params']}", flush=True)
    if math.isfinite(err):
        lock = lock.with_entry(sb.lock_entry(program, sizes, best, report["device"], report["versions"],
                                             "bench/fp8.py", len(table)))
    return lock


def cmd_bench(args) -> int:
    cases = [lambda r, lock, s=s: bench_one(args, r, lock, *s) for s in (SHAPES[:1] if args.quick else SHAPES)]
    return sb.run_bench("fp8", "fp8 e4m3 GEMM from a spec vs torch._scaled_mm (row-wise scales)", Path(args.out), cases)


def main(argv=None) -> int:
    args = sb.parser(__doc__).parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.cmd == "check":
        return sb.check_specs(CHECK, args.points, args.seed, Path(args.out), "fp8")
    return cmd_bench(args)


if __name__ == "__main__":
    sys.exit(main())
