"""Variants of the AllGather+GEMM consumer kernel alone (one GPU, every wait satisfied)
against cuBLAS in the same run: launch settings, tile shapes, and source patches of the
rendered kernel (warp specialisation of the K loop, flattening of the persistent loop).

  python3 bench/overlap_consumer_sweep.py M [--out DIR]

Times: mean of 20 back-to-back calls (CUDA events), median of 5 rounds, all variants and
cuBLAS alternating round by round; every variant's output checked against the semantics
oracle first. Writes DIR/overlap-consumer-sweep-<device>-M<M>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import traceback
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from overlap_common import expected_alone, mean_ms, plan_for, rel_err  # noqa: E402  (bench/ is on sys.path)

from tilesched.backends.cuda.overlap import launch as L  # noqa: E402
from tilesched.backends.cuda.overlap.loopback import LoopbackNode  # noqa: E402
from tilesched.backends.cuda.overlap.render import load, render  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
INNER_WS = ("for kt in tl.range(0, k_tiles):", "for kt in tl.range(0, k_tiles, warp_specialize=True):")
OUTER_FLATTEN = ("for t in tl.range(tl.program_id(0), N_TILES, NUM_SMS):",
                 "for t in tl.range(tl.program_id(0), N_TILES, NUM_SMS, flatten=True):")
BASE = L.LaunchConfig(num_warps=8, num_stages=3, epilogue_subtile=True)
VARIANTS = [  # (name, (BLOCK_M, BLOCK_N, BLOCK_K), launch config, source patches)
    ("base s3", (128, 256, 64), BASE, ()),
    ("s4", (128, 256, 64), replace(BASE, num_stages=4), ()),
    ("g16", (128, 256, 64), replace(BASE, group_m=16), ()),
    ("g4", (128, 256, 64), replace(BASE, group_m=4), ()),
    ("nosub", (128, 256, 64), replace(BASE, epilogue_subtile=False), ()),
    ("ws s3", (128, 256, 64), BASE, (INNER_WS,)),
    ("ws s4", (128, 256, 64), replace(BASE, num_stages=4), (INNER_WS,)),
    ("flatten s3", (128, 256, 64), BASE, (OUTER_FLATTEN,)),
    ("256x128 s3", (256, 128, 64), BASE, ()),
    ("128x128 w4 s4", (128, 128, 64), L.LaunchConfig(num_warps=4, num_stages=4, epilogue_subtile=True), ()),
    ("128x256x128 s2", (128, 256, 128), replace(BASE, num_stages=2), ()),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("M", type=int)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    m, n, k = args.M, 4096, 8192
    a = torch.randn(m, k, device="cuda").to(torch.bfloat16)
    b = (torch.randn(k, n, device="cuda") * k ** -0.5).to(torch.bfloat16)
    c = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    ref = expected_alone(plan_for("all_gather", 0, 2, m, n, k, 2, (128, 256, 64)), a, b)  # the oracle's C
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    fns, errors = {"cublas": lambda: torch.matmul(a, b, out=c)}, {}
    for name, blocks, cfg, patches in VARIANTS:
        try:
            cfg_blocks = (*blocks, cfg.num_warps, cfg.num_stages, cfg.epilogue_subtile)
            plans = [plan_for("all_gather", r, 2, m, n, k, 2, cfg_blocks) for r in range(2)]
            op = LoopbackNode(plans, cfg, sms_per_rank=sms).ops[0]
            src = render(plans[0], "ag_gemm")
            for old, new in patches:
                src = src.replace(old, new)
            op.mod = load(src)
            out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
            op.gemm_only(a, b, out)
            e = rel_err(out, ref)
            if not e < 2e-2:
                raise AssertionError(f"rel err {e}")
            fns[name] = lambda op=op, out=out: op.gemm_only(a, b, out)
        except Exception as exc:
            traceback.print_exc()
            errors[name] = f"{type(exc).__name__}: {exc}"[:400]
    for fn in fns.values():
        for _ in range(3):
            fn()
    torch.cuda.synchronize()
    times = {name: [] for name in fns}
    for _ in range(5):
        for name, fn in fns.items():
            times[name].append(mean_ms(fn))
    ms = {name: statistics.median(v) for name, v in times.items()}
    flop = 2.0 * m * n * k
    import triton

    report = {
        "device": torch.cuda.get_device_name(0), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "triton": triton.__version__}, "dtype": "bf16",
        "shape": {"M": m, "N": n, "K": k}, "baseline": "torch.matmul (cuBLAS), same run",
        "timing": "mean of 20 back-to-back calls (CUDA events), median of 5 rounds, alternating",
        "results": {name: {"ms": t, "tflops": flop / t / 1e9, "speed_vs_cublas": ms["cublas"] / t}
                    for name, t in sorted(ms.items(), key=lambda kv: kv[1])},
        "errors": errors,
    }
    for name, r in report["results"].items():
        print(f"{name:20s} {r['ms']:.4f} ms  {r['tflops']:.0f} TFLOP/s  vs cublas {r['speed_vs_cublas']:.3f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    dev = report["device"].replace("NVIDIA ", "").replace(" ", "-").lower()
    (args.out / f"overlap-consumer-sweep-{dev}-M{m}.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
