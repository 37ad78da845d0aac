"""Per-op C rules of the Cortex-M backend: each renders one `OpNode` of a chain (passes/mcu_ir.py) for one
point, over CMSIS-DSP (`arm_dot_prod_q7`) and the helpers of support/ts_kernels.h, and packs its constants
(weights in the layout its loops read, biases with the zero points folded in as TFLite/CMSIS-NN do,
requantisation multipliers from the spec's scales, tables) from the spec's own tensors. Values are never
changed, only laid out: the expected output is always the semantics oracle's.

    fc         a vector times a matrix per point: a 1x1 convolution, a dot (fully connected layers, the
               projections, scores and context of attention), with the requantize that follows it
    conv       a k x k convolution (the stem): an im2col patch of the pixel (padding holds the input's zero
               point, so it contributes nothing), then a dot per output channel
    dw         a depthwise convolution: per channel over the taps inside the input
    pool       average pooling (TFLite's rounding, padding taps not counted)
    eltwise    int8 elementwise: tables for unary fns, TFLite's ADD / SUB / MUL with another tensor
    requant    an int32 vector to int8
    softmax    tilesched's exact table softmax
    layernorm  exact integer mean and variance, then float64 as the oracle defines it
    colsum     sums of an SRAM matrix along what a dot contracts (for a zero point on the other operand)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import numpy as np

from tilesched.errors import spec_error
from tilesched.ir.bind import Binding
from tilesched.ir.conv import pads, window
from tilesched.ir.expr import evaluate
from tilesched.passes.mcu_ir import Chain, McuKernel, OpNode
from tilesched.semantics import fns as F
from tilesched.semantics import quant as Q
from tilesched.semantics.ops import fn_items, int8_unary
from tilesched.semantics.values import QInfo, Value, align, declared_quant


@dataclass
class Packer:
    """The constants of one kernel, from the oracle's inputs: C declaration -> array (or scalar)."""

    b: Binding
    inputs: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def q(self, name: str) -> QInfo | None:
        return declared_quant(self.b.program.tensor(name), self.b.sizes)

    def arr(self, name: str, axes: tuple[str, ...]) -> np.ndarray:
        """Input `name` with its axes in the order `axes` (missing axes broadcast)."""
        t = self.b.program.tensor(name)
        v = Value(np.asarray(self.inputs[name], dtype=np.int64), t.shape, t.dtype)
        return np.asarray(align(None, v, axes))

    def add(self, ctype: str, name: str, values) -> str:
        self.arrays[f"{ctype} {name}"] = np.asarray(values)
        return name


@dataclass
class Ctx:
    """Rendering one chain: point variables, buffer addressing, the op's constant prefix."""

    k: McuKernel
    b: Binding
    chain: Chain
    oid: str = ""

    @property
    def program(self):
        return self.b.program

    def size(self, axis: str) -> int:
        return self.b.sizes[axis]

    def point(self, axis: str) -> str:
        return f"p_{axis}"

    def is_pix(self, tensor: str) -> bool:
        return tensor in self.chain.pix

    def ctype(self, tensor: str) -> str:
        return "int32_t" if self.k.tensors[tensor].dtype == "int32" else "int8_t"

    def ptr(self, tensor: str, coords: dict[str, str] | None = None) -> str:
        """Pointer expression to the element of `tensor` at `coords` (axis -> C expression; missing
        axes are 0). Chain vectors live in their `v_` buffer."""
        coords = coords or {}
        info = self.k.tensors[tensor]
        ct = self.ctype(tensor)
        if self.is_pix(tensor):
            off = coords.get(info.axes[-1], "0")
            return f"(({ct} *)(void *)(arena + OFF_v_{tensor}) + {off})" if off != "0" else \
                f"(({ct} *)(void *)(arena + OFF_v_{tensor}))"
        bf = self.k.buffer_of(tensor)
        base = info.alias or tensor
        if info.alias:
            coords = {ta: coords[a] for a, ta in zip(info.axes, self.k.tensors[base].axes) if a in coords}
        strides = bf.strides()
        terms = []
        for i, (a, e, n, st) in enumerate(zip(bf.axes, bf.extents, bf.sizes, strides)):
            c = coords.get(a)
            if c is None or c == "0":
                continue
            if i == 0 and e < n:
                c = f"(({c}) % {e})"
            terms.append(c if st == 1 else f"({c}) * {st}")
        off = " + ".join(terms) if terms else "0"
        bt = "int32_t" if bf.dtype == "int32" else "int8_t"
        return f"(({bt} *)(void *)(arena + OFF_{bf.name}) + {off})"

    def stride(self, tensor: str, axis: str) -> int:
        """Element stride of `axis` in the tensor's memory (1 for chain vectors)."""
        if self.is_pix(tensor):
            return 1
        info = self.k.tensors[tensor]
        bf = self.k.buffer_of(tensor)
        if info.alias:
            axis = self.k.tensors[info.alias].axes[info.axes.index(axis)]
        return bf.strides()[bf.axes.index(axis)]

    def at_point(self, tensor: str, positional: bool = False) -> dict[str, str]:
        """Coordinates of `tensor` at the current point (by axis name; `positional`: its first axes are
        the chain's point axes in order, as for a 1x1 convolution's input)."""
        axes = self.k.tensors[tensor].axes
        if positional:
            return {a: self.point(p) for a, p in zip(axes[:-1], self.chain.points)}
        return {a: self.point(a) for a in axes if a in self.chain.points}


# ----------------------------------------------------------------------------------------- helpers

def _stage(ctx: Ctx, name: str):
    return ctx.program.stage(name)


def _names_and_factor(ctx: Ctx, stage) -> tuple[list[str], float]:
    items = fn_items(stage)
    factor = 1.0
    if stage.op == "requantize" and items and items[0][0] == "scale":
        arg = items[0][1]
        factor = float(evaluate(arg, ctx.b.env()) if isinstance(arg, str) else arg)
        items = items[1:]
    return [n for n, _ in items], factor


def unary_table(names: list[str], qin: QInfo, qout: QInfo) -> tuple[int, int, np.ndarray | None]:
    """(lo, hi, table or None) that maps requantised int8 values in `qin` through `names` into `qout`
    exactly as the oracle does (clamps for relu/relu6 in an unchanged quantisation, else a table)."""
    if not names and qin.same_as(qout):
        return -128, 127, None
    if qin.same_as(qout) and all(n in F.CLAMPS for n in names):
        lo, hi = -128, 127
        for n in names:
            a, b = Q.act_range(n, qout.scale, qout.zero_point)
            lo, hi = max(lo, a), min(hi, b)
        return lo, hi, None
    table = int8_unary(None, np.arange(-128, 128, dtype=np.int64), qin, names, qout)
    return -128, 127, np.asarray(table, dtype=np.int64)


@dataclass
class Epilogue:
    """int32 accumulator -> int8 output element: TFLite requantisation, clamp, optional table."""

    mult: str  # C expression (scalar name or array name with [idx] added by `c`)
    shift: str
    per_index: bool
    zp: int
    lo: int
    hi: int
    lut: str | None

    def c(self, acc: str, idx: str) -> str:
        m = f"{self.mult}[{idx}]" if self.per_index else self.mult
        s = f"{self.shift}[{idx}]" if self.per_index else self.shift
        v = f"ts_requant({acc}, {m}, {s}, {self.zp}, {self.lo}, {self.hi})"
        return f"{self.lut}[{v} + 128]" if self.lut else v


def make_epilogue(ctx: Ctx, pk: Packer, acc_scale, out: str, names: list[str]) -> Epilogue:
    qout = pk.q(out)
    acc_scale = np.asarray(acc_scale, dtype=np.float64)
    m, s = Q.requant_multipliers(acc_scale, qout.scale)
    m, s = m.reshape(-1), s.reshape(-1)
    per = m.size > 1 and not (np.all(m == m[0]) and np.all(s == s[0]))
    if per:
        mn, sn = pk.add("int32_t", f"{ctx.oid}_m", m), pk.add("int32_t", f"{ctx.oid}_s", s)
    else:
        mn, sn = pk.add("int32_t", f"{ctx.oid}_m", m[:1]), pk.add("int32_t", f"{ctx.oid}_s", s[:1])
        mn, sn = f"{mn}[0]", f"{sn}[0]"
    lo, hi, table = unary_table(names, qout, qout)
    lut = pk.add("int8_t", f"{ctx.oid}_lut", table) if table is not None else None
    return Epilogue(mn, sn, per, qout.zero_point, lo, hi, lut)


def _scale_along(q: QInfo, axes: tuple[str, ...], sizes: dict[str, int]) -> np.ndarray:
    """A tensor's scale broadcast over `axes` (its quant axis, if any, among them)."""
    shape = tuple(sizes[a] for a in axes)
    if q.axis is None:
        return np.full(shape, float(q.scale))
    if q.axis not in axes:
        raise ValueError(f"per-channel scale along {q.axis}, not among {axes}")
    view = [1] * len(axes)
    view[axes.index(q.axis)] = -1
    return np.broadcast_to(np.asarray(q.scale, dtype=np.float64).reshape(view), shape)


# ----------------------------------------------------------------------------------------- fc

def rule_fc(ctx: Ctx, pk: Packer, op: OpNode) -> list[str]:
    """out[j] = epilogue(bias[j] + sum_k (a[k] - za)(b[j][k] - zb)) per point, over `arm_dot_prod_q7`."""
    prog, sizes = ctx.program, ctx.b.sizes
    st = _stage(ctx, op.stages[0])
    a_name, b_name = op.inp("a"), op.inp("b")
    dot_out = prog.tensor(st.writes[0])
    conv = bool(op.attr("conv"))
    a_t, b_t = prog.tensor(a_name), prog.tensor(b_name)
    if conv:
        cin, cout = a_t.shape[2], dot_out.shape[2]
        contracted, v, slices = (cin,), cout, ()
    else:
        contracted, v = tuple(op.attr("contracted")), dot_out.shape[-1]
        slices = tuple(x for x in b_t.shape if x in dot_out.shape[:-1])
    n_k = prod(sizes[x] for x in contracted)
    n = sizes[v]
    n_sl = prod(sizes[x] for x in slices)
    qa, qb = pk.q(a_name) or QInfo(1.0), pk.q(b_name) or QInfo(1.0)
    za, zb = qa.zero_point, qb.zero_point
    b_const = b_name in ctx.chain.consts
    # accumulator scale per (slice, j)
    idx_axes = slices + (v,)
    shape = tuple(sizes[x] for x in idx_axes)
    acc_scale = np.ones(shape)
    for q, name in ((qa, a_name), (qb, b_name)):
        if q.axis is None:
            acc_scale = acc_scale * float(q.scale)
        elif q.axis in idx_axes:
            acc_scale = acc_scale * _scale_along(q, idx_axes, sizes)
        else:
            raise spec_error(("tensors", name, "quant"), f"{prog.target} cannot generate per-channel scales of "
                                                         f"{name} along {q.axis} here yet")
    acc_scale = acc_scale.reshape(-1)
    rq = op.attr("requant")
    out = op.out
    if b_const:
        w = pk.arr(b_name, slices + (v,) + contracted).reshape(n_sl * n, n_k)
        pk.add("int8_t", f"{ctx.oid}_w", w)
        bias = -za * (w.sum(axis=1) - n_k * zb)
    else:
        bias = np.zeros(n_sl * n, dtype=np.int64)
    conv_bias = op.inp("bias")
    if conv_bias is not None:
        bias = bias + np.broadcast_to(pk.arr(conv_bias, (v,)), (n_sl, n)).reshape(-1)
    rbias = op.inp("rbias")
    if rbias is not None:
        rt = prog.tensor(rbias)
        if not set(rt.shape) <= set(idx_axes):
            raise spec_error(("tensors", rbias), f"{prog.target} cannot generate a requantize bias over "
                                                 f"{list(rt.shape)} here yet")
        bias = bias + np.broadcast_to(pk.arr(rbias, idx_axes), shape).reshape(-1)
    has_bias = b_const or conv_bias is not None or rbias is not None
    if has_bias:
        pk.add("int32_t", f"{ctx.oid}_b", bias)
    names: list[str] = []
    if rq is not None:
        names, factor = _names_and_factor(ctx, _stage(ctx, rq))
        acc_scale = acc_scale * factor
    elif conv:
        names = [nm for nm, _ in fn_items(st)]
    ep = make_epilogue(ctx, pk, acc_scale, out, names) if ctx.k.tensors[out].dtype == "int8" else None
    # pointers
    a_coords = ctx.at_point(a_name, positional=conv)
    for x in contracted:
        a_coords.pop(x, None)
    a_ptr = ctx.ptr(a_name, a_coords)
    sl_idx = "0"
    if slices:
        terms, stride = [], 1
        for x in reversed(slices):
            terms.append(f"{ctx.point(x)} * {stride}" if stride != 1 else ctx.point(x))
            stride *= sizes[x]
        sl_idx = " + ".join(reversed(terms))
    o_coords = ctx.at_point(out, positional=False)
    o_ptr = ctx.ptr(out, o_coords)
    o_stride = ctx.stride(out, ctx.k.tensors[out].axes[-1])
    lines = [f"const int8_t *a = {a_ptr};"]
    if slices:
        lines.append(f"const int sl = {sl_idx};")
    lines.append(f"{ctx.ctype(out)} *o = {o_ptr};")
    if zb != 0:
        lines.append(f"const int32_t corr = -({zb}) * ts_sum(a, {n_k});")
    lines.append(f"for (int j = 0; j < {n}; j++) {{")
    idx = f"sl * {n} + j" if slices else "j"
    if b_const:
        row = f"{ctx.oid}_w + ({idx}) * {n_k}"
    else:
        b_coords = {x: ctx.point(x) for x in slices}
        b_coords[v] = "j"
        row = ctx.ptr(b_name, b_coords)
    acc = f"ts_dot(a, {row}, {n_k})"
    if has_bias:
        acc = f"{ctx.oid}_b[{idx}] + {acc}"
    if zb != 0:
        acc += " + corr"
    colsum = op.inp("colsum")
    if colsum is not None and za != 0:
        cs_coords = {x: ctx.point(x) for x in slices}
        cs_coords[v] = "j"
        acc += f" - ({za}) * *{ctx.ptr(colsum, cs_coords)} + {n_k * za * zb}"
    lines.append(f"  const int32_t acc = {acc};")
    target = "o[j]" if o_stride == 1 else f"o[j * {o_stride}]"
    lines.append(f"  {target} = {ep.c('acc', idx) if ep else 'acc'};")
    lines.append("}")
    return lines


# ----------------------------------------------------------------------------------------- conv

def _conv_geometry(ctx: Ctx, st, x_name: str):
    x = ctx.program.tensor(x_name)
    sizes = ctx.b.sizes
    h, w, c = (sizes[a] for a in x.shape)
    kh, kw = window(st, x.shape, sizes)
    ph = pads(st.padding, h, kh, st.stride)[0]
    pw = pads(st.padding, w, kw, st.stride)[0]
    return x, h, w, c, kh, kw, ph, pw


def rule_conv(ctx: Ctx, pk: Packer, op: OpNode) -> list[str]:
    """im2col patch of one output pixel (zero point in the padding), then one dot per output channel."""
    prog, sizes = ctx.program, ctx.b.sizes
    st = _stage(ctx, op.stages[0])
    x_name, w_name = op.inp("x"), op.inp("w")
    x, h, wd, c, kh, kw, ph, pw = _conv_geometry(ctx, st, x_name)
    conv_out = prog.tensor(st.writes[0])
    co = conv_out.shape[2]
    w_t = prog.tensor(w_name)
    kax = tuple(a for a in w_t.shape if a not in (x.shape[2], co))
    wts = pk.arr(w_name, (co,) + kax + (x.shape[2],)).reshape(sizes[co], -1)
    nk = wts.shape[1]
    qx, qw = pk.q(x_name), pk.q(w_name)
    zx, zw = qx.zero_point, qw.zero_point
    pk.add("int8_t", f"{ctx.oid}_w", wts)
    bias = -zx * (wts.sum(axis=1) - nk * zw)
    if op.inp("bias") is not None:
        bias = bias + pk.arr(op.inp("bias"), (co,))
    pk.add("int32_t", f"{ctx.oid}_b", bias)
    acc_scale = float(qx.scale) * _scale_along(qw, (co,), sizes)
    names = [nm for nm, _ in fn_items(st)]
    rq = op.attr("requant")
    if rq is not None:
        names, factor = _names_and_factor(ctx, _stage(ctx, rq))
        acc_scale = acc_scale * factor
    ep = make_epilogue(ctx, pk, acc_scale, op.out, names) if ctx.k.tensors[op.out].dtype == "int8" else None
    oh, ow = (ctx.point(a) for a in conv_out.shape[:2])
    row = ctx.ptr(x_name, {x.shape[0]: "ih"})
    o_ptr = ctx.ptr(op.out, ctx.at_point(op.out))
    o_stride = ctx.stride(op.out, ctx.k.tensors[op.out].axes[-1])
    rowlen = kw * c
    lines = [f"int8_t *patch = (int8_t *)(arena + OFF_s_{op.out});",
             f"for (int kh = 0; kh < {kh}; kh++) {{",
             f"  const int ih = {oh} * {st.stride} - {ph} + kh;",
             f"  int8_t *dst = patch + kh * {rowlen};",
             f"  if (ih < 0 || ih >= {h}) {{ memset(dst, {zx & 0xFF}, {rowlen}); continue; }}",
             f"  const int8_t *src = {row};",
             f"  const int iw0 = {ow} * {st.stride} - {pw};",
             f"  if (iw0 >= 0 && iw0 + {kw} <= {wd}) {{ memcpy(dst, src + iw0 * {c}, {rowlen}); continue; }}",
             f"  for (int kw = 0; kw < {kw}; kw++) {{",
             "    const int iw = iw0 + kw;",
             f"    if (iw < 0 || iw >= {wd}) memset(dst + kw * {c}, {zx & 0xFF}, {c});",
             f"    else memcpy(dst + kw * {c}, src + iw * {c}, {c});",
             "  }",
             "}",
             f"{ctx.ctype(op.out)} *o = {o_ptr};"]
    if zw != 0:
        lines.append(f"const int32_t corr = -({zw}) * ts_sum(patch, {nk});")
    lines.append(f"for (int j = 0; j < {sizes[co]}; j++) {{")
    acc = f"{ctx.oid}_b[j] + ts_dot(patch, {ctx.oid}_w + j * {nk}, {nk})" + (" + corr" if zw else "")
    lines.append(f"  const int32_t acc = {acc};")
    target = "o[j]" if o_stride == 1 else f"o[j * {o_stride}]"
    lines.append(f"  {target} = {ep.c('acc', 'j') if ep else 'acc'};")
    lines.append("}")
    return lines


def rule_dw(ctx: Ctx, pk: Packer, op: OpNode) -> list[str]:
    """Depthwise convolution of one pixel: per channel, (x - zx)(w - zw) over the taps inside the input."""
    prog, sizes = ctx.program, ctx.b.sizes
    st = _stage(ctx, op.stages[0])
    x_name, w_name = op.inp("x"), op.inp("w")
    x, h, wd, c, kh, kw, ph, pw = _conv_geometry(ctx, st, x_name)
    dw_out = prog.tensor(st.writes[0])
    ch = x.shape[2]
    w_t = prog.tensor(w_name)
    kax = tuple(a for a in w_t.shape if a != ch)
    wts = pk.arr(w_name, kax + (ch,)).reshape(-1, c)
    pk.add("int8_t", f"{ctx.oid}_w", wts)
    qx, qw = pk.q(x_name), pk.q(w_name)
    zx, zw = qx.zero_point, qw.zero_point
    bias = pk.arr(op.inp("bias"), (ch,)) if op.inp("bias") is not None else np.zeros(c, dtype=np.int64)
    pk.add("int32_t", f"{ctx.oid}_b", bias)
    acc_scale = float(qx.scale) * _scale_along(qw, (ch,), sizes)
    names = [nm for nm, _ in fn_items(st)]
    rq = op.attr("requant")
    if rq is not None:
        names, factor = _names_and_factor(ctx, _stage(ctx, rq))
        acc_scale = acc_scale * factor
    ep = make_epilogue(ctx, pk, acc_scale, op.out, names) if ctx.k.tensors[op.out].dtype == "int8" else None
    oh, ow = (ctx.point(a) for a in dw_out.shape[:2])
    o_ptr = ctx.ptr(op.out, ctx.at_point(op.out))
    o_stride = ctx.stride(op.out, ctx.k.tensors[op.out].axes[-1])
    row = ctx.ptr(x_name, {x.shape[0]: "ih0 + t"})
    target = "o[ch]" if o_stride == 1 else f"o[ch * {o_stride}]"
    store = f"{target} = {ep.c('acc', 'ch') if ep else 'acc'};"
    wterm = f"(*w - {zw})" if zw else "*w"
    lines = [f"const int ih0 = {oh} * {st.stride} - {ph}, iw0 = {ow} * {st.stride} - {pw};",
             f"{ctx.ctype(op.out)} *o = {o_ptr};"]
    if zw == 0:
        # inside the input every tap is there: the zero point folds into the bias, the taps unroll
        inner = bias - zx * wts.sum(axis=0)
        pk.add("int32_t", f"{ctx.oid}_bi", inner)
        lines.append(f"if (ih0 >= 0 && ih0 + {kh} <= {h} && iw0 >= 0 && iw0 + {kw} <= {wd}) {{")
        for t in range(kh):
            r = ctx.ptr(x_name, {x.shape[0]: f"ih0 + {t}" if t else "ih0"})
            lines.append(f"  const int8_t *r{t} = {r} + iw0 * {c};")
        lines.append(f"  for (int ch = 0; ch < {c}; ch++) {{")
        lines.append(f"    const int8_t *w = {ctx.oid}_w + ch;")
        lines.append(f"    int32_t acc = {ctx.oid}_bi[ch];")
        for t in range(kh):
            terms = " + ".join(f"r{t}[ch + {u * c}] * w[{(t * kw + u) * c}]" if u else f"r{t}[ch] * w[{t * kw * c}]"
                               for u in range(kw))
            lines.append(f"    acc += {terms};")
        lines.append(f"    {store}")
        lines.append("  }")
        lines.append("} else {")
        lines += _indent_lines(_dw_border(kh, kw, h, wd, c, zx, wterm, row, ctx.oid, store))
        lines.append("}")
    else:
        lines += _dw_border(kh, kw, h, wd, c, zx, wterm, row, ctx.oid, store)
    return lines


def _indent_lines(lines: list[str]) -> list[str]:
    return ["  " + ln for ln in lines]


def _dw_border(kh, kw, h, wd, c, zx, wterm, row, oid, store) -> list[str]:
    return [f"const int kh0 = ih0 < 0 ? -ih0 : 0, kh1 = TS_MIN({kh}, {h} - ih0);",
            f"const int kw0 = iw0 < 0 ? -iw0 : 0, kw1 = TS_MIN({kw}, {wd} - iw0);",
            f"const int8_t *rows[{kh}];",
            f"for (int t = kh0; t < kh1; t++) rows[t] = {row} + (iw0 + kw0) * {c};",
            f"for (int ch = 0; ch < {c}; ch++) {{",
            f"  int32_t acc = {oid}_b[ch];",
            "  for (int t = kh0; t < kh1; t++) {",
            f"    const int8_t *xr = rows[t] + ch, *w = {oid}_w + (t * {kw} + kw0) * {c} + ch;",
            f"    for (int u = kw0; u < kw1; u++, xr += {c}, w += {c}) acc += (*xr - ({zx})) * {wterm};",
            "  }",
            f"  {store}",
            "}"]


def rule_pool(ctx: Ctx, pk: Packer, op: OpNode) -> list[str]:
    """Average pooling of one pixel: TFLite's AVERAGE_POOL_2D (valid taps, rounding half away from zero)."""
    prog = ctx.program
    st = _stage(ctx, op.stages[0])
    x_name = op.inp("x")
    x, h, wd, c, kh, kw, ph, pw = _conv_geometry(ctx, st, x_name)
    out = prog.tensor(st.writes[0])
    q = pk.q(op.out)
    lo, hi = -128, 127
    for nm, _ in fn_items(st):
        a, b = Q.act_range(nm, q.scale, q.zero_point)
        lo, hi = max(lo, a), min(hi, b)
    oh, ow = (ctx.point(a) for a in out.shape[:2])
    row = ctx.ptr(x_name, {x.shape[0]: "ih0 + t"})
    o_ptr = ctx.ptr(op.out, ctx.at_point(op.out))
    o_stride = ctx.stride(op.out, ctx.k.tensors[op.out].axes[-1])
    target = "o[ch]" if o_stride == 1 else f"o[ch * {o_stride}]"
    return [f"const int ih0 = {oh} * {st.stride} - {ph}, iw0 = {ow} * {st.stride} - {pw};",
            f"const int kh0 = ih0 < 0 ? -ih0 : 0, kh1 = TS_MIN({kh}, {h} - ih0);",
            f"const int kw0 = iw0 < 0 ? -iw0 : 0, kw1 = TS_MIN({kw}, {wd} - iw0);",
            "const int32_t count = (kh1 - kh0) * (kw1 - kw0);",
            f"int8_t *o = {o_ptr};",
            f"for (int ch = 0; ch < {c}; ch++) {{",
            "  int32_t acc = 0;",
            "  for (int t = kh0; t < kh1; t++) {",
            f"    const int8_t *xr = {row} + (iw0 + kw0) * {c} + ch;",
            f"    for (int u = kw0; u < kw1; u++, xr += {c}) acc += *xr;",
            "  }",
            "  acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;",
            f"  {target} = (int8_t)TS_MIN(TS_MAX(acc, {lo}), {hi});",
            "}"]


# ----------------------------------------------------------------------------------------- elementwise

def rule_eltwise(ctx: Ctx, pk: Packer, op: OpNode) -> list[str]:
    """Unary fns as one table (or clamps), around at most one TFLite ADD / SUB / MUL with a second tensor."""
    st = _stage(ctx, op.stages[0])
    x_name, y_name = op.inp("x"), op.inp("y")
    out = op.out
    items = [nm for nm, _ in fn_items(st)] if st.op == "elementwise" else []
    qx, qo = pk.q(x_name), pk.q(out)
    n = ctx.size(ctx.k.tensors[out].axes[-1])
    binary = next((i for i, nm in enumerate(items) if F.is_binary(nm)), None)
    lines = []
    xs = ctx.stride(x_name, ctx.k.tensors[x_name].axes[-1])
    os_ = ctx.stride(out, ctx.k.tensors[out].axes[-1])
    lines.append(f"const int8_t *x = {ctx.ptr(x_name, ctx.at_point(x_name))};")
    lines.append(f"int8_t *o = {ctx.ptr(out, ctx.at_point(out))};")
    xv = "x[i]" if xs == 1 else f"x[i * {xs}]"
    ov = "o[i]" if os_ == 1 else f"o[i * {os_}]"
    if binary is None:
        lo, hi, table = unary_table(items, qx, qo)
        if table is not None:
            lut = pk.add("int8_t", f"{ctx.oid}_lut", table)
            expr = f"{lut}[{xv} + 128]"
        elif (lo, hi) != (-128, 127):
            expr = f"(int8_t)TS_MIN(TS_MAX({xv}, {lo}), {hi})"
        else:
            expr = xv
        lines.append(f"for (int i = 0; i < {n}; i++) {ov} = {expr};")
        return lines
    pre, name, post = items[:binary], items[binary], items[binary + 1:]
    qy = pk.q(y_name)
    ys = ctx.stride(y_name, ctx.k.tensors[y_name].axes[-1])
    y_ptr = ctx.ptr(y_name, ctx.at_point(y_name)) if y_name not in ctx.chain.consts else None
    if y_ptr is None:
        y_arr = pk.arr(y_name, ctx.k.tensors[y_name].axes)
        yc = pk.add("int8_t", f"{ctx.oid}_y", y_arr)
        coords = ctx.at_point(y_name)
        axes = ctx.k.tensors[y_name].axes
        terms, stride = [], 1
        for a in reversed(axes):
            if a in coords:
                terms.append(f"{coords[a]} * {stride}")
            stride *= ctx.size(a)
        y_ptr = f"({yc} + {' + '.join(terms) if terms else '0'})"
        ys = 1
    lines.append(f"const int8_t *y = {y_ptr};")
    yv = "y[i]" if ys == 1 else f"y[i * {ys}]"
    xe = xv
    if pre:
        lo, hi, table = unary_table(pre, qx, qx)
        if table is not None:
            xe = f"{pk.add('int8_t', f'{ctx.oid}_pre', table)}[{xv} + 128]"
        elif (lo, hi) != (-128, 127):
            xe = f"TS_MIN(TS_MAX({xv}, {lo}), {hi})"
    if name == "mul":
        m, s = Q.quantize_multiplier(Q.f32(qx.scale) * Q.f32(qy.scale) / Q.f32(qo.scale))
        core = f"ts_mul_q({xe}, {yv}, {qx.zero_point}, {qy.zero_point}, {m}, {s}, {qo.zero_point})"
    else:
        s1, s2, so = Q.f32(qx.scale), Q.f32(qy.scale), Q.f32(qo.scale)
        twice = 2.0 * max(s1, s2)
        m1, sh1 = Q.quantize_multiplier(s1 / twice)
        m2, sh2 = Q.quantize_multiplier(s2 / twice)
        mo, sho = Q.quantize_multiplier(twice / ((1 << Q.ADD_LEFT_SHIFT) * so))
        ye = yv if name != "sub" else f"(2 * {qy.zero_point} - {yv})"
        core = (f"ts_add_q({xe}, {ye}, {qx.zero_point}, {m1}, {sh1}, {qy.zero_point}, {m2}, {sh2}, {mo}, {sho}, "
                f"{qo.zero_point})")
    lo, hi, table = unary_table(post, qo, qo)
    if table is not None:
        core = f"{pk.add('int8_t', f'{ctx.oid}_post', table)}[{core} + 128]"
    elif (lo, hi) != (-128, 127):
        core = f"(int8_t)TS_MIN(TS_MAX({core}, {lo}), {hi})"
    lines.append(f"for (int i = 0; i < {n}; i++) {ov} = {core};")
    return lines


def acc_scale_of(ctx: Ctx, tensor: str):
    """The scale of an int32 accumulator tensor: from the dot or convolution that writes it."""
    prog, sizes = ctx.program, ctx.b.sizes
    w = next(s for s in prog.stages if tensor in s.writes)
    out = prog.tensor(tensor)
    if w.op == "dot":
        ops = [n for n in w.reads if n != tensor][:2]
        qa, qb = (declared_quant(prog.tensor(n), sizes) for n in ops)
    else:
        qa, qb = (declared_quant(prog.tensor(n), sizes) for n in w.reads[:2])
    s = np.asarray(1.0)
    for q in (qa, qb):
        s = s * (_scale_along(q, out.shape[-1:], sizes) if q.axis is not None else float(q.scale))
    return np.broadcast_to(s, (sizes[out.shape[-1]],))


def rule_requant(ctx: Ctx, pk: Packer, op: OpNode) -> list[str]:
    st = _stage(ctx, op.stages[0])
    x_name = op.inp("x")
    n = ctx.size(ctx.k.tensors[op.out].axes[-1])
    names, factor = _names_and_factor(ctx, st)
    ep = make_epilogue(ctx, pk, acc_scale_of(ctx, x_name) * factor, op.out, names)
    xs = ctx.stride(x_name, ctx.k.tensors[x_name].axes[-1])
    os_ = ctx.stride(op.out, ctx.k.tensors[op.out].axes[-1])
    lines = [f"const int32_t *x = {ctx.ptr(x_name, ctx.at_point(x_name))};",
             f"int8_t *o = {ctx.ptr(op.out, ctx.at_point(op.out))};"]
    acc = "x[i]" if xs == 1 else f"x[i * {xs}]"
    if op.inp("bias") is not None:
        bias = pk.arr(op.inp("bias"), (ctx.k.tensors[op.out].axes[-1],))
        acc = f"{acc} + {pk.add('int32_t', f'{ctx.oid}_b', bias)}[i]"
    ov = "o[i]" if os_ == 1 else f"o[i * {os_}]"
    lines.append(f"for (int i = 0; i < {n}; i++) {ov} = {ep.c(acc, 'i')};")
    return lines


def _contiguous(ctx: Ctx, tensor: str, what: str) -> None:
    if ctx.stride(tensor, ctx.k.tensors[tensor].axes[-1]) != 1:
        raise spec_error(("tensors", tensor), f"{ctx.program.target} cannot generate a {what} over a strided "
                                              f"vector of {tensor} yet")


def rule_softmax(ctx: Ctx, pk: Packer, op: OpNode) -> list[str]:
    x_name = op.inp("x")
    _contiguous(ctx, x_name, "softmax")
    _contiguous(ctx, op.out, "softmax")
    lut = pk.add("uint32_t", f"{ctx.oid}_lut", Q.softmax_lut(pk.q(x_name).scale))
    n = ctx.size(ctx.k.tensors[op.out].axes[-1])
    return [f"ts_softmax_row({ctx.ptr(x_name, ctx.at_point(x_name))}, {ctx.ptr(op.out, ctx.at_point(op.out))}, {n}, "
            f"{lut});"]


def _double(v: float) -> str:
    return repr(float(v))


def rule_layernorm(ctx: Ctx, pk: Packer, op: OpNode) -> list[str]:
    x_name = op.inp("x")
    _contiguous(ctx, x_name, "layernorm")
    _contiguous(ctx, op.out, "layernorm")
    qx, qo = pk.q(x_name), pk.q(op.out)
    v = ctx.k.tensors[op.out].axes[-1]
    n = ctx.size(v)
    args = []
    for role in ("gamma", "beta"):
        t = op.inp(role)
        if t is None:
            args.append("0")
            continue
        qt = pk.q(t)
        vals = Q.dequantize(pk.arr(t, (v,)), qt.scale, qt.zero_point)
        pk.arrays[f"double {ctx.oid}_{role}"] = np.asarray(vals, dtype=np.float64)
        args.append(f"{ctx.oid}_{role}")
    return [f"ts_layernorm_row({ctx.ptr(x_name, ctx.at_point(x_name))}, {ctx.ptr(op.out, ctx.at_point(op.out))}, "
            f"{n}, {qx.zero_point}, {_double(float(qx.scale))}, {args[0]}, {args[1]}, {_double(Q.f32(qo.scale))}, "
            f"{qo.zero_point});"]


def rule_colsum(ctx: Ctx, pk: Packer, op: OpNode) -> list[str]:
    """Sums of an SRAM matrix's rows (the contracted axes, contiguous), one per output element."""
    b_name = op.inp("b")
    out = ctx.k.tensors[op.out]
    v = out.axes[-1]
    contracted = tuple(op.attr("contracted"))
    n_k = prod(ctx.size(x) for x in contracted)
    coords = {x: ctx.point(x) for x in out.axes[:-1]}
    coords_j = dict(coords)
    coords_j[v] = "j"
    return [f"int32_t *o = {ctx.ptr(op.out, coords)};",
            f"for (int j = 0; j < {ctx.size(v)}; j++) o[j] = ts_sum({ctx.ptr(b_name, coords_j)}, {n_k});"]


RULES = {"fc": rule_fc, "conv": rule_conv, "dw": rule_dw, "pool": rule_pool, "eltwise": rule_eltwise,
         "requant": rule_requant, "softmax": rule_softmax, "layernorm": rule_layernorm, "colsum": rule_colsum}


def macs(b: Binding, op: OpNode) -> int:
    """Multiply-accumulates of one point of `op` (what the rule's inner loops execute, padding taps
    skipped by dw/pool counted as if present)."""
    prog, sizes = b.program, b.sizes
    if op.rule in ("fc",):
        st = prog.stage(op.stages[0])
        out = prog.tensor(st.writes[0])
        if op.attr("conv"):
            return sizes[prog.tensor(op.inp("a")).shape[2]] * sizes[out.shape[2]]
        return prod(sizes[x] for x in op.attr("contracted")) * sizes[out.shape[-1]]
    if op.rule == "conv":
        st = prog.stage(op.stages[0])
        x = prog.tensor(op.inp("x"))
        out = prog.tensor(st.writes[0])
        return st.kernel[0] * st.kernel[1] * sizes[x.shape[2]] * sizes[out.shape[2]]
    if op.rule in ("dw", "pool"):
        st = prog.stage(op.stages[0])
        x = prog.tensor(op.inp("x"))
        kh, kw = window(st, x.shape, sizes)
        return kh * kw * sizes[x.shape[2]]
    return 0
