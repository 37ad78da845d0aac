"""What every op of the language computes, on whole tensors: the semantics oracle's rules.

Each rule takes a `Ctx` (the stage, the values it reads, the array namespace) and returns the
values it writes. Float tensors are float64; integer tensors are exact int64 with TFLite's
quantised arithmetic (see quant.py). Tiling never enters: a stage is applied once to whole
tensors (lower.py refuses placements where tiles would change that, see `at` in README).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tilesched.errors import SpecError, spec_error
from tilesched.ir.conv import pads, window
from tilesched.ir.dtypes import FLOAT, INT
from tilesched.ir.expr import ExprError, evaluate
from tilesched.ir.indexexpr import eval_mask
from tilesched.ir.nodes import Program, StageIR, TensorIR
from tilesched.semantics import fns as F
from tilesched.semantics import quant as Q
from tilesched.semantics.values import QInfo, Value, align, declared_quant

INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-(1 << 15), (1 << 15) - 1),
             "int32": (Q.INT32_MIN, Q.INT32_MAX), "int4": (-8, 7),
             "uint4": (0, 15), "int3": (-4, 3), "uint3": (0, 7), "int2": (-2, 1), "uint2": (0, 3)}
INT8_SOFTMAX_OUT = (1.0 / 256.0, -128)


@dataclass
class Ctx:
    stage: StageIR
    program: Program
    sizes: dict[str, int]
    env: dict[str, object]  # names constants may use: axes, parameters, options, limits
    xp: object  # arrays.NumpyOps or TorchOps
    values: dict[str, Value]

    def read(self, name: str) -> Value:
        return self.values[name]

    def tensor(self, name: str) -> TensorIR:
        return self.program.tensor(name)

    @property
    def out(self) -> TensorIR:
        return self.program.tensor(self.stage.writes[0])

    def out_quant(self) -> QInfo | None:
        return declared_quant(self.out, self.sizes)

    def error(self, field: str, message: str) -> SpecError:
        return spec_error(("stages", self.stage.index, field), f"stage {self.stage.name!r}: {message}")

    def constant(self, arg) -> float:
        try:
            v = evaluate(arg, self.env) if isinstance(arg, str) else arg
        except ExprError as exc:
            raise self.error("fn", str(exc)) from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.error("fn", f"constant {arg!r} is not a number")
        return float(v)

    def zeros(self, tensor: TensorIR) -> Value:
        shape = tuple(self.sizes[a] for a in tensor.shape)
        data = self.xp.zeros(shape) if tensor.dtype in FLOAT else np.zeros(shape, dtype=np.int64)
        return Value(data, tensor.shape, tensor.dtype, declared_quant(tensor, self.sizes))


def stage_mask(ctx: Ctx, axes: tuple[str, ...]):
    """The stage's `mask` as a numpy bool array broadcastable over `axes` (None: no mask)."""
    if ctx.stage.mask is None:
        return None
    try:
        return eval_mask(ctx.stage.mask, axes, ctx.sizes, ctx.env)
    except ExprError as exc:
        raise ctx.error("mask", str(exc)) from None


def fn_items(stage: StageIR) -> list[tuple[str, object]]:
    """(name, constant or None) per `fn` entry (`relu` or `{scale: 0.5}`)."""
    out = []
    for f in stage.fn:
        if isinstance(f, str):
            out.append((f, None))
        else:
            (name, arg), = (f.items() if isinstance(f, dict) else [tuple(f)])
            out.append((name, arg))
    return out


def _saturate(x: np.ndarray, dtype: str) -> np.ndarray:
    lo, hi = INT_RANGE[dtype]
    return np.clip(x, lo, hi).astype(np.int64)


# ------------------------------------------------------------------------------- quantised unary fns

def _real_chain(names: list[str], xp) -> Callable:
    def f(x):
        for n in names:
            x = F.UNARY[n](x, xp)
        return x
    return f


def int8_unary(ctx: Ctx, q: np.ndarray, qin: QInfo, names: list[str], qout: QInfo) -> np.ndarray:
    """Unary fns on quantised int8: with the quantisation unchanged, relu/relu6 are TFLite's
    activation clamps; anything else is one 256-entry table of the composed real function."""
    if not names and qin.same_as(qout):
        return q
    if not (qin.per_tensor and qout.per_tensor):
        raise ctx.error("fn", "fns on per-channel quantised values are not defined; requantize first")
    if qin.same_as(qout) and all(n in F.CLAMPS for n in names):
        lo, hi = Q.INT8_MIN, Q.INT8_MAX
        for n in names:
            a, b = Q.act_range(n, qout.scale, qout.zero_point)
            lo, hi = max(lo, a), min(hi, b)
        return np.clip(q, lo, hi).astype(np.int64)
    from tilesched.semantics.arrays import NUMPY

    lut = Q.lut_int8(_real_chain(names, NUMPY), qin.scale, qin.zero_point, qout.scale, qout.zero_point)
    return lut[np.asarray(q, dtype=np.int64) + 128]


def int32_unary(ctx: Ctx, x: np.ndarray, name: str) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0)
    if name == "neg":
        return -x
    if name == "abs":
        return np.abs(x)
    raise ctx.error("fn", f"fn {name!r} is not defined on unquantised integers (requantize, or cast to float)")


# ----------------------------------------------------------------------------------------- memory

def eval_memory(ctx: Ctx) -> dict[str, Value]:
    """load / store / copy: the values, unchanged (a store into a narrower float dtype rounds;
    the oracle keeps float64, and checks use the output dtype's tolerance)."""
    src = ctx.read(ctx.stage.reads[0])
    dst = ctx.out
    if (src.dtype in FLOAT) != (dst.dtype in FLOAT) or (src.dtype in INT and src.dtype != dst.dtype):
        raise ctx.error("writes", f"{ctx.stage.op} from {src.dtype} to {dst.dtype} changes the value domain: "
                                  "use an elementwise cast or a requantize stage")
    qd = declared_quant(dst, ctx.sizes)
    if src.quant is not None and qd is not None and not src.quant.same_as(qd):
        raise ctx.error("writes", f"{ctx.stage.op} copies integers between different `quant`s "
                                  f"({src.dtype} {ctx.stage.reads[0]} -> {dst.name}); requantize instead")
    data = align(ctx.xp, src, dst.shape)
    return {dst.name: Value(data, dst.shape, dst.dtype, qd or src.quant)}


def eval_comm(ctx: Ctx) -> dict[str, Value]:
    """Collectives in the global view: every tensor is the logical whole (a sharded tensor is all
    its shards, a partial one the sum of its parts), so all_gather, reduce_scatter, all_reduce,
    all_to_all, broadcast, put and get move values without changing them; signal and wait order
    stages and write nothing."""
    if ctx.stage.op in ("signal", "wait") or not ctx.stage.writes:
        return {}
    return eval_memory(ctx)


# -------------------------------------------------------------------------------------------- dot

def _einsum_letters(*shapes: tuple[str, ...]) -> dict[str, str]:
    names = sorted({a for s in shapes for a in s})
    if len(names) > 52:
        raise ValueError("too many axes")
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return {a: letters[i] for i, a in enumerate(names)}


def contraction(xp, a, a_axes, b, b_axes, out_axes, integer: bool):
    m = _einsum_letters(a_axes, b_axes, out_axes)
    spec = f"{''.join(m[x] for x in a_axes)},{''.join(m[x] for x in b_axes)}->{''.join(m[x] for x in out_axes)}"
    if integer:
        return np.einsum(spec, a, b)  # int64, exact
    return xp.einsum(spec, a, b)


def _product_scale(ctx: Ctx, qa: QInfo, qb: QInfo, out_axes: tuple[str, ...]) -> QInfo:
    for q in (qa, qb):
        if q.axis is not None and q.axis not in out_axes:
            raise ctx.error("reads", f"a per-channel scale along the contracted axis {q.axis} has no "
                                     "single accumulator scale")
    if qa.axis is not None and qb.axis is not None and qa.axis != qb.axis:
        raise ctx.error("reads", "per-channel scales along two different axes are not defined")
    axis = qa.axis or qb.axis
    scale = np.asarray(qa.scale) * np.asarray(qb.scale)
    return QInfo(scale if axis else float(scale), 0, axis)


def _accumulated(ctx: Ctx, new: Value) -> Value:
    """A stage that also reads the tensor it writes adds to what it holds."""
    out = ctx.out
    if out.name not in ctx.stage.reads:
        return new
    old = ctx.read(out.name)
    if new.is_float:
        return Value(align(ctx.xp, old, out.shape) + new.data, out.shape, out.dtype)
    if old.quant is not None and new.quant is not None and not old.quant.same_as(new.quant):
        raise ctx.error("reads", f"accumulating into {out.name}, whose scale is not the product's")
    return Value(align(ctx.xp, old, out.shape) + new.data, out.shape, out.dtype, new.quant or old.quant)


def eval_dot(ctx: Ctx) -> dict[str, Value]:
    """Contract the axes the two operands share and the output lacks (einsum by axis names);
    integers: sum of (a - zp_a)(b - zp_b) in int64, scale s_a * s_b, zero point 0."""
    out = ctx.out
    a, b = (ctx.read(n) for n in [r for r in ctx.stage.reads if r != out.name][:2])
    if a.is_float:
        data = contraction(ctx.xp, a.data, a.axes, b.data, b.axes, out.shape, integer=False)
        return {out.name: _accumulated(ctx, Value(data, out.shape, out.dtype))}
    qa, qb = a.quant or QInfo(1.0), b.quant or QInfo(1.0)
    data = contraction(None, a.data - qa.zero_point, a.axes, b.data - qb.zero_point, b.axes, out.shape,
                       integer=True)
    new = Value(data, out.shape, out.dtype, _product_scale(ctx, qa, qb, out.shape))
    acc = _accumulated(ctx, new)
    return {out.name: Value(_saturate(acc.data, out.dtype), out.shape, out.dtype, acc.quant)}


# ------------------------------------------------------------------------------------ requantize

def requantize_to(ctx: Ctx, acc: np.ndarray, axes: tuple[str, ...], qacc: QInfo, qout: QInfo,
                  names: list[str], out_dtype: str) -> np.ndarray:
    """int32 accumulators (scale qacc) to int8 in qout, then the unary fns (clamps or a table)."""
    if not qout.per_tensor:
        raise ctx.error("writes", "a requantized output has one scale (per-channel outputs are not defined)")
    qm, shift = Q.requant_multipliers(qacc.scale_along(axes), qout.scale)
    lo, hi = INT_RANGE[out_dtype]
    q = Q.requantize(acc, qm, shift, qout.zero_point, lo, hi)
    return int8_unary(ctx, q, qout, names, qout) if names else q


def eval_requantize(ctx: Ctx) -> dict[str, Value]:
    """int32 (plus an optional int32 bias, the second read) to the output's quantisation with
    TFLite's MultiplyByQuantizedMultiplier; a leading `{scale: c}` multiplies the real value first
    (folded into the multiplier); unary `fn` entries then apply (relu/relu6: clamps)."""
    out = ctx.out
    acc = ctx.read(ctx.stage.reads[0])
    data = align(ctx.xp, acc, out.shape)
    if len(ctx.stage.reads) > 1:
        data = data + align(ctx.xp, ctx.read(ctx.stage.reads[1]), out.shape)
    qacc = acc.quant
    if qacc is None:
        raise ctx.error("reads", f"{ctx.stage.reads[0]} has no scale: give it `quant`, or produce it "
                                 "with a dot or convolution of quantised tensors")
    qout = ctx.out_quant()
    items = fn_items(ctx.stage)
    if items and items[0][0] == "scale":  # a real factor, folded into the multiplier
        c = ctx.constant(items[0][1])
        qacc = QInfo(np.asarray(qacc.scale) * c if qacc.axis else float(qacc.scale) * c, 0, qacc.axis)
        items = items[1:]
    names = [n for n, _ in items]
    if any(F.is_binary(n) or n == F.CAST for n in names):
        raise ctx.error("fn", "requantize takes one leading {scale: c} and unary fns only")
    return {out.name: Value(requantize_to(ctx, data, out.shape, qacc, qout, names, out.dtype), out.shape,
                            out.dtype, qout)}


# ----------------------------------------------------------------------------------- elementwise

def eval_elementwise(ctx: Ctx) -> dict[str, Value]:
    out = ctx.out
    ins = [ctx.read(n) for n in ctx.stage.reads]
    items = fn_items(ctx.stage)
    x = ins[0]
    if x.is_float:
        return {out.name: _float_chain(ctx, x, ins[1:], items)}
    return {out.name: _int_chain(ctx, x, ins[1:], items)}


def _float_chain(ctx: Ctx, x: Value, rest: list[Value], items, start: int = 0) -> Value:
    out, xp = ctx.out, ctx.xp
    data = align(xp, x, out.shape)
    operands = iter(rest)
    for i, (name, arg) in enumerate(items[start:], start):
        if name == F.CAST:
            if out.dtype in INT:
                return _int_chain(ctx, Value(data, out.shape, "fp64"), list(operands), items, i)
            continue
        if F.is_binary(name):
            if arg is not None:
                y = ctx.constant(arg)
            else:
                v = next(operands, None)
                if v is None:
                    raise ctx.error("reads", f"fn {name} needs another input")
                y = align(xp, v, out.shape) if v.is_float else xp.asarray(
                    Q.dequantize(align(xp, v, out.shape), v.quant.scale_along(out.shape), v.quant.zero_point)
                    if v.quant else align(xp, v, out.shape))
            with xp.seterr():
                data = F.BINARY[name](data, y, xp)
        else:
            with xp.seterr():
                data = F.UNARY[name](data, xp)
    return Value(data, out.shape, out.dtype)


def _int_chain(ctx: Ctx, x: Value, rest: list[Value], items, start: int = 0) -> Value:
    """Quantised elementwise: see README (one add/sub/mul with TFLite's arithmetic; unary fns as
    clamps or tables; cast quantises into, or dequantises out of, the tensors' `quant`)."""
    out = ctx.out
    qout = ctx.out_quant()
    xp = ctx.xp
    if x.is_float:  # arriving from a float chain at `cast`: quantise into the output
        data = ctx.xp.to_numpy(x.data)
        q = Q.quantize(data, qout.scale, qout.zero_point, *INT_RANGE[out.dtype]) if qout else _saturate(
            Q.round_half_away(data), out.dtype)
        return _int_rest(ctx, Value(q, out.shape, out.dtype, qout), rest, items, start + 1)
    return _int_rest(ctx, Value(align(xp, x, out.shape), out.shape, x.dtype, x.quant), rest, items, start)


def _int_rest(ctx: Ctx, x: Value, rest: list[Value], items, start: int) -> Value:
    out = ctx.out
    qout = ctx.out_quant()
    operands = iter(rest)
    pending: list[str] = []  # unary fns waiting to be applied as one table
    q, qcur = x.data, x.quant
    for i, (name, arg) in enumerate(items[start:], start):
        if name == F.CAST:
            if out.dtype in FLOAT:  # dequantise, then the rest of the chain is real arithmetic
                q = _apply_pending(ctx, q, qcur, pending, qcur)
                pending = []
                real = Q.dequantize(q, qcur.scale_along(out.shape), qcur.zero_point) if qcur else q.astype(np.float64)
                return _float_chain(ctx, Value(ctx.xp.asarray(real), out.shape, "fp64"), list(operands), items, i + 1)
            continue
        if F.is_binary(name):
            if qcur is None:  # plain integers: exact arithmetic
                y = ctx.constant(arg) if arg is not None else align(ctx.xp, next(operands), out.shape)
                if name in ("div", "scale") or (arg is not None and float(y) != int(y)):
                    raise ctx.error("fn", f"fn {name} on unquantised integers is not defined; cast to float")
                q = {"bias": np.add, "add": np.add, "sub": np.subtract, "mul": np.multiply, "max": np.maximum,
                     "min": np.minimum}[name](q, np.asarray(y, dtype=np.int64))
                continue
            if name not in ("add", "sub", "mul", "bias") or arg is not None:
                raise ctx.error("fn", f"quantised {name} with a {'constant' if arg is not None else 'tensor'} is "
                                      "not defined: use add/sub/mul with a quantised tensor, or cast to float")
            if qout is None:
                raise ctx.error("writes", f"a quantised {name} needs `quant` on its output {out.name}")
            v = next(operands)
            q = _apply_pending(ctx, q, qcur, pending, qcur)
            pending = []
            y = align(ctx.xp, v, out.shape)
            qy = v.quant
            if qy is None or not (qy.per_tensor and qcur.per_tensor):
                raise ctx.error("reads", f"quantised {name} reads per-tensor quantised int8 tensors")
            if name == "mul":
                q = Q.mul_int8(q, qcur.scale, qcur.zero_point, y, qy.scale, qy.zero_point, qout.scale, qout.zero_point)
            else:
                if name == "sub":
                    y = 2 * qy.zero_point - y  # zp - (y - zp) negates the real value exactly
                q = Q.add_int8(q, qcur.scale, qcur.zero_point, y, qy.scale, qy.zero_point, qout.scale,
                               qout.zero_point)
            qcur = qout
            continue
        if qcur is None:
            q = int32_unary(ctx, q, name)
        else:
            pending.append(name)
    if qcur is None:
        return Value(_saturate(q, out.dtype), out.shape, out.dtype, qout)
    if qout is None:
        raise ctx.error("writes", f"{out.name} needs `quant`: its input is quantised")
    return Value(_apply_pending(ctx, q, qcur, pending, qout), out.shape, out.dtype, qout)


def _apply_pending(ctx: Ctx, q, qin: QInfo, names: list[str], qout: QInfo):
    if qin is None or (not names and qin.same_as(qout)):
        return q
    return int8_unary(ctx, q, qin, names, qout)


# ------------------------------------------------------------------------------------- reductions

def eval_reduce(ctx: Ctx) -> dict[str, Value]:
    """sum / max / min / mean over `axis`; reading its own output accumulates into it."""
    out = ctx.out
    x = ctx.read(ctx.stage.reads[0])
    how = ctx.stage.reduce
    keep = tuple(a for a in x.axes if a != ctx.stage.axis)
    mask = stage_mask(ctx, x.axes)
    if mask is not None:  # masked-out elements take no part: they hold the reduction's identity
        if how == "mean":
            raise ctx.error("mask", "a masked mean is not defined (sum, then divide)")
        if x.is_float:
            x = Value(ctx.xp.where(mask, x.data, {"sum": 0.0, "max": -np.inf, "min": np.inf}[how]), x.axes, x.dtype,
                      x.quant)
        else:
            lo, hi = INT_RANGE.get(x.dtype, (Q.INT32_MIN, Q.INT32_MAX))
            x = Value(np.where(mask, x.data, {"sum": 0, "max": lo, "min": hi}[how]), x.axes, x.dtype, x.quant)
    if x.is_float:
        data = ctx.xp.reduce(how, x.data, x.axes.index(ctx.stage.axis))
        new = Value(data, keep, out.dtype)
        new = Value(align(ctx.xp, new, out.shape), out.shape, out.dtype)
    else:
        if how == "mean":
            raise ctx.error("reduce", "mean of integers is not defined; cast to float first")
        data = {"sum": np.sum, "max": np.max, "min": np.min}[how](x.data, axis=x.axes.index(ctx.stage.axis))
        q = x.quant
        if q is not None and (how == "sum" or q.axis == ctx.stage.axis):
            raise ctx.error("reduce", "reducing quantised integers is not defined; dequantise (cast) first")
        new = Value(align(ctx.xp, Value(data, keep, out.dtype), out.shape), out.shape, out.dtype, q)
    if out.name in ctx.stage.reads and how in ("max", "min"):
        old = align(ctx.xp, ctx.read(out.name), out.shape)
        pick = ctx.xp.maximum if how == "max" else ctx.xp.minimum
        if not new.is_float:
            pick = np.maximum if how == "max" else np.minimum
        return {out.name: Value(pick(old, new.data), out.shape, out.dtype, new.quant)}
    acc = _accumulated(ctx, new)
    return {out.name: acc if acc.is_float else Value(_saturate(acc.data, out.dtype), out.shape, out.dtype, acc.quant)}


def eval_softmax(ctx: Ctx) -> dict[str, Value]:
    """exp(x - max) / sum along `axis`; int8: the exact table softmax of quant.py, whose output
    has scale 1/256 and zero point -128. With a `mask`, elements where it is false take no part
    (probability 0), and a row where it holds nowhere is all zeros."""
    out = ctx.out
    x = ctx.read(ctx.stage.reads[0])
    axis = out.shape.index(ctx.stage.axis)
    mask = stage_mask(ctx, out.shape)
    if x.is_float and mask is not None:  # masked-out elements get probability 0; a row with none left, zeros
        xp = ctx.xp
        keep = _keep(len(out.shape), axis)
        data = xp.where(mask, align(xp, x, out.shape), -np.inf)
        m = xp.reduce("max", data, axis)
        m = xp.expand(xp.where(xp.isfinite(m), m, 0.0), keep)
        e = xp.where(mask, xp.exp(data - m), 0.0)
        s = xp.expand(xp.reduce("sum", e, axis), keep)
        return {out.name: Value(e / xp.where(s == 0, 1.0, s), out.shape, out.dtype)}
    if mask is not None:
        raise ctx.error("mask", "a masked integer softmax is not defined")
    if x.is_float:
        xp = ctx.xp
        data = align(xp, x, out.shape)
        m = xp.expand(xp.reduce("max", data, axis), _keep(len(out.shape), axis))
        e = xp.exp(data - m)
        s = xp.expand(xp.reduce("sum", e, axis), _keep(len(out.shape), axis))
        return {out.name: Value(e / s, out.shape, out.dtype)}
    qin, qout = x.quant, ctx.out_quant()
    if x.dtype != "int8" or qin is None or not qin.per_tensor:
        raise ctx.error("reads", "integer softmax reads per-tensor quantised int8")
    if qout is None or (float(qout.scale), qout.zero_point) != (Q.f32(INT8_SOFTMAX_OUT[0]), INT8_SOFTMAX_OUT[1]):
        raise ctx.error("writes", "int8 softmax writes quant {scale: 0.00390625, zero_point: -128} (1/256, TFLite's)")
    data = align(ctx.xp, x, out.shape)
    p = Q.softmax_int8(data, Q.softmax_lut(qin.scale), axis=axis)
    return {out.name: Value(p, out.shape, out.dtype, qout)}


def _keep(ndim: int, axis: int) -> tuple:
    return tuple(None if i == axis else slice(None) for i in range(ndim))


LAYERNORM_EPS = 1e-5


def eval_layernorm(ctx: Ctx) -> dict[str, Value]:
    """(x - mean) / sqrt(var + eps) * gamma + beta along `axis` (gamma, beta: the optional second
    and third reads, broadcast by axis name; eps 1e-5). Quantised int8: mean and variance exact
    from the integers, the rest in float64, quantised into the output's `quant`."""
    out = ctx.out
    ins = [ctx.read(n) for n in ctx.stage.reads]
    x = ins[0]
    axis = out.shape.index(ctx.stage.axis)
    n = ctx.sizes[ctx.stage.axis]
    xp = ctx.xp
    if x.is_float:
        data = align(xp, x, out.shape)
        mean = xp.expand(xp.reduce("mean", data, axis), _keep(len(out.shape), axis))
        var = xp.expand(xp.reduce("mean", (data - mean) * (data - mean), axis), _keep(len(out.shape), axis))
        y = (data - mean) / xp.sqrt(var + LAYERNORM_EPS)
    else:
        from tilesched.semantics.arrays import NUMPY as xp

        qx = x.quant
        if qx is None or not qx.per_tensor:
            raise ctx.error("reads", "integer layernorm reads per-tensor quantised int8")
        c = align(xp, x, out.shape) - qx.zero_point
        s1 = c.sum(axis=axis, keepdims=True)  # exact
        s2 = (c * c).sum(axis=axis, keepdims=True)
        mean_q = s1 / n
        var_q = (n * s2 - s1 * s1) / (n * n)  # exact integers until this division
        scale = float(qx.scale)
        y = (c - mean_q) * scale / np.sqrt(var_q * scale * scale + LAYERNORM_EPS)
    for extra, op in zip(ins[1:], ("mul", "add")):
        v = align(xp, extra, out.shape)
        if not extra.is_float:
            v = Q.dequantize(v, extra.quant.scale_along(out.shape), extra.quant.zero_point) if extra.quant else v
        y = y * v if op == "mul" else y + v
    if out.dtype in FLOAT:
        return {out.name: Value(xp.asarray(y), out.shape, out.dtype)}
    qout = ctx.out_quant()
    if qout is None:
        raise ctx.error("writes", f"{out.name} needs `quant`")
    return {out.name: Value(Q.quantize(xp.to_numpy(y), qout.scale, qout.zero_point), out.shape, out.dtype, qout)}


# ------------------------------------------------------------------------------------ convolution

def _conv_axes(ctx: Ctx, x: Value, w: TensorIR) -> tuple[str, str, list[str]]:
    c = x.axes[2]
    co = ctx.out.shape[2]
    kernel_axes = [a for a in w.shape if a not in (c, co)]
    kh, kw = ctx.stage.kernel
    if len(kernel_axes) == 0 and (kh, kw) != (1, 1):
        raise ctx.error("reads", f"weight {w.name} has no kernel axes for a {kh}x{kw} kernel")
    if len(kernel_axes) not in (0, 2) or [ctx.sizes[a] for a in kernel_axes] not in ([], [kh, kw]):
        raise ctx.error("reads", f"weight {w.name}[{', '.join(w.shape)}]: its axes other than {c} and {co} must "
                                 f"be the kernel's [{kh}, {kw}]")
    return c, co, kernel_axes


def eval_conv(ctx: Ctx) -> dict[str, Value]:
    """conv2d / depthwise_conv2d over [H, W, C] inputs: out[oh, ow, co] = bias[co] +
    sum over kh, kw (and c for conv2d) of x[oh*stride - pad + kh, ow*stride - pad + kw, c] *
    w[kh, kw, c, co], with zero padding (of x - zp for integers); `padding` is the rows/columns
    added on each side, or "same" (TFLite's SAME: output ceil(n/stride), the odd one at the end). The weight's axes are matched
    by name: the input and output channel axes, and the two kernel axes in order (none for 1x1).
    An int8 output is requantized (scale s_x * s_w / s_out) and `fn` applies (relu/relu6:
    TFLite's fused clamps); float outputs apply `fn` as elementwise."""
    st = ctx.stage
    out = ctx.out
    x = ctx.read(st.reads[0])
    wv = ctx.read(st.reads[1])
    wt = ctx.tensor(st.reads[1])
    c, co, kax = _conv_axes(ctx, x, wt)
    kh, kw = st.kernel
    depthwise = st.op == "depthwise_conv2d"
    integer = not x.is_float
    xp = ctx.xp
    xs = align(xp, x, x.axes)
    qx = x.quant or QInfo(1.0)
    qw = wv.quant or QInfo(1.0)
    if integer:
        xs = xs - qx.zero_point
        wdata = align(xp, wv, tuple(kax) + ((c,) if depthwise else (c, co))) - qw.zero_point
    else:
        wdata = align(xp, wv, tuple(kax) + ((c,) if depthwise else (c, co)))
    if not kax:
        wdata = wdata[None, None]
    h, wd, cin = (ctx.sizes[a] for a in x.axes)
    oh, ow, cout = (ctx.sizes[a] for a in out.shape)
    s = st.stride
    ph, _, _ = pads(st.padding, h, kh, s)
    pw, _, _ = pads(st.padding, wd, kw, s)
    shape = (s * oh + kh + s, s * ow + kw + s, cin)  # room for every window; zeros are the padding
    if integer:
        padded = np.zeros(shape, dtype=np.int64)
        acc = np.zeros((oh, ow, cout), dtype=np.int64)
    else:
        padded = xp.zeros(shape)
        acc = xp.zeros((oh, ow, cout))
    padded[ph:ph + h, pw:pw + wd] = xs[:shape[0] - ph, :shape[1] - pw]
    for i in range(kh):
        for j in range(kw):
            win = padded[i:i + s * oh:s, j:j + s * ow:s]
            if depthwise:
                acc = acc + win * wdata[i, j]
            elif integer:
                acc = acc + np.einsum("hwc,cd->hwd", win, wdata[i, j])
            else:
                acc = acc + xp.einsum("hwc,cd->hwd", win, wdata[i, j])
    if len(st.reads) > 2:
        acc = acc + align(xp, ctx.read(st.reads[2]), (co,))
    names = [n for n, _ in fn_items(st)]
    if not integer:
        value = Value(acc, out.shape, out.dtype)
        if names:
            for n in names:
                if F.is_binary(n) or n == F.CAST:
                    raise ctx.error("fn", f"convolutions take unary fns; {n} belongs in an elementwise stage")
                value = Value(F.UNARY[n](value.data, xp), out.shape, out.dtype)
        return {out.name: value}
    if qw.axis is not None and qw.axis not in (co, c if depthwise else co):
        raise ctx.error("reads", f"weight {wt.name}: per-channel scales run along the output channels {co}")
    qacc = _product_scale(ctx, qx, QInfo(qw.scale, 0, co if qw.axis is not None else None), out.shape)
    if out.dtype == "int32":
        if names:
            raise ctx.error("fn", "an int32 convolution output takes no fn; requantize first")
        return {out.name: Value(_saturate(acc, "int32"), out.shape, out.dtype, qacc)}
    qout = ctx.out_quant()
    if qout is None:
        raise ctx.error("writes", f"{out.name} needs `quant`")
    return {out.name: Value(requantize_to(ctx, acc, out.shape, qacc, qout, names, out.dtype), out.shape, out.dtype,
                            qout)}


def eval_avgpool(ctx: Ctx) -> dict[str, Value]:
    """avgpool2d over [H, W, C]: the mean of every window's taps inside the input (padding taps are
    not counted, as in TFLite's AVERAGE_POOL_2D; no `kernel`: the whole input). int8: the sum of the integers divided by the tap
    count, rounded half away from zero, in the input's quantisation (which the output keeps), then
    `fn` as TFLite's fused activation clamps."""
    st = ctx.stage
    out = ctx.out
    x = ctx.read(st.reads[0])
    kh, kw = window(st, x.axes, ctx.sizes)
    h, wd, c = (ctx.sizes[a] for a in x.axes)
    oh, ow, _ = (ctx.sizes[a] for a in out.shape)
    s = st.stride
    ph, _, _ = pads(st.padding, h, kh, s)
    pw, _, _ = pads(st.padding, wd, kw, s)
    integer = not x.is_float
    xp = ctx.xp
    data = align(xp, x, x.axes)
    shape = (s * oh + kh + s, s * ow + kw + s, c)
    if integer:
        padded, ones = np.zeros(shape, dtype=np.int64), np.zeros(shape[:2], dtype=np.int64)
        acc, count = np.zeros((oh, ow, c), dtype=np.int64), np.zeros((oh, ow), dtype=np.int64)
    else:
        padded, ones = xp.zeros(shape), np.zeros(shape[:2], dtype=np.int64)
        acc, count = xp.zeros((oh, ow, c)), np.zeros((oh, ow), dtype=np.int64)
    padded[ph:ph + h, pw:pw + wd] = data[:shape[0] - ph, :shape[1] - pw]
    ones[ph:ph + h, pw:pw + wd] = 1
    for i in range(kh):
        for j in range(kw):
            acc = acc + padded[i:i + s * oh:s, j:j + s * ow:s]
            count = count + ones[i:i + s * oh:s, j:j + s * ow:s]
    if np.any(count == 0):
        raise ctx.error("kernel", "a pooling window lies entirely in the padding")
    names = [n for n, _ in fn_items(st)]
    if not integer:
        value = Value(acc / xp.asarray(count[..., None].astype(np.float64)), out.shape, out.dtype)
        for n in names:
            value = Value(F.UNARY[n](value.data, xp), out.shape, out.dtype)
        return {out.name: value}
    qin, qout = x.quant, ctx.out_quant()
    if qin is None or qout is None or not qin.same_as(qout):
        raise ctx.error("writes", "int8 average pooling keeps the quantisation: give the output the input's `quant` "
                                  "(requantize separately)")
    n = count[..., None]
    q = np.where(acc > 0, (acc + n // 2) // n, -((-acc + n // 2) // n))
    if any(nm not in F.CLAMPS for nm in names):
        raise ctx.error("fn", "average pooling takes the activation clamps relu and relu6 only")
    lo, hi = INT_RANGE[out.dtype]
    for nm in names:
        a, b = Q.act_range(nm, qout.scale, qout.zero_point)
        lo, hi = max(lo, a), min(hi, b)
    return {out.name: Value(np.clip(q, lo, hi).astype(np.int64), out.shape, out.dtype, qout)}


RULES: dict[str, Callable[[Ctx], dict[str, Value]]] = {
    "load": eval_memory, "store": eval_memory, "copy": eval_memory,
    "dot": eval_dot, "elementwise": eval_elementwise, "requantize": eval_requantize,
    "reduce": eval_reduce, "softmax": eval_softmax, "layernorm": eval_layernorm,
    "conv2d": eval_conv, "depthwise_conv2d": eval_conv, "avgpool2d": eval_avgpool,
    **{op: eval_comm for op in ("all_gather", "reduce_scatter", "all_reduce", "all_to_all", "broadcast", "put",
                                "get", "signal", "wait")},
}
