"""Layouts the register-operand kernels (gluon_emit.py) take as compile-time arguments.

mma.sync's first operand with k_width 8 gives each thread 8 consecutive reduction indices of a row
(lanes: 4 along the reduction, 8 along the rows; registers: rows + 8, then further 32-index steps,
then further 16-row blocks per warp; warps along the rows). A word of eight 4-bit values packed
along the reduction axis is then one thread's values: the words' layout is the operand's with the
reduction axis divided by 8, and a word's four value pairs (shifted out in-thread) extend it by a
third axis. Joining each pair's two bf16 halves and merging the axes gives back the operand layout
exactly (the kernel asserts that the conversion is trivial when it compiles).
"""

from __future__ import annotations


def _log2(v: int) -> int:
    if v <= 0 or v & (v - 1):
        raise ValueError(f"{v} is not a power of two")
    return v.bit_length() - 1


def pairs_bases(block_rows: int, block_red: int, warps: int) -> dict[str, list[list[int]]]:
    """Linear-layout bases of [block_rows, block_red / 8, 4]: rows (weight columns), words along
    the reduction axis, a word's 4 value pairs."""
    lane = [[0, 1, 0], [0, 2, 0], [1, 0, 0], [2, 0, 0], [4, 0, 0]]
    warp = [[16 << i, 0, 0] for i in range(_log2(warps))]
    reg = [[0, 0, 1], [0, 0, 2], [8, 0, 0]]
    reg += [[0, 4 << i, 0] for i in range(_log2(block_red // 32))]
    reg += [[16 * warps << i, 0, 0] for i in range(_log2(block_rows // (16 * warps)))]
    return {"reg_bases": reg, "lane_bases": lane, "warp_bases": warp, "block_bases": [],
            "shape": [block_rows, block_red // 8, 4]}


def pairs_layout(block_rows: int, block_red: int, warps: int):
    from triton.experimental.gluon import language as ttgl

    return ttgl.DistributedLinearLayout(**pairs_bases(block_rows, block_red, warps))
