"""Per-op rules: one kernel-IR instruction -> lines of Triton.

Each rule reads the instruction and an emission context (`Ctx`: variable names, offsets, masks
and block sizes per axis in the current piece of code) and returns source lines. Every
instruction op has a rule; a new op needs one rule here and nothing in the renderer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tilesched.passes.kernel import Instr, KernelIR, mask_constant, one_row_axis, producer

TL_DTYPES = {"fp16": "tl.float16", "bf16": "tl.bfloat16", "fp32": "tl.float32", "fp64": "tl.float64"}


@dataclass
class Ctx:
    """Names in one piece of generated code. A subtiled epilogue renders the same instructions
    twice with other suffixes, offsets and block sizes along the split axis."""

    k: KernelIR
    suffix: str = ""
    offs: dict[str, str] = field(default_factory=dict)  # axis -> 1-D offsets variable
    block: dict[str, str] = field(default_factory=dict)  # axis -> block size expression
    start: dict[str, str] = field(default_factory=dict)  # axis -> first index of the tile
    phase: str = "post"
    local: set[str] = field(default_factory=set)  # values defined in this piece (take the suffix)
    whole_tiles: set[str] = field(default_factory=set)  # axes whose tiles are known to lie inside the tensor here
    unmasked: bool = False  # a loop over tiles the kernel's `skip` mask keeps whole: masks need no evaluation

    def v(self, name: str) -> str:
        return f"v_{name}{self.suffix}" if (name in self.local or name in self.k.carried) else f"v_{name}"

    def define(self, name: str) -> str:
        self.local.add(name)
        return self.v(name)

    def mask(self, axis: str) -> str:
        return f"({self.offs[axis]} < n_{axis})"

    def masked(self, axis: str) -> bool:
        return self.k.axis(axis).masked and axis not in self.whole_tiles


def index(axes: tuple[str, ...], axis: str) -> str:
    """`[:, None]`-style index that places a 1-D vector along `axis` of a block over `axes`."""
    if len(axes) == 1:
        return ""
    return "[" + ", ".join(":" if a == axis else "None" for a in axes) + "]"


def align(ctx: Ctx, name: str, to: tuple[str, ...]) -> str:
    """Value `name` as a block over `to` (its axes a subset, in any order): permuted, then
    broadcast by indexing with None."""
    axes = ctx.k.value(name).axes
    var = ctx.v(name)
    if not axes:  # a scalar broadcasts by itself
        return var
    order = tuple(a for a in to if a in axes)
    if order != axes:
        perm = tuple(axes.index(a) for a in order)
        var = f"tl.permute({var}, {perm})" if len(axes) > 2 else f"{var}.T"
    if order == to:
        return var
    return var + "[" + ", ".join(":" if a in axes else "None" for a in to) + "]"


def block_shape(ctx: Ctx, axes: tuple[str, ...]) -> str:
    return "(" + ", ".join(ctx.block[a] for a in axes) + ("," if len(axes) == 1 else "") + ")"


def mask_expr(ctx: Ctx, axes: tuple[str, ...]) -> str | None:
    parts = [ctx.mask(a) + index(axes, a) for a in axes if ctx.masked(a)]
    return " & ".join(parts) if parts else None


def even_condition(ctx: Ctx, axes: tuple[str, ...]) -> str:
    return " and ".join(f"EVEN_{a}" for a in axes if ctx.masked(a))


def _guarded(ctx: Ctx, axes: tuple[str, ...], plain: str, masked_fmt: str) -> list[str]:
    """`plain` where no axis can be ragged; otherwise a compile-time branch on the EVEN_ flags."""
    m = mask_expr(ctx, axes)
    if m is None:
        return [plain]
    return [f"if {even_condition(ctx, axes)}:", f"    {plain}", "else:", f"    {masked_fmt.format(mask=m)}"]


# ------------------------------------------------------------------------------------ memory

def pointers(ctx: Ctx, tensor: str, axes: tuple[str, ...]) -> str:
    k = ctx.k
    t_axes = next(a.axes for a in k.accesses if a.tensor == tensor)
    terms = [f"p_{tensor}"]
    for a in t_axes:
        if a in k.points:
            terms.append(f"pid_{a} * s_{tensor}_{a}")
        else:
            terms.append(f"{ctx.offs[a]}{index(axes, a)} * s_{tensor}_{a}")
    return " + ".join(terms)


def rule_load(ctx: Ctx, i: Instr) -> list[str]:
    k = ctx.k
    acc = k.access(i.tensor, "load")
    if (acc.group or acc.pack or acc.dtype == "fp4e2m1") and not acc.tma:  # TMA: grouped point axes only
        return rule_load_stored(ctx, i)
    v = k.value(i.out)
    out = ctx.define(i.out)
    logical = tuple(a for a in acc.axes if a not in k.points)
    if acc.tma:
        mem = logical if acc.layout == "row_major" else logical[::-1]
        load = f"d_{i.tensor}_load.load([{', '.join(tma_coords(ctx, acc, mem))}])"
        if len(acc.axes) > 2:  # the box is 1 along the point axes
            load = f"{load}.reshape({block_shape(ctx, logical)})"
        if mem != logical:
            load += ".T"
        lines = [f"{out} = {load}"]
    else:
        ptrs = pointers(ctx, i.tensor, logical)
        lines = _guarded(ctx, logical, f"{out} = tl.load({ptrs})",
                         f"{out} = tl.load({ptrs}, mask={{mask}}, other=0.0)")
    if v.axes != logical:
        lines.append(f"{out} = {align_var(out, logical, v.axes)}")
    return lines


def tma_coords(ctx: Ctx, acc, mem: tuple[str, ...]) -> list[str]:
    """A descriptor's coordinates: the point axes' indices, then the tile's first element along
    the tiled axes in memory order."""
    groups = dict(acc.group)  # a point axis grouped G to one (GQA's heads): index // G
    points = [f"(pid_{a} // {group_constant(acc.tensor, a)}).to(tl.int32)" if a in groups else f"pid_{a}.to(tl.int32)"
              for a in acc.axes if a in ctx.k.points]
    return points + [ctx.start[a] for a in mem]


def group_constant(tensor: str, axis: str) -> str:
    """The constexpr holding a tensor's group size along an axis."""
    return f"G_{tensor}_{axis}"


def _fp4_decode(var: str) -> str:
    """fp4e2m1 codes (int32) -> float32: sign, 2 exponent bits (bias 1), 1 mantissa bit."""
    m = f"({var} & 1).to(tl.float32)"
    e = f"(({var} >> 1) & 3)"
    mag = f"tl.where({e} == 0, 0.5 * {m}, (1.0 + 0.5 * {m}) * tl.exp2(({e} - 1).to(tl.float32)))"
    return f"tl.where((({var} >> 3) & 1) == 1, -{mag}, {mag})"


def rule_load_stored(ctx: Ctx, i: Instr) -> list[str]:
    """A load of a grouped or packed tensor (tilesched.ir.storage). A grouped axis indexes the
    stored tensor at index // group; where a whole tile falls in one group (the group a multiple
    of the block, a compile-time test) one row is loaded and broadcast. Packed values are shifted
    out of their int32 words: the words of a tile are loaded once and spread along the packed
    axis when the block holds whole words, gathered per element otherwise. fp4 codes are decoded
    to float32."""
    k = ctx.k
    acc = k.access(i.tensor, "load")
    v = k.value(i.out)
    out = ctx.define(i.out)
    logical = tuple(a for a in acc.axes if a not in k.points)
    a = one_row_axis(k, acc)  # may fall in one group per tile (two grouped block axes are rare: others gather)
    if a is not None:
        lines = ([f"if {group_constant(acc.tensor, a)} % {ctx.block[a]} == 0:  # a tile of {a} lies in one group: "
                  "one row, broadcast"] + ["    " + ln for ln in _stored_rows(ctx, acc, out, logical, (a,))]
                 + ["else:"] + ["    " + ln for ln in _stored_load(ctx, acc, out, logical, ())])
    else:
        lines = _stored_load(ctx, acc, out, logical, ())
    if acc.dtype == "fp4e2m1":
        lines.append(f"{out} = {_fp4_decode(out)}")
    if v.axes != logical:
        lines.append(f"{out} = {align_var(out, logical, v.axes)}")
    return lines


def _stored_rows(ctx: Ctx, acc, out: str, logical: tuple[str, ...], rows: tuple[str, ...]) -> list[str]:
    """The load over the axes other than `rows` (each one stored row per tile), broadcast back."""
    lines = _stored_load(ctx, acc, out, logical, rows)
    shape = "(" + ", ".join(ctx.block[a] for a in logical) + ("," if len(logical) == 1 else "") + ")"
    spread = "[" + ", ".join("None" if a in rows else ":" for a in logical) + "]"
    lines.append(f"{row_var(out)} = {out}")  # the row itself, for a factored dot (rule_affine_dot)
    lines.append(f"{out} = tl.broadcast_to({out}{spread}, {shape})")
    return lines


def _stored_load(ctx: Ctx, acc, out: str, logical: tuple[str, ...], rows: tuple[str, ...]) -> list[str]:
    """Load a grouped / packed tensor over `logical` minus `rows` (axes read at one stored row)."""
    from tilesched.ir.dtypes import BITS, per_word

    k = ctx.k
    t = acc.tensor
    groups = dict(acc.group)
    axes = tuple(a for a in logical if a not in rows)  # the loaded block's axes

    def stored_index(a: str) -> str:
        if a in rows:
            return f"(({ctx.start[a]}) // {group_constant(t, a)})"
        base = f"pid_{a}" if a in k.points else ctx.offs[a]
        return f"({base} // {group_constant(t, a)})" if a in groups else base

    def ptrs(word_axis: str | None = None, word_offs: str | None = None) -> str:
        terms = [f"p_{t}"]
        for a in acc.axes:
            idx = word_offs if a == word_axis else stored_index(a)
            if a == acc.pack and a != word_axis:
                idx = f"({idx} // {per_word(acc.dtype)})"
            scalar = a in k.points or a in rows
            terms.append(f"{idx} * s_{t}_{a}" if scalar else f"{idx}{index(axes, a)} * s_{t}_{a}")
        return " + ".join(terms)

    def guarded(plain: str, masked: str, parts: list[str]) -> list[str]:
        if not parts:
            return [plain]
        return [f"if {even_condition(ctx, axes)}:", f"    {plain}", "else:", f"    {masked}"]

    parts = [ctx.mask(a) + index(axes, a) for a in axes if ctx.masked(a)]
    load = f"{out} = tl.load({ptrs()})"
    gather = guarded(load, f"{out} = tl.load({ptrs()}, mask={' & '.join(parts)}, other=0)", parts)
    pa = acc.pack
    if pa is None:
        return gather
    bits, per = BITS[acc.dtype], per_word(acc.dtype)
    low = f"((1 << {bits}) - 1)"

    def unpack(raw: str, shift: str) -> str:
        if acc.dtype.startswith("int"):  # the field to the top, then an arithmetic shift back: two's complement
            return f"(({raw} << ({32 - bits} - {shift})) >> {32 - bits})"
        return f"(({raw} >> {shift}) & {low})"

    if pa in rows or pa in k.points:
        return gather + [f"{out} = {unpack(out, f'({stored_index(pa)} % {per}) * {bits}')}"]
    gather.append(f"{out} = {unpack(out, f'(({stored_index(pa)} % {per}) * {bits}){index(axes, pa)}')}")
    if pa in groups or per & (per - 1):
        return gather
    # whole words: load the tile's words once, spread each over `per` values along the packed axis
    wo = f"w_{t}"
    j = axes.index(pa)
    inner = axes[:j + 1] + ("",) + axes[j + 1:]
    spread = out + "[" + ", ".join("None" if a == "" else ":" for a in inner) + "]"
    shifts = f"(tl.arange(0, {per}) * {bits})" + "[" + ", ".join(":" if a == "" else "None" for a in inner) + "]"
    shape = "(" + ", ".join(ctx.block[a] for a in axes) + ("," if len(axes) == 1 else "") + ")"
    wparts = [f"({wo} < (n_{pa} + {per - 1}) // {per}){index(axes, pa)}" if a == pa else
              ctx.mask(a) + index(axes, a) for a in axes if ctx.masked(a)]
    fast = [f"{wo} = ({ctx.start[pa]}) // {per} + tl.arange(0, {ctx.block[pa]} // {per})"]
    fast += guarded(f"{out} = tl.load({ptrs(pa, wo)})",
                    f"{out} = tl.load({ptrs(pa, wo)}, mask={' & '.join(wparts)}, other=0)", wparts)
    fast.append(f"{out} = tl.reshape({unpack(spread, shifts)}, {shape})")
    return ([f"if {ctx.block[pa]} % {per} == 0:  # whole words per tile"] + ["    " + ln for ln in fast]
            + ["else:"] + ["    " + ln for ln in gather])


def align_var(var: str, axes: tuple[str, ...], to: tuple[str, ...]) -> str:
    perm = tuple(axes.index(a) for a in to)
    return f"tl.permute({var}, {perm})" if len(axes) > 2 else f"{var}.T"


def rule_store(ctx: Ctx, i: Instr) -> list[str]:
    k = ctx.k
    acc = k.access(i.tensor, "store")
    logical = tuple(a for a in acc.axes if a not in k.points)
    src = align(ctx, i.args[0], logical)
    val = f"{src}.to({TL_DTYPES[acc.dtype]})"
    if acc.tma:  # the descriptor knows the tensor's element type
        val = f"{src}.to(d_{i.tensor}_store.dtype)"
        mem = logical if acc.layout == "row_major" else logical[::-1]
        if mem != logical:
            val = f"{val}.T"
        if len(acc.axes) > 2:  # the box is 1 along the point axes
            val = f"{val}.reshape(({', '.join(['1'] * (len(acc.axes) - 2) + [ctx.block[a] for a in mem])}))"
        return [f"d_{i.tensor}_store.store([{', '.join(tma_coords(ctx, acc, mem))}], {val})"]
    ptrs = pointers(ctx, i.tensor, logical)
    return _guarded(ctx, logical, f"tl.store({ptrs}, {val})", f"tl.store({ptrs}, {val}, mask={{mask}})")


def rule_copy(ctx: Ctx, i: Instr) -> list[str]:
    return [f"{ctx.define(i.out)} = {align(ctx, i.args[0], ctx.k.value(i.out).axes)}"]


FILL = {None: "0.0", "sum": "0.0", "mean": "0.0", "max": "float('-inf')", "min": "float('inf')"}


def rule_zeros(ctx: Ctx, i: Instr) -> list[str]:
    v = ctx.k.value(i.out)
    return [f"{ctx.define(i.out)} = tl.full({block_shape(ctx, v.axes)}, {FILL[i.reduce]}, {TL_DTYPES[v.dtype]})"]


# ------------------------------------------------------------------------------------ compute

def rule_dot(ctx: Ctx, i: Instr) -> list[str]:
    k = ctx.k
    out = k.value(i.out)
    if len(out.axes) != 2:
        raise ValueError(f"dot {i.stage}: a {len(out.axes)}-D result")
    p, q = out.axes
    a, b = (k.value(n) for n in i.args)
    if p not in a.axes:
        a, b = b, a
    (c,) = set(a.axes) - {p}
    lhs = ctx.v(a.name) + ("" if a.axes == (p, c) else ".T")
    rhs = ctx.v(b.name) + ("" if b.axes == (c, q) else ".T")
    acc = ctx.v(i.out) if i.accumulate else None
    res = ctx.define(i.out)
    dot = f"tl.dot({lhs}, {rhs}{', ' + acc if acc else ''})"
    if not k.axis(p).small:
        return [f"{res} = {dot}"]
    core = f"tl.reduce({lhs}.to(tl.float32)[:, :, None] * {rhs}.to(tl.float32)[None, :, :], 1, _add)"
    return [f"if {ctx.block[p]} < 16:  # too few rows for tensor cores: multiply-add on CUDA cores",
            f"    {res} = {acc + ' + ' if acc else ''}{core}",
            "else:",
            f"    {res} = {dot}"]


def row_var(var: str) -> str:
    """The one-row form of a grouped load's variable (defined where the tile lies in one group)."""
    return f"row_{var}"


def affine_terms(fn: tuple[tuple[str, str | None], ...], coefs: list[str]) -> tuple[str | None, str | None]:
    """An affine chain (after its casts) as x -> scale * x + offset: the two expressions (None for
    1 and 0) from the chain's coefficient expressions, in order, and its constants' names."""
    scale, offset = None, None
    operands = iter(coefs)
    for f, const in fn:
        if f == "cast":
            continue
        y = const if const is not None else next(operands)
        if f in ("add", "bias", "sub"):
            sign = "-" if f == "sub" else "+"
            offset = f"({offset} {sign} {y})" if offset else (f"(-{y})" if f == "sub" else y)
        else:  # mul, scale, div
            op = "/" if f == "div" else "*"
            scale = f"({scale} {op} {y})" if scale else (f"(1.0 / {y})" if f == "div" else y)
            offset = f"({offset} {op} {y})" if offset else None
    return scale, offset


def rule_affine_dot(ctx: Ctx, i: Instr) -> list[str]:
    """A dot whose second operand is an affine chain of w (tilesched/passes/factor.py). On CUDA
    cores, with every grouped coefficient one row per tile: the products of the raw w, then per
    column the chain's factor a and offset b times the sum of the other operand. Otherwise the
    chain, then the dot."""
    k = ctx.k
    pair, (w, *coefs) = i.args[:2], i.args[2:]
    chain = Instr(op="elementwise", stage=i.stage, out=i.via, args=i.args[2:], fn=i.fn)
    dot = Instr(op="dot", stage=i.stage, out=i.out, args=pair, accumulate=i.accumulate)
    plain = rule_elementwise(ctx, chain) + rule_dot(ctx, dot)
    p, q = k.value(i.out).axes
    other = next(n for n in pair if n != i.via)
    (c,) = set(k.value(other).axes) - {p}
    tests = [f"{ctx.block[p]} < 16"]
    rows = {}
    for n in coefs:
        if c in k.value(n).axes:  # a load grouped along c: its row, where the group holds the tile
            t = producer(k, n).tensor
            tests.append(f"{group_constant(t, c)} % {ctx.block[c]} == 0")
            rows[n] = row_var(ctx.v(n))
        else:
            rows[n] = align(ctx, n, (q,)) if k.value(n).axes else ctx.v(n)
    scale, offset = affine_terms(i.fn, [f"{rows[n]}.to(tl.float32)" for n in coefs])
    lhs = _f32(ctx, other, (p, c))
    rhs = _f32(ctx, w, (c, q))
    prod, xsum = f"xw_{i.out}", f"xs_{i.out}"
    res = ctx.v(i.out)
    body = [f"{prod} = tl.reduce({lhs}[:, :, None] * {rhs}[None, :, :], 1, _add)"]
    term = f"{prod} * {scale}[None, :]" if scale else prod
    if offset:
        body.append(f"{xsum} = tl.reduce({lhs}, 1, _add)")
        term += f" + {xsum}[:, None] * {offset}[None, :]"
    body.append(f"{ctx.define(i.out)} = {res + ' + ' if i.accumulate else ''}{term}")
    return ([f"if {' and '.join(tests)}:  # the chain's factors leave the sum over {c}: one multiply-add per element"]
            + ["    " + ln for ln in body] + ["else:"] + ["    " + ln for ln in plain])


UNARY: dict[str, Callable[[str], str]] = {
    "relu": lambda x: f"tl.maximum({x}, 0.0)",
    "relu6": lambda x: f"tl.minimum(tl.maximum({x}, 0.0), 6.0)",
    "gelu": lambda x: f"0.5 * {x} * (1.0 + tl.erf({x} * 0.7071067811865476))",
    "gelu_tanh": lambda x: f"0.5 * {x} * (2.0 * _sigmoid(1.5957691216057308 * ({x} + 0.044715 * {x} * {x} * {x})))",
    "silu": lambda x: f"{x} * _sigmoid({x})",
    "sigmoid": lambda x: f"_sigmoid({x})",
    "tanh": lambda x: f"2.0 * _sigmoid(2.0 * {x}) - 1.0",
    "exp": lambda x: f"tl.exp({x})",
    "exp2": lambda x: f"tl.exp2({x})",
    "log": lambda x: f"tl.log({x})",
    "sqrt": lambda x: f"tl.sqrt({x})",
    "rsqrt": lambda x: f"tl.rsqrt({x})",
    "reciprocal": lambda x: f"1.0 / {x}",
    "abs": lambda x: f"tl.abs({x})",
    "neg": lambda x: f"-{x}",
}
BINARY: dict[str, Callable[[str, str], str]] = {
    "bias": lambda x, y: f"{x} + {y}", "add": lambda x, y: f"{x} + {y}", "sub": lambda x, y: f"{x} - {y}",
    "mul": lambda x, y: f"{x} * {y}", "scale": lambda x, y: f"{x} * {y}", "div": lambda x, y: f"{x} / {y}",
    "max": lambda x, y: f"tl.maximum({x}, {y})", "min": lambda x, y: f"tl.minimum({x}, {y})",
}


def _f32(ctx: Ctx, name: str, to: tuple[str, ...]) -> str:
    """Value `name` aligned to `to`, as float32 (compute happens in fp32)."""
    var = align(ctx, name, to)
    return var if ctx.k.value(name).dtype == "fp32" else f"{var}.to(tl.float32)"


def _exact_in(src: str, dst: str) -> bool:
    """Every value of integer type `src` is a value of float type `dst` (8 significant bits: bf16)."""
    from tilesched.ir.dtypes import BITS, INT

    return src in INT and BITS[src] <= 8 and dst in ("fp16", "bf16", "fp32")


def rule_elementwise(ctx: Ctx, i: Instr) -> list[str]:
    k = ctx.k
    out = k.value(i.out)
    x = f"x_{i.out}"
    lines = [f"{x} = {_f32(ctx, i.args[0], out.axes)}"]
    operands = iter(i.args[1:])
    for n, (fn, const) in enumerate(i.fn):
        if fn == "cast":
            if n == 0 and _exact_in(k.value(i.args[0]).dtype, out.dtype):
                continue  # small integers are exact in any float type: nothing to round
            if out.dtype != "fp32":  # round to the output's dtype here, as the spec says
                lines.append(f"{x} = {x}.to({TL_DTYPES[out.dtype]}).to(tl.float32)")
        elif fn in BINARY:
            y = const if const is not None else _f32(ctx, next(operands), out.axes)
            lines.append(f"{x} = {BINARY[fn](x, y)}")
        else:
            lines.append(f"{x} = {UNARY[fn](x)}")
    lines.append(f"{ctx.define(i.out)} = {x}" + ("" if out.dtype == "fp32" else f".to({TL_DTYPES[out.dtype]})"))
    return lines


def _where_masked(ctx: Ctx, var: str, axes: tuple[str, ...], axis: str, fill: str) -> str:
    if not ctx.masked(axis):
        return var
    return f"tl.where({ctx.mask(axis)}{index(axes, axis)}, {var}, {fill})"


REDUCE_FN = {"sum": "_add", "mean": "_add", "max": "_max", "min": "_min"}


def rule_reduce(ctx: Ctx, i: Instr) -> list[str]:
    k = ctx.k
    src = k.value(i.args[0])
    out = k.value(i.out)
    x = f"x_{i.out}"
    fill = FILL[i.reduce]
    lines = [f"{x} = {_where_masked(ctx, ctx.v(src.name) + '.to(tl.float32)', src.axes, i.axis, fill)}"]
    user = user_mask(ctx, i, src.axes, i.mask_axes)
    if user is not None:  # masked-out elements hold the reduction's identity
        lines.append(f"{x} = tl.where({user}, {x}, {fill})")
    lines.append(f"{x} = tl.reduce({x}, {src.axes.index(i.axis)}, {REDUCE_FN[i.reduce]})")
    if i.reduce == "mean":
        lines.append(f"{x} = {x} / n_{i.axis}")
    kept = tuple(a for a in src.axes if a != i.axis)
    if kept != out.axes:
        lines.append(f"{x} = {align_var(x, kept, out.axes)}")
    if i.accumulate:
        prev = ctx.v(i.out)
        comb = {"sum": f"{prev} + {x}", "max": f"tl.maximum({prev}, {x})", "min": f"tl.minimum({prev}, {x})"}
        lines.append(f"{x} = {comb[i.reduce]}")
    lines.append(f"{ctx.define(i.out)} = {x}" + ("" if out.dtype == "fp32" else f".to({TL_DTYPES[out.dtype]})"))
    return lines


def _expand(var: str, axes: tuple[str, ...], axis: str) -> str:
    return var + "[" + ", ".join("None" if a == axis else ":" for a in axes) + "]"


def rule_softmax(ctx: Ctx, i: Instr) -> list[str]:
    out = ctx.k.value(i.out)
    ax = out.axes.index(i.axis)
    x, m, e = f"x_{i.out}", f"mx_{i.out}", f"e_{i.out}"
    lines = [f"{x} = {_f32(ctx, i.args[0], out.axes)}"]
    lines.append(f"{x} = {_where_masked(ctx, x, out.axes, i.axis, FILL['max'])}")
    user = user_mask(ctx, i, out.axes, i.mask_axes)
    if user is not None:  # masked-out elements get probability 0; rows with none left, zeros
        lines.append(f"{x} = tl.where({user}, {x}, {NEG_INF})")
    lines.append(f"{m} = tl.reduce({x}, {ax}, _max)")
    if user is not None:
        lines.append(f"{m} = tl.where({m} == {NEG_INF}, 0.0, {m})")
    lines.append(f"{e} = tl.exp({x} - {_expand(m, out.axes, i.axis)})")
    lines.append(f"{e} = {_where_masked(ctx, e, out.axes, i.axis, '0.0')}")
    total = f"tl.reduce({e}, {ax}, _add)"
    if user is not None:
        total = f"tl.where({total} == 0.0, 1.0, {total})"
    lines.append(f"{ctx.define(i.out)} = ({e} / {_expand(total, out.axes, i.axis)})"
                 + ("" if out.dtype == "fp32" else f".to({TL_DTYPES[out.dtype]})"))
    return lines


LAYERNORM_EPS = 1e-5  # semantics/ops.py


def rule_layernorm(ctx: Ctx, i: Instr) -> list[str]:
    out = ctx.k.value(i.out)
    ax = out.axes.index(i.axis)
    x, mu, d, r = f"x_{i.out}", f"mu_{i.out}", f"d_{i.out}", f"r_{i.out}"
    lines = [f"{x} = {_f32(ctx, i.args[0], out.axes)}",
             f"{mu} = tl.reduce({_where_masked(ctx, x, out.axes, i.axis, '0.0')}, {ax}, _add) / n_{i.axis}",
             f"{d} = {_where_masked(ctx, f'{x} - {_expand(mu, out.axes, i.axis)}', out.axes, i.axis, '0.0')}",
             f"{r} = tl.rsqrt(tl.reduce({d} * {d}, {ax}, _add) / n_{i.axis} + {LAYERNORM_EPS!r})",
             f"{x} = {d} * {_expand(r, out.axes, i.axis)}"]
    for arg, op in zip(i.args[1:], ("*", "+")):
        lines.append(f"{x} = {x} {op} {_f32(ctx, arg, out.axes)}")
    lines.append(f"{ctx.define(i.out)} = {x}" + ("" if out.dtype == "fp32" else f".to({TL_DTYPES[out.dtype]})"))
    return lines


# ------------------------------------------------------------------------ masks, online softmax

NEG_INF = "float('-inf')"
LOG2E = 1.4426950408889634


def user_mask(ctx: Ctx, i: Instr, axes: tuple[str, ...], tensor_axes: tuple[str, ...]) -> str | None:
    """The instruction's `mask` over a block with `axes` (the masked tensor's logical axes are
    `tensor_axes`: point axes are the program's index), or None where it needs no evaluation."""
    if i.mask is None or (ctx.unmasked and i.mask == ctx.k.skip):
        return None
    from tilesched.ir.indexexpr import triton_mask

    def idx(a: str) -> str:
        if a not in tensor_axes:
            raise KeyError(a)
        return f"pid_{a}" if a in ctx.k.points else f"{ctx.offs[a]}{index(axes, a)}"

    return triton_mask(i.mask, idx, lambda a: f"n_{a}" if a in tensor_axes else mask_constant(i.stage, f"size_{a}"),
                       lambda n: mask_constant(i.stage, n))


def mask_bounds(k: KernelIR, i: Instr, tensor_axes: tuple[str, ...], tile: str) -> tuple[str, str]:
    """(all kept, none kept): scalar tests of the mask over reduction tile `tile` of the current
    output tile, by intervals (tilesched.ir.indexexpr.triton_bounds)."""
    from tilesched.ir.indexexpr import triton_bounds

    def box(a: str) -> tuple[str, str]:
        if a not in tensor_axes:
            raise KeyError(a)
        role = k.axis(a).role
        if role == "point":
            return f"pid_{a}", f"pid_{a}"
        if role == "grid":
            return f"pid_{a} * BLOCK_{a}", f"tl.minimum(pid_{a} * BLOCK_{a} + BLOCK_{a}, n_{a}) - 1"
        if role == "reduction":
            return f"{tile} * BLOCK_{a}", f"tl.minimum({tile} * BLOCK_{a} + BLOCK_{a}, n_{a}) - 1"
        return "0", f"n_{a} - 1"

    return triton_bounds(i.mask, box, lambda a: f"n_{a}" if a in tensor_axes else mask_constant(i.stage, f"size_{a}"),
                         lambda n: mask_constant(i.stage, n))


def _bcast(var: str, axes: tuple[str, ...], to: tuple[str, ...]) -> str:
    """A raw block over `axes` (a subset of `to`, same order) broadcast over `to`."""
    if axes == to:
        return var
    return var + "[" + ", ".join(":" if a in axes else "None" for a in to) + "]"


def rule_online_softmax(ctx: Ctx, i: Instr) -> list[str]:
    """One tile of a softmax along the reduction loop's axis: the running maximum m and sum l are
    updated, the accumulators the probabilities feed are rescaled by 2^(m_old - m_new) (m in log2
    units), and the tile's unnormalised probabilities 2^(x - m_new) are the output. `fn`: a
    folded `{scale: c}` of the input."""
    k = ctx.k
    src, m, l_ = i.args
    out = k.value(i.out)
    axes = out.axes
    ax = axes.index(i.axis)
    rows = tuple(a for a in axes if a != i.axis)
    x, mx, ms, al, e = (f"{n}_{i.out}" for n in ("x", "mx", "ms", "al", "e"))
    # everything in base 2: x = src * c * log2(e) (c a folded {scale: c}), so exp(c * s - m) = 2^(x - m)
    factor = f"({i.fn[0][1]} * {LOG2E!r})" if i.fn else repr(LOG2E)
    lines = [f"{x} = {_f32(ctx, src, axes)} * {factor}"]
    emptied = False  # some row of the tile may have no element left
    if ctx.masked(i.axis):
        lines += [f"if not EVEN_{i.axis}:",
                  f"    {x} = tl.where({ctx.mask(i.axis)}{index(axes, i.axis)}, {x}, {NEG_INF})"]
        emptied = True
    user = user_mask(ctx, i, axes, i.mask_axes)
    if user is not None:
        lines.append(f"{x} = tl.where({user}, {x}, {NEG_INF})")
        emptied = True
    lines.append(f"{mx} = tl.maximum({ctx.v(m)}, tl.reduce({x}, {ax}, _max))")
    if emptied:  # a row with nothing yet: keep exp2 finite (its terms are all 0)
        lines.append(f"{ms} = tl.where({mx} == {NEG_INF}, 0.0, {mx})")
    else:
        lines.append(f"{ms} = {mx}")
    lines.append(f"{al} = tl.exp2({ctx.v(m)} - {ms})")
    lines.append(f"{e} = tl.exp2({x} - {_expand(ms, axes, i.axis)})")
    lines.append(f"{ctx.define(l_)} = {ctx.v(l_)} * {al} + tl.reduce({e}, {ax}, _add)")
    for acc in i.targets:
        lines.append(f"{ctx.define(acc)} = {ctx.v(acc)} * {_bcast(al, rows, k.value(acc).axes)}")
    lines.append(f"{ctx.define(m)} = {mx}")
    lines.append(f"{ctx.define(i.out)} = {e}" + ("" if out.dtype == "fp32" else f".to({TL_DTYPES[out.dtype]})"))
    return lines


def rule_normalize(ctx: Ctx, i: Instr) -> list[str]:
    """After the loop: an accumulator divided by its online softmax's running sum (rows where the
    mask kept nothing stay zero)."""
    acc, l_ = i.args
    out = ctx.k.value(i.out)
    lv = ctx.k.value(l_)
    return [f"{ctx.define(i.out)} = {ctx.v(acc)} / {_bcast(f'tl.where({ctx.v(l_)} == 0.0, 1.0, {ctx.v(l_)})', lv.axes, out.axes)}"]


RULES: dict[str, Callable[[Ctx, Instr], list[str]]] = {
    "load": rule_load, "store": rule_store, "copy": rule_copy, "zeros": rule_zeros, "dot": rule_dot,
    "elementwise": rule_elementwise, "reduce": rule_reduce, "softmax": rule_softmax, "layernorm": rule_layernorm,
    "online_softmax": rule_online_softmax, "normalize": rule_normalize, "affine_dot": rule_affine_dot,
}
