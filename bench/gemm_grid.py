#!/usr/bin/env python3
"""Measure EVERY legal point of a small GEMM search space once, for replay by the tuner's
sample-efficiency benchmark.

Space: configs/gemm_bf16.yaml at M=N=K=4096 with its parameters, GROUP_M trimmed to {1, 8}
(the file records the trimmed domains). Each point is checked against the float64 reference
(fresh inputs, poisoned output) and then timed; a point that fails has time_ms null and a reason.
Writes OUT/gemm-grid-<device>.json; needs a CUDA GPU."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tilesched import load_program  # noqa: E402
from tilesched.ir.bind import bind  # noqa: E402
from tilesched.ir.hashing import content_hash  # noqa: E402
from tilesched.ir.space import iter_points  # noqa: E402

SPEC = ROOT / "configs" / "gemm_bf16.yaml"
SIZES = {"M": 4096, "N": 4096, "K": 4096}
TRIM = {"GROUP_M": [1, 8]}


def grid_points(program) -> list[dict]:
    fixed = dict(program.limit_env())
    fixed.update(SIZES)
    pts = [p for p in iter_points(program.params, program.constraints, fixed)
           if all(p[k] in v for k, v in TRIM.items())]
    return [p for p in pts if _bindable(program, p)]


def _bindable(program, params) -> bool:
    try:
        bind(program, {**SIZES, **params})
        return True
    except Exception:  # noqa: BLE001
        return False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--repeats", type=int, default=25)
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--list", action="store_true", help="print the number of points and exit")
    args = p.parse_args(argv)
    program = load_program(SPEC)
    points = grid_points(program)
    if args.list:
        print(f"{len(points)} legal points")
        return 0
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from gemm import slug, write_json

    from tilesched.backends.cuda.compile_pool import warm_compile
    from tilesched.backends.cuda.measure import measure, versions

    dev = torch.cuda.get_device_name()
    out = Path(args.out) / f"gemm-grid-{slug(dev)}.json"
    t0 = time.time()
    errs = warm_compile([(SPEC, SIZES, pt) for pt in points], workers=args.workers)
    print(f"compiled {len(points)} points in {time.time() - t0:.1f} s", flush=True)
    doc = {"device": dev, "versions": versions(), "date": datetime.datetime.now(datetime.UTC).isoformat(),
           "spec": program.name, "spec_hash": content_hash(program), "sizes": SIZES,
           "space": {p.name: list(p.values) for p in program.params} | TRIM,
           "timing": "median of CUDA-event-timed launches after a correctness check on fresh random inputs",
           "points": []}
    for i, (pt, err) in enumerate(zip(points, errs)):
        # a compile failure in the pool is re-raised (and classified) by measure itself
        m = measure(bind(program, {**SIZES, **pt}), repeats=args.repeats, seed=i)
        reason = None if m.ok else (m.reason or "runtime_error")
        detail = {"detail": (m.detail or err or "")[:200]} if not m.ok else {}
        doc["points"].append({"params": pt, "time_ms": m.time_ms if m.ok else None, "reason": reason, **detail})
        if i % 20 == 0 or i == len(points) - 1:
            write_json(out, doc)
            print(f"{i + 1}/{len(points)} {pt} -> {m.time_ms if m.ok else reason} ({time.time() - t0:.0f} s)",
                  flush=True)
    ok = [q for q in doc["points"] if q["time_ms"] is not None]
    best = min(ok, key=lambda q: q["time_ms"]) if ok else None
    print(f"{len(ok)}/{len(points)} points ok; best {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
