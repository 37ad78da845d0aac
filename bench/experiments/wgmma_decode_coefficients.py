"""Experiment: does the wgmma kernel's decode tile wait on its coefficients? Each consumer loads the
next K tile's scales and zero points from global memory (pointer loads, one tile ahead in registers)
and uses them at the top of that tile, so a tile shorter than a DRAM access waits for it. Variants of
the generated 4-bit kernel, timed at the decode row tiles (M = 1 and 16) beside bf16 cuBLAS:
  v0         as generated (one tile ahead);
  ahead2     the coefficients loaded two tiles ahead (a chain of registers: a move of a load still in
             flight may wait for it, so this can read as v0);
  l2-4/8     v0, and each tile's coefficients also prefetched into L2 four / eight tiles ahead
             (prefetch.global.L2: no register, nothing waits), so the load one tile ahead hits L2;
  same-tile  every tile's coefficients loaded from the share's first tile (cache hits after the first:
             wrong values, the same instructions; the bound of what hiding the loads could give).
Each variant's fastest candidate is checked against the oracle (same-tile fails it by design).

  python bench/experiments/wgmma_decode_coefficients.py    (OUT=DIR for the JSON)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402

FIRST = re.compile(r"^(\s*)(r_\w+)_next = (.*)ttgl\.minimum\(t0, last_t\)(.*)$", re.M)
AHEAD = re.compile(r"^(\s*)(r_\w+)_next = (.*)ttgl\.minimum\(t \+ 1, last_t\)(.*)$", re.M)


def _chain(src: str, depth: int) -> str:
    """Coefficients `depth` tiles ahead: r_next, r_next2, ..., r_next<depth>, shifted each tile."""
    names = ["_next"] + [f"_next{d}" for d in range(2, depth + 1)]

    def first(m: re.Match) -> str:
        ind, r, pre, post = m.groups()
        return "\n".join(f"{ind}{r}{n} = {pre}ttgl.minimum(t0 + {d}, last_t){post}" for d, n in enumerate(names))

    def ahead(m: re.Match) -> str:
        ind, r, pre, post = m.groups()
        shifts = [f"{ind}{r}{a} = {r}{b}" for a, b in zip(names, names[1:])]
        return "\n".join(shifts + [f"{ind}{r}{names[-1]} = {pre}ttgl.minimum(t + {depth}, last_t){post}"])

    return AHEAD.sub(ahead, FIRST.sub(first, src))


PREFETCH = '''

@gluon.jit
def _gl_prefetch_l2(ptrs):  # bring the lines into L2 now; no register holds them, nothing waits
    return ttgl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [ptrs],
                                       dtype=ttgl.int32, is_pure=False, pack=1)
'''


def _load_args(expr: str) -> list[str]:
    """The top-level arguments of the first `_gl_load(...)` call in `expr`."""
    start = expr.index("_gl_load(") + len("_gl_load(")
    args, depth, cur = [], 0, ""
    for ch in expr[start:]:
        if ch == "," and depth == 0:
            args.append(cur.strip())
            cur = ""
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                break
            depth -= 1
        cur += ch
    return args + [cur.strip()]


def _prefetch(src: str, distance: int) -> str:
    def ahead(m: re.Match) -> str:
        ind, r, pre, post = m.groups()
        ptrs = _load_args(pre + f"ttgl.minimum(t + {distance}, last_t)" + post)[0]
        return m[0] + f"\n{ind}_gl_prefetch_l2({ptrs})"

    out = AHEAD.sub(ahead, src)
    return out.replace("\n\n# the register-operand (wgmma) schedule", PREFETCH + "\n\n# the register-operand (wgmma) schedule", 1)


def patch(variant: str, src: str) -> str:
    if len(FIRST.findall(src)) != 2 or len(AHEAD.findall(src)) != 2:
        raise SystemExit("the generated 4-bit consumer no longer loads its coefficients one tile ahead")
    if variant == "v0":
        return src
    if variant == "same-tile":
        return AHEAD.sub(lambda m: f"{m[1]}{m[2]}_next = {m[3]}ttgl.minimum(t0, last_t){m[4]}", src)
    if variant.startswith("l2-"):
        return _prefetch(src, int(variant.removeprefix("l2-")))
    return _chain(src, int(variant.removeprefix("ahead")))


VARIANTS = ["v0", "ahead2", "l2-4", "l2-8", "same-tile"]
CASES = [(4, m, n, k) for m in (16, 1) for n, k in ((4096, 4096), (8192, 8192), (28672, 8192))]


def candidates(m: int) -> list[dict]:
    bm = 16 if m > 8 else 1
    return [{**lowbit.register_operand(bm, bn, w, split, stages=st), "REGISTER_OPERAND": "wgmma"}
            for bn, w in ((64, 4), (128, 8)) for st in (2, 4) for split in (1, 2, 4)]


if __name__ == "__main__":
    sys.exit(pk.run_cases(patch, CASES, lambda bits, m: VARIANTS, candidates,
                          "wgmma-decode-coefficients-nvidia-h100-80gb-hbm3.json", __doc__.split("\n")[0]))
