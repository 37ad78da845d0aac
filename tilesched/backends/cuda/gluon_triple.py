"""3-bit weights, ten to a word, on the register-operand wgmma kernel (gluon_wgmma.py).

A value pair (2j, 2j + 1) never straddles two words, but a K tile's first pair lies
(t * BLOCK / 2) mod 5 pairs into its first word. The consumers step five tiles at a time, so tile t
runs at step t mod 5 and its offset is a compile-time constant: each quad of pairs the operand's
four lanes hold (pairs 4m .. 4m + 3) starts in a word known at compile time (`quad_words`), picked
with the next out of the tile's loaded words by register moves (`triple_words_helper`), and a
lane's pair is two shifts of that word pair by its slot. The kernel's expressions are kept here as
text: the renderer writes them and tests evaluate them as written.
"""

from __future__ import annotations

# a 3-bit pair (bits 6s .. 6s + 5 of word lo or of the next, hi): a funnel shift of (hi:lo) by 6s (32, clamped:
# hi) then hi's own shift (0 or 6s), the pair's 6 bits kept, x 0x2001 copies them 13 bits up (the high value
# lands at 16-18), one LOP3 keeps both values and ORs BIAS in
TRIPLE_PAIR = "{ .reg .b32 x; shf.r.clamp.b32 x, $1, $2, $3; shr.b32 x, x, $4; and.b32 x, x, 63; " \
              "mul.lo.u32 x, x, 8193; lop3.b32 $0, x, 0x00070007, $5, 0xEA; }"
TEN_STEP = 5  # tiles a step of the 3-bit consumer's loop: tile t's pairs start at (t * BLOCK / 2) % 5 in a word
# (the kernel's expressions; tests evaluate them as written): the pair's slot, 0-4 in lo, 5-7 in hi (quad_words),
# from tile t = step (mod 5) and the lane j of its quad; TRIPLE_PAIR's two shifts of (hi:lo); the words' first row
TRIPLE_OFFSET = "(step * (BLOCK // 2)) % 5"
TRIPLE_SLOT = "(step * (BLOCK // 2) + 4 * quad) % 5 + lane"
TRIPLE_SHIFTS = ("ttgl.where(u < 5, 6 * u, 32)", "ttgl.where(u < 5, 0, 6 * u - 30)")
TRIPLE_ROW = "t * (BLOCK // 2) // 5"


def quad_words(offset: int, words: int) -> tuple[list[int], list[int]]:
    """3-bit tiles: for each quad m of a tile's pairs (pairs 4m .. 4m + 3 of the tile, its first `offset` pairs into
    its first word, five pairs a word), the word holding the quad's first pair (lo) and the next (hi): lane j's
    pair is slot (offset + 4m) % 5 + j of lo, or that less 5 of hi."""
    lo = [(offset + 4 * m) // 5 for m in range(words)]
    return lo, [min(w + 1, words - 1) for w in lo]


def _side_by_side(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    half = len(names) // 2
    return f"_gl_beside({_side_by_side(names[:half])}, {_side_by_side(names[half:])})"


def triple_words_helper() -> list[str]:
    """`_gl_triple_words(w, OFFSET)`: a [64, n] tile of words (n = 8 or 16, in registers) -> (lo, hi) per quad
    (quad_words): the tile split into its columns, those stacked in each offset's order (register moves)."""
    L = ["@gluon.jit", "def _gl_triple_words(w, OFFSET: ttgl.constexpr):",
         "    # each quad's words (gluon_triple.quad_words): its first pair's and the next, by the tile's offset"]
    for n, kw in ((8, "if"), (16, "else")):
        L.append(f"    if w.shape[1] == {n}:" if kw == "if" else "    else:")
        level = [("w", list(range(n)))]
        while len(level[0][1]) > 1:
            nxt = []
            for name, cols in level:
                half = len(cols) // 2
                a, b = (f"c{cols[0]}" if half == 1 else f"h{cols[0]}_{half}",
                        f"c{cols[half]}" if half == 1 else f"h{cols[half]}_{half}")
                L.append(f"        {a}, {b} = _gl_halves({name})")
                nxt += [(a, cols[:half]), (b, cols[half:])]
            level = nxt
        for offset in range(TEN_STEP):
            lo, hi = quad_words(offset, n)
            L.append(f"        {'if' if offset == 0 else 'elif'} OFFSET == {offset}:")
            L.append(f"            lo = {_side_by_side([f'c{i}' for i in lo])}")
            L.append(f"            hi = {_side_by_side([f'c{i}' for i in hi])}")
    L += ["    return lo, hi", "", "",
          "@gluon.jit", "def _gl_halves(t):", "    # [R, 2n] -> its columns 0 .. n - 1 and n .. 2n - 1",
          "    return ttgl.split(ttgl.permute(ttgl.reshape(t, [t.shape[0], 2, t.shape[1] // 2]), (0, 2, 1)))",
          "", "", "@gluon.jit", "def _gl_beside(a, b):", "    # [R, n] and [R, n] -> [R, 2n]",
          "    return ttgl.reshape(ttgl.permute(ttgl.join(a, b), (0, 2, 1)), [a.shape[0], 2 * a.shape[1]])", "", ""]
    return L
