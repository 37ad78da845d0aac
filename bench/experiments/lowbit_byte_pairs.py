"""Experiment: how the wgmma register-operand kernel turns a 4-bit word into its operand pairs. A
thread's pair (2j, 2j + 1) is byte j of the word; as generated ("v0") PRMT moves that byte to the
bottom, x 0x1001 copies it 12 bits up and one LOP3 keeps both nibbles and ORs BIAS in (BIAS's pair
a register): three instructions. Variant "shift" is the previous form: a shift by the lane's amount,
then two masks and a shift (four to five; an sm_90 compile of the M = 16 decode point: 344 -> 279
instructions a K tile). Both at the wgmma points of the 4-bit spec (decode row tiles and 256-row
tiles), checked against the oracle, beside bf16 cuBLAS in the same run. Writes
OUT/lowbit-byte-pairs-<device>.json."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

SEL = "sel = ttgl.expand_dims(ttgl.expand_dims(j + 0x4440, 0), 1)"
NEW = "w3, s3 = ttgl.broadcast(ttgl.expand_dims(words, 2), sel)"
OLD_SHIFTS = "shifts = ttgl.expand_dims(ttgl.expand_dims(j * 8, 0), 1)"
OLD_PAIRS = ("v = ttgl.expand_dims(words, 2) >> shifts\n{ind}"
             "pairs = (v & 0xF) | ((v << 12) & 0xF0000) | 0x43004300")


def patch(variant: str, src: str) -> str:
    lines = src.split("\n")
    out = []
    skip = False
    for ln in lines:
        ind = ln[:len(ln) - len(ln.lstrip())]
        if ln.strip().startswith(SEL):
            out.append(ind + OLD_SHIFTS)
            continue
        if ln.strip().startswith("bias_pairs = ttgl.full([64,"):
            continue
        if ln.strip().startswith(NEW):
            out.append(ind + OLD_PAIRS.format(ind=ind))
            skip = True  # the PRMT line follows
            continue
        if skip:
            skip = False
            assert "pairs = ttgl.inline_asm_elementwise" in ln, ln
            continue
        out.append(ln)
    new = "\n".join(out)
    if new == src or SEL in new:
        raise SystemExit("the generated source no longer holds the PRMT pairs")
    return new


def candidates(m: int) -> list[dict]:
    if m <= 16:
        return lowbit.decode_wgmma(1 if m <= 8 else 16)
    return [lowbit.register_operand(bm, 128, 8, 1, stages=st) for bm in ((128, 256) if m >= 256 else (64, 128))
            for st in (2, 3)]


CASES = [(4, m, n, k) for m in (16, 1024, 1) for n, k in ((4096, 4096), (8192, 8192), (28672, 8192))]

if __name__ == "__main__":
    import torch

    sys.exit(pk.run_cases(patch, CASES, lambda b, m: ("v0", "shift"), candidates,
                          f"lowbit-byte-pairs-{sb.slug(torch.cuda.get_device_name())}.json", __doc__.split("\n")[0]))
