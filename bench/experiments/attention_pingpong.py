"""Experiment: FA3's ping-pong on the persistent attention kernel. Its two consumer warpgroups share the
tensor cores and run free: each issues a key tile's scores and context MMAs, waits on its scores, runs
its softmax and waits on its context. In the ping-pong variant they take turns issuing: a warpgroup
waits for its turn (an mbarrier the other arrives on once it has issued its own two MMAs) before it
issues, so one's softmax tends to run while the other's MMAs do. The first key tile of a query tile
and its last context MMA are issued without turns (both warpgroups walk the same key tiles, so their
turns stay paired). Variants of the generated module:
  as generated;
  ping-pong   the turns (two mbarriers, warpgroup 0 first).
Per shape each variant's persistent candidates are searched, its winner checked against the oracle,
then the winners and torch SDPA's cuDNN backend are timed in turns. Result (attention-pingpong-*.json,
bench/RESULTS.md): within the turns' spread at five shapes, 8 % slower at S = 4096, D = 128 causal; not
in the generator:

  python bench/experiments/attention_pingpong.py --out DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

from attention_turns import in_consumer, run_patched  # noqa: E402

SHAPES = [(8, 16, 1024, 128, False), (8, 16, 1024, 128, True), (8, 16, 1024, 64, False), (8, 16, 1024, 64, True),
          (4, 32, 4096, 128, False), (4, 32, 4096, 128, True)]  # (B, H, S, D, causal)
INIT = "        _gl_mbarrier.init(empty.index(j), count=2)  # one arrival per consumer warpgroup\n"
QK = "            s_tok = _gl_hopper.warpgroup_mma(q_tile,"
PV = "            o_tok = _gl_hopper.warpgroup_mma(p_op,"


def _edit(src: str, old: str, new: str, count: int = 1) -> str:
    if src.count(old) != count:
        raise SystemExit(f"the generated persistent kernel no longer has {old.strip()!r} {count} time(s)")
    return src.replace(old, new)


def patch(variant: str, src: str) -> str:
    if variant != "ping-pong":
        return src
    src = in_consumer(src, _take_turns)
    start = src.index("_persistent_kernel(")
    end = src.index("def persistent_launch_args", start)
    kern = _edit(src[start:end], INIT, INIT + "    turn = ttgl.allocate_shared_memory(ttgl.int64, [2, 1], "
                 "_gl_mbarrier.MBarrierLayout())\n    for j in ttgl.static_range(2):\n"
                 "        _gl_mbarrier.init(turn.index(j), count=1)\n"
                 "    _gl_mbarrier.arrive(turn.index(0), count=1)  # warpgroup 0 issues first\n")
    kern = _edit(kern, "q_free.index(0), ", "q_free.index(0), turn.index(0), turn.index(1), ")
    kern = _edit(kern, "q_free.index(1), ", "q_free.index(1), turn.index(1), turn.index(0), ")
    return src[:start] + kern + src[end:]


def _take_turns(cons: str) -> str:
    cons = _edit(cons, "q_smem, q_ready, q_free, ", "q_smem, q_ready, q_free, my_turn, other_turn, ")
    cons = _edit(cons, "    it = 0  # tiles done: the query barriers' phase\n",
                 "    it = 0  # tiles done: the query barriers' phase\n    turns = 0  # turns taken: my_turn's phase\n")
    lines = []
    for line in cons.split("\n"):
        if line.startswith(QK):
            lines += ["            _gl_mbarrier.wait(my_turn, turns & 1)  # the other warpgroup has issued", "            turns += 1"]
        lines.append(line)
        if line.startswith(PV):
            lines.append("            _gl_mbarrier.arrive(other_turn, count=1)  # its turn")
    return "\n".join(lines)


VARIANTS = ["as generated", "ping-pong"]


if __name__ == "__main__":
    sys.exit(run_patched(patch, VARIANTS, SHAPES, "attention-pingpong", __doc__.split("\n\n")[0]))
