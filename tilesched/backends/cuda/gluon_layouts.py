"""Layouts the register-operand kernels (gluon_emit.py, gluon_wgmma.py) take as compile-time arguments.

mma.sync's first operand with k_width 8 gives each thread 8 consecutive reduction indices of a row
(lanes: 4 along the reduction, 8 along the rows; registers: rows + 8, then further 32-index steps,
then further 16-row blocks per warp; warps along the rows). A word of eight 4-bit values packed
along the reduction axis is then one thread's values (a word of sixteen 2-bit values, two 32-index
steps' worth): the words' layout is the operand's with the reduction axis divided by the values per
word, and a word's value pairs (shifted out in-thread) extend it by a third axis. Joining each
pair's two halves and merging the axes gives back the operand layout exactly (the kernel asserts
that the conversion is trivial when it compiles).
"""

from __future__ import annotations


def _log2(v: int) -> int:
    if v <= 0 or v & (v - 1):
        raise ValueError(f"{v} is not a power of two")
    return v.bit_length() - 1


def pairs_bases(block_rows: int, block_red: int, warps: int, bits: int = 4) -> dict[str, list[list[int]]]:
    """Linear-layout bases of [block_rows, words, pairs]: rows (weight columns), the tile's words
    along the reduction axis (32 / bits values each), a word's 16 / bits value pairs.

    A word's pairs j (values j and j + pairs, as its low and high halves) fill the operand's
    reduction indices in this order, from the lowest bit: the pair's half, j's low two bits (one
    thread's 8 indices), the word's low two bits (the 4 lanes along the reduction), j's higher bits,
    the word's higher bits (registers: further 32-index steps); X's tile is permuted to match."""
    pairs = 16 // bits
    words = block_red * bits // 32
    lane = [[0, 1, 0], [0, 2, 0], [1, 0, 0], [2, 0, 0], [4, 0, 0]]
    warp = [[16 << i, 0, 0] for i in range(_log2(warps))]
    reg = [[0, 0, 1], [0, 0, 2], [8, 0, 0]]
    reg += [[0, 0, 4 << i] for i in range(_log2(pairs // 4))]
    reg += [[0, 4 << i, 0] for i in range(_log2(words // 4))]
    reg += [[16 * warps << i, 0, 0] for i in range(_log2(block_rows // (16 * warps)))]
    return {"reg_bases": reg, "lane_bases": lane, "warp_bases": warp, "block_bases": [],
            "shape": [block_rows, words, pairs]}


def pairs_layout(block_rows: int, block_red: int, warps: int, bits: int = 4):
    from triton.experimental.gluon import language as ttgl

    return ttgl.DistributedLinearLayout(**pairs_bases(block_rows, block_red, warps, bits))


def words_load_bases(block_rows: int, block_red: int, warps: int, bits: int = 4) -> dict[str, list[list[int]]]:
    """Linear-layout bases of [block_rows, words] indexed by weight column, for loading the words: the
    words' layout (pairs_bases without the pairs) with its rows renumbered so that one thread's rows
    (r, r + 8, then r + 16 * warps, ...) are consecutive columns, which load as one vector. Row r of
    the MMA is then column `row_column(r)`: from the lowest bit, r's bit 3, its bits above the warps',
    its lane bits (0-2), its warp bits."""
    words = block_red * bits // 32
    blocks = block_rows // (16 * warps)
    reg = [[1 << i, 0] for i in range(1 + _log2(blocks))]
    reg += [[0, 4 << i] for i in range(_log2(words // 4))]
    lane = [[0, 1], [0, 2]] + [[2 * blocks << i, 0] for i in range(3)]
    warp = [[16 * blocks << i, 0] for i in range(_log2(warps))]
    return {"reg_bases": reg, "lane_bases": lane, "warp_bases": warp, "block_bases": [],
            "shape": [block_rows, words]}


def row_column(r: int, block_rows: int, warps: int) -> int:
    """The column (within the tile) that words_load_bases gives the MMA's row r."""
    blocks = block_rows // (16 * warps)
    return (r // 8) % 2 + 2 * (r // (16 * warps)) + 2 * blocks * (r % 8) + 16 * blocks * ((r // 16) % warps)


def words_load_layout(block_rows: int, block_red: int, warps: int, bits: int = 4):
    from triton.experimental.gluon import language as ttgl

    return ttgl.DistributedLinearLayout(**words_load_bases(block_rows, block_red, warps, bits))


def wgmma_pairs_bases(block_red: int, bits: int, by_column: bool = False) -> dict[str, list[list[int]]]:
    """Linear-layout bases of [64, words, pairs] for one warpgroup's wgmma register operand (k_width
    2: a thread holds reduction indices 2t, 2t + 1 of every 8, for rows r and r + 8): the 64 weight
    columns, the tile's words, a word's 16 / bits pairs of consecutive values (2j, 2j + 1: one
    shift puts both in a 32-bit register's halves). From the lowest reduction bit: the pair's half,
    the lane's two bits (pairs j), then registers: further pairs of the word, then further words."""
    pairs = 16 // bits
    words = block_red * bits // 32
    if by_column:  # a thread's two rows (r, r + 8) are adjacent columns (one 64-bit load of two words), column
        # a + 2 l + 16 w being the MMA's row l + 8 a + 16 w (byte_row_column); else row r is column r
        lane, reg = [[0, 0, 1], [0, 0, 2], [2, 0, 0], [4, 0, 0], [8, 0, 0]], [[1, 0, 0]]
    else:
        lane, reg = [[0, 0, 1], [0, 0, 2], [1, 0, 0], [2, 0, 0], [4, 0, 0]], [[8, 0, 0]]
    for b in range(2, _log2(block_red // 2)):  # reduction index bits above the lane's: k + 8, k + 16, ...
        reg.append([0, 0, 1 << b] if b < _log2(pairs) else [0, 1 << (b - _log2(pairs)), 0])
    return {"reg_bases": reg, "lane_bases": lane, "warp_bases": [[16, 0, 0], [32, 0, 0]], "block_bases": [],
            "shape": [64, words, pairs]}


def wgmma_pairs_layout(block_red: int, bits: int, by_column: bool = False):
    from triton.experimental.gluon import language as ttgl

    return ttgl.DistributedLinearLayout(**wgmma_pairs_bases(block_red, bits, by_column))


def wgmma_byte_words_bases(block_red: int) -> dict[str, list[list[int]]]:
    """Linear-layout bases of [32, block_red] 16-bit words (two bytes of adjacent weight columns at one
    reduction index: 8-bit weights), for loading one warpgroup's wgmma register operand. A thread's
    two rows (r and r + 8) are one word's two columns: word j holds columns 2 j and 2 j + 1, and
    column c = a + 2 l + 16 w is the MMA's row r = l + 8 a + 16 w (a: the byte, l: lane // 4, w:
    warp); the kernel moves the bytes into row order (a trivial conversion to the operand's layout)
    and stores row r's outputs at column c (byte_row_column). Reduction indices as the operand's
    (k_width 2): the pair's half, the lane's two bits, then k + 8, k + 16, ... in registers."""
    reg = [[0, 1], [0, 8]] + [[0, 16 << i] for i in range(_log2(block_red // 16))]
    lane = [[0, 2], [0, 4], [1, 0], [2, 0], [4, 0]]
    return {"reg_bases": reg, "lane_bases": lane, "warp_bases": [[8, 0], [16, 0]], "block_bases": [],
            "shape": [32, block_red]}


def wgmma_byte_words_layout(block_red: int):
    from triton.experimental.gluon import language as ttgl

    return ttgl.DistributedLinearLayout(**wgmma_byte_words_bases(block_red))


def byte_row_column(r: int) -> int:
    """The column (within a warpgroup's 64) that wgmma_byte_words_bases gives the MMA's row r."""
    return ((r >> 3) & 1) | ((r & 7) << 1) | (r & 48)
