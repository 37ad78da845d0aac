"""The .tflite model of an int8 CNN spec, with the same weights, biases and quantisation the oracle ran:
so TFLite Micro's arena is measured on the same network, and its outputs can be compared with the
oracle's (tests and bench/mcu_networks.py).

Stage -> TFLite op: conv2d -> CONV_2D (weights OHWI, per-channel scales), depthwise_conv2d ->
DEPTHWISE_CONV_2D (1HWC), avgpool2d -> AVERAGE_POOL_2D (no kernel: the whole input), elementwise add / sub /
mul of two int8 tensors -> ADD / SUB / MUL, dot + requantize (the classifier) -> RESHAPE + FULLY_CONNECTED;
relu / relu6 as fused activations. Padding: `same` -> SAME, 0 -> VALID (others have no TFLite form).
"""

from __future__ import annotations

import numpy as np

from tilesched.baselines.int8_ref import QParams
from tilesched.baselines.tflite_builder import _ACT, _PADDING, ModelBuilder, fb
from tilesched.ir.bind import Binding
from tilesched.ir.conv import window
from tilesched.semantics.ops import fn_items
from tilesched.semantics.values import Value, align, declared_quant


class Unsupported(ValueError):
    pass


def _act(stage) -> str:
    names = [n for n, _ in fn_items(stage) if n != "scale"]
    if len(names) > 1 or (names and names[0] not in ("relu", "relu6")):
        raise Unsupported(f"stage {stage.name}: fns {names} have no fused TFLite activation")
    return names[0] if names else "none"


def _padding(stage) -> str:
    if stage.padding == "same":
        return "same"
    if stage.padding == 0:
        return "valid"
    raise Unsupported(f"stage {stage.name}: padding {stage.padding} is neither SAME nor VALID")


def tflite_model(b: Binding, inputs: dict[str, np.ndarray]) -> tuple[bytes, str, str]:
    """(model bytes, input tensor, output tensor) of the spec at `b` with the oracle's `inputs`."""
    prog, sizes = b.program, b.sizes
    m = ModelBuilder(seed=0)
    tens: dict[str, object] = {}

    def q(name: str) -> QParams:
        qi = declared_quant(prog.tensor(name), sizes)
        return QParams.per_tensor(float(qi.scale), int(qi.zero_point))

    def arr(name: str, axes) -> np.ndarray:
        t = prog.tensor(name)
        return np.asarray(align(None, Value(np.asarray(inputs[name], dtype=np.int64), t.shape, t.dtype), tuple(axes)))

    def shape4(name: str) -> tuple[int, ...]:
        s = tuple(sizes[a] for a in prog.tensor(name).shape)
        return (1,) * (4 - len(s)) + s

    def act_tensor(name: str):
        if name not in tens:
            tens[name] = m.activation(name, shape4(name), q(name))
        return tens[name]

    def per_channel(wname: str, n: int) -> list[float]:
        qi = declared_quant(prog.tensor(wname), sizes)
        return [float(v) for v in np.broadcast_to(np.asarray(qi.scale, dtype=np.float64), (n,))]

    from tilesched.passes.mcu import constants
    from tilesched.semantics import input_names, output_names

    consts = constants(prog)
    (x_name,) = [n for n in input_names(prog) if n not in consts]
    (y_name,) = output_names(prog)
    tens[x_name] = m.input(x_name, shape4(x_name), q(x_name))
    by_name = {s.name: s for s in prog.stages}
    fused: set[str] = set()
    for sname in prog.order:
        s = by_name[sname]
        if s.name in fused:
            continue
        if s.op in ("conv2d", "depthwise_conv2d"):
            x, w = s.reads[0], s.reads[1]
            xt, out = prog.tensor(x), prog.tensor(s.writes[0])
            cin, co = xt.shape[2], out.shape[2]
            kh, kw = window(s, xt.shape, sizes)
            kax = tuple(a for a in prog.tensor(w).shape if a not in (cin, co))
            if s.op == "conv2d":
                wts = arr(w, (co,) + kax + (cin,)).reshape(sizes[co], kh, kw, sizes[cin])
                n_out, axis, code, opts = sizes[co], 0, "CONV_2D", fb.Conv2DOptionsT()
            else:
                wts = arr(w, kax + (cin,)).reshape(1, kh, kw, sizes[cin])
                n_out, axis, code, opts = sizes[cin], 3, "DEPTHWISE_CONV_2D", fb.DepthwiseConv2DOptionsT()
                opts.depthMultiplier = 1
            scales = per_channel(w, n_out)
            wt = m.const(f"{s.name}/weights", wts.astype(np.int8), QParams.per_channel(scales, axis))
            bias = arr(s.reads[2], (co,)) if len(s.reads) > 2 else np.zeros(n_out, dtype=np.int64)
            xs = float(declared_quant(xt, sizes).scale)
            bt = m.const(f"{s.name}/bias", bias.astype(np.int32), QParams.per_channel([xs * v for v in scales], 0))
            opts.padding, opts.strideH, opts.strideW = _PADDING[_padding(s)], s.stride, s.stride
            opts.fusedActivationFunction = _ACT[_act(s)]
            m._op(code, [tens[x], wt, bt], [act_tensor(s.writes[0])], opts)
        elif s.op == "avgpool2d":
            x = s.reads[0]
            kh, kw = window(s, prog.tensor(x).shape, sizes)
            opts = fb.Pool2DOptionsT()
            opts.padding = _PADDING[_padding(s)] if s.kernel is not None else _PADDING["valid"]
            opts.strideH = opts.strideW = s.stride
            opts.filterHeight, opts.filterWidth = kh, kw
            opts.fusedActivationFunction = _ACT[_act(s)]
            m._op("AVERAGE_POOL_2D", [tens[x]], [act_tensor(s.writes[0])], opts)
        elif s.op == "elementwise":
            names = [n for n, _ in fn_items(s)]
            if len(names) != 1 or names[0] not in ("add", "sub", "mul"):
                raise Unsupported(f"stage {s.name}: elementwise {names}")
            code = {"add": "ADD", "sub": "SUB", "mul": "MUL"}[names[0]]
            opts = {"add": fb.AddOptionsT, "sub": fb.SubOptionsT, "mul": fb.MulOptionsT}[names[0]]()
            opts.fusedActivationFunction = _ACT["none"]
            m._op(code, [tens[s.reads[0]], tens[s.reads[1]]], [act_tensor(s.writes[0])], opts)
        elif s.op == "dot":
            rq = next((r for r in prog.stages if r.op == "requantize" and r.reads[0] == s.writes[0]), None)
            if rq is None:
                raise Unsupported(f"stage {s.name}: a dot without a requantize")
            fused.add(rq.name)
            a, w = s.reads[0], s.reads[1]
            at, ot = prog.tensor(a), prog.tensor(rq.writes[0])
            cin, kout = at.shape[-1], ot.shape[-1]
            if any(sizes[ax] != 1 for ax in at.shape[:-1]):
                raise Unsupported(f"stage {s.name}: a dot over more than one row")
            flat = m.activation(f"{a}/flat", (1, sizes[cin]), q(a))
            shape_t = m.const(f"{a}/flat_shape", np.asarray([1, sizes[cin]], dtype=np.int32))
            ro = fb.ReshapeOptionsT()
            ro.newShape = [1, sizes[cin]]
            m._op("RESHAPE", [tens[a], shape_t], [flat], ro)
            scales = per_channel(w, sizes[kout])
            wt = m.const(f"{s.name}/weights", arr(w, (kout, cin)).astype(np.int8), QParams.per_channel(scales, 0)
                         if len(set(scales)) > 1 else QParams.per_tensor(scales[0]))
            bias = arr(rq.reads[1], (kout,)) if len(rq.reads) > 1 else np.zeros(sizes[kout], dtype=np.int64)
            xs = float(declared_quant(at, sizes).scale)
            bq = QParams.per_channel([xs * v for v in scales], 0) if len(set(scales)) > 1 else \
                QParams.per_tensor(xs * scales[0])
            bt = m.const(f"{s.name}/bias", bias.astype(np.int32), bq)
            out = m.activation(rq.writes[0], (1, sizes[kout]), q(rq.writes[0]))
            tens[rq.writes[0]] = out
            fo = fb.FullyConnectedOptionsT()
            fo.fusedActivationFunction = _ACT[_act(rq)]
            m._op("FULLY_CONNECTED", [flat, wt, bt], [out], fo)
        else:
            raise Unsupported(f"stage {s.name}: {s.op} has no TFLite form here")
    m.mark_output(tens[y_name])
    return m.build(), x_name, y_name


def run_tflm(b: Binding, inputs: dict[str, np.ndarray]) -> dict:
    """TFLM's arena for the spec's network and weights, and its output on the oracle's input."""
    from tilesched.baselines import tflm

    model, x_name, y_name = tflite_model(b, inputs)
    x = np.asarray(inputs[x_name], dtype=np.int8)
    x = x.reshape((1,) * (4 - x.ndim) + x.shape)
    (outs, text) = tflm.tflm_run(model, [x])
    alloc = tflm.parse_allocations(text)
    return {"model": model, "output": np.asarray(outs[0]).reshape(-1), "total_bytes": alloc["total"],
            "head_bytes": alloc["head"], "tail_bytes": alloc["tail"], "model_bytes": len(model)}
