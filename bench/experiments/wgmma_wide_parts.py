"""Experiment: the 8-bit wgmma register-operand kernel's wide tiles dequantising a K tile of 128 in four
parts, each part's MMA issued before the next part is dequantised (gluon_wgmma._byte_parts; "v0", as
generated), against the whole tile dequantised before its MMA ("whole": the launcher's PARTS set to 1,
the kernel before the parts). The 8-bit spec's wgmma points at M = 1024 and 128 (K tiles of 64 keep
one part either way), timed in turns, each winner checked against the oracle, beside bf16 cuBLAS in the
same run. Writes OUT/wgmma-wide-parts-<device>.json."""

from __future__ import annotations

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


def candidates(m: int) -> list[dict]:
    return [p for p in lowbit.candidates(m, 8) if p.get("REGISTER_OPERAND") and p["BLOCK_K"] == 128]


CASES = [(8, m, n, k) for m in (1024, 128) for n, k in ((4096, 4096), (8192, 8192), (28672, 8192))]

if __name__ == "__main__":
    import torch

    sys.exit(pk.run_cases(patch, CASES, lambda b, m: ("v0", "whole", "v0", "whole"), candidates,
                          f"wgmma-wide-parts-{sb.slug(torch.cuda.get_device_name())}.json", __doc__.split("\n")[0]))
