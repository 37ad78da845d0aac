"""Experiment: do deeper rings lift the low-bit GEMMs where they sit furthest from their targets?
The bench's candidates keep 2 to 4 stages for the mma.sync kernel and 2 or 4 for the wgmma decode
tiles; a K tile of 2-bit words is half the bytes of a 4-bit one, so the same stages keep half the
bytes in flight. Each case searches its register-operand points with 2 to 8 stages (the spec's
choices), the winner checked against the semantics oracle, beside bf16 cuBLAS and the speed of light
(the packed bytes over this run's copy bandwidth) of the same run:
  2 and 4 bits, M = 1, the mma.sync kernel;   3 bits, M = 1, the wgmma decode tiles;
  4 bits, M = 16, the wgmma decode tiles.
Each row keeps the candidates' times and the best time at each stage count. Result
(bench/results/lowbit-ring-depth-*.json, bench/RESULTS.md): the bench's 2 to 4 stages win every
shape, and each stage past them is slower.

  OUT=DIR python bench/experiments/lowbit_ring_depth.py [--cases 2:1,4:16]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

from tilesched import load_program  # noqa: E402

SHAPES = [(4096, 4096), (8192, 8192), (28672, 8192)]
STAGES = (2, 3, 4, 6, 8)


def candidates(bits: int, m: int) -> list[dict]:
    """The register-operand points of the bench at (bits, M), every stage count in STAGES."""
    if bits in (2, 4) and m == 1:  # mma.sync
        return [lowbit.register_operand(1, bn, w, s, stages=st)
                for bn, w, s in ((128, 4, 8), (128, 4, 4), (256, 4, 8), (256, 4, 4), (64, 4, 8), (128, 8, 8),
                                 (256, 8, 4)) for st in STAGES]
    rows = 1 if m <= 8 else 16
    if bits == 3:  # K tiles of 128 and 64 (the bench's two), the shares its winners took
        return [{**lowbit.register_operand(rows, bn, w, s, bk, st), "REGISTER_OPERAND": "wgmma"}
                for bn, w in ((64, 4), (128, 8)) for s in (1, 2, 4) for st in (4, 6, 8) for bk in (64, 128)]
    return [{**lowbit.register_operand(rows, bn, w, s, stages=st), "REGISTER_OPERAND": "wgmma"}
            for bn, w in ((64, 4), (128, 8)) for s in (1, 2, 4, 8) for st in STAGES if st != 3]


def identity(variant: str, src: str) -> str:
    return src


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="2:1,4:1,3:1,4:16", help="bits:M pairs")
    args = ap.parse_args()
    import torch

    cases = [tuple(int(v) for v in c.split(":")) for c in args.cases.split(",")]
    pk.warm(identity, [("v0", lowbit.BITS_SPECS[b], {"M": m, "N": n, "K": k}, p) for b, m in cases
                       for n, k in SHAPES for p in candidates(b, m)])
    device = torch.cuda.get_device_name()
    report = sb.report_header(device, __doc__.split("\n")[0])
    out = Path(os.environ.get("OUT", "/tmp")) / f"lowbit-ring-depth-{sb.slug(device)}.json"
    for bits, m in cases:
        prog = load_program(sb.CONFIGS / f"{lowbit.BITS_SPECS[bits]}.yaml")
        for n, k in SHAPES:
            sizes = {"M": m, "N": n, "K": k}
            nbytes = lowbit.weight_bytes(bits, m, n, k)
            sets, cub = lowbit.sets_and_cublas(bits, m, n, k)
            rows = pk.time_variants(identity, prog, ["v0"], sizes, candidates(bits, m), sets, cub,
                                    {"bits": bits, "bytes": nbytes})
            report["rows"] += [{**r, "GBs": nbytes / r["ms"] / 1e6} for r in rows]
            sb.write_json(out, report)  # after each shape: a run cut short keeps what it measured
    report["copy_GBs"] = sb.copy_gbs()
    for r in report["rows"]:
        r["speed_of_light"] = r["GBs"] / report["copy_GBs"]
        by_stages = {}
        for c in r["candidates"]:
            st = c["params"]["NUM_STAGES"] if isinstance(c, dict) and "params" in c else None
            if st is not None and c.get("ms"):
                by_stages[st] = min(by_stages.get(st, float("inf")), c["ms"])
        r["best_ms_by_stages"] = by_stages
        print(f"{r['bits']} bits {r['shape']}: {r['ms'] * 1e3:.1f} us, speed of light {r['speed_of_light']:.2f}, "
              f"x{r['ratio_vs_cublas']:.2f} cuBLAS, {r['params']}; by stages "
              + ", ".join(f"{s}: {t * 1e3:.1f}" for s, t in sorted(by_stages.items())), flush=True)
    sb.write_json(out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
