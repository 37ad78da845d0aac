"""Experiment: the wgmma register-operand kernel at decode row tiles under split-K, called many times
with NaN-poisoned outputs, each result compared with the same kernel without split-K (SPLIT_K = 1,
same point otherwise) on the same inputs. Variants patch the register cap of the launch
(gluon_wgmma.DECODE_REGISTERS; "v0" is the kernel as generated): "r64" the previous cap, "r96", and
"none" (the compiler's count). Counts the calls whose output differs, and where (output rows,
columns). Run when DECODE_REGISTERS was 80 (the variants now replace its per-consumer caps). Writes OUT/wgmma-decode-register-cap-<device>.json.

  python bench/experiments/wgmma_decode_register_cap.py
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

from tilesched import load_program  # noqa: E402

REGS = re.compile(r"cap = \{1: \d+, 2: \d+\}\[consumers\]\n(\s*)regs = dict\(maxnreg=cap, CONSUMER_REGS=cap\)")
VARIANTS = {"v0": None, "r64": 64, "r96": 96, "none": 0}
CASES = [(16, 28672, 8192, 2), (1, 28672, 8192, 2), (16, 28672, 8192, 4), (16, 8192, 8192, 2)]
CALLS = 40


def patch(variant: str, src: str) -> str:
    regs = VARIANTS[variant]
    if not REGS.search(src):
        raise SystemExit("the generated source no longer sets the decode register cap")
    if regs is None:
        return src
    new = (f"cap = {regs}\n\\1regs = dict(maxnreg=cap, CONSUMER_REGS=cap)" if regs
           else "cap = None\n\\1regs = dict(CONSUMER_REGS=232)")
    return REGS.sub(new, src)


def main() -> int:
    import torch

    prog = load_program(sb.CONFIGS / "w4a16_gemm.yaml")
    report = sb.report_header(torch.cuda.get_device_name(), __doc__.split("\n")[0])
    for m, n, k, split in CASES:
        sizes = {"M": m, "N": n, "K": k}
        ins = lowbit.make_inputs(4, m, n, k, "cuda")
        one = {**lowbit.register_operand(16 if m > 8 else 1, 64, 4, 1, stages=2), "REGISTER_OPERAND": "wgmma"}
        b1, bs = sb.legal(prog, sizes, one), sb.legal(prog, sizes, {**one, "SPLIT_K": split})
        for variant in VARIANTS:
            pk.use(patch, variant)
            differing = lowbit.differing_calls(pk.K.Kernel(prog), b1, bs, ins, CALLS)
            bad_calls = len(differing)
            rows = sorted({r for rs, _ in differing for r in rs})
            cols = [cs[:16] for _, cs in differing[:4]]
            report["rows"].append({"shape": sizes, "split_k": split, "variant": variant, "calls": CALLS,
                                   "bad_calls": bad_calls, "bad_rows": rows, "bad_columns_first_calls": cols,
                                   "params": dict(bs.params)})
            print(f"M={m} N={n} K={k} split {split} {variant:5s} bad calls {bad_calls}/{CALLS} rows {rows} "
                  f"{cols[:2]}", flush=True)
    sb.write_json(Path(os.environ.get("OUT", "/tmp")) / f"wgmma-decode-register-cap-{sb.slug(report['device'])}.json",
                  report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
