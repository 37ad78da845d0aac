#!/usr/bin/env python3
"""Operators generated from specs (configs/) against their baselines, side by side in one run.

  python bench/ops.py check --out DIR    every generated CUDA example vs the semantics oracle (GPU)
  python bench/ops.py bench --out DIR    softmax, RMSNorm, LayerNorm vs the device copy bandwidth
                                         and torch.compile of the same function; the gated MLP vs
                                         two cuBLAS GEMMs + torch's silu * mul
Writes DIR/ops-<device>.json: {"device", "versions", "date", "rows": [{"op", "shape", "dtype",
"ours_ms", "baseline", "baseline_ms", "ratio" (baseline_ms / ours_ms), "bytes" or "flops",
"copy_GBs", "rel_err", "params"}]}. Times: medians of CUDA-graph replays (measure._time), input
sets rotated past L2. Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import spec_bench as sb  # noqa: E402

from tilesched import load_program  # noqa: E402
from tilesched.ir.bind import bind  # noqa: E402

CONFIGS = ROOT / "configs"
ROWWISE = ("softmax", "rmsnorm", "layernorm")
# M x N from 32M to 256M elements, N from 1024 to 32768
ROW_SHAPES = [(32768, 1024), (8192, 4096), (16384, 8192), (4096, 16384), (8192, 32768), (65536, 4096)]
MLP_SHAPES = [(128, 14336, 4096), (2048, 14336, 4096), (8192, 14336, 4096)]
CHECK_SIZES = {  # ragged shapes for the GPU correctness pass of every example spec
    "softmax": {"M": 300, "N": 3000}, "rmsnorm": {"M": 300, "N": 3000}, "layernorm": {"M": 300, "N": 3000},
    "gated_mlp": {"M": 300, "N": 1000, "K": 520}, "conv1x1_nhwc": {"NB": 3, "H": 7, "W": 11, "C": 200, "CO": 300},
    "gemm_gelu_prologue": {"M": 300, "N": 400, "K": 264},
}


# ------------------------------------------------------------------------------------ check

def cmd_check(args) -> int:
    """Every CUDA example without comm stages, at a ragged shape, against the oracle (float64 on
    the GPU), at its default parameters and a few other legal points."""
    import random

    import torch

    from tilesched.backends.cuda.defaults import select_binding
    from tilesched.backends.cuda.measure import measure
    from tilesched.ir.space import iter_points

    rng = random.Random(args.seed)
    rows, failed = [], 0
    for path in sorted(CONFIGS.glob("*.yaml")):
        prog = load_program(path)
        if prog.target != "cuda" or any(s.kind == "comm" for s in prog.stages) or prog.name not in CHECK_SIZES:
            continue
        sizes = CHECK_SIZES[prog.name]
        b0, _ = select_binding(prog, sizes)
        fixed = {**prog.limit_env(), **b0.sizes}
        pts = [p for p in iter_points(prog.params, prog.constraints, fixed) if sb.legal(prog, sizes, p)]
        rng.shuffle(pts)
        for params in [dict(b0.params)] + pts[: args.points]:
            b = bind(prog, {**sizes, **params})
            m = measure(b, timed=False, seed=rng.randrange(1 << 30))
            rows.append({"spec": prog.name, "sizes": sizes, "params": params, "ok": m.ok, "reason": m.reason,
                         "detail": m.detail[:300], "rel_error": m.max_rel_error})
            failed += not m.ok
            print(f"{'ok  ' if m.ok else 'FAIL'} {prog.name:20s} {sizes} {params} err={m.max_rel_error} "
                  f"{m.reason or ''} {m.detail[:200] if not m.ok else ''}", flush=True)
    dev = torch.cuda.get_device_name()
    sb.write_json(Path(args.out) / f"ops-check-{sb.slug(dev)}.json",
               {"device": dev, "versions": sb.versions(), "date": sb.now(),
                "rows": rows, "failed": failed})
    print(f"check: {len(rows)} points, {failed} failed")
    return 1 if failed else 0


# ------------------------------------------------------------------------------------ bench

def _baseline_fn(op: str, torch):
    import torch.nn.functional as F

    if op == "softmax":
        return lambda x, w, b: torch.softmax(x.float(), dim=-1).to(torch.bfloat16)
    if op == "rmsnorm":
        return lambda x, w, b: (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)
                                * w.float()).to(torch.bfloat16)
    return lambda x, w, b: F.layer_norm(x.float(), (x.shape[-1],), w.float(), b.float(), 1e-5).to(torch.bfloat16)


def _row_candidates(n: int) -> list[dict]:
    out = []
    for bm in (1, 2, 4, 8, 16):
        if bm * n > 65536 or bm * n < 1024:
            continue
        for w in (4, 8, 16, 32):
            if bm * n // (w * 32) < 4 or bm * n // (w * 32) > 256:
                continue
            out += [{"BLOCK_M": bm, "NUM_WARPS": w, "NUM_STAGES": st, "PERSISTENT": pers}
                    for st in ((1, 2) if bm * n >= 16384 else (2,))
                    # a persistent grid loads the row-invariant weights once per SM, not per row block
                    for pers in (False, True)]
    return out


def bench_rowwise(args, torch, report, copy_cache):
    from tilesched.backends.cuda.kernel import Kernel
    from tilesched.backends.cuda.measure import time_callable

    shapes = ROW_SHAPES[:2] if args.quick else ROW_SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    for op in args.ops.split(","):
        prog = load_program(CONFIGS / f"{op}.yaml")
        kernel = Kernel(prog)
        fn = torch.compile(_baseline_fn(op, torch), dynamic=False)
        for m, n in shapes:
            sizes = {"M": m, "N": n}
            elements = m * n
            # X read once, Y written once (bf16), plus the weight vectors
            nbytes = 4 * elements + {"softmax": 0, "rmsnorm": 2 * n, "layernorm": 4 * n}[op]
            if elements not in copy_cache:
                copy_cache[elements] = sb.copy_gbs(elements)
            sets = []
            for _ in range(max(1, min(4, math.ceil((256 << 20) / (elements * 4))))):
                x = torch.randn(m, n, device="cuda").to(torch.bfloat16)
                ins = {"X": x}
                if op == "rmsnorm":
                    ins["w"] = torch.rand(n, device="cuda").to(torch.bfloat16) + 0.5
                if op == "layernorm":
                    ins["gamma"] = torch.rand(n, device="cuda").to(torch.bfloat16) + 0.5
                    ins["beta"] = torch.randn(n, device="cuda").to(torch.bfloat16)
                sets.append(ins)
            best, table, _ = sb.search(kernel, prog, sizes, _row_candidates(n), sets, args.repeats)
            if best is None:
                continue
            ms, params = best["ms"], best["params"]
            b = sb.legal(prog, sizes, params)
            err = sb.oracle_error(kernel, b, sets[0])[0]
            fns = [lambda s=s, fn=fn: fn(s["X"], s.get("w", s.get("gamma")), s.get("beta")) for s in sets]
            compiled_ms = time_callable(fns, repeats=args.repeats)
            ours_gbs = nbytes / (ms * 1e-3) / 1e9
            for base, base_ms in (("device copy (same bytes)", nbytes / (copy_cache[elements] * 1e9) * 1e3),
                                  ("torch.compile", compiled_ms)):
                report["rows"].append({
                    "op": op, "shape": sizes, "dtype": "bf16", "ours_ms": ms, "baseline": base,
                    "baseline_ms": base_ms, "ratio": base_ms / ms, "bytes": nbytes, "copy_GBs": copy_cache[elements],
                    "ours_GBs": ours_gbs, "rel_err": err, "params": params, "candidates": table})
            print(f"{op:9s} M={m:6d} N={n:6d}  ours {ms:8.4f} ms {ours_gbs:7.0f} GB/s "
                  f"({ours_gbs / copy_cache[elements]:.2f} of copy {copy_cache[elements]:.0f})  torch.compile "
                  f"{compiled_ms:8.4f} ms (x{compiled_ms / ms:.2f})  err {err:.1e}  {params}", flush=True)
            sb.write_json(args.result, report)


def _mlp_candidates(m: int) -> list[dict]:
    base = {"GROUP_M": 8, "NUM_STAGES": 3}
    if m <= 256:
        return [dict(base, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, NUM_WARPS=w, PERSISTENT=False, EPILOGUE_SUBTILE=False)
                for bm, bn, bk, w in ((64, 64, 128, 4), (64, 128, 64, 4), (128, 64, 64, 4), (64, 128, 128, 8),
                                      (128, 128, 64, 8), (32, 128, 128, 4))]
    return [dict(base, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, NUM_WARPS=w, PERSISTENT=p, EPILOGUE_SUBTILE=st,
                 NUM_STAGES=s, GROUP_M=g)
            for bm, bn, bk, w, p, st, s, g in (
                (128, 128, 64, 8, True, True, 3, 8), (128, 128, 64, 8, False, True, 3, 8),
                (128, 128, 64, 8, True, True, 4, 8), (128, 128, 64, 8, False, True, 4, 16),
                (64, 256, 64, 8, True, True, 3, 8), (64, 256, 64, 8, False, True, 4, 8),
                (128, 64, 64, 4, True, False, 4, 8), (64, 128, 64, 4, True, False, 4, 8),
                (128, 128, 32, 8, True, True, 4, 8), (128, 128, 64, 8, False, False, 3, 8))]


def bench_mlp(args, torch, report):
    import torch.nn.functional as F

    from tilesched.backends.cuda.kernel import Kernel
    from tilesched.backends.cuda.measure import time_callable

    prog = load_program(CONFIGS / "gated_mlp.yaml")
    kernel = Kernel(prog)
    for m, n, k in MLP_SHAPES[:1] if args.quick else MLP_SHAPES:
        sizes = {"M": m, "N": n, "K": k}
        bf = torch.bfloat16
        sets = [{"X": torch.randn(m, k, device="cuda").to(bf),
                 "W1": (torch.randn(n, k, device="cuda") / math.sqrt(k)).to(bf).mT,
                 "W3": (torch.randn(n, k, device="cuda") / math.sqrt(k)).to(bf).mT} for _ in range(2)]
        best, table, _ = sb.search(kernel, prog, sizes, _mlp_candidates(m), sets, args.repeats)
        if best is None:
            continue
        ms, params = best["ms"], best["params"]
        b = sb.legal(prog, sizes, params)
        err = sb.oracle_error(kernel, b, sets[0])[0]
        fns = [lambda s=s: F.silu(s["X"] @ s["W1"]) * (s["X"] @ s["W3"]) for s in sets]
        base = time_callable(fns, repeats=args.repeats)
        flops = 2 * 2.0 * m * n * k
        report["rows"].append({"op": "gated_mlp", "shape": sizes, "dtype": "bf16", "ours_ms": ms,
                               "baseline": "2 cuBLAS GEMMs + torch silu * mul", "baseline_ms": base,
                               "ratio": base / ms, "flops": flops, "rel_err": err, "params": params,
                               "ours_TFLOPs": flops / ms / 1e9, "candidates": table})
        print(f"gated_mlp M={m:5d} N={n} K={k}  ours {ms:8.4f} ms ({flops / ms / 1e9:.0f} TFLOP/s)  "
              f"cuBLAS x2 + silu*mul {base:8.4f} ms  x{base / ms:.3f}  err {err:.1e}  {params}", flush=True)
        sb.write_json(args.result, report)


def cmd_bench(args) -> int:
    import torch

    dev = torch.cuda.get_device_name()
    args.result = Path(args.out) / f"ops-{sb.slug(dev)}.json"
    report = {"device": dev, "versions": sb.versions(), "date": sb.now(),
              "timing": "medians of CUDA-graph replays, input sets rotated past L2; baselines in the same run",
              "rows": []}
    t0 = time.time()
    copy_cache: dict = {}
    if args.only in (None, "rowwise"):
        bench_rowwise(args, torch, report, copy_cache)
    if args.only in (None, "mlp"):
        bench_mlp(args, torch, report)
    sb.write_json(args.result, report)
    print(f"bench done in {time.time() - t0:.0f} s -> {args.result}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["check", "bench"])
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", choices=["rowwise", "mlp"])
    p.add_argument("--ops", default=",".join(ROWWISE), help="row-wise ops to run (comma-separated)")
    p.add_argument("--shapes", default=None, help="row-wise shapes as MxN,MxN (default: the issue's six)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--points", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return cmd_check(args) if args.cmd == "check" else cmd_bench(args)


if __name__ == "__main__":
    sys.exit(main())
