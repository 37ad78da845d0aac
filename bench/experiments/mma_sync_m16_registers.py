"""Experiment: the register-operand mma.sync kernel's register cap at M = 16. At 4 warps and 128 columns its
sm_90 compile spills at the cap of 128 (27 local loads and stores a K tile: 23 LDL, 4 STL, Triton 3.9)
and does not at 168; 8 warps do not spill at 128. Variants of the generated 4-bit kernel: "v0" (128, as
generated) and "cap168", timed in turns over the mma.sync points at M = 16, each winner checked against
the oracle, beside bf16 cuBLAS. Writes OUT/mma-sync-m16-registers-<device>.json."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

CAP = "maxnreg=128,"


def patch(variant: str, src: str) -> str:
    if src.count(CAP) != 1:
        raise SystemExit("the generated mma.sync launcher no longer caps registers at 128")
    return src.replace(CAP, "maxnreg=168,")


def candidates(m: int) -> list[dict]:
    return [lowbit.register_operand(16, bn, w, split, stages=st)
            for bn, w in ((128, 4), (128, 8)) for st in (2, 3) for split in (4, 8)]


CASES = [(4, 16, n, k) for n, k in ((8192, 8192), (4096, 4096), (28672, 8192))]

if __name__ == "__main__":
    import torch

    sys.exit(pk.run_cases(patch, CASES, lambda b, m: ("v0", "cap168", "v0", "cap168"), candidates,
                          f"mma-sync-m16-registers-{sb.slug(torch.cuda.get_device_name())}.json",
                          __doc__.split("\n")[0]))
