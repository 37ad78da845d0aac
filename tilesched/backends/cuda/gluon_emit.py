"""Render the register-operand schedule (tilesched/passes/register_operand.py) with explicit layouts.

The kernel computes the transposed product, acc^T[q, p] += W^T[q, c] X^T[c, p], with mma.sync:
  - each thread holds the int32 words whose values (eight 4-bit or sixteen 2-bit ones) its
    first-operand fragment holds (gluon_layouts.py), so no dequantised weight passes through
    shared memory;
  - one shift and one AND/OR turn a word's values j and j + 16 / bits into a 16-bit float pair
    holding BIAS + v (v in the mantissa of BIAS: 128 for bf16, 1024 for fp16), BIAS's pair a
    register the AND/OR reads (as a constant, ptxas re-materialised it before each one: 13 % of a
    tile's instructions, 5-11 % of the time at M = 1, 8192²); the reduction order inside a tile is
    free, so X's tile is permuted the same way before it becomes the second operand;
  - where the mantissa holds several values (`positions`: 2-bit ones, 4-bit with fp16), one shift
    serves that many pairs, each AND-ed at its own position and OR-ed with its own BIAS (a power of
    two, so BIAS_k + v stays exact), and the MMA starts from -sum(BIAS_k x_k) instead of zero
    (2-bit words, bf16: 122 -> 42 shifts a tile, 8 % faster at M = 1,
    bench/results/mma-sync-positions-*.json);
  - the chain's factor a and offset b (per column, constant within a reduction tile) are applied
    once per tile: x . (a v + b) = a t + (b - a BIAS) sum(x), with t the MMA's sum over BIAS + v
    (a t + b sum(x) where the MMA took BIAS_k out);
  - 4-bit words load by column, a thread's columns consecutive (one vector a row of words), and
    are renumbered by the MMA's row; row r's outputs and coefficients are column row_column(r)
    (gluon_layouts.words_load_bases);
  - the words of the next tile load while one is used: with two stages into registers, with more
    through a ring of that many tiles of packed words in shared memory (cp.async), which keeps more
    bytes in flight without holding registers for them; X's tile and the tile's coefficients load
    one tile ahead in registers, so no step waits on a global load it just issued (3-19 % faster
    geomean per shape, bench/results/register-operand-ahead-*.json); at most 128 registers
    a thread;
  - split-K shares meet as in the Triton kernels (one fp32 slice per share, arrival counters).
Its positional arguments are the Triton kernel's, so the module's `launch_args` serves both.
"""

from __future__ import annotations

from dataclasses import dataclass

from tilesched.backends.cuda.triton_rules import affine_terms, group_constant
from tilesched.ir.dtypes import BITS
from tilesched.passes.kernel import KernelIR, producer
from tilesched.passes.register_operand import the_dot

GL_DTYPES = {"fp16": "ttgl.float16", "bf16": "ttgl.bfloat16", "fp32": "ttgl.float32"}
MAGIC = {"bf16": ("0x43004300", "128.0"), "fp16": ("0x64006400", "1024.0")}  # pair of BIAS + 0, BIAS
MANTISSA = {"bf16": 7, "fp16": 10}  # BIAS's mantissa bits: values v < 2^MANTISSA sit in it as BIAS + v


def positions(act: str, bits: int) -> int:
    """Value pairs one shift of a word serves: at position p of the shifted word's halves (bits p * bits up),
    a value is v 2^(bits p) in the mantissa, so a BIAS 2^(bits p) times smaller makes the pair BIAS_p + v.
    bf16: 3 for 2-bit values (one shift a word's 3 pairs, not a shift a pair), 1 for 4-bit; fp16: 5, 2."""
    return max(1, min(MANTISSA[act] // bits, 16 // bits))

IMPORTS = """from triton.experimental import gluon
from triton.experimental.gluon import language as ttgl
from triton.experimental.gluon.language.nvidia.ampere import async_copy as _gl_async
from triton.experimental.gluon.language.nvidia.ampere import mma_v2"""

LOAD_HELPERS = '''
@gluon.jit
def _gl_load(ptrs, mask, EVEN: ttgl.constexpr):
    # masks only where some point is ragged (EVEN is the launch's compile-time flag)
    if EVEN:
        return ttgl.load(ptrs)
    else:
        return ttgl.load(ptrs, mask=mask, other=0)
'''

HELPERS = '''
@gluon.jit
def _gl_add(x, y):  # defined here, not taken from triton.language, as the Triton helpers are
    return x + y


_gl_barrier = getattr(ttgl, "barrier", None) or ttgl.thread_barrier  # named thread_barrier up to Triton 3.6
_gl_async_load = getattr(_gl_async, "async_load", None) or _gl_async.async_copy_global_to_shared  # likewise


@gluon.jit
def _gl_rows(t, NW: ttgl.constexpr, BLOCKS: ttgl.constexpr, layout: ttgl.constexpr):
    # [columns, words] loaded by column (WLOAD) -> by the MMA's row (gluon_layouts.words_load_bases):
    # the column's bits (a, block, lane, warp from the lowest) reordered as the row's (lane, a, warp, block)
    t = ttgl.permute(ttgl.reshape(t, [NW, 8, BLOCKS, 2, t.shape[1]]), (2, 0, 3, 1, 4))
    return ttgl.convert_layout(ttgl.reshape(t, [NW * 8 * BLOCKS * 2, t.shape[4]]), layout)


@gluon.jit
def _gl_copy(slot, ptrs, mask, EVEN: ttgl.constexpr):
    # cp.async of a tile into a shared-memory slot; masked elements are zero-filled
    if EVEN:
        _gl_async_load(slot, ptrs)
    else:
        _gl_async_load(slot, ptrs, mask)
'''


def constexprs(k: KernelIR) -> list[str]:
    """The Gluon kernel's compile-time arguments (taken from the launch's constexprs by name)."""
    dot = the_dot(k)
    p, q = k.value(dot.out).axes
    names = [f"BLOCK_{a}" for a in (p, q, k.reduction)]
    names += [f"EVEN_{a.name}" for a in k.axes if a.masked]
    names += list(dict.fromkeys(group_constant(a.tensor, ax) for a in k.accesses for ax, _ in a.group))
    if k.tile_order == "grouped":
        names.append("GROUP")
    if k.split_k is not None:
        names.append("SPLIT_K")
    return names


def _step(k: KernelIR, tensor: str, axis: str, index: str) -> str:
    """`index` times the tensor's stride along `axis`: the index alone along the axis its layout keeps
    contiguous (the launcher checks that stride is 1), so loads along it vectorise."""
    acc = next(a for a in k.accesses if a.tensor == tensor)
    inner = acc.axes[-1] if acc.layout == "row_major" else acc.axes[-2]
    return index if axis == inner else f"{index} * s_{tensor}_{axis}"


def _even(k: KernelIR, *axes: str) -> str:
    flags = [f"EVEN_{a}" for a in axes if k.axis(a).masked]
    return " and ".join(flags) if flags else "True"


def _coords(k: KernelIR, p: str, q: str) -> list[str]:
    if k.tile_order == "column_major":
        return [f"pid_{p} = tile_id % tiles_{p}", f"pid_{q} = tile_id // tiles_{p}"]
    group = "GROUP" if k.tile_order == "grouped" else "1"
    return [f"width = {group} * tiles_{q}  # {group} rows of tiles swept column by column",
            "first = (tile_id // width) * " + group,
            f"pid_{p} = first + (tile_id % width) % ttgl.minimum(tiles_{p} - first, {group})",
            f"pid_{q} = (tile_id % width) // ttgl.minimum(tiles_{p} - first, {group})"]


def _coefficient(k: KernelIR, n: str, q: str, c: str, t: str, name: str = "") -> list[str]:
    """Lines defining `name` (`r_<n>`): coefficient n over the tile's columns (fp32), at reduction tile `t`."""
    name = name or f"r_{n}"
    load = producer(k, n)
    acc = k.access(load.tensor, "load")
    T = load.tensor
    row = _step(k, T, c, f"(({t} * BLOCK_{c}) // {group_constant(T, c)})") if c in k.value(n).axes else "0"
    col = "cq"
    lines = []
    if acc.pack == q:
        bits = BITS[acc.dtype]
        per = 32 // bits
        word = f"_gl_load(p_{T} + {row} + {_step(k, T, q, f'(cq // {per})')}, cq < n_{q}, {_even(k, q)})"
        value = f"(({word} >> ((cq % {per}) * {bits})) & {(1 << bits) - 1})"
        if acc.dtype.startswith("int"):  # two's complement in `bits` bits
            value = f"(({value} ^ {1 << (bits - 1)}) - {1 << (bits - 1)})"
        lines.append(f"{name} = {value}.to(ttgl.float32)")
    else:
        lines.append(f"{name} = _gl_load(p_{T} + {row} + {_step(k, T, q, col)}, cq < n_{q}, {_even(k, q)})"
                     ".to(ttgl.float32)")
    return lines


def _ahead(k: KernelIR, x: str, X: str, c: str, per_tile: list[str], q: str, t: str) -> list[str]:
    """Lines loading X's tile `<x>_ahead` and the coefficients `r_<n>_ahead` of reduction tile `t`
    (past the share's end the last tile again, as for the words)."""
    lines = [f"k_ahead = ({t}) * BLOCK_{c}",
             "x_mask = x_rows[:, None]" + (f" & (k_ahead + xc < n_{c})[None, :]" if k.axis(c).masked else ""),
             f"{x}_ahead = ttgl.load(x_ptrs + {_step(k, X, c, 'k_ahead')}, mask=x_mask, other=0.0)"]
    for n in per_tile:
        lines += _coefficient(k, n, q, c, f"({t})", f"r_{n}_ahead")
    return lines


def _operands(x: str, act: str, magic: str, low: str, bits: int, c: str, q: str, at: int = 1) -> list[str]:
    """X's permuted tile and the weights' pairs as the two MMA operands. Value j of a word (index
    per * w + j) pairs with value j + pairs; the operand's reduction order is (high to low) the
    word's high bits, j's high bits, the word's low two bits, j's low two bits, the half
    (gluon_layouts.pairs_bases), and X's tile is permuted into the same order."""
    per, pairs = 32 // bits, 16 // bits
    if pairs == 4:  # 4 bits: [word, half, j] -> [word, j, half]
        x_split, x_order = f"[MMA_N, BLOCK_{c} // {per}, 2, 4]", "(0, 1, 3, 2)"
        w_merge = f"ttgl.reshape(ttgl.join(lo_half, hi_half), [BLOCK_{q}, BLOCK_{c}])"
    else:  # [word high, word low, half, j high, j low] -> [word high, j high, word low, j low, half]
        x_split, x_order = f"[MMA_N, BLOCK_{c} // {4 * per}, 4, 2, {pairs // 4}, 4]", "(0, 1, 4, 2, 5, 3)"
        w_merge = (f"ttgl.reshape(ttgl.permute(ttgl.reshape(ttgl.join(lo_half, hi_half), [BLOCK_{q}, BLOCK_{c} // "
                   f"{4 * per}, 4, {pairs // 4}, 4, 2]), (0, 1, 3, 2, 4, 5)), [BLOCK_{q}, BLOCK_{c}])")
    return [
        f"# value j of a word pairs with value j + {pairs}: X's tile permuted into the operand's reduction order",
        f"x_perm = ttgl.reshape(ttgl.permute(ttgl.reshape(v_{x}, {x_split}), {x_order}), [MMA_N, BLOCK_{c}])",
        "x_op = ttgl.convert_layout(ttgl.permute(x_perm, (1, 0)), op_x)",
        (f"pairs = ttgl.inline_asm_elementwise(\"lop3.b32 $0, $1, {low}, $2, 0xEA;\", \"=r,r,r\", "  # (a & b) | c
         "[ttgl.expand_dims(v_words, 2) >> shifts, bias_pairs], dtype=ttgl.int32, is_pure=True, pack=1)") if at == 1 else
        ("pairs = ttgl.inline_asm_elementwise(\"lop3.b32 $0, $1, $2, $3, 0xEA;\", \"=r,r,r,r\", "  # (a & b) | c
         "[ttgl.expand_dims(v_words, 2) >> shifts, masks, bias_pairs], dtype=ttgl.int32, is_pure=True, pack=1)"),
        f"lo_half, hi_half = ttgl.inline_asm_elementwise(\"mov.b32 {{$0, $1}}, $2;\", \"=h,=h,r\", [pairs], "
        f"dtype=({GL_DTYPES[act]}, {GL_DTYPES[act]}), is_pure=True, pack=1)",
        f"w_op = ttgl.convert_layout({w_merge}, op_w, assert_trivial=True)",
    ]


def bias_register(shape: str, magic: str, layout: str, q: str, name: str = "bias_pairs") -> str:
    """The line making `name`, BIAS's pair over the words' pairs tensor, held in a register: OR-ed
    with a zero ptxas cannot fold (sizes are never negative), where as a constant it was re-materialised
    before each AND/OR (bench/results/decode-floor-*.json); both register-operand kernels read it."""
    return f"{name} = ttgl.full([{shape}], {magic}, ttgl.int32, {layout}) | (n_{q} >> 31)"


def vector_words(bits: int) -> bool:
    """Whether the words load by column (WLOAD), a thread's columns consecutive, with STAGES = 2: for
    4 bits, 372 -> 351 instructions a tile and 3 % faster geomean at M = 1 (bench/results/decode-floor-
    {vector,scalar}-words-*.json); 2-bit words (half as many a thread) and the ring (which then spilled)
    measured no gain, so they keep the words' layout."""
    return bits == 4


@dataclass(frozen=True)
class _Names:
    """The names the mma.sync kernel's parts share: the dot's axes (p: X's rows, q: the weight columns,
    c: the reduction), X's and the weights' tile values and tensors, Y, the activation dtype and the
    words' width (`per` values a word, `pairs` pairs (j, j + pairs) a word)."""
    p: str
    q: str
    c: str
    x: str
    w: str
    X: str
    W: str
    Y: str
    act: str
    bits: int
    coefs: tuple[str, ...]

    @property
    def per(self) -> int:
        return 32 // self.bits

    @property
    def pairs(self) -> int:
        return 16 // self.bits

    @property
    def vector(self) -> bool:
        return vector_words(self.bits)

    @property
    def at(self) -> int:
        """Pairs a shift of a word serves (`positions`)."""
        return positions(self.act, self.bits)

    @property
    def tile(self) -> str:
        """Words a column holds in a reduction tile."""
        return f"(BLOCK_{self.c} // {self.per})"


def _names(k: KernelIR) -> _Names:
    dot = the_dot(k)
    p, q = k.value(dot.out).axes
    x = next(n for n in dot.args[:2] if n != dot.via)
    w = dot.args[2]
    X, W = producer(k, x).tensor, producer(k, w).tensor
    return _Names(p, q, k.reduction, x, w, X, W, k.post[0].tensor, k.value(x).dtype, BITS[k.access(W, "load").dtype],
                  tuple(dot.args[3:]))


def _setup(k: KernelIR, n: _Names) -> list[str]:
    """Layouts, the tile and split-K share, the words' and X's pointers, the accumulator and the
    coefficients read once."""
    p, q, c, w, X, W, per, pairs, vector = n.p, n.q, n.c, n.w, n.X, n.W, n.per, n.pairs, n.vector
    wl = "WLOAD" if vector else "words"
    lines = [
        "NW: ttgl.constexpr = ttgl.num_warps()",
        "mma: ttgl.constexpr = ttgl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[NW, 1], instr_shape=[16, 8])",
        "op_w: ttgl.constexpr = ttgl.DotOperandLayout(0, mma, k_width=8)  # 8 consecutive reduction indices a thread",
        "op_x: ttgl.constexpr = ttgl.DotOperandLayout(1, mma, k_width=8)",
        "words: ttgl.constexpr = ttgl.SliceLayout(2, PAIRS)",
        *([f"BLOCKS: ttgl.constexpr = BLOCK_{q} // (16 * NW)  # 16-row blocks a warp's MMAs take"] if vector else []),
        "x_tile: ttgl.constexpr = ttgl.BlockedLayout([1, 8], [2, 16], [NW, 1], [1, 0])",
        f"cols: ttgl.constexpr = ttgl.SliceLayout(1, mma)  # {q}: the MMA's rows",
        f"rows: ttgl.constexpr = ttgl.SliceLayout(0, mma)  # {p}",
        f"tiles_{p} = (n_{p} + BLOCK_{p} - 1) // BLOCK_{p}",
        f"tiles_{q} = (n_{q} + BLOCK_{q} - 1) // BLOCK_{q}",
        "tile_id = ttgl.program_id(0)",
    ]
    lines += _coords(k, p, q)
    lines += [f"tiles_{c} = (n_{c} + BLOCK_{c} - 1) // BLOCK_{c}", f"lo_{c} = 0", f"hi_{c} = tiles_{c}"]
    if k.split_k is not None:
        lines += ["if SPLIT_K > 1:  # this program sums one contiguous share of the reduction tiles",
                  f"    per_split = (tiles_{c} + SPLIT_K - 1) // SPLIT_K",
                  f"    lo_{c} = ttgl.program_id(1) * per_split",
                  f"    hi_{c} = ttgl.minimum(lo_{c} + per_split, tiles_{c})"]
    lines += [
        f"# {w}: words of {per} values along {c}; a thread loads the words its operand fragments hold",
        *(["# (with STAGES = 2 loaded by column, a thread's columns consecutive (WLOAD), then renumbered by",
           "# the MMA's row: row r of the MMAs is column cq(r) of the tile below)"] if vector else []),
        f"wq = pid_{q} * BLOCK_{q} + ttgl.arange(0, BLOCK_{q}, layout=ttgl.SliceLayout(1, {wl}))",
        f"wc = ttgl.arange(0, BLOCK_{c} // {per}, layout=ttgl.SliceLayout(0, {wl}))",
        f"w_ptrs = p_{W} + {_step(k, W, c, 'wc[None, :]')} + {_step(k, W, q, 'wq[:, None]')}",
        f"w_rows = (n_{c} + {per - 1}) // {per}",
        *_shifts(n),
        f"# {n.x}: [MMA_N, BLOCK_{c}] rows of the row tile (MMA_N = max(BLOCK_{p}, 8): mma.sync's n)",
        "xr = ttgl.arange(0, MMA_N, layout=ttgl.SliceLayout(1, x_tile))",
        f"xp = pid_{p} * BLOCK_{p} + xr",
        f"xc = ttgl.arange(0, BLOCK_{c}, layout=ttgl.SliceLayout(0, x_tile))",
        f"x_ptrs = p_{X} + {_step(k, X, p, 'xp[:, None].to(ttgl.int64)')} + {_step(k, X, c, 'xc[None, :]')}",
        f"x_rows = (xr < BLOCK_{p}) & (xp < n_{p})",
        f"cq = pid_{q} * BLOCK_{q} + ttgl.arange(0, BLOCK_{q}, layout=cols)",
        *(["if STAGES == 2:  # gluon_layouts.row_column",
           f"    r = ttgl.arange(0, BLOCK_{q}, layout=cols)",
           f"    cq = pid_{q} * BLOCK_{q} + (r // 8) % 2 + 2 * (r // (16 * NW)) + 2 * BLOCKS * (r % 8) + 16 * BLOCKS * "
           "((r // 16) % NW)"] if vector else []),
        f"zeros = ttgl.zeros([BLOCK_{q}, MMA_N], ttgl.float32, mma)",
        "# BIAS's pair, OR-ed with a zero ptxas cannot fold (sizes are never negative): held in one register,",
        "# where as a constant it was re-materialised before each AND/OR (bench/results/decode-floor-*.json)",
        bias_register(f"BLOCK_{q}, BLOCK_{c} // {per}, {pairs}", MAGIC[n.act][0], "PAIRS", q),
        *_position_constants(n),
        f"v_{the_dot(k).out} = zeros",
    ]
    for coef in n.coefs:
        if c not in k.value(coef).axes:
            lines += _coefficient(k, coef, q, c, "0")
    return lines


def _shifts(n: _Names) -> list[str]:
    """`shifts`, pair j's shift of a word; with several pairs a shift (`positions`), also `at`, pair j's
    position in the shifted word."""
    j = f"ttgl.arange(0, {n.pairs}, layout=ttgl.SliceLayout(0, ttgl.SliceLayout(1, PAIRS)))"
    if n.at == 1:
        return [f"shifts = ttgl.expand_dims(ttgl.expand_dims({j} * {n.bits}, 0), 1)"]
    return [f"# pair j (values j, j + {n.pairs}) at position j % {n.at} of the word shifted right by (j // {n.at}) * "
            f"{n.at * n.bits} bits",
            f"j = {j}",
            f"at = ttgl.expand_dims(ttgl.expand_dims(j % {n.at}, 0), 1)",
            f"shifts = ttgl.expand_dims(ttgl.expand_dims((j // {n.at}) * {n.at * n.bits}, 0), 1)"]


def _position_constants(n: _Names) -> list[str]:
    """With several pairs a shift: each position's mask and BIAS (BIAS / 2^(bits p), its exponent less
    bits p; held in registers as BIAS's pair is), and each reduction index's BIAS_k as X's tile holds it."""
    if n.at == 1:
        return []
    shape = f"BLOCK_{n.q}, BLOCK_{n.c} // {n.per}, {n.pairs}"
    step = f"0x{(n.bits << MANTISSA[n.act]) * 0x00010001:08X}"
    bias = int(float(MAGIC[n.act][1]))
    return [f"masks = ttgl.full([{shape}], {_low(n.bits)}, ttgl.int32, PAIRS) << (at * {n.bits})",
            f"bias_pairs = bias_pairs - at * {step}  # BIAS_p: BIAS's exponent less {n.bits} p",
            f"# BIAS_k of reduction index k (value i = k % {n.per} of its word: pair i % {n.pairs}, position i % "
            f"{n.pairs} % {n.at})",
            f"x_bias = ({bias} >> ({n.bits} * (xc % {n.per} % {n.pairs} % {n.at}))).to(ttgl.float32)"]


def _low(bits: int) -> str:
    """The mask of a pair's two values at position 0 (bits 0 and 16 up)."""
    return f"0x{((1 << bits) - 1) * 0x00010001:08X}"


def _next_words(k: KernelIR, n: _Names) -> str:
    """The expression loading tile t_next's words (past the share's end the last tile again)."""
    tile = n.tile
    mask = f"(wq[:, None] < n_{n.q}) & (t_next * {tile} + wc[None, :] < w_rows)"
    words = f"_gl_load(w_ptrs + {_step(k, n.W, n.c, f'(t_next * {tile}).to(ttgl.int64)')}, {mask}, {_even(k, n.q, n.c)})"
    return f"_gl_rows({words}, NW, BLOCKS, words)" if n.vector else words


def _prologue(k: KernelIR, n: _Names, per_tile: list[str]) -> list[str]:
    """The words of the share's first tiles in flight (registers or the cp.async ring), X's first tile
    and its coefficients one tile ahead."""
    q, c, W = n.q, n.c, n.W
    tile = n.tile
    w_even = _even(k, q, c)
    return [
        "# the words of the next tiles load while this one is used: STAGES = 2, the next tile in registers;",
        "# STAGES > 2, STAGES - 1 tiles in flight through a ring in shared memory (cp.async), read back in",
        "# the words' layout. Past the share's end the last tile loads again rather than masked.",
        "if STAGES > 2:",
        "    copy: ttgl.constexpr = ttgl.BlockedLayout([4, 1], [8, 4], [NW, 1], [0, 1])  # 16 bytes along the columns",
        f"    ring = ttgl.allocate_shared_memory(ttgl.int32, [STAGES, BLOCK_{q}, {tile}], "
        "ttgl.SwizzledSharedLayout(8, 1, 4, order=[0, 1]))",
        f"    rq = pid_{q} * BLOCK_{q} + ttgl.arange(0, BLOCK_{q}, layout=ttgl.SliceLayout(1, copy))",
        f"    rc = ttgl.arange(0, {tile}, layout=ttgl.SliceLayout(0, copy))",
        f"    r_ptrs = p_{W} + {_step(k, W, c, 'rc[None, :]')} + {_step(k, W, q, 'rq[:, None]')}",
        "    for st in ttgl.static_range(STAGES - 1):",
        f"        t_next = ttgl.minimum(lo_{c} + st, hi_{c} - 1)",
        f"        _gl_copy(ring.index(st), r_ptrs + {_step(k, W, c, f'(t_next * {tile}).to(ttgl.int64)')}, "
        f"(rq[:, None] < n_{q}) & (t_next * {tile} + rc[None, :] < w_rows), {w_even})",
        "        _gl_async.commit_group()",
        f"    v_words = ttgl.zeros([BLOCK_{q}, {tile}], ttgl.int32, words)",
        "else:",
        f"    t_next = ttgl.minimum(lo_{c}, hi_{c} - 1)",
        f"    v_words = {_next_words(k, n)}",
        # X's tile and the tile's coefficients load one tile ahead too: each step then waits on no global load
        *_ahead(k, n.x, n.X, c, per_tile, q, f"ttgl.minimum(lo_{c}, hi_{c} - 1)"),
    ]


def _loop(k: KernelIR, n: _Names, per_tile: list[str]) -> list[str]:
    """The reduction loop's body: the next tiles' loads, this tile's operands and MMA, the chain's factor
    and offset applied to its sum."""
    q, c, x, W = n.q, n.c, n.x, n.W
    tile = n.tile
    dot = the_dot(k)
    acc = dot.out
    magic, bias = MAGIC[n.act]
    low = _low(n.bits)
    scale, offset = affine_terms(dot.fn, [f"r_{m}" for m in n.coefs])
    loop = [
        "if STAGES > 2:",
        "    _gl_async.wait_group(STAGES - 2)",
        "    _gl_barrier()  # every thread's copies of this tile landed; the slot read last step is free",
        f"    v_words = ring.index((it_{c} - lo_{c}) % STAGES).load(words)",
        f"    t_next = ttgl.minimum(it_{c} + STAGES - 1, hi_{c} - 1)",
        f"    _gl_copy(ring.index((it_{c} - lo_{c} + STAGES - 1) % STAGES), r_ptrs + (t_next * {tile}).to(ttgl.int64) * "
        f"s_{W}_{c}, (rq[:, None] < n_{q}) & (t_next * {tile} + rc[None, :] < w_rows), {_even(k, q, c)})",
        "    _gl_async.commit_group()",
        "    v_ahead = v_words",
        "else:",
        f"    t_next = ttgl.minimum(it_{c} + 1, hi_{c} - 1)",
        f"    v_ahead = {_next_words(k, n)}",
        f"v_{x} = {x}_ahead",
        *[f"r_{m} = r_{m}_ahead" for m in per_tile],
        *_ahead(k, x, n.X, c, per_tile, q, f"ttgl.minimum(it_{c} + 1, hi_{c} - 1)"),
    ]
    a_term = f"({scale})[:, None] * t_sum" if scale else "t_sum"
    if n.at > 1:  # each reduction index its own BIAS_k: the MMA starts from -sum(BIAS_k x_k), so t_sum = sum(v x)
        sums = [f"x_sum = ttgl.convert_layout(ttgl.reduce(v_{x}.to(ttgl.float32), 1, _gl_add), rows)"] if offset else []
        loop += [*sums, f"x_bias_sum = ttgl.convert_layout(ttgl.reduce(v_{x}.to(ttgl.float32) * x_bias[None, :], 1, "
                 "_gl_add), rows)", *_operands(x, n.act, magic, low, n.bits, c, q, n.at),
                 "t_sum = mma_v2(w_op, x_op, zeros - x_bias_sum[None, :])"]
        b_expr = offset
    else:  # BIAS leaves with the offset's sum of X
        loop += [f"x_sum = ttgl.convert_layout(ttgl.reduce(v_{x}.to(ttgl.float32), 1, _gl_add), rows)",
                 *_operands(x, n.act, magic, low, n.bits, c, q),
                 "t_sum = mma_v2(w_op, x_op, zeros)"]
        b_expr = f"({offset} - {bias} * {scale})" if offset and scale else (
            f"(-{bias} * {scale})" if scale else (f"({offset} - {bias})" if offset else f"-{bias}"))
    update = [f"b_{acc} = {b_expr} + ttgl.zeros([BLOCK_{q}], ttgl.float32, cols)",
              f"v_{acc} += {a_term} + b_{acc}[:, None] * x_sum[None, :]"] if b_expr else [f"v_{acc} += {a_term}"]
    return loop + update + ["v_words = v_ahead  # (the ring's words are read at the next step's top)"]


def _store(k: KernelIR, n: _Names) -> list[str]:
    """Y's tile stored, masked; under split-K the shares meet in the fp32 workspace first."""
    p, q, Y = n.p, n.q, n.Y
    acc = the_dot(k).out
    lines = [
        f"yp = pid_{p} * BLOCK_{p} + ttgl.arange(0, MMA_N, layout=rows)",
        f"y_mask = ((ttgl.arange(0, MMA_N, layout=rows) < BLOCK_{p}) & (yp < n_{p}))[None, :] & (cq < n_{q})[:, None]",
        f"y_ptrs = p_{Y} + {_step(k, Y, p, 'yp[None, :].to(ttgl.int64)')} + {_step(k, Y, q, 'cq[:, None]')}",
    ]
    out = f"v_{acc}.to({GL_DTYPES[k.access(Y, 'store').dtype]})"
    if k.split_k is None:
        return lines + [f"ttgl.store(y_ptrs, {out}, mask=y_mask)"]
    return lines + [
        "if SPLIT_K > 1:  # the shares of a tile meet in the fp32 workspace; the last to arrive finishes it",
        f"    ws_ptrs = ws_{acc} + yp[None, :].to(ttgl.int64) * n_{q} + cq[:, None]",
        f"    ttgl.store(ws_ptrs + ttgl.program_id(1).to(ttgl.int64) * n_{p} * n_{q}, v_{acc}, mask=y_mask)",
        "    _gl_barrier()",
        "    arrived = ttgl.atomic_add(ws_arrived + tile_id, 1, sem=\"acq_rel\", scope=\"gpu\")",
        "    if arrived == SPLIT_K - 1:",
        f"        v_{acc} = ttgl.load(ws_ptrs, mask=y_mask, other=0.0, cache_modifier=\".cg\")",
        "        for other in ttgl.static_range(1, SPLIT_K):",
        f"            v_{acc} += ttgl.load(ws_ptrs + other * n_{p} * n_{q}, mask=y_mask, other=0.0, "
        "cache_modifier=\".cg\")",
        "        ttgl.atomic_xchg(ws_arrived + tile_id, 0, sem=\"relaxed\", scope=\"gpu\")  # ready for the next call",
        f"        ttgl.store(y_ptrs, {out}, mask=y_mask)",
        "else:",
        f"    ttgl.store(y_ptrs, {out}, mask=y_mask)",
    ]


def render_gluon(k: KernelIR, positional: list[str]) -> list[str]:
    """The Gluon kernel `<name>_gluon_kernel` of a kernel IR the register_operand pass marked."""
    n = _names(k)
    per_tile = [m for m in n.coefs if n.c in k.value(m).axes]
    L: list[str] = ["@gluon.jit", f"def {k.name}_gluon_kernel("]
    L += [f"    {a}," for a in positional]
    L += [f"    {m}: ttgl.constexpr," for m in constexprs(k)]
    L += [f"    {m}: ttgl.constexpr," for m in ["MMA_N", "PAIRS", *(["WLOAD"] if n.vector else []), "STAGES"]] + ["):"]
    body = _setup(k, n) + _prologue(k, n, per_tile) + [f"for it_{n.c} in range(lo_{n.c}, hi_{n.c}):"]
    body += ["    " + ln for ln in _loop(k, n, per_tile)]
    body += _store(k, n)
    return L + ["    " + ln for ln in body]


def render_gluon_host(k: KernelIR) -> list[str]:
    """`gluon_launch_args` / `gluon_launch`: the Triton kernel's arguments, this kernel's constants."""
    names = constexprs(k)
    dot = the_dot(k)
    p, q = k.value(dot.out).axes
    bits = BITS[k.access(producer(k, dot.args[2]).tensor, "load").dtype]
    return [
        "def gluon_launch_args(cfg, t, n, c):",
        '    """The register-operand kernel\'s arguments: the Triton kernel\'s, its layouts."""',
        "    from tilesched.backends.cuda.gluon_layouts import pairs_layout" + (", words_load_layout" if vector_words(bits) else ""),
        "",
        "    args, kw = launch_args(cfg, t, n, c)",
        f"    consts = {{name: kw[name] for name in {names!r}}}",
        f"    consts[\"MMA_N\"] = max(kw[\"BLOCK_{p}\"], 8)",
        f"    consts[\"PAIRS\"] = pairs_layout(kw[\"BLOCK_{q}\"], kw[\"BLOCK_{k.reduction}\"], cfg.num_warps, {bits})",
        *([f"    consts[\"WLOAD\"] = words_load_layout(kw[\"BLOCK_{q}\"], kw[\"BLOCK_{k.reduction}\"], cfg.num_warps, {bits})"]
          if vector_words(bits) else []),
        "    consts[\"STAGES\"] = cfg.num_stages  # 2: the next tile's words in registers; more: a cp.async ring",
        "    # at most 128 registers a thread: 16 warps share an SM (two CTAs of 8 warps); measured faster at",
        "    # M = 16 than the compiler's choice (bench/results/lowbit-register-operand-*.json)",
        "    return args, dict(num_warps=cfg.num_warps, maxnreg=128, **consts)",
        "",
        "",
        "def gluon_launch(cfg, t, n, c):",
        "    args, kwargs = gluon_launch_args(cfg, t, n, c)",
        f"    {k.name}_gluon_kernel[cfg.grid](*args, **kwargs)",
    ]
