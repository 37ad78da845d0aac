"""Per-op shape and dtype rules. Each rule returns a list of (field, message) problems.

Shapes are tuples of axis names; tensors are matched by axis name, so broadcasting and
contraction are decided by names, as in einsum.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tilesched.ir.conv import pads
from tilesched.ir.dtypes import ACCUMULATORS, FLOAT, INT
from tilesched.ir.nodes import StageIR, TensorIR

Problem = tuple[str, str]  # (field of the stage, message)
Sizes = Mapping[str, int | None]


def _arity(stage: StageIR, reads: tuple[int, int | None], writes: int) -> list[Problem]:
    lo, hi = reads
    out = []
    n = len(stage.reads)
    if n < lo or (hi is not None and n > hi):
        want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi else f"at least {lo}"
        out.append(("reads", f"{stage.op} reads {want} tensor(s), got {n}"))
    if len(stage.writes) != writes:
        out.append(("writes", f"{stage.op} writes {writes} tensor(s), got {len(stage.writes)}"))
    return out


def _same_axes(a: TensorIR, b: TensorIR) -> bool:
    return sorted(a.shape) == sorted(b.shape)


def _shape_str(t: TensorIR) -> str:
    return f"{t.name}[{', '.join(t.shape)}]"


def check_memory(stage: StageIR, t: Mapping[str, TensorIR], sizes: Sizes) -> list[Problem]:
    probs = _arity(stage, (1, 1), 1)
    if probs:
        return probs
    src, dst = t[stage.reads[0]], t[stage.writes[0]]
    if not _same_axes(src, dst):
        probs.append(("writes", f"shape mismatch: {stage.op} {_shape_str(src)} -> {_shape_str(dst)}"))
    if stage.op != "store" and src.dtype != dst.dtype:
        probs.append(("writes", f"dtype mismatch: {stage.op} {src.name}:{src.dtype} -> {dst.name}:{dst.dtype} "
                                "(only store converts; add an elementwise cast)"))
    return probs


def check_dot(stage: StageIR, t: Mapping[str, TensorIR], sizes: Sizes) -> list[Problem]:
    probs = _arity(stage, (2, 3), 1)
    if probs:
        return probs
    out = t[stage.writes[0]]
    operands = [t[n] for n in stage.reads if n != out.name]
    if len(operands) != 2:
        return [("reads", "dot reads two operands (and optionally its own output, to accumulate into)")]
    a, b = operands
    contracted = (set(a.shape) & set(b.shape)) - set(out.shape)
    expected = (set(a.shape) | set(b.shape)) - contracted
    if not contracted:
        probs.append(("reads", f"shape mismatch: {_shape_str(a)} and {_shape_str(b)} share no axis to contract "
                               f"into {_shape_str(out)}"))
    elif expected != set(out.shape):
        probs.append(("writes", f"shape mismatch: {_shape_str(a)} x {_shape_str(b)} contracting "
                                f"{sorted(contracted)} gives axes {sorted(expected)}, not {_shape_str(out)}"))
    if a.dtype != b.dtype:
        probs.append(("reads", f"dtype mismatch: dot operands {a.name}:{a.dtype} and {b.name}:{b.dtype}"))
    elif out.dtype not in ACCUMULATORS[a.dtype]:
        probs.append(("writes", f"dtype mismatch: dot of {a.dtype} accumulates into "
                                f"{'/'.join(sorted(ACCUMULATORS[a.dtype]))}, not {out.name}:{out.dtype}"))
    return probs


_BINARY_FNS = {"bias", "add", "sub", "mul", "scale", "div", "max", "min"}


def _unary_only(stage: StageIR, allow_leading_scale: bool = False) -> list[Problem]:
    """Fns of a conv / requantize: activations and other unary fns (requantize: a leading
    `{scale: c}` folds a real factor into its multiplier)."""
    out = []
    for i, f in enumerate(stage.fn):
        name = f if isinstance(f, str) else f[0]
        if i == 0 and allow_leading_scale and not isinstance(f, str) and name == "scale":
            continue
        if name in _BINARY_FNS or name == "cast":
            out.append(("fn", f"{stage.op} takes unary fns (activations); {name} belongs in an elementwise stage"))
    return out


def check_elementwise(stage: StageIR, t: Mapping[str, TensorIR], sizes: Sizes) -> list[Problem]:
    probs = _arity(stage, (1, None), 1)
    if probs:
        return probs
    if not stage.fn:
        return [("fn", "elementwise needs at least one fn (e.g. [bias, gelu])")]
    out = t[stage.writes[0]]
    ins = [t[n] for n in stage.reads]
    binary = sum(isinstance(f, str) and f in _BINARY_FNS for f in stage.fn)  # each takes a tensor input
    if "scale" in stage.fn:
        probs.append(("fn", "scale multiplies by a constant: write {scale: 0.125} (or mul with a tensor)"))
    if len(ins) < 1 + binary:
        probs.append(("reads", f"fn {list(stage.fn)} needs {1 + binary} inputs, got {len(ins)}"))
    for x in ins:
        extra = set(x.shape) - set(out.shape)
        if extra:
            probs.append(("reads", f"shape mismatch: {_shape_str(x)} does not broadcast to {_shape_str(out)} "
                                   f"(extra axes {sorted(extra)})"))
    if set(ins[0].shape) != set(out.shape):
        probs.append(("writes", f"shape mismatch: first input {_shape_str(ins[0])} and output {_shape_str(out)}"))
    if "cast" not in stage.fn:
        kinds = {x.dtype in FLOAT for x in ins} | {out.dtype in FLOAT}
        if len(kinds) > 1:
            probs.append(("writes", "dtype mismatch: mixing integer and float tensors needs fn: cast"))
        elif out.dtype != ins[0].dtype:
            probs.append(("writes", f"dtype mismatch: {ins[0].name}:{ins[0].dtype} -> {out.name}:{out.dtype} "
                                    "without fn: cast"))
    return probs


def _needs_axis(stage: StageIR, x: TensorIR) -> list[Problem]:
    if stage.axis is None:
        return [("axis", f"{stage.op} needs `axis`")]
    if stage.axis not in x.shape:
        return [("axis", f"axis {stage.axis!r} is not an axis of {_shape_str(x)}")]
    return []


def check_reduce(stage: StageIR, t: Mapping[str, TensorIR], sizes: Sizes) -> list[Problem]:
    probs = _arity(stage, (1, 1), 1) or _needs_axis(stage, t[stage.reads[0]])
    if probs:
        return probs
    x, out = t[stage.reads[0]], t[stage.writes[0]]
    if stage.reduce is None:
        probs.append(("reduce", "reduce needs `reduce: sum|max|min`"))
    if set(out.shape) != set(x.shape) - {stage.axis}:
        probs.append(("writes", f"shape mismatch: reducing {_shape_str(x)} over {stage.axis} "
                                f"does not give {_shape_str(out)}"))
    return probs


def check_rowwise(stage: StageIR, t: Mapping[str, TensorIR], sizes: Sizes) -> list[Problem]:
    """softmax / layernorm: same shape in and out, normalised along `axis`."""
    hi = 3 if stage.op == "layernorm" else 1
    probs = _arity(stage, (1, hi), 1) or _needs_axis(stage, t[stage.reads[0]])
    if probs:
        return probs
    x, out = t[stage.reads[0]], t[stage.writes[0]]
    if not _same_axes(x, out):
        probs.append(("writes", f"shape mismatch: {stage.op} {_shape_str(x)} -> {_shape_str(out)}"))
    return probs


def check_conv(stage: StageIR, t: Mapping[str, TensorIR], sizes: Sizes) -> list[Problem]:
    """conv2d / depthwise_conv2d over HWC tensors: input[H, W, C], output[OH, OW, CO]."""
    probs = _arity(stage, (2, 3), 1) or _unary_only(stage)
    if probs:
        return probs
    if stage.kernel is None or len(stage.kernel) != 2:
        return [("kernel", f"{stage.op} needs `kernel: [KH, KW]`")]
    x, w, out = t[stage.reads[0]], t[stage.reads[1]], t[stage.writes[0]]
    if len(x.shape) != 3 or len(out.shape) != 3:
        return [("reads", f"shape mismatch: {stage.op} takes [H, W, C] tensors, got {_shape_str(x)} -> "
                          f"{_shape_str(out)}")]
    (h, wd, c), (oh, ow, co) = x.shape, out.shape
    if stage.op == "depthwise_conv2d":
        if c != co:
            probs.append(("writes", f"shape mismatch: depthwise keeps channels: {c} vs {co}"))
        if w.shape[-1:] != (c,):
            probs.append(("reads", f"shape mismatch: depthwise weight {_shape_str(w)} must end in {c}"))
    elif not {c, co} <= set(w.shape):
        probs.append(("reads", f"shape mismatch: weight {_shape_str(w)} must hold axes {c} and {co}"))
    for in_ax, out_ax, k in ((h, oh, stage.kernel[0]), (wd, ow, stage.kernel[1])):
        n_in, n_out = sizes.get(in_ax), sizes.get(out_ax)
        if n_in is not None and n_out is not None:
            want = pads(stage.padding, n_in, k, stage.stride)[2]
            if n_out != want:
                probs.append(("writes", f"shape mismatch: {out_ax}={n_out} but a {k}-wide kernel with stride "
                                        f"{stage.stride}, padding {stage.padding} over {in_ax}={n_in} gives {want}"))
    if x.dtype != w.dtype:
        probs.append(("reads", f"dtype mismatch: {x.name}:{x.dtype} and weight {w.name}:{w.dtype}"))
    if x.dtype in INT and out.dtype in INT and out.dtype != "int32" and out.quant is None:
        probs.append(("writes", f"{out.name} is {out.dtype} but has no `quant` to requantise into"))
    return probs


def check_pool(stage: StageIR, t: Mapping[str, TensorIR], sizes: Sizes) -> list[Problem]:
    """avgpool2d over HWC tensors: input[H, W, C], output[OH, OW, C] (the channel axis kept); without a
    `kernel` the window is the whole input (global pooling: a 1 x 1 output)."""
    probs = _arity(stage, (1, 1), 1) or _unary_only(stage)
    if probs:
        return probs
    if stage.kernel is not None and len(stage.kernel) != 2:
        return [("kernel", f"{stage.op} needs `kernel: [KH, KW]` (or none: global pooling)")]
    x, out = t[stage.reads[0]], t[stage.writes[0]]
    if len(x.shape) != 3 or len(out.shape) != 3:
        return [("reads", f"shape mismatch: {stage.op} takes [H, W, C] tensors, got {_shape_str(x)} -> "
                          f"{_shape_str(out)}")]
    (h, wd, c), (oh, ow, co) = x.shape, out.shape
    if c != co:
        probs.append(("writes", f"shape mismatch: pooling keeps channels: {c} vs {co}"))
    if stage.kernel is None:
        if any(sizes.get(a) not in (1, None) for a in (oh, ow)) or stage.stride != 1 or stage.padding != 0:
            probs.append(("kernel", f"global pooling (no `kernel`) writes a 1 x 1 output with stride 1, no padding; "
                                    f"{out.name} is [{oh}, {ow}]"))
        return probs
    for in_ax, out_ax, k in ((h, oh, stage.kernel[0]), (wd, ow, stage.kernel[1])):
        n_in, n_out = sizes.get(in_ax), sizes.get(out_ax)
        if n_in is not None and n_out is not None:
            want = pads(stage.padding, n_in, k, stage.stride)[2]
            if n_out != want:
                probs.append(("writes", f"shape mismatch: {out_ax}={n_out} but a {k}-wide window with stride "
                                        f"{stage.stride}, padding {stage.padding} over {in_ax}={n_in} gives {want}"))
    if x.dtype != out.dtype:
        probs.append(("writes", f"dtype mismatch: {stage.op} {x.name}:{x.dtype} -> {out.name}:{out.dtype}"))
    return probs


def check_requantize(stage: StageIR, t: Mapping[str, TensorIR], sizes: Sizes) -> list[Problem]:
    probs = _arity(stage, (1, 2), 1) or _unary_only(stage, allow_leading_scale=True)
    if probs:
        return probs
    x, out = t[stage.reads[0]], t[stage.writes[0]]
    if not _same_axes(x, out):
        probs.append(("writes", f"shape mismatch: requantize {_shape_str(x)} -> {_shape_str(out)}"))
    if x.dtype != "int32" or out.dtype not in INT:
        probs.append(("writes", f"dtype mismatch: requantize maps int32 to an integer type, not "
                                f"{x.dtype} -> {out.dtype}"))
    if out.quant is None:
        probs.append(("writes", f"requantize output {out.name} needs `quant`"))
    return probs


def check_comm(stage: StageIR, t: Mapping[str, TensorIR], sizes: Sizes) -> list[Problem]:
    probs: list[Problem] = []
    for name in stage.reads:
        if t[name].placement == "local" and t[name].scope == "global":
            probs.append(("reads", f"comm stage reads tensor {name!r}, which has no placement "
                                   "(give it placement: sharded(AXIS), replicated or partial)"))
    if stage.op in ("signal", "wait"):
        return probs
    probs += _arity(stage, (1, 1), 1)
    if probs:
        return probs
    src, dst = t[stage.reads[0]], t[stage.writes[0]]
    if not _same_axes(src, dst):
        probs.append(("writes", f"shape mismatch: {stage.op} {_shape_str(src)} -> {_shape_str(dst)}"))
    if src.dtype != dst.dtype:
        probs.append(("writes", f"dtype mismatch: {stage.op} {src.dtype} -> {dst.dtype}"))
    want = {
        "all_gather": ("sharded", {"replicated", "local"}),
        "reduce_scatter": ("partial", {"sharded"}),
        "all_reduce": ("partial", {"replicated", "local"}),
        "all_to_all": ("sharded", {"sharded"}),
    }.get(stage.op)
    if want and src.placement != want[0]:
        probs.append(("reads", f"{stage.op} reads a {want[0]} tensor; {src.name} is {src.placement}"))
    if want and dst.placement not in want[1]:
        probs.append(("writes", f"{stage.op} writes a {' or '.join(sorted(want[1]))} tensor; "
                                f"{dst.name} is {dst.placement}"))
    return probs


OP_CHECKS: dict[str, Callable[[StageIR, Mapping[str, TensorIR], Sizes], list[Problem]]] = {
    "load": check_memory, "store": check_memory, "copy": check_memory,
    "dot": check_dot, "elementwise": check_elementwise, "reduce": check_reduce,
    "softmax": check_rowwise, "layernorm": check_rowwise,
    "conv2d": check_conv, "depthwise_conv2d": check_conv, "avgpool2d": check_pool, "requantize": check_requantize,
    **{op: check_comm for op in ("all_gather", "reduce_scatter", "all_reduce", "all_to_all", "broadcast",
                                  "put", "get", "signal", "wait")},
}
