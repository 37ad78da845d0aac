"""Experiment: the 8-bit wgmma register-operand kernel's 256-row tiles dequantising a K tile in two
halves. As generated ("v0") a consumer dequantises its whole K tile of 128, then issues its MMA; the
other consumer's MMA has to cover that time (wgmma-wide-bound-*.json: the same kernel without its
dequantisation runs at ×1.01–1.05 bf16 cuBLAS, with it ×0.84–0.95). Variant "halves" dequantises
the first 64 reduction indices, issues their MMA, dequantises the next 64 while it runs (the first
half's operand kept live until the wait: ptxas would reuse its registers while the MMA reads them),
then issues theirs. The words and X's tile are the same slots, sliced. The 8-bit spec's 256-row
point at the issue's three shapes, timed in turns, each winner checked against the oracle, beside
bf16 cuBLAS in the same run, with "quarters" (four parts) beside them. Writes
OUT/wgmma-wide-halves-<device>.json. Written against the generator before the parts landed (quarters,
gluon_wgmma._tile_parts): its patch applies to that kernel only; wgmma_wide_parts.py compares the
landed kernel with the whole tile."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

# the consumer's tile: the words loaded, their bytes into fp32 (BYTE), less the zero point, the bf16 product
# (PRODUCT), the turn, the MMA, the turn passed, the wait
TILE = re.compile(
    r"(?P<ind> *)w2 = w_ring\.index\(slot \* CONSUMERS \+ wg\)\.permute\(\(1, 0\)\)\.load\(WORDS_L\)\n"
    r" *# each byte[^\n]*\n"
    r" *lo, hi = ttgl\.inline_asm_elementwise\((?P<byte>\"[^\"]*\"), (?P<cons>\"[^\"]*\"), \[w2, bias_pairs\], "
    r"(?P<byte_tail>[^\n]*)\n"
    r" *f = _gl_byte_rows\(ttgl\.reshape\(ttgl\.permute\(ttgl\.join\(lo, hi\), \(0, 2, 1\)\), \[64, BLOCK_K\]\), a_l\)\n"
    r" *f = f - o0\n"
    r" *a = (?P<product>ttgl\.inline_asm_elementwise\([^\n]*)\n"
    r"(?P<turn_wait> *if PINGPONG:[^\n]*\n *_gl_mbarrier\.wait\(turn[^\n]*\n)"
    r" *tok = _gl_hopper\.warpgroup_mma\(a, x_ring\.index\(slot\)\.permute\(\(1, 0\)\), acc, use_acc=i > 0, "
    r"is_async=True\)\n"
    r"(?P<turn_pass> *if PINGPONG:\n *_gl_mbarrier\.arrive\(turn[^\n]*\n)"
    r" *# the MMA ends[^\n]*\n"
    r" *acc = _gl_hopper\.warpgroup_mma_wait\(0, deps=\[tok\]\)\n")


def _parts(m: re.Match, parts: int) -> str:
    ind = m["ind"]
    size = f"BLOCK_K // {parts}"

    def part(h: int) -> list[str]:
        start = f"{h} * BLOCK_K // {parts}"
        return [f"w2 = w_ring.index(slot * CONSUMERS + wg).slice({start}, {size}, 0).permute((1, 0)).load(WORDS_H)",
                f"lo, hi = ttgl.inline_asm_elementwise({m['byte']}, {m['cons']}, [w2, bias_h], {m['byte_tail']}",
                f"f = _gl_byte_rows(ttgl.reshape(ttgl.permute(ttgl.join(lo, hi), (0, 2, 1)), [64, {size}]), a_l)",
                "f = f - o0",
                f"a{h} = {m['product']}"]

    def mma(h: int) -> str:
        x = f"x_ring.index(slot).slice({h} * BLOCK_K // {parts}, {size}, 1).permute((1, 0))"
        return (f"tok = _gl_hopper.warpgroup_mma(a0, {x}, acc, use_acc=i > 0, is_async=True)" if h == 0 else
                f"tok = _gl_hopper.warpgroup_mma(a{h}, {x}, tok, is_async=True)")

    lines = [f"# part 0 of {parts} of the K tile dequantised and its MMA issued; each next part dequantised while the "
             "MMAs before it run", *part(0)]
    out = "\n".join(ind + ln for ln in lines) + "\n" + m["turn_wait"]
    lines = []
    for h in range(parts):
        if h:
            lines += part(h)
        lines.append(mma(h))
        if h < parts - 1:  # no wait: keeps ptxas from sinking these MMAs below the next part's dequantisation
            lines.append(f"tok = _gl_hopper.warpgroup_mma_wait({h + 1}, deps=[tok])")
    out += "\n".join(ind + ln for ln in lines) + "\n" + m["turn_pass"]
    live = ", ".join(f"a{h}" for h in range(parts))
    return out + ind + f"acc = _gl_hopper.warpgroup_mma_wait(0, deps=[tok, {live}])[0]  # the parts live until the MMAs end\n"


EDITS = [  # (pattern, replacement, matches)
    (r"( *)kw\[\"WORDS_L\"\] = wgmma_byte_words_layout\(kw\[\"BLOCK_K\"\]\)\n",
     r'\g<0>\1kw["WORDS_H"] = wgmma_byte_words_layout(kw["BLOCK_K"] // PARTS)\n', 1),
    (r"'WORDS_L', 'BY_COLUMN'\]", "'WORDS_L', 'WORDS_H', 'BY_COLUMN']", 1),
    (r"( *)WORDS_L: ttgl\.constexpr,\n", r"\g<0>\1WORDS_H: ttgl.constexpr,\n", 1),
    (r"WORDS_L: ttgl\.constexpr, BY_COLUMN", "WORDS_L: ttgl.constexpr, WORDS_H: ttgl.constexpr, BY_COLUMN", 1),
    (r"STAGES, WORDS_L, BY_COLUMN", "STAGES, WORDS_L, WORDS_H, BY_COLUMN", 3),
    (r"( *)bias_pairs = ttgl\.full\(\[32, BLOCK_K\], (0x[0-9A-F]+), ttgl\.int32, WORDS_L\) \| \(n_N >> 31\)\n",
     r"\g<0>\1bias_h = ttgl.full([32, BLOCK_K // PARTS], \2, ttgl.int32, WORDS_H) | (n_N >> 31)\n", 1),
]


def patch(variant: str, src: str) -> str:
    parts = {"halves": 2, "quarters": 4}[variant]
    for pattern, replacement, expected in EDITS:
        src, count = re.subn(pattern, replacement.replace("PARTS", str(parts)), src)
        if count != expected:
            raise SystemExit(f"the generated source has {count} matches of {pattern[:60]!r}, not {expected}")
    src, count = TILE.subn(lambda m: _parts(m, parts), src)
    if count != 1:
        raise SystemExit(f"the generated source has {count} byte tiles, not 1")
    return src


def candidates(m: int) -> list[dict]:
    return [lowbit.register_operand(256, 128, 8, 1, bk=128, stages=2)]


CASES = [(8, 1024, n, k) for n, k in ((4096, 4096), (8192, 8192), (28672, 8192))]

if __name__ == "__main__":
    import torch

    sys.exit(pk.run_cases(patch, CASES, lambda b, m: ("v0", "halves", "quarters", "v0", "halves", "quarters"), candidates,
                          f"wgmma-wide-halves-{sb.slug(torch.cuda.get_device_name())}.json", __doc__.split("\n")[0]))
