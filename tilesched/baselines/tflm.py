"""TensorFlow Lite Micro baseline: int8 .tflite models written from the TFLite schema, and TFLM's arena size.

The models are built directly with the flatbuffers object API that the `tflite-micro` wheel ships
(`schema_py_generated.py`), so no TensorFlow is needed.  Quantization follows the TFLite int8 spec:
symmetric int8 weights (per-channel for convolutions, per-tensor for fully-connected layers), int32 biases
with scale input_scale * weight_scale and zero point 0, asymmetric int8 activations, softmax output
scale 1/256 with zero point -128.

`tflm_arena(model_bytes)` runs a model once in the TFLM Python interpreter on random int8 inputs and parses
what its RecordingMicroAllocator prints: `head` is the planned (non-persistent) activation arena, `tail` the
persistent allocations, `total` their sum, i.e. the smallest tensor arena the model runs in.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

try:  # the `mcu` extra; import errors surface only when the baseline is used
    import flatbuffers
    from tflite_micro.python.tflite_micro import runtime as _tflm_runtime
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb
except ImportError:  # pragma: no cover - exercised only without the extra
    flatbuffers = None
    fb = None
    _tflm_runtime = None

__all__ = [
    "QParams",
    "ModelBuilder",
    "model_from_layers",
    "tflm_arena",
    "tflm_run",
    "tflm_version",
    "quantize_multiplier",
    "multiply_by_quantized_multiplier",
    "conv2d_int8_reference",
    "depthwise_conv2d_int8_reference",
    "fully_connected_int8_reference",
]


def _require_tflm() -> None:
    if fb is None:
        raise RuntimeError("the TFLite Micro baseline needs the `mcu` extra: pip install 'tilesched[mcu]'")


def tflm_version() -> str:
    _require_tflm()
    from tflite_micro.python.tflite_micro import _version

    return _version.__version__


# ----------------------------------------------------------------------------------------------------------
# Quantization helpers (TFLite's integer requantization, reproduced bit for bit)


@dataclass(frozen=True)
class QParams:
    """Quantization of one tensor: real = scale * (q - zero_point); `axis` set for per-channel scales."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0

    @staticmethod
    def per_tensor(scale: float, zero_point: int = 0) -> QParams:
        return QParams((float(np.float32(scale)),), (int(zero_point),))

    @staticmethod
    def per_channel(scales: Sequence[float], axis: int) -> QParams:
        s = tuple(float(np.float32(v)) for v in scales)
        return QParams(s, (0,) * len(s), axis)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: real = q * 2**(shift - 31) with q a Q31 value in [2**30, 2**31)."""
    if real == 0.0:
        return 0, 0
    m, shift = math.frexp(real)
    q = int(round(m * (1 << 31)))  # round half away from zero, like std::round (m > 0 here)
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def _rounding_doubling_high_mul(a: np.ndarray, b: int) -> np.ndarray:
    # gemmlowp SaturatingRoundingDoublingHighMul on int64 lanes (saturation only for a == b == INT32_MIN).
    ab = a.astype(np.int64) * np.int64(b)
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    s = ab + nudge
    # C++ integer division truncates toward zero
    return np.where(s >= 0, s >> 31, -((-s) >> 31))


def _rounding_divide_by_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    mask = np.int64((1 << exponent) - 1)
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return (x >> exponent) + (remainder > threshold).astype(np.int64)


def multiply_by_quantized_multiplier(x: np.ndarray, q: int, shift: int) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier (double-rounding variant, the TFLM default)."""
    x = np.asarray(x, dtype=np.int64)
    left = max(shift, 0)
    right = max(-shift, 0)
    return _rounding_divide_by_pot(_rounding_doubling_high_mul(x * (1 << left), q), right)


def _effective_multipliers(in_q: QParams, w_q: QParams, out_q: QParams, channels: int) -> list[tuple[int, int]]:
    # TFLM computes the effective scale in double from the float32 scales stored in the model.
    scales = w_q.scale if len(w_q.scale) > 1 else w_q.scale * channels
    return [quantize_multiplier(in_q.scale[0] * s / out_q.scale[0]) for s in scales]


def _requantize(acc: np.ndarray, mults: list[tuple[int, int]], out_q: QParams, lo: int, hi: int) -> np.ndarray:
    out = np.empty(acc.shape, dtype=np.int64)
    for c, (q, shift) in enumerate(mults):
        out[..., c] = multiply_by_quantized_multiplier(acc[..., c], q, shift)
    out += out_q.zero_point[0]
    return np.clip(out, lo, hi).astype(np.int8)


def _act_range(act: str, out_q: QParams) -> tuple[int, int]:
    s, zp = out_q.scale[0], out_q.zero_point[0]
    if act == "none":
        return -128, 127
    lo = max(-128, zp + int(round(0.0 / s)))
    if act == "relu":
        return lo, 127
    if act == "relu6":
        return lo, min(127, zp + int(round(6.0 / s)))
    raise ValueError(f"unknown activation {act!r}")


def _out_hw(h: int, w: int, k: int, stride: int, padding: str) -> tuple[int, int]:
    if padding == "same":
        return -(-h // stride), -(-w // stride)
    return (h - k) // stride + 1, (w - k) // stride + 1


def _same_pads(size: int, k: int, stride: int) -> tuple[int, int]:
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, out  # TFLite pads the extra row/column at the end


def conv2d_int8_reference(
    x: np.ndarray, x_q: QParams, w: np.ndarray, w_q: QParams, b: np.ndarray, out_q: QParams,
    stride: int = 1, padding: str = "same", act: str = "none",
) -> np.ndarray:
    """Exact TFLite int8 CONV_2D: x [N,H,W,Ci], w [Co,KH,KW,Ci] per-channel on axis 0, b int32 [Co]."""
    n, h, wd, ci = x.shape
    co, kh, kw, _ = w.shape
    xs = x.astype(np.int64) - x_q.zero_point[0]
    if padding == "same":
        ph, oh = _same_pads(h, kh, stride)
        pw, ow = _same_pads(wd, kw, stride)
    else:
        ph = pw = 0
        oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    pad = np.zeros((n, h + kh + stride, wd + kw + stride, ci), dtype=np.int64)  # padding is the zero point
    pad[:, ph:ph + h, pw:pw + wd] = xs
    acc = np.zeros((n, oh, ow, co), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            win = pad[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
            acc += win @ w[:, i, j, :].astype(np.int64).T
    acc += b.astype(np.int64)
    return _requantize(acc, _effective_multipliers(x_q, w_q, out_q, co), out_q, *_act_range(act, out_q))


def depthwise_conv2d_int8_reference(
    x: np.ndarray, x_q: QParams, w: np.ndarray, w_q: QParams, b: np.ndarray, out_q: QParams,
    stride: int = 1, padding: str = "same", act: str = "none",
) -> np.ndarray:
    """Exact TFLite int8 DEPTHWISE_CONV_2D (multiplier 1): w [1,KH,KW,C] per-channel on axis 3."""
    n, h, wd, c = x.shape
    _, kh, kw, _ = w.shape
    xs = x.astype(np.int64) - x_q.zero_point[0]
    if padding == "same":
        ph, oh = _same_pads(h, kh, stride)
        pw, ow = _same_pads(wd, kw, stride)
    else:
        ph = pw = 0
        oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    pad = np.zeros((n, h + kh + stride, wd + kw + stride, c), dtype=np.int64)
    pad[:, ph:ph + h, pw:pw + wd] = xs
    acc = np.zeros((n, oh, ow, c), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            acc += pad[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :] * w[0, i, j, :].astype(np.int64)
    acc += b.astype(np.int64)
    return _requantize(acc, _effective_multipliers(x_q, w_q, out_q, c), out_q, *_act_range(act, out_q))


def fully_connected_int8_reference(
    x: np.ndarray, x_q: QParams, w: np.ndarray, w_q: QParams, b: np.ndarray, out_q: QParams, act: str = "none",
) -> np.ndarray:
    """Exact TFLite int8 FULLY_CONNECTED: x [..., K], w [N, K] (per-tensor or per-channel on axis 0), b [N]."""
    acc = (x.astype(np.int64) - x_q.zero_point[0]) @ w.astype(np.int64).T + b.astype(np.int64)
    return _requantize(acc, _effective_multipliers(x_q, w_q, out_q, w.shape[0]), out_q, *_act_range(act, out_q))


# ----------------------------------------------------------------------------------------------------------
# Flatbuffer model builder

_ACT = {"none": 0, "relu": 1, "relu6": 3}  # ActivationFunctionType
_PADDING = {"same": 0, "valid": 1}  # Padding
_DTYPES = {np.dtype(np.int8): 9, np.dtype(np.int32): 2, np.dtype(np.float32): 0}  # TensorType


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
        _require_tflm()
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


# ----------------------------------------------------------------------------------------------------------
# Workloads


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

    def heads(t: Tensor, tag: str, key: str) -> Tensor:  # [S, NH*HD] -> [NH, S, HD]
        want = QParams.per_tensor(layer[f"{key}_scale"], layer[f"{key}_zero_point"])
        if t.q.scale != want.scale or t.q.zero_point != want.zero_point:
            raise ValueError(f"layer {name!r}: {key} quantization {want} differs from its input tensor's {t.q}")
        return m.transpose(f"{name}/{tag}_heads", m.reshape(f"{name}/{tag}_split", t, (s, nh, hd)), (1, 0, 2))

    q, k, v = (heads(t, tag, tag) for t, tag in zip(qkv, ("q", "k", "v")))
    root = math.sqrt(hd)
    score_q = QParams.per_tensor(layer["score_scale"] * root, layer["score_zero_point"])
    scores = m.batch_matmul(f"{name}/scores", q, k, True, score_q)  # [NH, S, S]
    probs = m.softmax(f"{name}/probs", scores, beta=1.0 / root)
    if (probs.q.scale[0], probs.q.zero_point[0]) != (float(np.float32(layer["prob_scale"])), layer["prob_zero_point"]):
        raise ValueError(f"layer {name!r}: TFLite int8 softmax outputs scale 1/256, zero point -128")
    ctx = m.batch_matmul(f"{name}/context", probs, v, False, out_q)  # [NH, S, HD]
    m.rms[ctx.index] = 16.0  # as measured on random data at these scales; sizes out_proj's weights
    return m.reshape(name, m.transpose(f"{name}/merge", ctx, (1, 0, 2)), (s, nh * hd))


# ----------------------------------------------------------------------------------------------------------
# Running a model in TFLM and reading its arena


_ALLOC_RE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


def _capture_fd1_fd2(fn):
    """Run fn() with the process's stdout and stderr (fd 1 and 2) sent to a file; return (result, text)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        error = None
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            result = fn()
        except Exception as e:  # TFLM explains its failures on stderr: keep that text with the error
            error = e
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        tmp.seek(0)
        text = tmp.read().decode("utf-8", "replace")
    if error is not None:
        raise RuntimeError(f"TFLM: {error}; its log:\n{text[-2000:]}") from error
    return result, text


def parse_allocations(text: str) -> dict[str, int]:
    """Pull total/head/tail bytes out of the RecordingMicroAllocator report."""
    found = {k: int(v) for k, v in _ALLOC_RE.findall(text)}
    missing = {"total", "head", "tail"} - set(found)
    if missing:
        raise RuntimeError(f"TFLM allocation report lacks {sorted(missing)}: {text[:500]!r}")
    return found


def tflm_run(model_bytes: bytes, inputs: Sequence[np.ndarray], arena_size: int = 64 << 20):
    """Run one inference; return (outputs, allocation report text)."""
    _require_tflm()

    def go():
        it = _tflm_runtime.Interpreter.from_bytes(model_bytes, arena_size=arena_size)
        for i, a in enumerate(inputs):
            it.set_input(a, i)
        it.invoke()
        outs = [np.array(it.get_output(i)) for i in range(_n_outputs(model_bytes))]
        it.print_allocations()
        return outs

    return _capture_fd1_fd2(go)


def _n_outputs(model_bytes: bytes) -> int:
    return fb.Model.GetRootAsModel(model_bytes, 0).Subgraphs(0).OutputsLength()


def random_inputs(model_bytes: bytes, seed: int = 0) -> list[np.ndarray]:
    """Fresh random int8 inputs for every graph input of a model."""
    _require_tflm()
    model = fb.Model.GetRootAsModel(model_bytes, 0)
    sg = model.Subgraphs(0)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(sg.InputsLength()):
        t = sg.Tensors(sg.Inputs(i))
        out.append(rng.integers(-128, 128, size=tuple(t.ShapeAsNumpy()), dtype=np.int8))
    return out


def tflm_arena(model_bytes: bytes, seed: int = 0, arena_size: int = 64 << 20) -> dict:
    """Run the model once on random int8 inputs and report TFLM's arena: total, head (planned activations) and
    tail (persistent) bytes, plus output statistics that show the run produced real data."""
    (outs, text) = tflm_run(model_bytes, random_inputs(model_bytes, seed), arena_size)
    alloc = parse_allocations(text)
    y = outs[0]
    return {
        "total_bytes": alloc["total"],
        "head_bytes": alloc["head"],
        "tail_bytes": alloc["tail"],
        "model_bytes": len(model_bytes),
        "output_shape": list(y.shape),
        "output_distinct": int(np.unique(y).size),
        "output_std": float(np.std(y.astype(np.float64))),
    }

