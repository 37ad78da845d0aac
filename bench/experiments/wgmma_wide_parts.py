"""Experiment: the wgmma register-operand kernel's wide tiles dequantising a K tile of 128 in parts (8 bits:
four, 4 bits: two), each part's MMA issued before the next part is dequantised (gluon_wgmma._tile_parts;
"v0", as generated), against the whole tile dequantised before its MMA ("whole": the launcher's PARTS
set to 1, the kernel before the parts). The spec's wgmma points at M = 1024 and 128 (K tiles of 64 keep
one part either way), timed in turns, each winner checked against the oracle, beside bf16 cuBLAS in the
same run. Writes OUT/wgmma-wide-parts[-<bits>bit]-<device>.json (BITS=8 or 4; the 8-bit run unsuffixed)."""

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

PARTS = r'kw\["PARTS"\] = \d+ if [^\n]*'


def patch(variant: str, src: str) -> str:
    src, count = re.subn(PARTS, 'kw["PARTS"] = 1  # the whole tile before its MMA', src)
    if count != 1:
        raise SystemExit("the generated launcher no longer sets PARTS")
    return src


BITS = int(os.environ.get("BITS", "8"))


def candidates(m: int) -> list[dict]:
    return [p for p in lowbit.candidates(m, BITS) if p.get("REGISTER_OPERAND") is True and p["BLOCK_K"] == 128]


CASES = [(BITS, m, n, k) for m in (1024, 128) for n, k in ((4096, 4096), (8192, 8192), (28672, 8192))]

if __name__ == "__main__":
    import torch

    sys.exit(pk.run_cases(patch, CASES, lambda b, m: ("v0", "whole", "v0", "whole"), candidates,
                          f"wgmma-wide-parts{'' if BITS == 8 else f'-{BITS}bit'}-{sb.slug(torch.cuda.get_device_name())}.json", __doc__.split("\n")[0]))
