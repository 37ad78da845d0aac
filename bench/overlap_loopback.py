"""Overlap kernels on ONE GPU: every rank in one process (`LoopbackNode`).

  python3 bench/overlap_loopback.py --out DIR [--quick]

1. Correctness of AllGather+GEMM and GEMM+ReduceScatter for world 2, 3 and 4 with the
   real kernels, streams, copy-engine pushes and signals (ranks share the GPU's SMs):
   fresh random bf16 inputs, NaN-poisoned outputs, expected values from the semantics
   oracle run SPMD (configs/ag_gemm.yaml, gemm_rs.yaml; float64 on the GPU), ragged N and K,
   three consecutive calls per case.
2. The consumer kernels alone (no communication) against cuBLAS (torch.matmul) in the same
   run at the issue's shapes: A[M, 8192] @ B[8192, 4096] for M in 8192, 16384. This is the
   GEMM half of the overlap target; the communication half needs several GPUs
   (bench/overlap.py).

Times: mean of 20 back-to-back calls (CUDA events), median of 5 rounds, ours and cuBLAS
alternating round by round. Writes DIR/overlap-loopback-<device>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from overlap_common import (  # noqa: E402  (bench/ is on sys.path)
    CONFIGS,
    expected,
    expected_alone,
    lcfg,
    mean_ms,
    plan_for,
    rel_err,
)

from tilesched.backends.cuda.overlap.loopback import LoopbackNode  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def plans(collective, world, rows, cols, depth, chunks, cfg):
    return [plan_for(collective, r, world, rows, cols, depth, chunks, cfg) for r in range(world)]


def bf16(*shape, scale=1.0):
    return (torch.randn(*shape, device="cuda") * scale).to(torch.bfloat16)


def check(collective, world, rows, cols, depth, chunks, cfg, calls=3) -> float:
    ps = plans(collective, world, rows, cols, depth, chunks, cfg)
    node = LoopbackNode(ps, lcfg(cfg))
    per, errs = rows // world, []
    for _ in range(calls):
        # A: each rank's shard (all_gather) or its [M, K_local] (reduce_scatter); B: each rank's own
        a = [bf16(per if collective == "all_gather" else rows, depth) for _ in range(world)]
        b = [bf16(depth, cols, scale=depth ** -0.5) for _ in range(world)]
        c_rows = rows if collective == "all_gather" else per  # what a rank holds of C
        outs = [torch.full((c_rows, cols), float("nan"), device="cuda", dtype=torch.bfloat16) for _ in a]
        node.call(list(zip(a, b, outs)))
        node.check()
        want = expected(ps[0], [{"A": x, "B": y} for x, y in zip(a, b)])
        errs += [rel_err(o, w) for o, w in zip(outs, want)]
    return max(errs, key=lambda e: float("inf") if e != e else e)


def correctness(quick: bool) -> dict:
    cases = [  # (world, rows, cols, depth, chunks, cfg)
        (2, 1024, 1024, 512, 2, CONFIGS[0]),
        (2, 512, 1000, 1000, 2, CONFIGS[2]),
        (4, 4096, 768, 520, 4, CONFIGS[1]),
        (3, 768, 640, 256, 1, CONFIGS[3]),
        (2, 8192, 4096, 8192, 2, CONFIGS[0]),
        (4, 8192, 4096, 2048, 2, CONFIGS[0]),
    ]
    out = {}
    for world, rows, cols, depth, chunks, cfg in cases[:3] if quick else cases:
        for collective in ("all_gather", "reduce_scatter"):
            key = f"{collective} world={world} M={rows} N={cols} K={depth} chunks={chunks} cfg={cfg}"
            try:
                e = check(collective, world, rows, cols, depth, chunks, cfg)
                out[key] = {"rel_err": e, "ok": bool(e < 2e-2)}
            except Exception as exc:
                traceback.print_exc()
                out[key] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:600]}
            print(f"check {key}: {out[key]}", flush=True)
    return out


def side_by_side(fns: dict, rounds=5, warmup=3) -> dict:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k].append(mean_ms(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def gemm_alone(m, n, k, configs) -> dict:
    """Both consumer kernels (all SMs, every wait already satisfied) against cuBLAS."""
    a, b = bf16(m, k), bf16(k, n, scale=k ** -0.5)
    c = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    fns, errors = {"cublas": lambda: torch.matmul(a, b, out=c)}, {}
    for cfg in configs:
        try:
            ag_plans = plans("all_gather", 2, m, n, k, 2, cfg)
            ag = LoopbackNode(ag_plans, lcfg(cfg), sms_per_rank=sms).ops[0]
            c2 = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
            ag.gemm_only(a, b, c2)
            e = rel_err(c2, expected_alone(ag_plans[0], a, b))
            if not e < 2e-2:
                raise AssertionError(f"all-gather consumer alone: rel err {e}")
            rs = LoopbackNode(plans("reduce_scatter", 2, m, n, k, 2, cfg), lcfg(cfg), sms_per_rank=sms).ops[0]
            out = torch.empty(m // 2, n, device="cuda", dtype=torch.bfloat16)
            fns[f"ag_consumer {cfg}"] = lambda ag=ag, c2=c2: ag.gemm_only(a, b, c2)
            fns[f"rs_kernel {cfg}"] = lambda rs=rs, out=out: rs.gemm_only(a, b, out)
        except Exception as exc:
            traceback.print_exc()
            errors[str(cfg)] = f"{type(exc).__name__}: {exc}"[:400]
    ms = side_by_side(fns)
    flop = 2.0 * m * n * k
    res = {"M": m, "N": n, "K": k, "cublas_ms": ms["cublas"], "cublas_tflops": flop / ms["cublas"] / 1e9,
           "variants": {}, "errors": errors}
    for kind in ("ag_consumer", "rs_kernel"):
        mine = {name: t for name, t in ms.items() if name.startswith(kind)}
        for name, t in mine.items():
            res["variants"][name] = {"ms": t, "tflops": flop / t / 1e9, "speed_vs_cublas": ms["cublas"] / t}
        if mine:
            best = min(mine, key=mine.get)
            res[f"{kind}_best"] = {"config": best.split(" ", 1)[1], "ms": mine[best],
                                   "speed_vs_cublas": ms["cublas"] / mine[best]}
    return res


def spin_poll_ns(polls=1 << 20) -> float:
    """What one poll of a signal costs: rank 0 of a reduce-scatter runs alone, so each of
    its programs waits once (one own tile each) for `polls` polls, then gives up."""
    cfg = CONFIGS[3]
    node = LoopbackNode(plans("reduce_scatter", 2, 512, 256, 128, 2, cfg), lcfg(cfg), max_spin=polls)
    op = node.ops[0]
    a, b = bf16(512, 128), bf16(128, 256)
    out = torch.empty(256, 256, device="cuda", dtype=torch.bfloat16)
    op.max_spin = 1
    op(a, b, out)  # compiled, and times out at once
    torch.cuda.synchronize()
    op.max_spin = polls
    ms = mean_ms(lambda: op(a, b, out), iters=3)
    return ms * 1e6 / polls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--quick", action="store_true", help="three correctness cases, one config, M=8192 only")
    ap.add_argument("--check-only", action="store_true")
    args = ap.parse_args()
    import triton

    name = torch.cuda.get_device_name(0)
    report = {
        "device": name, "mode": "loopback: every rank in one process on one GPU",
        "versions": {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
                     "python": platform.python_version()},
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "dtype": "bf16",
        "timing": "mean of 20 back-to-back calls (CUDA events), median of 5 rounds, alternating with cuBLAS",
    }
    report["spin_poll_ns"] = spin_poll_ns()
    print(f"one signal poll: {report['spin_poll_ns']:.1f} ns", flush=True)
    report["correctness"] = correctness(args.quick)
    path = args.out / f"overlap-loopback-{name.replace('NVIDIA ', '').replace(' ', '-').lower()}.json"
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.check_only:
        report["gemm_alone"] = []
        for m in (8192,) if args.quick else (8192, 16384):
            r = gemm_alone(m, 4096, 8192, CONFIGS[:1] if args.quick else CONFIGS[:3])
            print(json.dumps(r), flush=True)
            report["gemm_alone"].append(r)
            path.write_text(json.dumps(report, indent=2) + "\n")
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
