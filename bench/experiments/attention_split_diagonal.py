"""Experiment: the persistent causal attention kernel's split diagonal tile (gluon_attention._short_last:
a consumer whose rows keep none of its last key tile's upper half runs that tile's first half of keys
only: the lower half of a query tile on the diagonal) against whole tiles. The bound, the lower half
leaving its diagonal tile out entirely, read 5-7 % faster at S = 1024 (attention_diagonal_bound.py).
Variants of the generated module:
  as generated  the split;
  whole         no tile short (the test made false): every key tile whole, as before.
Per shape each variant's persistent candidates are searched, its winner checked against the oracle,
then the winners and torch SDPA's cuDNN backend are timed in turns. Result (attention-split-diagonal-*.json,
bench/RESULTS.md; the patched kernel's GPU oracle check and repeated claims passed first,
attention-split-diagonal-check-*.json): no faster (1.3 % slower at S = 1024, D = 128, equal at D = 64
and at S = 4096, D = 128; at S = 4096, D = 64 2.7 % faster in turns and 1 % slower in the searches), so
the generator keeps whole tiles; the patch renders the split:

  git apply bench/experiments/attention_split_diagonal.patch
  python bench/attention.py check --persistent --out DIR
  python bench/experiments/attention_split_diagonal.py --out DIR
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

from attention_turns import run_patched  # noqa: E402

SHAPES = [(8, 16, 1024, 128, True), (8, 16, 1024, 64, True), (4, 32, 4096, 128, True), (4, 32, 4096, 64, True)]
SHORT = re.compile(r"^(\s+)short = \(hi > lo\) & .*$", re.M)


def patch(variant: str, src: str) -> str:
    if variant != "whole":
        return src
    src, n = SHORT.subn(lambda m: f"{m.group(1)}short = hi < lo  # (no tile short)", src)
    if n != 1:
        raise SystemExit("the generated persistent consumer no longer tests for a short last tile")
    return src


VARIANTS = ["as generated", "whole"]


if __name__ == "__main__":
    sys.exit(run_patched(patch, VARIANTS, SHAPES, "attention-split-diagonal", __doc__.split("\n\n")[0]))
