"""Experiment: the most a split diagonal tile could give the persistent causal attention kernel. Both
consumer warpgroups run a query tile's last (diagonal) key tile whole, though the lower half's rows
keep only its first half of keys. A split tile would spare the lower half that masked half; this bound
spares it the whole diagonal tile (wrong values by design), its ring slot still waited on and freed:
  as generated;
  no-diagonal  the lower half leaves its diagonal key tile out (where it has more than one).
The real split saves at most half of what the bound does. Per shape each variant's persistent
candidates are searched, its winner checked against the oracle, then the winners and torch SDPA's cuDNN
backend are timed in turns. Result (attention-diagonal-bound-*.json): 5.4 % / 7.2 % faster at S = 1024,
D = 128 / 64; the split itself was not (attention_split_diagonal.py):

  python bench/experiments/attention_diagonal_bound.py --out DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

from attention_turns import in_consumer, run_patched  # noqa: E402

SHAPES = [(8, 16, 1024, 128, True), (8, 16, 1024, 64, True), (4, 32, 4096, 128, True)]  # (B, H, S, D, causal)
START = "        start = first + OFFSET\n"
FREED = "            _gl_mbarrier.arrive(empty.index(last), count=1)  # the next tile's keys may take the slot\n"
COUNT = "        kv += hi - lo\n"


def patch(variant: str, src: str) -> str:
    if variant != "no-diagonal":
        return src
    return in_consumer(src, _leave_out_diagonal)


def _leave_out_diagonal(cons: str) -> str:
    for needle in (START, FREED, COUNT):
        if cons.count(needle) != 1:
            raise SystemExit(f"the generated persistent consumer no longer has {needle.strip()!r}")
    cons = cons.replace(START, START + "        hi_all = hi\n        if OFFSET == 0:\n"
                        "            if hi - lo > 1:  # the lower half leaves its diagonal key tile out\n"
                        "                hi -= 1\n")
    cons = cons.replace(FREED, FREED + "        if hi_all > hi:  # the tile left out: its slot waited on and freed\n"
                        "            skipped = kv + hi_all - 1 - lo\n"
                        "            _gl_mbarrier.wait(ready.index(skipped % STAGES), (skipped // STAGES) & 1)\n"
                        "            _gl_mbarrier.arrive(empty.index(skipped % STAGES), count=1)\n")
    return cons.replace(COUNT, "        kv += hi_all - lo\n")


VARIANTS = ["as generated", "no-diagonal"]


if __name__ == "__main__":
    sys.exit(run_patched(patch, VARIANTS, SHAPES, "attention-diagonal-bound", __doc__.split("\n\n")[0]))
