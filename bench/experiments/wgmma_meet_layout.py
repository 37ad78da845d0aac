"""Experiment: the wgmma kernel's split-K partial sums stored in the accumulator's own order (register j
of thread t at j * 128 + t: a warp's store of one register is 128 contiguous bytes; gluon_wgmma._meet)
against the previous layout by output position ([SPLIT_K, M, N]: 4-byte pieces of 32 rows, masked).
Variants of the patched 4-bit kernel, the decode row tiles (M = 1 and 16) with split-K shares, each
variant's best point checked against the oracle, the winners timed in turns with bf16 cuBLAS:
  v0        the patch's (the accumulator's order);
  position  the partial sums by output position, as the generator has them.
Not kept (no gain measured: bench/results/wgmma-meet-layout-*.json); the patch adds the layout:

  git apply bench/experiments/wgmma_meet_layout.patch
  python bench/lowbit.py check --register-operand --out DIR      (the patched kernel vs the oracle)
  python bench/experiments/wgmma_meet_layout.py    (OUT=DIR for the JSON)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402

SLICE = re.compile(r"^(\s*)ep_t = .*\n\s*ep_j = .*\n\s*ws_ptrs = .*$", re.M)
STORE = re.compile(r"ttgl\.store\(ws_ptrs \+ ttgl\.program_id\(1\) \* \(64 \* WG_N\), acc\)")
LOAD = re.compile(r"ttgl\.load\(ws_ptrs \+ other \* \(64 \* WG_N\), cache_modifier=\"\.cg\"\)")


def patch(variant: str, src: str) -> str:
    if not (SLICE.search(src) and STORE.search(src) and LOAD.search(src)):
        raise SystemExit("the generated meet no longer stores the accumulator's order")
    if variant == "v0":
        return src

    def by_position(m: re.Match) -> str:
        ind = m[1]
        return "\n".join(ind + ln for ln in [
            "ep_p = off_M + ep_r",
            "ep_q = q0 + (_gl_byte_columns(ep_w) if BY_COLUMN else ep_w)",
            "ep_mask = ((ep_r < BLOCK_M) & (ep_p < n_M))[None, :] & (ep_q < n_N)[:, None]",
            "ws_ptrs = ws_acc + ep_p[None, :].to(ttgl.int64) * n_N + ep_q[:, None]"])

    src = SLICE.sub(by_position, src)
    src = STORE.sub("ttgl.store(ws_ptrs + ttgl.program_id(1).to(ttgl.int64) * n_M * n_N, acc, mask=ep_mask)", src)
    return LOAD.sub("ttgl.load(ws_ptrs + other * n_M * n_N, mask=ep_mask, other=0.0, cache_modifier=\".cg\")", src)


VARIANTS = ["v0", "position"]
CASES = [(4, m, n, k) for m in (16, 1) for n, k in ((4096, 4096), (8192, 8192), (28672, 8192))]


def candidates(m: int) -> list[dict]:
    bm = 16 if m > 8 else 1
    return [{**lowbit.register_operand(bm, bn, w, split, stages=st), "REGISTER_OPERAND": "wgmma"}
            for bn, w in ((64, 4), (128, 8)) for st in (2, 4) for split in (2, 4)]


if __name__ == "__main__":
    sys.exit(pk.run_cases(patch, CASES, lambda bits, m: VARIANTS, candidates,
                          "wgmma-meet-layout-nvidia-h100-80gb-hbm3.json", __doc__.split("\n")[0]))
