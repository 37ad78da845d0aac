"""Experiment: whether the wgmma register-operand kernel's consumers dequantise before X's tile has
landed. As generated ("v0") a slot has one `ready` barrier for X's tile and the words together, so a
consumer waits for both before it dequantises the words. Variant "x-late" gives X's tile its own
barrier (`ready_x`), which the consumer waits on only before it issues the MMA: the words (16 KB a
slot for 8 bits, 8 KB for 4, 4 KB for 2) arrive first and the dequantisation overlaps the arrival of
X's 64 KB. Nsight Compute stall samples of the 8-bit 256-row point (wgmma-wide-stalls-m1024-*.json)
had the consumers waiting on a slot's data in 8.6 % of samples. The 256-row points of the 8-, 4- and
2-bit specs at M = 1024, timed in turns, each winner checked against the oracle, beside bf16 cuBLAS in
the same run. Writes OUT/wgmma-x-ready-<device>.json."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

BOTH = "x_desc.block_type.nbytes + CONSUMERS * w_desc.block_type.nbytes)"
# (pattern, replacement, matches expected): X's tile on its own barrier, waited on before the MMA only
X_LATE = [
    (r"(_wgmma_consumer(?:, )?\(x_ring, w_ring, ready), (empty, turn,)", r"\1, ready_x, \2", None),
    (r"(_wgmma_loader(?:, )?\(x_desc, w_desc, x_ring, w_ring, ready), (empty,)", r"\1, ready_x, \2", None),
    (r"( *)(ready = ttgl\.allocate_shared_memory\(ttgl\.int64, \[STAGES, 1\], _gl_mbarrier\.MBarrierLayout\(\)\))",
     r"\1\2\n\1ready_x = ttgl.allocate_shared_memory(ttgl.int64, [STAGES, 1], _gl_mbarrier.MBarrierLayout())", 1),
    (r"( *)(_gl_mbarrier\.init\(ready\.index\(i\), count=1\))", r"\1\2\n\1_gl_mbarrier.init(ready_x.index(i), count=1)", 1),
    (r"( *)_gl_mbarrier\.expect\(ready\.index\(slot\), " + re.escape(BOTH),
     r"\1_gl_mbarrier.expect(ready.index(slot), CONSUMERS * w_desc.block_type.nbytes)\n"
     r"\1_gl_mbarrier.expect(ready_x.index(slot), x_desc.block_type.nbytes)", 1),
    (r"(_gl_tma_load\(x_desc, \[off_M, t \* BLOCK_K\], )ready(\.index\(slot\), x_ring\.index\(slot\)\))", r"\1ready_x\2", 1),
    (r"( *)(if PINGPONG:  # the warpgroups take turns)",
     r"\1_gl_mbarrier.wait(ready_x.index(slot), (i // STAGES) & 1)  # X's tile: the MMA alone reads it\n\1\2",
     None),  # (bytes: before the whole tile's MMA and before its first part's)
]


def patch(variant: str, src: str) -> str:
    for pattern, replacement, expected in X_LATE:
        src, count = re.subn(pattern, replacement, src)
        if count == 0 or (expected is not None and count != expected):
            raise SystemExit(f"the generated source has {count} matches of {pattern[:60]!r}")
    return src


def candidates(m: int) -> list[dict]:
    return [lowbit.register_operand(256, 128, 8, 1, bk=128, stages=st) for st in (2, 3)]


CASES = [(b, 1024, n, k) for b in (8, 4, 2) for n, k in ((4096, 4096), (8192, 8192), (28672, 8192))]

if __name__ == "__main__":
    import torch

    sys.exit(pk.run_cases(patch, CASES, lambda b, m: ("v0", "x-late", "v0", "x-late"), candidates,
                          f"wgmma-x-ready-{sb.slug(torch.cuda.get_device_name())}.json", __doc__.split("\n")[0]))
