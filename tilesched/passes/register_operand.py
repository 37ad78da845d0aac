"""Register operand: the dequantised weights go straight into the MMA's register operand.

Hopper's wgmma takes its second operand from shared memory only, so a tl.dot whose operand is
dequantised in registers stores every weight tile there and reads it back. mma.sync takes both
operands from registers: computing Y^T = W^T X^T puts the weights in its first operand, and a
thread can load exactly the packed words whose values its operand fragment holds, so no weight
passes through shared memory. Past 16 rows, Hopper's wgmma also takes its first operand from
registers: the same transposed product with 64 weight columns per warpgroup and up to 256 rows,
X's tiles and the packed words brought by TMA (measured hand-written first:
bench/results/lowbit-wgmma-*.json). Triton cannot state these layouts; the target renders the
schedule with explicit layouts (Gluon). The row tile picks the instruction (past 16 rows wgmma),
unless the option's value is WGMMA: then wgmma at any row tile (n of at least 8), which decode
shapes take for its TMA ring and split-K shares that meet through a counter per thread.

The pass checks that the kernel has that shape, else it refuses at the stage that breaks it:
one factored dot (tilesched/passes/factor.py) in the reduction loop, its other operand a 16-bit
float load over (rows, reduction), its chain's value 4- or 2-bit unsigned integers packed into
words along the reduction axis (3-bit ones, ten to a word, and bytes on wgmma only), its
coefficients loads that are constant along the reduction axis within a tile (grouped along it, or
without it), pointer loads (no TMA), and an accumulator zeroed before the loop and stored after it. Whether a point takes the schedule is the option's parameter; the launcher
checks the kernel's shape and the point's block sizes (`legal_blocks`) for the points that set it.
"""

from __future__ import annotations

from tilesched.ir.dtypes import BITS
from tilesched.ir.looptree import LoopTree
from tilesched.ir.nodes import Program
from tilesched.passes.factor import constant_along
from tilesched.passes.kernel import Instr, KernelIR, producer
from tilesched.passes.optional import mark

OPTION = "register_operand"
ACTIVATIONS = ("bf16", "fp16")
WEIGHTS = ("uint4", "uint2")  # 8 or 16 to a word: one or two of a thread's 8-index operand fragments
# 10 to a word (two bits unused): a value pair never straddles two words, but a tile's pairs start inside a word,
# at one of five offsets; the wgmma kernel only, which decodes a tile's words by its offset (gluon_triple.py)
TEN_WEIGHTS = ("uint3",)
BYTE_WEIGHTS = ("uint8", "int8")  # one to a byte, unpacked: the wgmma kernel only (row tiles past 16)
MMA_ROWS = 16  # mma.sync's m16n8k16: 16 weight columns per warp and step, up to 16 activation rows
MAX_ROW_TILE = 16
WGMMA_MIN_ROWS, WGMMA_MAX_ROWS = 32, 256  # row tiles past 16: Hopper's wgmma (its n)
WGMMA_MIN_N = 8  # wgmma's smallest n: row tiles below it (WGMMA option) compute 8 rows and store theirs
WGMMA = "wgmma"  # the option's value that takes the wgmma kernel at any row tile
WGMMA_COLUMNS = 64  # weight columns per consumer warpgroup (wgmma's m)
# the wgmma kernel's decode row tiles: registers a thread by consumer warpgroups, two CTAs an SM either way (a CTA
# is 8 or 12 warps, the loader's warp launched as a warpgroup; why not fewer: gluon_wgmma.py, at DECODE_N)
DECODE_REGISTERS = {1: 96, 2: 80}
# an H100's shared memory per block, less room for the barriers and the epilogue (4 KB over the ring at 256 rows)
HOPPER_SMEM = 232448 - 8192


def why_not(k: KernelIR) -> tuple[str, str] | None:
    """(stage, what is missing) where the kernel lacks the schedule's shape, else None."""
    dots = [i for i in k.loop if i.op in ("dot", "affine_dot")]
    if len(dots) != 1 or dots[0].op != "affine_dot":
        stage = dots[0].stage if dots else (k.loop[0].stage if k.loop else "")
        return stage, "a reduction loop with one dot whose operand is an affine dequantisation of loaded weights"
    dot = dots[0]
    p, q = k.value(dot.out).axes
    x, w, coefs = next(n for n in dot.args[:2] if n != dot.via), dot.args[2], dot.args[3:]
    c = k.reduction
    if k.points or k.skip or k.grid != (p, q) or dot.out not in k.carried:
        return dot.stage, "a grid over the output's two axes and one accumulator"
    tma = next((i for i in k.loop + k.post if i.op in ("load", "store") and k.access(i.tensor, i.op).tma), None)
    if tma is not None:
        return tma.stage, "pointer loads and stores (no engine: tma)"
    xl, wl = producer(k, x), producer(k, w)
    if xl is None or xl.op != "load" or k.value(x).axes != (p, c) or k.value(x).dtype not in ACTIVATIONS:
        return dot.stage, f"a dot operand loaded as {' or '.join(ACTIVATIONS)} over ({p}, {c})"
    wa = k.access(wl.tensor, "load") if wl is not None and wl.op == "load" else None
    shape = ((wa.dtype in WEIGHTS + TEN_WEIGHTS and wa.pack == c) or (wa.dtype in BYTE_WEIGHTS and wa.pack is None)
             if wa else False)
    if not shape or k.value(w).axes != (c, q) or wa.group:
        return dot.stage, (f"weights of {', '.join(WEIGHTS + TEN_WEIGHTS)} packed into words along {c}, or of "
                           f"{', '.join(BYTE_WEIGHTS)} one to a byte")
    for n in coefs:
        load = producer(k, n)
        if load is None or load.op != "load" or not constant_along(k, n, c, q):
            return dot.stage, f"coefficients loaded one row per {c} tile ({n})"
        acc = k.access(load.tensor, "load")
        if acc.pack not in (None, q) or (acc.pack is None and acc.dtype not in ("bf16", "fp16", "fp32", *BYTE_WEIGHTS)):
            return load.stage, f"coefficients as floats, bytes or integers packed along {q} ({n})"
    feeding = {x, w, *coefs}
    other = next((i for i in k.loop if i is not dot and (i.op != "load" or i.out not in feeding)), None)
    if other is not None:
        return other.stage, "nothing in the reduction loop but the dot and its loads"
    if [i.op for i in k.pre] != ["zeros"] or [(i.op, i.args) for i in k.post] != [("store", (dot.out,))]:
        stage = next((i.stage for i in k.pre + k.post if i.op not in ("zeros", "store")), dot.stage)
        return stage, "an epilogue that stores the accumulator and nothing else"
    return None


def weight_dtype(k: KernelIR) -> str:
    return k.access(producer(k, the_dot(k).args[2]).tensor, "load").dtype


def byte_weights(k: KernelIR) -> bool:
    """The kernel's weights are whole bytes (uint8, int8), not words of packed values."""
    return weight_dtype(k) in BYTE_WEIGHTS


def ten_weights(k: KernelIR) -> bool:
    """The kernel's weights are 3-bit values, ten to a word."""
    return weight_dtype(k) in TEN_WEIGHTS


def word_bits(k: KernelIR) -> int:
    """Bits a weight takes in the wgmma kernel's shared memory: a tile of BLOCK values of 3 bits takes
    BLOCK / 8 words (BLOCK / 2 pairs from an offset of up to 4 in the first, five to a word), as 4 bits do."""
    return 4 if ten_weights(k) else BITS[weight_dtype(k)]


def mma_sync_why_not(k: KernelIR) -> tuple[str, str] | None:
    """`why_not` for the mma.sync kernel (row tiles of at most 16): its layouts take words of 8 or 16 values only."""
    why = why_not(k)
    if why is None and (byte_weights(k) or ten_weights(k)):
        dot = the_dot(k)
        return dot.stage, f"weights of {', '.join(WEIGHTS)} packed into words along {k.reduction} (mma.sync)"
    return why


def register_operand(program: Program, tree: LoopTree, k: KernelIR) -> KernelIR:
    """Mark the kernel for the schedule where the spec asks for it (tilesched/passes/optional.py)."""
    return mark(program, k, OPTION, why_not)


def _pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def the_dot(k: KernelIR) -> Instr:
    return next(i for i in k.loop if i.op == "affine_dot")


def takes_wgmma(value, rows: int) -> bool:
    """Whether a point with this option value and row tile runs the wgmma kernel."""
    return value == WGMMA or rows > MAX_ROW_TILE


def legal_blocks(block: dict[str, int], warps: int, groups: dict[str, int], k: KernelIR, stages: int = 2,
                 split: int = 1, wgmma: bool | None = None) -> str | None:
    """Why a point's blocks do not fit the schedule (None when they do). Row tiles of at most 16
    take mma.sync (`_mma_sync_blocks`), larger ones or `wgmma` points Hopper's wgmma
    (`_wgmma_blocks`); each group holds whole reduction tiles."""
    dot = the_dot(k)
    p, _ = k.value(dot.out).axes
    c = k.reduction
    bits = BITS[k.access(producer(k, dot.args[2]).tensor, "load").dtype]
    wgmma = block[p] > MAX_ROW_TILE if wgmma is None else wgmma
    why = (_wgmma_blocks if wgmma else _mma_sync_blocks)(block, warps, k, bits, stages, split)
    if why is not None:
        return why
    bad = next((f"{name} = {g}" for name, g in groups.items() if g % block[c]), None)
    if bad is not None:
        return f"groups that hold whole {c} tiles ({bad}, BLOCK_{c} = {block[c]})"
    return None


def _mma_sync_blocks(block: dict[str, int], warps: int, k: KernelIR, bits: int, stages: int, split: int) -> str | None:
    """mma.sync: column tiles of 16 per warp, reduction tiles of whole words for the 4 lanes along
    it (32 indices for 4 bits, 64 for 2)."""
    dot = the_dot(k)
    p, q = k.value(dot.out).axes
    c = k.reduction
    if byte_weights(k) or ten_weights(k):
        return f"BLOCK_{p} of {WGMMA_MIN_ROWS} or more, or the value {WGMMA!r} ({weight_dtype(k)} weights take " \
               "the wgmma kernel only)"
    if block[q] % (MMA_ROWS * warps) or not _pow2(block[q] // (MMA_ROWS * warps)):
        return f"BLOCK_{q} a power-of-two multiple of 16 x NUM_WARPS = {MMA_ROWS * warps} (got {block[q]})"
    step = 4 * 32 // bits  # the 4 lanes along the reduction hold a word each
    if block[c] % step or not _pow2(block[c] // step):
        return f"BLOCK_{c} a power-of-two multiple of {step} (got {block[c]})"
    return None


def _wgmma_blocks(block: dict[str, int], warps: int, k: KernelIR, bits: int, stages: int, split: int) -> str | None:
    """wgmma (tilesched/backends/cuda/gluon_wgmma.py): a consumer warpgroup per 64 weight columns
    (NUM_WARPS / 4 of them), power-of-two row tiles up to 256 (wgmma's n, at least 8), tiles of at
    least 8 rows of words (TMA reads shorter ones back wrong: bench/results/lowbit-wgmma-*.json), X
    row-major and the words contiguous along the columns (both are read by TMA), and the ring of X and
    word tiles in shared memory."""
    dot = the_dot(k)
    p, q = k.value(dot.out).axes
    c = k.reduction
    if not _pow2(block[p]) or block[p] > WGMMA_MAX_ROWS:
        return f"BLOCK_{p} a power of two up to {WGMMA_MAX_ROWS} (wgmma; got {block[p]})"
    if warps not in (4, 8) or block[q] != WGMMA_COLUMNS * warps // 4:
        return f"BLOCK_{q} = {WGMMA_COLUMNS} x NUM_WARPS / 4 with NUM_WARPS 4 or 8 (a warpgroup per " \
               f"{WGMMA_COLUMNS} columns; got BLOCK_{q} = {block[q]}, NUM_WARPS = {warps})"
    bits = word_bits(k)
    words = block[c] * bits // 32
    if byte_weights(k):  # a tile of bytes [BLOCK_c, 64] per consumer
        if not _pow2(block[c]) or not 32 <= block[c] <= 256:
            return f"BLOCK_{c} a power of two from 32 to 256 (got {block[c]})"
    elif ten_weights(k):  # the decoder's words by offset are written for tiles of 8 and 16 words
        if block[c] not in (64, 128):
            return f"BLOCK_{c} of 64 or 128 ({weight_dtype(k)}: words by the tile's offset; got {block[c]})"
    elif not _pow2(block[c]) or words < 8 or block[c] > 256:
        return f"BLOCK_{c} a power of two up to 256 with at least 8 words of {32 // bits} values (got {block[c]})"
    if stages < 2:
        return f"NUM_STAGES >= 2 (got {stages})"
    x = producer(k, next(n for n in dot.args[:2] if n != dot.via)).tensor
    w = producer(k, dot.args[2]).tensor
    bad = next((t for t in (x, w) if k.access(t, "load").layout != "row_major"), None)
    if bad is not None:
        return f"{bad} row-major (TMA tiles)"
    smem = stages * (max(block[p], WGMMA_MIN_N) * block[c] * 2 + block[c] * bits // 8 * block[q])
    if smem > HOPPER_SMEM:
        return f"NUM_STAGES x (X's tile + the words' tile) = {smem} bytes <= {HOPPER_SMEM} of shared memory"
    return None
