#!/usr/bin/env python3
"""Host cost of the generic launcher: a repeated `Kernel(...)(**tensors)` call against the
generated `launch` and against calling the Triton kernel directly with prepared arguments.

  python bench/launch_overhead.py --out DIR

A small GEMM (the GPU finishes each launch long before the host issues the next) is launched
N times per way, each way timed with the host clock around the loop and one synchronisation;
ways alternate over several rounds, medians reported. Writes DIR/launch-overhead-<device>.json."""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _ways(kernel, out, ins, module_launch, plan, full, jit, grid, pos, kw) -> dict:
    return {
        "Kernel.__call__": lambda: kernel(out=out, **ins),
        "generated launch()": lambda: module_launch(plan.launch, full, plan.sizes, plan.consts),
        "Triton kernel[grid](...)": lambda: jit[grid](*pos, **kw),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    import torch

    from tilesched import load_program
    from tilesched.backends.cuda.kernel import Kernel
    from tilesched.backends.cuda.measure import versions
    from tilesched.fsutil import write_atomic

    rows = []
    for spec, sizes in (("gemm_bias_gelu", (64, 64, 64)), ("gemm_bf16_hopper", (64, 64, 64)), ("softmax", (4, 256))):
        prog = load_program(ROOT / "configs" / f"{spec}.yaml")
        kernel = Kernel(prog)
        if spec == "softmax":
            m, n = sizes
            ins = {"X": torch.randn(m, n, device="cuda").to(torch.bfloat16)}
        else:
            m, n, k = sizes
            dt = torch.float16 if spec == "gemm_bias_gelu" else torch.bfloat16
            ins = {"A": torch.randn(m, k, device="cuda").to(dt)}
            ins["B"] = torch.randn(n, k, device="cuda").to(dt).mT if prog.tensor("B").layout == "col_major" else \
                torch.randn(k, n, device="cuda").to(dt)
            if spec == "gemm_bias_gelu":
                ins["bias"] = torch.randn(n, device="cuda")
        out = kernel(**ins)
        full = {**ins, kernel.outputs[0]: out}
        plan, full = kernel.prepare(full)
        module_launch = kernel.module.launch
        pos, kw = kernel.module.launch_args(plan.launch, full, plan.sizes, plan.consts)
        jit = getattr(kernel.module, f"{kernel.ir.name}_kernel")
        grid = plan.launch.grid
        ways = _ways(kernel, out, ins, module_launch, plan, full, jit, grid, pos, kw)
        times = {w: [] for w in ways}
        for fn in ways.values():  # warm every path
            for _ in range(50):
                fn()
        torch.cuda.synchronize()
        for _ in range(args.rounds):
            for w, fn in ways.items():
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    fn()
                torch.cuda.synchronize()
                times[w].append((time.perf_counter() - t0) / args.calls * 1e6)
        med = {w: statistics.median(v) for w, v in times.items()}
        row = {"spec": spec, "shape": sizes, "us_per_call": med,
               "launcher_minus_triton_us": med["Kernel.__call__"] - med["Triton kernel[grid](...)"],
               "generated_launch_minus_triton_us": med["generated launch()"] - med["Triton kernel[grid](...)"]}
        rows.append(row)
        print(f"{spec:18s} " + "  ".join(f"{w}: {v:6.2f} us" for w, v in med.items())
              + f"  launcher overhead {row['launcher_minus_triton_us']:+.2f} us", flush=True)
    dev = torch.cuda.get_device_name()
    slug = "".join(c if c.isalnum() else "-" for c in dev.lower()).strip("-")
    path = Path(args.out) / f"launch-overhead-{slug}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"device": dev, "versions": versions(),
                                   "date": datetime.datetime.now(datetime.UTC).isoformat(),
                                   "method": "host clock around N back-to-back calls + one sync, median of rounds",
                                   "rows": rows}, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
