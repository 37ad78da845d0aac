"""Experiment: the wgmma register-operand kernel's words in a ring of their own, W_AHEAD slots deeper than
X's (register_operand.words_ahead: where the ring already leaves one CTA an SM, what shared memory is left,
at most 4), their loads issued that many tiles before X's ("v0", as generated), against W_AHEAD = 0 (the
words in X's slots, "shared"). The 256-row points of the 8-, 4- and 2-bit specs at M = 1024, timed in
turns, each winner checked against the oracle, beside bf16 cuBLAS in the same run. The deeper ring is
not in the generator (slower at every shape: bench/results/lowbit-words-ahead-*.json); the patch adds it:

  git apply bench/experiments/lowbit_words_ahead.patch
  python bench/lowbit.py check --register-operand --bits 4,2,8,3 --out DIR   (the patched kernel vs the oracle)
  OUT=DIR python bench/experiments/lowbit_words_ahead.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

AHEAD = "ahead = words_ahead("


def patch(variant: str, src: str) -> str:
    out = [ln[:len(ln) - len(ln.lstrip())] + "ahead = 0  # the words in X's slots" if ln.strip().startswith(AHEAD)
           else ln for ln in src.split("\n")]
    new = "\n".join(out)
    if new == src:
        raise SystemExit("the generated launcher no longer asks words_ahead")
    return new


def candidates(m: int) -> list[dict]:
    return [lowbit.register_operand(256, 128, 8, 1, bk=bk, stages=st) for bk, st in ((128, 2), (128, 3), (64, 4))]


CASES = [(b, 1024, n, k) for b in (8, 4, 2) for n, k in ((4096, 4096), (8192, 8192), (28672, 8192))]

if __name__ == "__main__":
    import torch

    sys.exit(pk.run_cases(patch, CASES, lambda b, m: ("v0", "shared", "v0", "shared"), candidates,
                          f"lowbit-words-ahead-{sb.slug(torch.cuda.get_device_name())}.json", __doc__.split("\n")[0]))
