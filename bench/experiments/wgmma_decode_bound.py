"""Experiment (a bound, wrong values by construction): how fast the wgmma register-operand kernel's decode
tiles (16 rows) run at M = 16 without their dequantisation. Variant "no-decode" hands every MMA the same
constant operand (the words still land in the ring, unread; X's tile is read by the MMA as always), so
its time is that of the ring, the barriers, the coefficients' loads and the MMAs alone; "v0" is the
generated kernel. The 4-bit spec's decode-tile points at the issue's three shapes, timed in turns
beside bf16 cuBLAS in the same run (the oracle check of "no-decode" fails by design; "v0"'s winner is
checked). Writes OUT/wgmma-decode-bound-<device>.json."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

# the whole tile's operand after its decode (the parts' operands, at wider tiles, are left as they are)
OPERAND = r"( *)if BY_COLUMN:  # \(decode tiles\)[^\n]*\n *a = _gl_byte_rows\(a, a_l\)\n *else:\n *a = ttgl\.convert_layout\(a, a_l, assert_trivial=True\)\n"


def patch(variant: str, src: str) -> str:
    src, count = re.subn(OPERAND, r"\1a = ttgl.full([64, BLOCK_K], 1.0, ttgl.bfloat16, a_l)  # no dequantisation\n", src)
    if count != 1:
        raise SystemExit(f"the generated source has {count} whole-tile operands, not 1")
    return src


def candidates(m: int) -> list[dict]:
    return [p for p in lowbit.decode_wgmma(16) if p["SPLIT_K"] in (1, 2, 4)]


CASES = [(4, 16, n, k) for n, k in ((4096, 4096), (8192, 8192), (28672, 8192))]

if __name__ == "__main__":
    import torch

    sys.exit(pk.run_cases(patch, CASES, lambda b, m: ("v0", "no-decode", "v0", "no-decode"), candidates,
                          f"wgmma-decode-bound-{sb.slug(torch.cuda.get_device_name())}.json", __doc__.split("\n")[0]))
