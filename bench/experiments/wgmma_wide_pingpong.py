"""Experiment: the wgmma kernel's two consumers at 256-row tiles taking turns on the tensor cores
("v0", as generated: PINGPONG at 128 rows and more) or running free ("free"), at K tiles of 128 with two
stages and of 64 with three and four (smaller MMAs: more turns a tile's work). 8 bits at M = 1024, timed
in turns, each winner checked against the oracle, beside bf16 cuBLAS. Writes
OUT/wgmma-wide-pingpong-<device>.json."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

TURNS = "pingpong = consumers == 2 and kw["


def patch(variant: str, src: str) -> str:
    lines = src.split("\n")
    at = [i for i, ln in enumerate(lines) if ln.strip().startswith(TURNS)]
    if len(at) != 1:
        raise SystemExit("the generated launcher no longer sets PINGPONG by row tile")
    ind = lines[at[0]][:len(lines[at[0]]) - len(lines[at[0]].lstrip())]
    lines[at[0]] = ind + "pingpong = False  # the consumers run free"
    return "\n".join(lines)


def candidates(m: int) -> list[dict]:
    return [lowbit.register_operand(256, 128, 8, 1, bk=bk, stages=st) for bk, st in ((128, 2), (64, 3), (64, 4))]


CASES = [(8, 1024, n, k) for n, k in ((8192, 8192), (28672, 8192))]

if __name__ == "__main__":
    import torch

    sys.exit(pk.run_cases(patch, CASES, lambda b, m: ("v0", "free", "v0", "free"), candidates,
                          f"wgmma-wide-pingpong-{sb.slug(torch.cuda.get_device_name())}.json", __doc__.split("\n")[0]))
