"""Experiment: the wgmma register-operand kernel's decode tiles (16 rows) dequantising a K tile of 128 in
parts, as its wider tiles do (gluon_wgmma._tile_parts: 4 bits in two, each part's MMA issued before the
next part is dequantised). As generated ("v0") 4-bit decode tiles take the parts; variant "whole" sets
the launcher's PARTS by the wide tiles' rule (row tiles past 16 only), the decode tiles' whole tile. The
4-bit spec's decode-tile points at M = 16 and the issue's three shapes, timed in turns, each winner
checked against the oracle, beside bf16 cuBLAS in the same run (wgmma-decode-bound-*.json: without
their dequantisation these points ran at x2.04 / x2.92 / x3.9, with it x1.62 / x2.22 / x2.78). Writes
OUT/wgmma-decode-parts-<device>.json. The run recorded there was made before the parts landed at decode
tiles: its "v0" is the whole tile and its "parts" the kernel now generated."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

RULE = r'(kw\["PARTS"\] = 2 if kw\["BLOCK_K"\] == 128) else 1'


def patch(variant: str, src: str) -> str:
    src, count = re.subn(RULE, r'\1 and kw["BLOCK_M"] > 16 else 1  # wide tiles only', src)
    if count != 1:
        raise SystemExit("the generated launcher no longer sets PARTS by the row tile")
    return src


def candidates(m: int) -> list[dict]:
    return [p for p in lowbit.decode_wgmma(16) if p["SPLIT_K"] in (1, 2, 4)]


CASES = [(4, 16, n, k) for n, k in ((4096, 4096), (8192, 8192), (28672, 8192))]

if __name__ == "__main__":
    import torch

    sys.exit(pk.run_cases(patch, CASES, lambda b, m: ("v0", "whole", "v0", "whole"), candidates,
                          f"wgmma-decode-parts-{sb.slug(torch.cuda.get_device_name())}.json", __doc__.split("\n")[0]))
