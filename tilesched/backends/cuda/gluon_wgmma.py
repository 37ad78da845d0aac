"""Render the register-operand schedule (tilesched/passes/register_operand.py) on Hopper's wgmma,
for row tiles past mma.sync's 16 (or any, where the option's value is "wgmma": wgmma's n of 8 at least).

The kernel computes acc^T[q, p] = W^T[q, c] X^T[c, p]: the weights are wgmma's first operand,
which it reads from registers, and X's tile its second, from shared memory. Three Gluon functions:
  - `<name>_wgmma_kernel`: a CTA per (BLOCK_<p>, BLOCK_<q>) tile and split-K share; sets up a ring of STAGES slots
    (X's tile and each consumer's tile of packed words, `ready` / `empty` barriers) and forks;
  - `<name>_wgmma_loader` (one warp): TMA loads of X's tile [BLOCK_<p>, BLOCK_<c>] and the words
    [BLOCK_<c> / per, 64] of each consumer's columns into the next free slot (TMA zero-fills past
    the tensors' ends: ragged rows and reduction);
  - `<name>_wgmma_consumer` (a warpgroup per 64 weight columns): reads the words whose values its
    operand fragment holds (gluon_layouts.wgmma_pairs_bases: a thread's k_width-2 pairs of
    consecutive values), moves each pair into the halves of one register (a 4-bit pair is a byte
    of its word: PRMT, a multiply and one LOP3; 2-bit ones by shifts) and ORs it into the
    mantissa of BIAS (BIAS + v: 128 for bf16, 1024 for fp16), then runs the spec's dequantisation
    chain in packed 16-bit arithmetic (x2 instructions; BIAS leaves with the first zero point when
    that is an integer BIAS + z represents exactly, else on its own; a product then a sum is one
    fma), and issues the wgmma, the accumulator in registers over the whole reduction. Weights
    stored one to a byte (uint8, int8) load from the ring as the operand's values instead, a
    thread's two rows as adjacent columns (16-bit loads; gluon_layouts.wgmma_byte_words_bases: MMA row
    r computes column byte_row_column(r), its coefficients and outputs follow), and run the
    chain in fp32 (1.5 x 2^23 + v by one integer add; exact, then one rounding; (v - z) s with
    bf16 scales ends in one bf16x2 multiply of the exact v - z instead: PAIR_SCALE).
Each consumer waits for its own MMA before dequantising its next tile: ptxas reuses the operand's
registers while an MMA still reads them (garbage on the device with wgmma wait 1, no warning); kept
live as a dependency of the wait it is right but no faster at 16 rows and 1.4x slower at 256
(bench/results/wgmma-decode-registers-overlap-*.json), so the overlap comes from the other
warpgroup or CTA; within a tile, a K tile of 128 is dequantised in parts (bytes four at row tiles
past 16, 4-bit words two at any), each part's MMA issued before the next part is dequantised
(_tile_parts: 8 bits 2-7 % faster at M = 1024, 4-6 % at 128; 4 bits -2 to +4 %, 1-7 % and, at the
decode tiles of M = 16, 0.5-3 %); with two consumers at 128 rows and more, they take turns on the
tensor cores (mbarriers `turn`), measured equal or faster at 256 (bench/results/lowbit-wgmma-*.json).
The reduction loop runs at least once: with a zero-trip path ptxas serialises the MMAs (C7515).
The scales and zero points of a tile's group load one tile ahead by pointers, as in the mma.sync
kernel (gluon_emit.py); Y is stored by pointers, masked. Positional arguments are the Triton
kernel's, after the two descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass

from tilesched.backends.cuda import gluon_emit
from tilesched.backends.cuda.gluon_attention import _names_in
from tilesched.backends.cuda.gluon_emit import GL_DTYPES, _coefficient, _coords, _step, bias_register
from tilesched.backends.cuda.gluon_triple import (
    TEN_STEP,
    TRIPLE_OFFSET,
    TRIPLE_PAIR,
    TRIPLE_ROW,
    TRIPLE_SHIFTS,
    TRIPLE_SLOT,
    triple_words_helper,
)
from tilesched.ir.dtypes import BITS
from tilesched.passes.kernel import Instr, KernelIR, producer
from tilesched.passes.register_operand import (
    DECODE_REGISTERS,
    WGMMA_COLUMNS,
    WGMMA_MIN_N,
    byte_weights,
    ten_weights,
    the_dot,
    word_bits,
)

IMPORTS = """from triton.experimental import gluon
from triton.experimental.gluon import language as ttgl
from triton.experimental.gluon.language.nvidia import hopper as _gl_hopper
from triton.experimental.gluon.language.nvidia.hopper import mbarrier as _gl_mbarrier
from triton.experimental.gluon.language.nvidia.hopper import tma as _gl_tma"""

# activation dtype: (BIAS, BIAS + 0 twice as a 32-bit word, the largest integer exact beside BIAS, PTX type)
PACKED = {"bf16": (128, "0x43004300", 256, "bf16x2"), "fp16": (1024, "0x64006400", 2048, "f16x2")}
# whole-byte weights run the chain in fp32: 1.5 x 2^23 plus a small integer of either sign, added to its
# bits, is that float exactly; the chain's (v - z) s is exact in fp32 and rounds once to 16 bits
FP32_BIAS, FP32_BIAS_BITS, FP32_ROOM = 12582912, "0x4B400000", 1 << 22
# a 4-bit pair (2j, 2j + 1) is byte j of its word: PRMT moves the byte to the bottom (zeros above), x 0x1001
# copies it 12 bits up (the high nibble lands at 16-19), one LOP3 keeps both nibbles and ORs BIAS in
# (three instructions where a shift by the lane's amount took four to five)
BYTE_SELECT = 0x4440  # PRMT selector: output byte 0 from byte j of the word, bytes 1-3 from the zero operand
# a 16-bit word's two bytes into the low byte of fp32 BIAS (0x4B400000, 1.5 x 2^23): BIAS + v each
# (two words a register as loaded: $0, $1 the low bytes of words 0 and 1, $2, $3 their high bytes)
BYTE_FP32 = "prmt.b32 $0, $4, $5, 0x7650; prmt.b32 $1, $4, $5, 0x7652; prmt.b32 $2, $4, $5, 0x7651; " \
            "prmt.b32 $3, $4, $5, 0x7653;"
NIBBLE_PAIR = "{ .reg .b32 x; prmt.b32 x, $1, 0, $2; mul.lo.u32 x, x, 4097; lop3.b32 $0, x, 0x000F000F, $3, 0xEA; }"
# v - z of bytes (|v - z| <= 255: 8 significant bits) is exact in bf16, so a pair's fp32 values truncate to
# their top halves (one PRMT) and one bf16x2 multiply by the scale rounds the exact product once: the same
# bits as the fp32 product rounded by cvt, without the conversion (F2FP, a slow pipe on Hopper)
PAIR_SCALE = "{ .reg .b32 t; prmt.b32 t, $1, $2, 0x7632; mul.rn.bf16x2 $0, t, $3; }"
REGISTERS = (232, 24)  # a second consumer warpgroup's registers a thread, the loader's
# decode row tiles (wgmma's n up to 16): registers a thread capped by the number of consumer warpgroups, the
# consumers' too; the compiler's 168-255 left one CTA an SM, each consumer waiting on its own small MMAs (at
# M = 16, N = 28672: 82 -> 67 us: bench/results/wgmma-decode-registers-*.json). The loader's warp is launched
# as a whole warpgroup, so a CTA is 8 warps with one consumer and 12 with two: 96 a thread keeps two CTAs an
# SM with one consumer, 80 two with two consumers (at 96 they ran one CTA an SM, 20.8 -> 27.9 us at M = 16,
# 8192², 58.9 -> 84.6 us at N = 28672: bench/results/lowbit-decode-cap96-a-*.json). Lower caps were faster
# with one consumer and wrong: at 64, under split-K at N = 28672 one accumulator register of the first warp
# (output row 0, the tile's first 8 columns) came back corrupted in 12-33 % of the calls
# (bench/results/wgmma-decode-register-cap-*.json); at 80 (three CTAs an SM) with 4 stages (64 columns,
# M = 1, N = 28672) two adjacent columns came back wrong in 21 of 60 calls without split-K, and in
# 304-390 of 400 with four shares, where 2 and 8 stages, and caps of 96, 128 and none, never did
# (decode-register-cap-stages-*.json, decode-stages-split-repeat-*.json)
DECODE_N = 16  # the caps by consumer warpgroups: register_operand.DECODE_REGISTERS (the cost model reads them too)


def _integral(k: KernelIR, n: str, room: int) -> bool:
    """Whether coefficient n holds integers of at most `room` in magnitude (BIAS +- n is exact)."""
    dtype = k.access(producer(k, n).tensor, "load").dtype
    if not dtype.startswith(("uint", "int")):
        return False
    bits = BITS[dtype]
    return (1 << bits) - 1 <= room if dtype.startswith("uint") else 1 << (bits - 1) <= room


def chain_steps(k: KernelIR, dot: Instr, bias: int, room: int) -> list[tuple[str, ...]]:
    """The dequantisation chain as operations on t = BIAS + v, each (op, operands): operands are fp32
    column expressions, none for BIAS itself; BIAS leaves with the first zero point that is an
    integer of at most `room` (BIAS + z exact), else on its own; a product then a sum is one fma."""
    coefs = iter(dot.args[3:])
    pending = True  # t still holds BIAS
    steps: list[tuple[str, ...]] = []
    for f, const in dot.fn:
        if f == "cast":
            continue
        n = None if const is not None else next(coefs)
        y = const if n is None else f"r_{n}"
        if f in ("add", "bias", "sub"):
            if pending and n is not None and _integral(k, n, room):
                steps.append(("sub", f"({bias}.0 + {y})" if f == "sub" else f"({bias}.0 - {y})"))
                pending = False
                continue
            if pending:
                steps.append(("sub",))
                pending = False
            steps.append(("sub" if f == "sub" else "add", y))
        else:  # mul, scale, div
            if pending:
                steps.append(("sub",))
                pending = False
            steps.append(("mul", y if f != "div" else f"(1.0 / {y})"))
    if pending:
        steps.append(("sub",))
    fused: list[tuple[str, ...]] = []
    for s in steps:  # a product then a sum: one fma, one rounding
        if fused and fused[-1][0] == "mul" and s[0] in ("add", "sub") and len(s) == 2:
            a = fused.pop()[1]
            fused.append(("fma", a, s[1] if s[0] == "add" else f"(-{s[1]})"))
        else:
            fused.append(s)
    return fused


def chain_asm(steps: list[tuple[str, ...]], act: str) -> tuple[str, list[str]]:
    """The inline PTX of the steps ($0, $1 the halves out, $2 the pairs in) and its operands' expressions."""
    _, magic, _, ptx = PACKED[act]
    operands: list[str] = []
    body, cur = [], "$2"
    for op, *args in steps:
        regs = []
        for a in args:
            operands.append(a)
            regs.append(f"${2 + len(operands)}")
        if not args:  # BIAS itself
            body.append(f"mov.b32 b, {magic}; sub.rn.{ptx} t, {cur}, b;")
        elif op == "fma":
            body.append(f"fma.rn.{ptx} t, {cur}, {regs[0]}, {regs[1]};")
        else:
            body.append(f"{op}.rn.{ptx} t, {cur}, {regs[0]};")
        cur = "t"
    return "{ .reg .b32 t, b; " + " ".join(body) + " mov.b32 {$0, $1}, t; }", operands


def chain_fp32(steps: list[tuple[str, ...]], bias: int) -> tuple[list[str], list[str]]:
    """Lines applying the steps to `f` (fp32, BIAS + v) with column operands o<j>, and their expressions."""
    lines, operands = [], []

    def operand(e: str) -> str:
        operands.append(e)
        return f"o{len(operands) - 1}"

    for op, *args in steps:
        if not args:
            lines.append(f"f = f - {bias}.0")
        elif op == "fma":
            lines.append(f"f = f * {operand(args[0])} + {operand(args[1])}")
        else:
            lines.append(f"f = f {dict(sub='-', add='+', mul='*')[op]} {operand(args[0])}")
    return lines, operands


def pair_scale(k: KernelIR, dot: Instr, act: str) -> str | None:
    """The scale coefficient of a whole-byte chain that multiplies in bf16 pairs (PAIR_SCALE), or None:
    the chain is (v - z) * s or v * s with z an 8-bit integer (v - z exact in bf16) and s stored as bf16
    (exact there, so one bf16 rounding of the exact product is the fp32 product rounded to bf16)."""
    fns = [(f, const) for f, const in dot.fn if f != "cast"]
    coefs = dot.args[3:]
    if act != "bf16" or [f for f, _ in fns] not in (["sub", "mul"], ["mul"]) or any(c for _, c in fns):
        return None
    dtypes = [k.access(producer(k, n).tensor, "load").dtype for n in coefs]
    if dtypes[-1] != act or any(d not in ("uint8", "int8") for d in dtypes[:-1]):
        return None
    return coefs[-1]


def constexprs(k: KernelIR) -> list[str]:
    """The kernel's compile-time arguments taken from the Triton launch's constexprs by name: the
    mma.sync kernel's."""
    return gluon_emit.constexprs(k)


def _parts(k: KernelIR):
    dot = the_dot(k)
    p, q = k.value(dot.out).axes
    x = next(n for n in dot.args[:2] if n != dot.via)
    X, W = producer(k, x).tensor, producer(k, dot.args[2]).tensor
    return dot, p, q, k.reduction, x, X, W, k.post[0].tensor


@dataclass(frozen=True)
class _Operand:
    """How the weights' format becomes wgmma's register operand: bytes (uint8, int8: the chain in fp32, its
    last product in bf16 pairs where `scale` names the scale: PAIR_SCALE), 3-bit words (ten a word) or
    packed words of 2 or 4 bits (the chain in 16-bit pairs by `asm`); `operands` are the chain's column
    expressions, o<j> in the kernel."""
    act: str
    bits: int
    whole: bool
    ten: bool
    signed: bool
    scale: str | None
    fp32_lines: tuple[str, ...]
    asm: str
    operands: tuple[str, ...]

    @property
    def dt(self) -> str:
        return GL_DTYPES[self.act]

    def pair(self, j: int | str, e: str) -> str:
        """The line making column operand o<j> (o_s: the scale in bf16, a pair a register in PAIR_SCALE)."""
        if j == "s":
            return f"o_s = ttgl.expand_dims(({e} + zc).to({self.dt}), 1)"
        if self.whole:
            return f"o{j} = ttgl.expand_dims({e} + zc, 1)"
        return f"o{j} = ttgl.expand_dims(ttgl.expand_dims(_gl_splat_pair({e} + zc, {self.dt}), 1), 2)"

    @property
    def paired(self) -> list[tuple[int | str, str]]:
        return list(enumerate(self.operands)) + ([("s", f"r_{self.scale}")] if self.scale else [])

    @property
    def parts(self) -> int:
        """Parts a K tile of 128 is dequantised in (_tile_parts): bytes 4 at tiles past 16 rows (32 rows of the
        ring each); 4-bit words 2 at every row tile (8 rows of 16: a part must not split the ring's
        swizzling pattern); else 1."""
        return BYTE_PARTS if self.whole else 2 if self.bits == 4 and not self.ten else 1

    def words_rows(self, c: str) -> str:
        """The rows of a consumer's tile of the weights in the ring: bytes one a row, packed words BLOCK / per."""
        return f"BLOCK_{c}" if self.whole else f"BLOCK_{c} * {self.bits} // 32"

    @property
    def layout(self) -> list[str]:
        """The consumer's layout constants."""
        if self.whole:
            return ["WORDS_L", "WORDS_P", "PARTS", "BY_COLUMN"]
        if self.parts > 1:
            return ["PAIRS3", "PAIRS_P", "PARTS", "BY_COLUMN"]
        return ["PAIRS3", "BY_COLUMN"] + (["WHOLE_STEPS"] if self.ten else [])


def _operand(k: KernelIR) -> _Operand:
    dot, *_, x, _, W, _ = _parts(k)
    act = k.value(x).dtype
    whole = byte_weights(k)
    signed = k.access(W, "load").dtype == "int8"  # its bytes flip their top bit: v + 128, unsigned
    scale = pair_scale(k, dot, act) if whole else None
    fp32_lines, asm = [], ""
    if whole:  # bytes: the chain in fp32 on the operand's own layout (its last product in bf16 pairs: PAIR_SCALE)
        bias = FP32_BIAS + 128 * signed
        steps = chain_steps(k, dot, bias, FP32_ROOM)
        fp32_lines, operands = chain_fp32(steps[:-1] if scale else steps, bias)
    else:  # packed words: the chain in 16-bit pairs
        bias, _, exact, _ = PACKED[act]
        steps = chain_steps(k, dot, bias, exact - bias)
        asm, operands = chain_asm(steps, act)
    # 3-bit tiles take words as 4-bit ones do (a quad of pairs from the lane's word pair)
    return _Operand(act, word_bits(k), whole, ten_weights(k), signed, scale, tuple(fp32_lines), asm, tuple(operands))


def _decode_setup(op: _Operand, c: str, q: str) -> list[str]:
    """The consumer's lines before its loop that the format needs: the weight columns' layout and
    indices, the constants its decode reads."""
    if op.whole:
        lines = ["cols: ttgl.constexpr = ttgl.SliceLayout(1, a_l)",
                 bias_register(f"{WGMMA_COLUMNS // 2}, BLOCK_{c}", FP32_BIAS_BITS, "WORDS_L", q),
                 bias_register(f"{WGMMA_COLUMNS // 2}, BLOCK_{c} // PARTS", FP32_BIAS_BITS, "WORDS_P", q, "bias_parts"),
                 f"cq = q0 + _gl_byte_columns(ttgl.arange(0, {WGMMA_COLUMNS}, layout=cols))  # the weight column of "
                 "each MMA row"]
    else:
        lines = ["words_l: ttgl.constexpr = ttgl.SliceLayout(2, PAIRS3)",
                 "cols: ttgl.constexpr = ttgl.SliceLayout(1, words_l)",
                 f"cq = q0 + ttgl.arange(0, {WGMMA_COLUMNS}, layout=cols)  # this warpgroup's weight columns"]
    lines.append(f"zc = ttgl.zeros([{WGMMA_COLUMNS}], ttgl.float32, cols)")
    if op.whole:
        return lines
    bits, magic = op.bits, PACKED[op.act][1]
    lines.append(f"j = ttgl.arange(0, {16 // bits}, layout=ttgl.SliceLayout(0, ttgl.SliceLayout(1, PAIRS3)))")
    if op.ten:  # quad m (pairs 4m + j) of tile t starts (t * BLOCK / 2) % 5 pairs into its first word
        return lines + [
            "quad = ttgl.expand_dims(ttgl.expand_dims(ttgl.arange(0, "
            f"BLOCK_{c} // 8, layout=ttgl.SliceLayout(0, ttgl.SliceLayout(2, PAIRS3))), 0), 2)",
            "lane = ttgl.expand_dims(ttgl.expand_dims(j, 0), 1)",
            bias_register(f"{WGMMA_COLUMNS}, BLOCK_{c} // 8, 4", magic, "PAIRS3", q),
        ]
    if bits == 4:  # pair j: byte j (values 2j, 2j + 1); BIAS's pair a register (no constant to re-materialise)
        return lines + [
            f"sel = ttgl.expand_dims(ttgl.expand_dims(j + 0x{BYTE_SELECT:X}, 0), 1)  # PRMT: byte j, zeros above",
            bias_register(f"{WGMMA_COLUMNS}, BLOCK_{c} // {32 // bits}, {16 // bits}", magic, "PAIRS3", q),
            "# the same over a part of the K tile (PAIRS_P, _tile_parts)",
            "words_p: ttgl.constexpr = ttgl.SliceLayout(2, PAIRS_P)",
            f"sel_p = ttgl.expand_dims(ttgl.expand_dims(ttgl.arange(0, {16 // bits}, layout=ttgl.SliceLayout(0, "
            f"ttgl.SliceLayout(1, PAIRS_P))) + 0x{BYTE_SELECT:X}, 0), 1)",
            bias_register(f"{WGMMA_COLUMNS}, BLOCK_{c} // PARTS // {32 // bits}, {16 // bits}", magic, "PAIRS_P", q,
                          "bias_parts"),
        ]
    return lines + [f"shifts = ttgl.expand_dims(ttgl.expand_dims(j * {2 * bits}, 0), 1)  # pair j: values 2j and 2j + 1"]


def _decode_tile(op: _Operand, c: str, part: int | None = None) -> list[str]:
    """The loop's lines that read this warpgroup's tile of the ring's slot and decode it into `a`, the
    MMA's register operand (bytes: or part `part` of PARTS along the reduction, into `a<part>`)."""
    dt = op.dt
    if op.whole:
        a = "a" if part is None else f"a{part}"
        product = (f"{a} = ttgl.inline_asm_elementwise(\"{PAIR_SCALE}\", \"=r,r,r,r\", [f, o_s], dtype={dt}, "
                   "is_pure=True, pack=2)  # v - z exact: its top halves, times the scale in bf16 pairs") if op.scale else \
            f"{a} = f.to({dt})"
        words, width, layout, bias = "w_ring.index(slot * CONSUMERS + wg)", f"BLOCK_{c}", "WORDS_L", "bias_pairs"
        if part is not None:
            words, width, layout, bias = (f"{words}.slice({part} * BLOCK_{c} // PARTS, BLOCK_{c} // PARTS, 0)",
                                          f"BLOCK_{c} // PARTS", "WORDS_P", "bias_parts")
        return [
            *(["# a thread's two rows are adjacent columns: a 16-bit word holds both bytes of a reduction index"]
              if part is None else []),
            f"w2 = {words}.permute((1, 0)).load({layout})",
            *(["w2 = w2 ^ 0x8080"] if op.signed else []),
            *(["# each byte into the low byte of BIAS: BIAS + v as fp32, exactly, one PRMT a value"] if part is None else []),
            f"lo, hi = ttgl.inline_asm_elementwise(\"{BYTE_FP32}\", \"=r,=r,=r,=r,r,r,r\", [w2, {bias}], "
            "dtype=(ttgl.float32, ttgl.float32), is_pure=True, pack=2)",
            f"f = _gl_byte_rows(ttgl.reshape(ttgl.permute(ttgl.join(lo, hi), (0, 2, 1)), [{WGMMA_COLUMNS}, {width}]), a_l)",
            *op.fp32_lines,
            product,
        ]
    n = len(op.operands)
    ops = ", ".join(["pairs"] + [f"o{j}" for j in range(n)])
    if op.ten:
        pairs = [
            "# tile t's first pair lies (t * BLOCK / 2) % 5 pairs into its first word (t % 5 is the step)",
            f"lo, hi = _gl_triple_words(words, {TRIPLE_OFFSET.replace('BLOCK', f'BLOCK_{c}')})  # each quad's words",
            f"u = {TRIPLE_SLOT.replace('BLOCK', f'BLOCK_{c}')}  # the pair's slot in lo (0-4) or in hi (5-7)",
            f"lo, at = ttgl.broadcast(ttgl.expand_dims(ttgl.convert_layout(lo, words_l), 2), {TRIPLE_SHIFTS[0]})",
            f"hi, at_hi = ttgl.broadcast(ttgl.expand_dims(ttgl.convert_layout(hi, words_l), 2), {TRIPLE_SHIFTS[1]})",
            f"pairs = ttgl.inline_asm_elementwise(\"{TRIPLE_PAIR}\", \"=r,r,r,r,r,r\", [lo, hi, at, at_hi, bias_pairs], "
            "dtype=ttgl.int32, is_pure=True, pack=1)  # BIAS + v, both halves",
        ]
        by_column = "if BY_COLUMN:"
    elif op.bits == 4:
        sel, bias = ("sel", "bias_pairs") if part is None else ("sel_p", "bias_parts")
        pairs = [f"w3, s3 = ttgl.broadcast(ttgl.expand_dims(words, 2), {sel})",
                 f"pairs = ttgl.inline_asm_elementwise(\"{NIBBLE_PAIR}\", \"=r,r,r,r\", [w3, s3, {bias}], "
                 "dtype=ttgl.int32, is_pure=True, pack=1)  # BIAS + v, both halves"]
        by_column = "if BY_COLUMN:  # (decode tiles) a thread's two rows are adjacent columns: one 64-bit load of two words"
    else:
        low = (1 << op.bits) - 1
        pairs = ["v = ttgl.expand_dims(words, 2) >> shifts",
                 f"pairs = (v & 0x{low:X}) | ((v << {16 - op.bits}) & 0x{low << 16:X}) | {PACKED[op.act][1]}  "
                 "# BIAS + v, both halves"]
        by_column = "if BY_COLUMN:  # (decode tiles) a thread's two rows are adjacent columns: one 64-bit load of two words"
    words, layout, width, a, o = "w_ring.index(slot * CONSUMERS + wg)", "words_l", f"BLOCK_{c}", "a", "o"
    if part is not None:  # (_tile_parts) its rows of the tile's words, its layouts, its column operands (`op<j>`)
        rows = f"{op.words_rows(c)} // PARTS"
        words, layout, width, a, o = (f"{words}.slice({part} * {rows}, {rows}, 0)", "words_p", f"BLOCK_{c} // PARTS",
                                      f"a{part}", "op")
        ops = ", ".join(["pairs"] + [f"op{j}" for j in range(n)])
    return [
        f"words = {words}.permute((1, 0)).load({layout})",
        *pairs,
        *[f"pairs, {o}{j} = ttgl.broadcast(pairs, {o}{j})" for j in range(n)],
        f"lo, hi = ttgl.inline_asm_elementwise(\"{op.asm}\", \"=h,=h{',r' * (1 + n)}\", [{ops}], "
        f"dtype=({dt}, {dt}), is_pure=True, pack=1)",
        f"{a} = ttgl.reshape(ttgl.join(lo, hi), [{WGMMA_COLUMNS}, {width}])",
        by_column,
        f"    {a} = _gl_byte_rows({a}, a_l)",
        "else:",
        f"    {a} = ttgl.convert_layout({a}, a_l, assert_trivial=True)",
    ]


def _store(k: KernelIR) -> list[str]:
    """The consumer's lines after its loop: Y's tile stored by pointers, masked (under split-K, the
    shares meet first and the last stores)."""
    dot, p, q, _, _, _, _, Y = _parts(k)
    store = [
        "st_l: ttgl.constexpr = ttgl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])",
        f"out = ttgl.permute(acc.to({GL_DTYPES[k.access(Y, 'store').dtype]}), (1, 0))",
        "if BY_COLUMN:  # MMA row r is column _gl_byte_columns(r)",
        "    out = _gl_byte_columns_order(out)",
        "out = ttgl.convert_layout(out, st_l)",
        "yr = ttgl.arange(0, WG_N, layout=ttgl.SliceLayout(1, st_l))",
        f"yp = off_{p} + yr",
        f"yq = q0 + ttgl.arange(0, {WGMMA_COLUMNS}, layout=ttgl.SliceLayout(0, st_l))",
        f"y_ptrs = p_{Y} + {_step(k, Y, p, 'yp[:, None].to(ttgl.int64)')} + {_step(k, Y, q, 'yq[None, :]')}",
        f"ttgl.store(y_ptrs, out, mask=((yr < BLOCK_{p}) & (yp < n_{p}))[:, None] & (yq < n_{q})[None, :])",
    ]
    if k.split_k is None:
        return store
    return (_meet(k, p, q, dot.out) + ["if ttgl.program_id(1) == SPLIT_K - 1:  # the tile's last share stores it"]
            + ["    " + ln for ln in store])


TURN_WAIT = ["if PINGPONG:  # the warpgroups take turns on the tensor cores: one dequantises while the other multiplies",
             "    _gl_mbarrier.wait(turn.index(wg), i & 1)"]
TURN_PASS = ["if PINGPONG:", "    _gl_mbarrier.arrive(turn.index(1 - wg), count=1)"]
BYTE_PARTS = 4  # bytes: a wide tile's K tile of 128 in four parts of 32 (two: 1-2 % slower, wgmma-wide-halves-*.json)


def _tile_parts(op: _Operand, c: str) -> list[str]:
    """Wide tiles (bytes, 4-bit words): the K tile dequantised in PARTS parts (op.parts), each part's MMA
    issued before the next part is dequantised, so the tensor cores start on a tile after a part of its
    dequantisation (the 8-bit 256-row tiles without any ran at x1.01-1.05 bf16 cuBLAS, with it whole
    before their MMA at x0.84-0.95: bench/results/wgmma-wide-bound-*.json). A part's words load from
    the ring after the wait before it, a wait for all but the groups issued so far, which waits on
    nothing: it keeps ptxas from sinking a part's MMAs below the next part's dequantisation. The parts'
    operands stay live until the last wait: ptxas would reuse their registers while the MMAs read them."""
    parts = op.parts
    lines = ["# the K tile in parts: part h's MMA issued before part h + 1 is dequantised",
             f"ttgl.static_assert(PARTS == {parts})"]
    if not op.whole:  # the column operands in the parts' layout (rows as PAIRS3's: no data moves)
        lines += [f"op{j} = ttgl.convert_layout(o{j}, PAIRS_P)" for j in range(len(op.operands))]
    for h in range(parts):
        x = f"x_ring.index(slot).slice({h} * BLOCK_{c} // PARTS, BLOCK_{c} // PARTS, 1).permute((1, 0))"
        lines += _decode_tile(op, c, h)
        if h == 0:
            lines += TURN_WAIT + [f"tok = _gl_hopper.warpgroup_mma(a0, {x}, acc, use_acc=i > 0, is_async=True)"]
        else:
            lines.append(f"tok = _gl_hopper.warpgroup_mma(a{h}, {x}, tok, is_async=True)")
        if h < parts - 1:
            lines.append(f"tok = _gl_hopper.warpgroup_mma_wait({h + 1}, deps=[tok])  # waits on nothing")
    live = ", ".join(f"a{h}" for h in range(parts))
    return lines + TURN_PASS + [f"acc = _gl_hopper.warpgroup_mma_wait(0, deps=[tok, {live}])[0]"]


def _consumer_body(k: KernelIR, op: _Operand) -> list[str]:
    """The consumer's body: set-up, the reduction loop (tile i of its share: coefficients one tile ahead,
    the decode, the MMA, the slot released), the store."""
    dot, p, q, c, *_ = _parts(k)
    coefs = dot.args[3:]
    per_tile = [n for n in coefs if c in k.value(n).axes]
    once = [n for n in coefs if c not in k.value(n).axes]
    tile = "ttgl.minimum(t + 1, last_t)"  # the next tile's group (past the end, the last again)

    def varies(e: str) -> bool:
        return any(f"r_{n}" in e for n in per_tile)

    before = [
        "acc_l: ttgl.constexpr = ttgl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], "
        "instr_shape=[16, WG_N, 16])",
        "a_l: ttgl.constexpr = ttgl.DotOperandLayout(operand_index=0, parent=acc_l, k_width=2)",
        *_decode_setup(op, c, q),
        f"acc = ttgl.zeros([{WGMMA_COLUMNS}, WG_N], ttgl.float32, acc_l)",
        f"last_t = ttgl.maximum((n_{c} + BLOCK_{c} - 1) // BLOCK_{c} - 1, 0)  # the coefficients' last tile",
    ]
    for n in once:
        before += _coefficient(k, n, q, c, "0")
    for n in per_tile:
        before += _coefficient(k, n, q, c, "ttgl.minimum(t0, last_t)", f"r_{n}_next")
    before += [op.pair(j, e) for j, e in op.paired if not varies(e)]
    loop = ["t = t0 + i", *[f"r_{n} = r_{n}_next" for n in per_tile]]
    for n in per_tile:
        loop += _coefficient(k, n, q, c, tile, f"r_{n}_next")
    loop += [op.pair(j, e) for j, e in op.paired if varies(e)]
    loop += ["slot = i % STAGES", "_gl_mbarrier.wait(ready.index(slot), (i // STAGES) & 1)"]
    whole = [*_decode_tile(op, c), *TURN_WAIT,
             "tok = _gl_hopper.warpgroup_mma(a, x_ring.index(slot).permute((1, 0)), acc, use_acc=i > 0, is_async=True)",
             *TURN_PASS,
             "# the MMA ends before the next tile is dequantised: ptxas reuses its operand's registers",
             "acc = _gl_hopper.warpgroup_mma_wait(0, deps=[tok])"]
    if op.parts > 1:  # wide tiles in parts (_tile_parts)
        loop += ["if PARTS == 1:", *["    " + ln for ln in whole], "else:", *["    " + ln for ln in _tile_parts(op, c)]]
    else:
        loop += whole
    loop.append("_gl_mbarrier.arrive(empty.index(slot), count=1)")
    if not op.ten:
        return before + ["for i in range(k_tiles):"] + ["    " + ln for ln in loop] + _store(k)
    # five tiles a step, tile t at step t % 5 of one, each decoded by its offset (a compile-time constant);
    # decode tiles (WHOLE_STEPS) run whole steps, their tiles past K TMA's zeros; wider ones start a share's
    # first step before it and skip the tiles outside the share (a static guard where WHOLE_STEPS is set)
    return before + [
        "i5_first = 0 * t0",
        "if not WHOLE_STEPS:",
        f"    i5_first = -(t0 % {TEN_STEP})  # tile t runs at step t % 5",
        f"for i5 in range(i5_first, k_tiles, {TEN_STEP}):",
        f"    for step in ttgl.static_range({TEN_STEP}):",
        "        i = i5 + step",
        "        if WHOLE_STEPS or ((i >= 0) & (i < k_tiles)):",
        *["            " + x for x in loop],
    ] + _store(k)


def _loader(k: KernelIR, op: _Operand) -> list[str]:
    """`<name>_wgmma_loader`: TMA loads of each consumer's words and X's tile into the next free slot."""
    _, p, q, c, *_ = _parts(k)
    words = op.words_rows(c)
    # its first row: a 3-bit tile's first pair's word (its last pair ends within BLOCK / 8 words)
    wrow = TRIPLE_ROW.replace("BLOCK", f"BLOCK_{c}") if op.ten else f"t * ({words})"
    # its first column: bytes load as 16-bit words of two columns each
    wcol = f"(off_{q} + wg * {WGMMA_COLUMNS}) // 2" if op.whole else f"off_{q} + wg * {WGMMA_COLUMNS}"
    return ["@gluon.jit",
            f"def {k.name}_wgmma_loader(x_desc, w_desc, x_ring, w_ring, ready, empty, off_{p}, off_{q}, t0, k_tiles, "
            f"BLOCK_{c}: ttgl.constexpr, STAGES: ttgl.constexpr, CONSUMERS: ttgl.constexpr):"] + ["    " + ln for ln in [
        "for i in range(k_tiles):",
        "    t = t0 + i",
        "    slot = i % STAGES",
        "    if i >= STAGES:  # the slot's last tile: every consumer's MMA on it is done",
        "        _gl_mbarrier.wait(empty.index(slot), (i // STAGES - 1) & 1)",
        "    _gl_mbarrier.expect(ready.index(slot), x_desc.block_type.nbytes + CONSUMERS * w_desc.block_type.nbytes)",
        "    for wg in ttgl.static_range(CONSUMERS):",
        f"        _gl_tma_load(w_desc, [{wrow}, {wcol}], ready.index(slot), "
        "w_ring.index(slot * CONSUMERS + wg))",
        f"    _gl_tma_load(x_desc, [off_{p}, t * BLOCK_{c}], ready.index(slot), x_ring.index(slot))",
    ]]


def _kernel(k: KernelIR, op: _Operand, positional: list[str], common: str) -> list[str]:
    """`<name>_wgmma_kernel`: the tile and split-K share of this CTA, the ring and its barriers, the fork
    into consumers (`common`: their trailing arguments) and the loader."""
    _, p, q, c, *_ = _parts(k)
    ten, whole = op.ten, op.whole
    words = op.words_rows(c)
    consumer = f"({k.name}_wgmma_consumer, (x_ring, w_ring, ready, empty, turn, off_{p}, off_{q}{{wg}}, {{i}}, " \
               f"t0, k_tiles, tile_id, {common}))"
    loader = (f"({k.name}_wgmma_loader, (x_desc, w_desc, x_ring, w_ring, ready, empty, off_{p}, off_{q}, t0, k_tiles, "
              f"BLOCK_{c}, STAGES, CONSUMERS))")
    top = [
        f"tiles_{p} = (n_{p} + BLOCK_{p} - 1) // BLOCK_{p}",
        f"tiles_{q} = (n_{q} + BLOCK_{q} - 1) // BLOCK_{q}",
        "tile_id = ttgl.program_id(0)",
        *_coords(k, p, q),
        f"off_{p} = pid_{p} * BLOCK_{p}",
        f"off_{q} = pid_{q} * BLOCK_{q}",
        "# at least one reduction tile: with a zero-trip path ptxas serialises the MMAs (C7515)",
        f"tiles_{c} = (n_{c} + BLOCK_{c} - 1) // BLOCK_{c}",
        "t0 = 0",
        f"k_tiles = ttgl.maximum(tiles_{c}, 1)",
        *([f"if WHOLE_STEPS:  # the consumers' steps of {TEN_STEP} tiles run whole (those past the end: TMA's zeros)",
           f"    tiles_{c} = (tiles_{c} + {TEN_STEP - 1}) // {TEN_STEP} * {TEN_STEP}",
           f"    k_tiles = ttgl.maximum(tiles_{c}, {TEN_STEP})"] if ten else []),
        *([] if k.split_k is None else [
            f"if SPLIT_K > 1:  # one contiguous share of the {c} tiles; a share past the end sums one tile of TMA's zeros",
            f"    per_split = (tiles_{c} + SPLIT_K - 1) // SPLIT_K",
            *(["    if WHOLE_STEPS:", f"        per_split = (per_split + {TEN_STEP - 1}) // {TEN_STEP} * {TEN_STEP}"]
              if ten else []),
            "    t0 = ttgl.program_id(1) * per_split",
            f"    k_tiles = ttgl.maximum(ttgl.minimum(per_split, tiles_{c} - t0), 1)",
            *(["    if WHOLE_STEPS:", f"        k_tiles = ttgl.maximum(k_tiles, {TEN_STEP})"] if ten else [])]),
        f"x_ring = ttgl.allocate_shared_memory({op.dt}, [STAGES, WG_N, BLOCK_{c}], x_desc.layout)",
        f"w_ring = ttgl.allocate_shared_memory({'ttgl.uint16' if whole else 'ttgl.int32'}, "
        f"[STAGES * CONSUMERS, {words}, {WGMMA_COLUMNS // 2 if whole else WGMMA_COLUMNS}], w_desc.layout)",
        "ready = ttgl.allocate_shared_memory(ttgl.int64, [STAGES, 1], _gl_mbarrier.MBarrierLayout())",
        "empty = ttgl.allocate_shared_memory(ttgl.int64, [STAGES, 1], _gl_mbarrier.MBarrierLayout())",
        "turn = ttgl.allocate_shared_memory(ttgl.int64, [2, 1], _gl_mbarrier.MBarrierLayout())",
        "for i in ttgl.static_range(STAGES):",
        "    _gl_mbarrier.init(ready.index(i), count=1)",
        "    _gl_mbarrier.init(empty.index(i), count=CONSUMERS)  # one arrival per consumer warpgroup",
        "for i in ttgl.static_range(2):",
        "    _gl_mbarrier.init(turn.index(i), count=1)",
        "_gl_mbarrier.arrive(turn.index(0), count=1)  # the first warpgroup goes first",
        "if CONSUMERS == 2:",
        "    ttgl.warp_specialize([",
        "        " + consumer.format(wg="", i=0) + ",",
        "        " + consumer.format(wg=f" + {WGMMA_COLUMNS}", i=1) + ",",
        "        " + loader + ",",
        f"    ], [4, 1], [CONSUMER_REGS, {REGISTERS[1]}])  # registers: the consumer's accumulator and operand; "
        "the loader's few",
        "else:",
        "    ttgl.warp_specialize([",
        "        " + consumer.format(wg="", i=0) + ",",
        "        " + loader + ",",
        f"    ], [1], [{REGISTERS[1]}])",
    ]
    lines = ["@gluon.jit", f"def {k.name}_wgmma_kernel(", "    x_desc,", "    w_desc,"]
    lines += [f"    {a}," for a in positional]
    lines += [f"    {n}: ttgl.constexpr," for n in constexprs(k)]
    lines += [f"    {n}: ttgl.constexpr," for n in ["STAGES", *op.layout, "CONSUMERS", "PINGPONG", "WG_N", "CONSUMER_REGS"]]
    return lines + ["):"] + ["    " + ln for ln in top]


def render_kernel(k: KernelIR, positional: list[str]) -> list[str]:
    """The three Gluon functions of a kernel IR the register_operand pass marked."""
    op = _operand(k)
    p = _parts(k)[1]
    body = _consumer_body(k, op)
    scalars = _names_in(body, positional)
    cons = _names_in(body, constexprs(k))
    tail = ["STAGES", *op.layout, "CONSUMERS", "PINGPONG", "WG_N"]
    L = triple_words_helper() if op.ten else []
    L += ["@gluon.jit",
          f"def {k.name}_wgmma_consumer(x_ring, w_ring, ready, empty, turn, off_{p}, q0, wg, t0, k_tiles, tile_id, "
          + "".join(f"{a}, " for a in scalars) + "".join(f"{n}: ttgl.constexpr, " for n in cons)
          + ", ".join(f"{n}: ttgl.constexpr" for n in tail) + "):"]
    L += ["    " + ln for ln in body]
    L += ["", ""] + _loader(k, op)
    L += ["", ""] + _kernel(k, op, positional, ", ".join(scalars + cons + tail))
    return L


def _meet(k: KernelIR, p: str, q: str, acc: str) -> list[str]:
    """Lines where the split-K shares of a tile meet: each share but the last stores its partial sums
    to its fp32 slice and counts once in its thread's counter (release); the last share's threads
    wait for their counters (acquire), add the other slices element by element and zero the
    counters for the next call. A thread holds the same elements in every share, so no thread
    waits on another of its own CTA (no barrier inside a warpgroup); the last share is the last to
    start (the grid's slowest axis), so the shares it waits on have all started. The counters are
    touched once per thread (a tensor of one element a thread): a release per element costs a
    fence each (measured 1.5x slower at M = 128 than no split)."""
    return [
        "if SPLIT_K > 1:",
        *["    " + ln for ln in [
            "ep_r = ttgl.arange(0, WG_N, layout=ttgl.SliceLayout(0, acc_l))",
            f"ep_p = off_{p} + ep_r",
            f"ep_w = ttgl.arange(0, {WGMMA_COLUMNS}, layout=ttgl.SliceLayout(1, acc_l))  # the MMA's rows",
            "ep_q = q0 + (_gl_byte_columns(ep_w) if BY_COLUMN else ep_w)  # their columns",
            f"ep_mask = ((ep_r < BLOCK_{p}) & (ep_p < n_{p}))[None, :] & (ep_q < n_{q})[:, None]",
            f"ws_ptrs = ws_{acc} + ep_p[None, :].to(ttgl.int64) * n_{q} + ep_q[:, None]",
            "# a counter per thread of the warpgroup: the elements it holds are the same in every share",
            "one_l: ttgl.constexpr = ttgl.BlockedLayout([1], [32], [4], [0])  # one element a thread",
            "me = _gl_thread_id(ttgl.arange(0, 128, layout=one_l))",
            "counter = ws_arrived + ((tile_id * CONSUMERS + wg) * 128 + me % 128)",
            "if ttgl.program_id(1) < SPLIT_K - 1:",
            f"    ttgl.store(ws_ptrs + ttgl.program_id(1).to(ttgl.int64) * n_{p} * n_{q}, acc, mask=ep_mask)",
            "    _gl_count_release(counter)",
            "else:",
            "    _gl_wait_acquire(counter, ttgl.full([128], SPLIT_K - 1, ttgl.int32, one_l))",
            "    for other in ttgl.static_range(SPLIT_K - 1):",
            f"        acc += ttgl.load(ws_ptrs + other * n_{p} * n_{q}, mask=ep_mask, other=0.0, cache_modifier=\".cg\")",
            "    _gl_zero(counter)  # after every load: the next call counts from zero",
        ]],
    ]


HELPERS = '''
@gluon.jit
def _gl_thread_id(like):
    # the thread holding each element of `like` (one element a thread where its layout says so)
    return ttgl.inline_asm_elementwise("mov.u32 $0, %tid.x;", "=r,r", [like], dtype=ttgl.int32, is_pure=True,
                                       pack=1)


@gluon.jit
def _gl_count_release(counter):
    # one count after this thread's earlier stores (release, GPU scope)
    return ttgl.inline_asm_elementwise("red.release.gpu.global.add.u32 [$1], 1; mov.u32 $0, 0;", "=r,l",
                                       [counter], dtype=ttgl.int32, is_pure=False, pack=1)


@gluon.jit
def _gl_wait_acquire(counter, target):
    # spin until the counter reaches the target; later loads see what the counted stores wrote
    return ttgl.inline_asm_elementwise(
        "{ .reg .pred p; .reg .u32 v; TS_WAIT: ld.acquire.gpu.global.u32 v, [$1]; setp.lt.u32 p, v, $2; "
        "@p bra TS_WAIT; mov.u32 $0, v; }", "=r,l,r", [counter, target], dtype=ttgl.int32, is_pure=False, pack=1)


@gluon.jit
def _gl_zero(counter):
    return ttgl.inline_asm_elementwise("st.relaxed.gpu.global.u32 [$1], 0; mov.u32 $0, 0;", "=r,l", [counter],
                                       dtype=ttgl.int32, is_pure=False, pack=1)


@gluon.jit
def _gl_byte_columns(r):
    # the column (within 64) whose bytes MMA row r holds when a thread's two rows load as adjacent
    # columns (gluon_layouts.wgmma_byte_words_bases, byte_row_column)
    return ((r >> 3) & 1) | ((r & 7) << 1) | (r & 48)


@gluon.jit
def _gl_byte_rows(t, layout: ttgl.constexpr):
    # [64 columns, K] loaded by column -> by the MMA's row: column a + 2 l + 16 w is row l + 8 a + 16 w
    t = ttgl.permute(ttgl.reshape(t, [4, 8, 2, t.shape[1]]), (0, 2, 1, 3))
    return ttgl.convert_layout(ttgl.reshape(t, [64, t.shape[3]]), layout, assert_trivial=True)


@gluon.jit
def _gl_byte_columns_order(t):
    # [n, 64] by the MMA's row -> by column (the inverse of _gl_byte_rows, along the last axis)
    t = ttgl.permute(ttgl.reshape(t, [t.shape[0], 4, 2, 8]), (0, 1, 3, 2))
    return ttgl.reshape(t, [t.shape[0], 64])


@gluon.jit
def _gl_splat_pair(v, DTYPE: ttgl.constexpr):
    # a 16-bit float twice in one 32-bit register: the packed (x2) instructions' operand
    return ttgl.inline_asm_elementwise("mov.b32 $0, {$1, $1};", "=r,h", [v.to(DTYPE)], dtype=ttgl.int32,
                                       is_pure=True, pack=1)
'''


def render_host(k: KernelIR) -> list[str]:
    """`wgmma_launch_args` / `wgmma_launch`: TMA descriptors of X's tiles and the words' tiles, then
    the Triton kernel's arguments; a consumer warpgroup per 64 columns (NUM_WARPS / 4); split-K
    counters per thread of each consumer (the Triton kernel's are per tile)."""
    dot, p, q, c, x, X, W, Y = _parts(k)
    op = _operand(k)
    dt = GL_DTYPES[k.value(x).dtype]
    bits = word_bits(k)  # 3 bits: tiles of BLOCK / 8 words, operand pairs laid out as 4 bits' (quads of pairs)
    w_view = f"t[{W!r}]"
    if byte_weights(k):  # as 16-bit words of two adjacent columns' bytes (gluon_layouts.wgmma_byte_words_bases)
        w_desc = f"[kw[\"BLOCK_{c}\"], {WGMMA_COLUMNS // 2}], ttgl.uint16"
        w_view = f"_byte_words(t[{W!r}], {W!r})"
        layout = ["    from tilesched.backends.cuda.gluon_layouts import wgmma_byte_words_layout", "",
                  f"    kw[\"WORDS_L\"] = wgmma_byte_words_layout(kw[\"BLOCK_{c}\"])",
                  "    # wide tiles' K tiles of 128 dequantised in parts, each part's MMA issued before the next (_tile_parts)",
                  f"    kw[\"PARTS\"] = {op.parts} if kw[\"BLOCK_{c}\"] == 128 and kw[\"BLOCK_{p}\"] > {DECODE_N} else 1",
                  f"    kw[\"WORDS_P\"] = wgmma_byte_words_layout(kw[\"BLOCK_{c}\"] // kw[\"PARTS\"])",
                  "    kw[\"BY_COLUMN\"] = True  # always: a word holds two columns"]
    else:
        w_desc = f"[kw[\"BLOCK_{c}\"] * {bits} // 32, {WGMMA_COLUMNS}], ttgl.int32"
        layout = ["    from tilesched.backends.cuda.gluon_layouts import wgmma_pairs_layout", "",
                  "    # words load a thread's two rows as adjacent columns at decode tiles only: there the 64-bit loads",
                  "    # gain; at wider tiles the rows' permutation in the epilogue took 12 KB more shared memory, no faster",
                  f"    kw[\"BY_COLUMN\"] = max(kw[\"BLOCK_{p}\"], {WGMMA_MIN_N}) <= {DECODE_N}",
                  f"    kw[\"PAIRS3\"] = wgmma_pairs_layout(kw[\"BLOCK_{c}\"], {bits}, kw[\"BY_COLUMN\"])"]
        if op.parts > 1:  # K tiles of 128 dequantised in parts, each part's MMA issued before the next; decode tiles
            # too (wgmma-decode-parts-*.json: 0.5-3 % faster at M = 16)
            layout += [f"    kw[\"PARTS\"] = {op.parts} if kw[\"BLOCK_{c}\"] == 128 else 1",
                       f"    kw[\"PAIRS_P\"] = wgmma_pairs_layout(kw[\"BLOCK_{c}\"] // kw[\"PARTS\"], {bits}, "
                       "kw[\"BY_COLUMN\"])"]
        if ten_weights(k):
            layout += ["    # 3 bits: decode tiles run whole steps of five K tiles (a branch around each tile cost 15-18 % there:",
                       "    # bench/results/lowbit-3bit-guard-*.json); wider tiles skip a share's tiles past its ends",
                       f"    kw[\"WHOLE_STEPS\"] = max(kw[\"BLOCK_{p}\"], {WGMMA_MIN_N}) <= {DECODE_N}"]
    names = constexprs(k) + (["WORDS_L", "WORDS_P", "PARTS"] if byte_weights(k) else ["PAIRS3"]) + ["BY_COLUMN"]
    names += ["PAIRS_P", "PARTS"] if op.parts > 1 and not op.whole else []
    names += ["WHOLE_STEPS"] if ten_weights(k) else []
    counters = [] if k.split_k is None else [
        "    if cfg.constexprs[\"SPLIT_K\"] > 1:  # the shared counters grown to one per thread of each consumer, so the",
        "        # Triton kernel's arguments (one per tile) take the same buffer",
        "        from tilesched.backends.cuda.workspace import arrival_counters",
        "",
        "        arrival_counters(cfg.device, cfg.grid[0] * 2 * 128)"]
    return [
        "def wgmma_launch_args(cfg, t, n, c):",
        '    """The wgmma kernel\'s arguments: TMA descriptors of X and of the weights (words or bytes), then the Triton',
        '    kernel\'s arguments; its constants and the consumers (a warpgroup per 64 columns)."""',
        *counters,
        "    args, kw = launch_args(cfg, t, n, c)",
        *layout,
        f"    wg_n = max(kw[\"BLOCK_{p}\"], {WGMMA_MIN_N})  # wgmma's n: X's tile rows (those past the row tile computed, not stored)",
        f"    x_desc = _wgmma_descriptor(t[{X!r}], [wg_n, kw[\"BLOCK_{c}\"]], {dt}, {X!r})",
        f"    w_desc = _wgmma_descriptor({w_view}, {w_desc}, {W!r})",
        f"    consts = {{name: kw[name] for name in {names!r}}}",
        "    consumers = cfg.num_warps // 4",
        "    # two consumers take turns on the tensor cores at 128 rows and more (measured equal or faster at",
        "    # 256: bench/results/lowbit-wgmma-*.json); at 64 and fewer they run free (as the M = 128 rows ran)",
        f"    pingpong = consumers == 2 and kw[\"BLOCK_{_parts(k)[1]}\"] >= 128",
        f"    if wg_n <= {DECODE_N}:  # few accumulators: a register cap that keeps two CTAs an SM",
        f"        cap = {DECODE_REGISTERS!r}[consumers]",
        "        regs = dict(maxnreg=cap, CONSUMER_REGS=cap)",
        "    else:",
        f"        regs = dict(CONSUMER_REGS={REGISTERS[0]})",
        "    return (x_desc, w_desc, *args), dict(num_warps=4, STAGES=cfg.num_stages, CONSUMERS=consumers,",
        "                                         PINGPONG=pingpong, WG_N=wg_n, **regs, **consts)",
        "",
        "",
        "def _wgmma_descriptor(x, block, dtype, name):",
        "    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor as GluonDescriptor",
        "",
        "    if x.stride(-1) != 1 or x.stride(0) * x.element_size() % 16 or x.data_ptr() % 16:",
        "        raise ValueError(f\"the register-operand (wgmma) schedule reads {name} by TMA: its rows contiguous, \"",
        "                         f\"16-byte aligned (row stride {x.stride(0)} x {x.element_size()} bytes)\")",
        "    return GluonDescriptor.from_tensor(x, block, ttgl.NVMMASharedLayout.get_default_for(block, dtype))",
        "",
        "",
        *([
            "def _byte_words(x, name):",
            "    import torch",
            "",
            "    if x.dim() != 2 or x.stride(-1) != 1 or x.shape[-1] % 2:",
            "        raise ValueError(f\"the register-operand (wgmma) schedule reads {name}'s bytes as 16-bit words of two \"",
            "                         f\"columns: its rows contiguous, of an even length (shape {tuple(x.shape)})\")",
            "    return x.view(torch.uint16)",
            "",
            "",
        ] if byte_weights(k) else []),
        "def wgmma_launch(cfg, t, n, c):",
        "    args, kwargs = wgmma_launch_args(cfg, t, n, c)",
        f"    {k.name}_wgmma_kernel[cfg.grid](*args, **kwargs)",
    ]
