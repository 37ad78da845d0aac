"""Causal attention with its query tiles launched heaviest first. The grid's first axis is the query
tile, so the block scheduler starts each (batch, head)'s tiles in increasing order, and under a causal
mask a tile's key loop grows with its index: the last wave ends on the heaviest tiles. The variant
"heavy" renders the query tile as (tiles - 1 - program id) in both schedules (Triton's and the
warp-specialised Gluon one); "v0" is the kernel as generated. Each variant's candidates are timed on
the same rotated inputs, its fastest checked against the oracle, beside torch SDPA's cuDNN backend
in the same run. Writes OUT/attention-heavy-first-<device>.json.

  python bench/experiments/attention_heavy_first.py --out DIR
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import attention as att  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

from tilesched import load_program  # noqa: E402

SHAPES = [tuple(int(v) for v in s.split("x")) for s in os.environ.get(
    "SHAPES", "8x16x1024x128,8x16x1024x64,4x32x4096x64,4x32x4096x128").split(",")]  # B x H x S x D
REVERSED = {"pid_SQ = tile_id": "pid_SQ = tiles_SQ - 1 - tile_id",
            "pid_SQ = ttgl.program_id(0)": "pid_SQ = (n_SQ + BLOCK_SQ - 1) // BLOCK_SQ - 1 - ttgl.program_id(0)"}


def patch(variant: str, src: str) -> str:
    for old, new in REVERSED.items():
        if old not in src:
            raise SystemExit(f"the generated source no longer holds {old!r}")
        src = src.replace(old, new)
    return src


def main() -> int:
    import torch
    from torch.nn.attention import SDPBackend

    p = argparse.ArgumentParser()
    p.add_argument("--out", default=".")
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    program = load_program(sb.CONFIGS / "flash_attention_causal.yaml")
    report = sb.report_header(torch.cuda.get_device_name(), __doc__.split("\n")[0])
    jobs = []
    for b, h, s, d in SHAPES:
        sizes = {"B": b, "H": h, "SQ": s, "SK": s, "D": d}
        jobs += [(v, "flash_attention_causal", sizes, c) for v in ("v0", "heavy") for c in att.candidates(d)]
    pk.warm(patch, jobs)
    for b, h, s, d in SHAPES:
        sizes = {"B": b, "H": h, "SQ": s, "SK": s, "D": d}
        per_set = 2 * (b * h * s * d * 2 + 2 * b * h * s * d)
        sets = [att.make_inputs(b, h, s, d, "cuda") for _ in range(sb.n_sets(per_set))]
        fn = att.sdpa(SDPBackend.CUDNN_ATTENTION, True)
        cudnn = sb.time_fns([lambda t=t, fn=fn: fn(t["Q"], t["K"], t["V"]) for t in sets], a.repeats)
        for variant in ("v0", "heavy"):
            pk.use(patch, variant)
            kern = pk.K.Kernel(program)
            best, table, _ = sb.search(kern, program, sizes, att.candidates(d), sets, a.repeats)
            err, why = att.check_slice(kern, program, sizes, best["params"], sets[0])
            report["rows"].append({"shape": sizes, "causal": True, "variant": variant, "ms": best["ms"],
                                   "params": best["params"], "cudnn_ms": cudnn, "ratio_vs_cudnn": cudnn / best["ms"],
                                   "rel_err": err, "check": why or "ok", "candidates": table})
            print(f"B={b} H={h} S={s} D={d} {variant:6s} {best['ms'] * 1e3:8.1f} us  cuDNN {cudnn * 1e3:8.1f} us "
                  f"x{cudnn / best['ms']:.3f}  err {err:.1e} {why or 'ok'} {best['params']}", flush=True)
    sb.write_json(Path(a.out) / f"attention-heavy-first-{sb.slug(report['device'])}.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
