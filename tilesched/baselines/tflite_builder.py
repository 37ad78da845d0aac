"""int8 .tflite models written straight from the TFLite schema that the `tflite-micro` wheel ships
(`schema_py_generated.py`, flatbuffers object API): no TensorFlow needed.

Quantization follows the TFLite int8 spec: symmetric int8 weights (per-channel for convolutions; per-tensor or
per-channel for fully-connected layers), int32 biases with scale input_scale * weight_scale and zero point 0,
asymmetric int8 activations, softmax output scale 1/256 with zero point -128.  `model_from_layers` turns the
plain layer records of bench/mcu_workloads.py into a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tilesched.baselines.int8_ref import QParams

try:  # the `mcu` extra; import errors surface only when the baseline is used
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb
except ImportError:  # pragma: no cover - exercised only without the extra
    flatbuffers = None
    fb = None

__all__ = ["Tensor", "ModelBuilder", "model_from_layers"]


def _require_schema() -> None:
    if fb is None:
        raise RuntimeError("the TFLite Micro baseline needs the `mcu` extra: pip install 'tilesched[mcu]'")


_ACT = {"none": 0, "relu": 1, "relu6": 3}  # ActivationFunctionType
_PADDING = {"same": 0, "valid": 1}  # Padding
_DTYPES = {np.dtype(np.int8): 9, np.dtype(np.int32): 2, np.dtype(np.float32): 0}  # TensorType


def _out_hw(h: int, w: int, k: int, stride: int, padding: str) -> tuple[int, int]:
    if padding == "same":
        return -(-h // stride), -(-w // stride)
    return (h - k) // stride + 1, (w - k) // stride + 1


@dataclass
class Tensor:
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype
    q: QParams | None


@dataclass
class _Op:
    code: str
    inputs: list[int]
    outputs: list[int]
    options: object | None


@dataclass
class ModelBuilder:
    """A single-subgraph int8 TFLite model, built op by op; `.build()` returns the .tflite bytes."""

    seed: int = 0
    tensors: list = field(default_factory=list)
    buffers: list = field(default_factory=lambda: [b""])  # buffer 0: the schema's empty sentinel
    ops: list[_Op] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    consts: dict[int, np.ndarray] = field(default_factory=dict)
    # expected RMS of (q - zero_point) per activation tensor on random inputs: sizes the next layer's weights
    rms: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require_schema()
        self.rng = np.random.default_rng(self.seed)

    # -- tensors
    def _tensor(self, name: str, shape, dtype, q: QParams | None, data: np.ndarray | None = None) -> Tensor:
        buf = 0
        if data is not None:
            buf = len(self.buffers)
            self.buffers.append(np.ascontiguousarray(data, dtype=dtype).tobytes())
        t = Tensor(len(self.tensors), tuple(int(s) for s in shape), np.dtype(dtype), q)
        self.tensors.append((name, t, buf))
        if data is not None:
            self.consts[t.index] = np.asarray(data, dtype=dtype).reshape(t.shape)
        return t

    def input(self, name: str, shape, q: QParams) -> Tensor:
        t = self._tensor(name, shape, np.int8, q)
        self.inputs.append(t.index)
        self.rms[t.index] = 74.0  # uniform random int8
        return t

    def activation(self, name: str, shape, q: QParams) -> Tensor:
        return self._tensor(name, shape, np.int8, q)

    def const(self, name: str, data: np.ndarray, q: QParams | None = None) -> Tensor:
        return self._tensor(name, data.shape, data.dtype, q, data)

    def tensor(self, name: str) -> Tensor:
        return next(t for n, t, _ in self.tensors if n == name)

    def mark_output(self, t: Tensor) -> None:
        self.outputs.append(t.index)

    # -- random, calibrated parameters
    def _weights(self, shape, fan_in: int, axis: int | None, x: Tensor, out_scale: float, spread: float,
                 scales: Sequence[float] | None = None):
        """Random int8 weights and their scales, sized so the layer's output on random data has a std of
        ~`spread` quantized units (it fills the int8 range without saturating: every output is informative).
        With `scales` given (one per output channel) the scales are kept and the integer weights' magnitude
        is chosen instead; otherwise weights have std ~40 and the scales are chosen."""
        gain = spread * out_scale / (x.q.scale[0] * self.rms.get(x.index, 60.0) * math.sqrt(fan_in))
        if scales is not None:
            w_std = np.clip(gain / np.asarray(scales, dtype=np.float64), 1.0, 60.0)
            bshape = [1] * len(shape)
            bshape[axis or 0] = len(scales)
            z = self.rng.normal(0.0, 1.0, size=shape) * w_std.reshape(bshape)
            return np.clip(np.round(z), -127, 127).astype(np.int8), QParams.per_channel(scales, axis or 0)
        w = np.clip(np.round(self.rng.normal(0.0, 40.0, size=shape)), -127, 127).astype(np.int8)
        if axis is None:
            return w, QParams.per_tensor(gain / 40.0)
        return w, QParams.per_channel(gain / 40.0 * self.rng.uniform(0.7, 1.3, size=shape[axis]), axis)

    def _bias(self, n: int, in_scale: float, w_q: QParams) -> tuple[np.ndarray, QParams]:
        scales = w_q.scale if len(w_q.scale) > 1 else w_q.scale * n
        b_scale = [in_scale * s for s in scales]
        b = np.round(self.rng.normal(0.0, 0.1, size=n) / np.asarray(b_scale)).astype(np.int32)
        q = QParams.per_channel(b_scale, 0) if len(w_q.scale) > 1 else QParams.per_tensor(b_scale[0])
        return b, q

    # -- ops
    def _op(self, code: str, inputs, outputs, options=None) -> None:
        self.ops.append(_Op(code, [t.index if t is not None else -1 for t in inputs],
                            [t.index for t in outputs], options))

    def conv2d(self, name: str, x: Tensor, cout: int, k: int, stride: int, act: str, out_q: QParams,
               padding: str = "same", w_scales: Sequence[float] | None = None, spread: float = 32.0) -> Tensor:
        _, h, w, cin = x.shape
        wt, w_q = self._weights((cout, k, k, cin), k * k * cin, 0, x, out_q.scale[0], spread, w_scales)
        out = self.activation(name, (1, *_out_hw(h, w, k, stride, padding), cout), out_q)
        opts = fb.Conv2DOptionsT()
        opts.padding, opts.strideH, opts.strideW = _PADDING[padding], stride, stride
        opts.fusedActivationFunction = _ACT[act]
        self._op("CONV_2D", [x, *self._weight_bias(name, x, wt, w_q, cout)], [out], opts)
        self._expect(out, spread, act)
        return out

    def depthwise_conv2d(self, name: str, x: Tensor, k: int, stride: int, act: str, out_q: QParams,
                         padding: str = "same", w_scales: Sequence[float] | None = None,
                         spread: float = 32.0) -> Tensor:
        _, h, w, c = x.shape
        wt, w_q = self._weights((1, k, k, c), k * k, 3, x, out_q.scale[0], spread, w_scales)
        out = self.activation(name, (1, *_out_hw(h, w, k, stride, padding), c), out_q)
        opts = fb.DepthwiseConv2DOptionsT()
        opts.padding, opts.strideH, opts.strideW, opts.depthMultiplier = _PADDING[padding], stride, stride, 1
        opts.fusedActivationFunction = _ACT[act]
        self._op("DEPTHWISE_CONV_2D", [x, *self._weight_bias(name, x, wt, w_q, c)], [out], opts)
        self._expect(out, spread, act)
        return out

    def fully_connected(self, name: str, x: Tensor, units: int, act: str, out_q: QParams,
                        w_scales: Sequence[float] | None = None, spread: float = 32.0) -> Tensor:
        k = x.shape[-1]
        wt, w_q = self._weights((units, k), k, None, x, out_q.scale[0], spread, w_scales)
        out = self.activation(name, (*x.shape[:-1], units), out_q)
        opts = fb.FullyConnectedOptionsT()
        opts.fusedActivationFunction = _ACT[act]
        opts.keepNumDims = True
        self._op("FULLY_CONNECTED", [x, *self._weight_bias(name, x, wt, w_q, units)], [out], opts)
        self._expect(out, spread, act)
        return out

    def _expect(self, out: Tensor, spread: float, act: str) -> None:
        self.rms[out.index] = spread if act == "none" else spread * 0.7  # ReLU keeps the positive half

    def _weight_bias(self, name: str, x: Tensor, wt: np.ndarray, w_q: QParams, n: int) -> tuple[Tensor, Tensor]:
        b, b_q = self._bias(n, x.q.scale[0], w_q)
        return self.const(f"{name}/weights", wt, w_q), self.const(f"{name}/bias", b, b_q)

    def batch_matmul(self, name: str, a: Tensor, b: Tensor, adj_y: bool, out_q: QParams) -> Tensor:
        n = b.shape[-2] if adj_y else b.shape[-1]
        out = self.activation(name, (*a.shape[:-1], n), out_q)
        opts = fb.BatchMatMulOptionsT()
        opts.adjX, opts.adjY = False, adj_y
        self._op("BATCH_MATMUL", [a, b], [out], opts)
        return out

    def add(self, name: str, a: Tensor, b: Tensor, act: str, out_q: QParams) -> Tensor:
        """Elementwise int8 ADD (residual connections), broadcasting like numpy."""
        return self._binary("ADD", fb.AddOptionsT(), name, a, b, act, out_q)

    def mul(self, name: str, a: Tensor, b: Tensor, act: str, out_q: QParams) -> Tensor:
        return self._binary("MUL", fb.MulOptionsT(), name, a, b, act, out_q)

    def _binary(self, code: str, opts, name: str, a: Tensor, b: Tensor, act: str, out_q: QParams) -> Tensor:
        out = self.activation(name, np.broadcast_shapes(a.shape, b.shape), out_q)
        opts.fusedActivationFunction = _ACT[act]
        self._op(code, [a, b], [out], opts)
        self.rms[out.index] = 40.0
        return out

    def average_pool2d(self, name: str, x: Tensor, k: int | tuple[int, int], stride: int, act: str = "none",
                       padding: str = "valid") -> Tensor:
        """AVERAGE_POOL_2D (the output keeps the input's quantisation, as TFLite's int8 kernel requires)."""
        kh, kw = (k, k) if isinstance(k, int) else k
        _, h, w, c = x.shape
        oh = -(-h // stride) if padding == "same" else (h - kh) // stride + 1
        ow = -(-w // stride) if padding == "same" else (w - kw) // stride + 1
        out = self.activation(name, (1, oh, ow, c), x.q)
        opts = fb.Pool2DOptionsT()
        opts.padding, opts.strideH, opts.strideW = _PADDING[padding], stride, stride
        opts.filterHeight, opts.filterWidth = kh, kw
        opts.fusedActivationFunction = _ACT[act]
        self._op("AVERAGE_POOL_2D", [x], [out], opts)
        self.rms[out.index] = self.rms.get(x.index, 60.0) / 2.0
        return out

    def softmax(self, name: str, x: Tensor, beta: float = 1.0) -> Tensor:
        out = self.activation(name, x.shape, QParams.per_tensor(1.0 / 256.0, -128))  # TFLite int8 softmax spec
        opts = fb.SoftmaxOptionsT()
        opts.beta = beta
        self._op("SOFTMAX", [x], [out], opts)
        return out

    def reshape(self, name: str, x: Tensor, shape) -> Tensor:
        shape_t = self.const(f"{name}/shape", np.asarray(shape, dtype=np.int32))
        out = self.activation(name, shape, x.q)
        opts = fb.ReshapeOptionsT()
        opts.newShape = list(shape)
        self._op("RESHAPE", [x, shape_t], [out], opts)
        self.rms[out.index] = self.rms.get(x.index, 60.0)
        return out

    def transpose(self, name: str, x: Tensor, perm) -> Tensor:
        perm_t = self.const(f"{name}/perm", np.asarray(perm, dtype=np.int32))
        out = self.activation(name, tuple(x.shape[p] for p in perm), x.q)
        self._op("TRANSPOSE", [x, perm_t], [out], fb.TransposeOptionsT())
        self.rms[out.index] = self.rms.get(x.index, 60.0)
        return out

    # -- serialization
    def build(self) -> bytes:
        codes: list[str] = []
        for op in self.ops:
            if op.code not in codes:
                codes.append(op.code)
        model = fb.ModelT()
        model.version = 3
        model.description = "tilesched TFLM baseline"
        model.operatorCodes = []
        for c in codes:
            oc = fb.OperatorCodeT()
            oc.builtinCode = getattr(fb.BuiltinOperator, c)
            oc.deprecatedBuiltinCode = min(oc.builtinCode, 127)  # 127: PLACEHOLDER_FOR_GREATER_OP_CODES
            oc.version = 1
            model.operatorCodes.append(oc)
        sg = fb.SubGraphT()
        sg.name = "main"
        sg.tensors = []
        for name, t, buf in self.tensors:
            tt = fb.TensorT()
            tt.name, tt.shape, tt.type, tt.buffer = name, list(t.shape), _DTYPES[t.dtype], buf
            if t.q is not None:
                qp = fb.QuantizationParametersT()
                qp.scale, qp.zeroPoint, qp.quantizedDimension = list(t.q.scale), list(t.q.zero_point), t.q.axis
                tt.quantization = qp
            sg.tensors.append(tt)
        sg.inputs, sg.outputs = list(self.inputs), list(self.outputs)
        sg.operators = []
        for op in self.ops:
            o = fb.OperatorT()
            o.opcodeIndex = codes.index(op.code)
            o.inputs, o.outputs = op.inputs, op.outputs
            if op.options is not None:
                o.builtinOptionsType = getattr(fb.BuiltinOptions, type(op.options).__name__[:-1])
                o.builtinOptions = op.options
            sg.operators.append(o)
        model.subgraphs = [sg]
        model.buffers = [_AlignedBuffer(data) for data in self.buffers]
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


class _AlignedBuffer(fb.BufferT if fb is not None else object):
    """A model buffer whose data starts on a 16-byte boundary, like the TFLite converter writes them."""

    def __init__(self, data: bytes):
        super().__init__()
        self.raw = data

    def Pack(self, builder):  # noqa: N802 - flatbuffers object-API name
        vec = None
        if self.raw:
            n = len(self.raw)
            builder.StartVector(1, n, 16)
            builder.head -= n
            builder.Bytes[builder.head:builder.head + n] = self.raw
            builder.vectorNumElems = n
            vec = builder.EndVector()
        fb.BufferStart(builder)
        if vec is not None:
            fb.BufferAddData(builder, vec)
        return fb.BufferEnd(builder)


def model_from_layers(layers: Sequence[dict], io: dict[str, str] | None = None, seed: int = 0) -> bytes:
    """The .tflite bytes of a workload given as plain layer records (bench/mcu_workloads.py's format).

    Layers without `input`/`output` names form a chain.  Weight values are random int8; their per-channel
    scales, the activations' (scale, zero point), shapes, strides, padding and activations are the layers'.
    `attention` becomes the TFLM int8 op sequence a converter emits: per-head split (RESHAPE + TRANSPOSE),
    scores = BATCH_MATMUL(q, k, adj_y), SOFTMAX, context = BATCH_MATMUL(probs, v), head merge.  The
    1/sqrt(head_dim) scaling is expressed exactly as the layer's requantization: the scores tensor gets the
    scale score_scale * sqrt(head_dim) (so its int8 values equal requant(q.k * qs*ks/sqrt(hd)/score_scale)) and
    SOFTMAX reads it with beta = 1/sqrt(head_dim), i.e. as scores on score_scale."""
    io = io or {"input": "x", "output": "y"}
    m = ModelBuilder(seed)
    named: dict[str, Tensor] = {}
    prev: Tensor | None = None
    for i, layer in enumerate(layers):
        op = layer["op"]
        if op != "attention":
            src = layer.get("input")
            if i == 0:  # the network input
                src = src or io["input"]
                named[src] = m.input(src, layer["input_shape"],
                                     QParams.per_tensor(layer["input_scale"], layer["input_zero_point"]))
            x = named[src] if src is not None else prev
            _check_shape(layer, "input_shape", x)
        out_q = QParams.per_tensor(layer["output_scale"], layer["output_zero_point"])
        if op == "conv2d":
            y = m.conv2d(layer["name"], x, layer["weight_shape"][0], layer["kernel"][0], layer["stride"],
                         layer["activation"], out_q, layer.get("padding", "same"), layer["weight_scales"])
        elif op == "depthwise_conv2d":
            y = m.depthwise_conv2d(layer["name"], x, layer["kernel"][0], layer["stride"], layer["activation"],
                                   out_q, layer.get("padding", "same"), layer["weight_scales"])
        elif op == "fully_connected":
            y = m.fully_connected(layer["name"], x, layer["weight_shape"][0], layer["activation"], out_q,
                                  layer["weight_scales"])
        elif op == "attention":
            y = _attention(m, layer, [named[n] for n in layer["inputs"]], out_q)
        else:
            raise ValueError(f"layer {layer['name']!r}: op {op!r} has no TFLM lowering here")
        _check_shape(layer, "output_shape", y)
        named[layer.get("output", layer["name"])] = y
        prev = y
    m.mark_output(named.get(io["output"], prev))
    return m.build()


def _check_shape(layer: dict, key: str, t: Tensor) -> None:
    if key in layer and tuple(layer[key]) != t.shape:
        raise ValueError(f"layer {layer['name']!r}: {key} {layer[key]} but the TFLM tensor is {list(t.shape)}")


def _attention(m: ModelBuilder, layer: dict, qkv: list[Tensor], out_q: QParams) -> Tensor:
    s, nh, hd = layer["seq_len"], layer["heads"], layer["head_dim"]
    name = layer["name"]

    def heads(t: Tensor, tag: str) -> Tensor:  # [S, NH*HD] -> [NH, S, HD]
        want = QParams.per_tensor(layer[f"{tag}_scale"], layer[f"{tag}_zero_point"])
        if t.q.scale != want.scale or t.q.zero_point != want.zero_point:
            raise ValueError(f"layer {name!r}: {tag} quantization {want} differs from its input tensor's {t.q}")
        return m.transpose(f"{name}/{tag}_heads", m.reshape(f"{name}/{tag}_split", t, (s, nh, hd)), (1, 0, 2))

    q, k, v = (heads(t, tag) for t, tag in zip(qkv, ("q", "k", "v")))
    root = math.sqrt(hd)
    score_q = QParams.per_tensor(layer["score_scale"] * root, layer["score_zero_point"])
    scores = m.batch_matmul(f"{name}/scores", q, k, True, score_q)  # [NH, S, S]
    probs = m.softmax(f"{name}/probs", scores, beta=1.0 / root)
    if (probs.q.scale[0], probs.q.zero_point[0]) != (float(np.float32(layer["prob_scale"])), layer["prob_zero_point"]):
        raise ValueError(f"layer {name!r}: TFLite int8 softmax outputs scale 1/256, zero point -128")
    ctx = m.batch_matmul(f"{name}/context", probs, v, False, out_q)  # [NH, S, HD]
    m.rms[ctx.index] = 16.0  # as measured on random data at these scales; sizes out_proj's weights
    return m.reshape(name, m.transpose(f"{name}/merge", ctx, (1, 0, 2)), (s, nh * hd))


def _layernorm(m: ModelBuilder, name: str, x: Tensor, out_q: QParams) -> Tensor:
    """Layernorm over the last axis as the TFLite converter decomposes it into int8 builtins: MEAN,
    SQUARED_DIFFERENCE, MEAN, ADD(eps), RSQRT, SUB, MUL, then gamma (MUL) and beta (ADD). Only the
    tensors' shapes and lifetimes matter for the arena; gamma = 1, beta = 0."""
    s, d = x.shape[-2], x.shape[-1]
    axis = m.const(f"{name}/axis", np.asarray([len(x.shape) - 1], dtype=np.int32))

    def reduce_mean(tag: str, t: Tensor, q: QParams) -> Tensor:
        out = m.activation(f"{name}/{tag}", (*t.shape[:-1], 1), q)
        opts = fb.ReducerOptionsT()
        opts.keepDims = True
        m._op("MEAN", [t, axis], [out], opts)
        return out

    mean = reduce_mean("mean", x, x.q)
    sq = m.activation(f"{name}/sqdiff", x.shape, QParams.per_tensor(x.q.scale[0] ** 2 * 64, -128))
    m._op("SQUARED_DIFFERENCE", [x, mean], [sq], fb.SquaredDifferenceOptionsT())
    var = reduce_mean("var", sq, sq.q)
    eps = m.const(f"{name}/eps", np.asarray([[-127]], dtype=np.int8).reshape(1, 1), QParams.per_tensor(sq.q.scale[0],
                                                                                                         -128))
    var_eps = m.add(f"{name}/var_eps", var, eps, "none", sq.q)
    rstd = m.activation(f"{name}/rstd", var_eps.shape, QParams.per_tensor(1.0 / (x.q.scale[0] * 16), -128))
    m._op("RSQRT", [var_eps], [rstd])
    cen = m._binary("SUB", fb.SubOptionsT(), f"{name}/centred", x, mean, "none", x.q)
    norm = m.mul(f"{name}/norm", cen, rstd, "none", QParams.per_tensor(0.03, 0))
    gamma = m.const(f"{name}/gamma", np.full((d,), 100, dtype=np.int8), QParams.per_tensor(0.01, 0))
    scaled = m.mul(f"{name}/gamma_mul", norm, gamma, "none", QParams.per_tensor(0.03, 0))
    beta = m.const(f"{name}/beta", np.zeros((d,), dtype=np.int8), QParams.per_tensor(0.01, 0))
    del s
    return m.add(name, scaled, beta, "none", out_q)


def bert_layer_model(s: int, d: int = 128, nh: int = 2, ffn: int = 512, seed: int = 0) -> bytes:
    """The complete BERT-tiny encoder layer as TFLite int8 builtins (configs/mcu_bert_tiny_layer.yaml's
    shapes): Q/K/V projections, attention (as `model_from_layers`), output projection, ADD (residual),
    layernorm (`_layernorm`), FULLY_CONNECTED + GELU (as x * LOGISTIC(1.702 x): the wheel has no int8
    GELU), FULLY_CONNECTED, ADD, layernorm. Random weights of
    the builder; the arena depends on shapes and op order only."""
    m = ModelBuilder(seed)
    xq = QParams.per_tensor(0.031, 2)
    x = m.input("x", (s, d), xq)
    qkv_q = QParams.per_tensor(0.05, 0)
    q, k, v = (m.fully_connected(n, x, d, "none", qkv_q) for n in ("q_proj", "k_proj", "v_proj"))
    layer = {"name": "attention", "seq_len": s, "heads": nh, "head_dim": d // nh, "score_scale": 0.125,
             "score_zero_point": 0, "prob_scale": 1.0 / 256.0, "prob_zero_point": -128,
             **{f"{t}_{f}": val for t in ("q", "k", "v") for f, val in (("scale", 0.05), ("zero_point", 0))}}
    ctx = _attention(m, layer, [q, k, v], QParams.per_tensor(0.05, 0))
    a = m.fully_connected("out_proj", ctx, d, "none", QParams.per_tensor(0.06, -1))
    r1 = m.add("residual1", a, x, "none", QParams.per_tensor(0.07, 1))
    l1 = _layernorm(m, "ln1", r1, QParams.per_tensor(0.03, 0))
    h = m.fully_connected("ffn1", l1, ffn, "none", QParams.per_tensor(0.06, -5))
    # the TFLM wheel has no int8 GELU kernel: x * sigmoid(1.702 x), its usual builtin form
    k = m.const("gelu/k", np.asarray([[100]], dtype=np.int8), QParams.per_tensor(1.702 / 100, 0))
    hk = m.mul("gelu/scaled", h, k, "none", QParams.per_tensor(0.06 * 1.702, -5))
    sig = m.activation("gelu/sigmoid", h.shape, QParams.per_tensor(1.0 / 256.0, -128))
    m._op("LOGISTIC", [hk], [sig])
    g = m.mul("gelu", h, sig, "none", QParams.per_tensor(0.02, -110))
    f = m.fully_connected("ffn2", g, d, "none", QParams.per_tensor(0.06, 1))
    r2 = m.add("residual2", f, l1, "none", QParams.per_tensor(0.07, -1))
    y = _layernorm(m, "ln2", r2, QParams.per_tensor(0.03, 1))
    m.mark_output(y)
    return m.build()
