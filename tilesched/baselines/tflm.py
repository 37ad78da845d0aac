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
    "inverted_bottleneck",
    "bert_encoder",
    "WORKLOADS",
    "build_workload",
    "tflm_arena",
    "tflm_run",
    "tflm_version",
    "quantize_multiplier",
    "multiply_by_quantized_multiplier",
    "conv2d_int8_reference",
    "depthwise_conv2d_int8_reference",
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


# ----------------------------------------------------------------------------------------------------------
# Flatbuffer model builder

_ACT = {"none": 0, "relu": 1, "relu6": 3}  # ActivationFunctionType
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
        return t

    def activation(self, name: str, shape, q: QParams) -> Tensor:
        return self._tensor(name, shape, np.int8, q)

    def const(self, name: str, data: np.ndarray, q: QParams | None = None) -> Tensor:
        return self._tensor(name, data.shape, data.dtype, q, data)

    def mark_output(self, t: Tensor) -> None:
        self.outputs.append(t.index)

    # -- random, calibrated parameters
    def _weights(self, shape, fan_in: int, axis: int | None, in_scale: float, out_scale: float, spread: float):
        """int8 weights (std ~40) with scales chosen so the output has a std of ~`spread` quantized units:
        random data then fills the int8 range without saturating, and every output is informative."""
        w = np.clip(np.round(self.rng.normal(0.0, 40.0, size=shape)), -127, 127).astype(np.int8)
        x_std = 60.0  # typical spread of an int8 activation around its zero point, in quantized units
        base = spread * out_scale / (in_scale * x_std * 40.0 * math.sqrt(fan_in))
        if axis is None:
            return w, QParams.per_tensor(base)
        return w, QParams.per_channel(base * self.rng.uniform(0.7, 1.3, size=shape[axis]), axis)

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
               spread: float = 30.0) -> Tensor:
        _, h, w, cin = x.shape
        wt, w_q = self._weights((cout, k, k, cin), k * k * cin, 0, x.q.scale[0], out_q.scale[0], spread)
        b, b_q = self._bias(cout, x.q.scale[0], w_q)
        wt_t = self.const(f"{name}/weights", wt, w_q)
        b_t = self.const(f"{name}/bias", b, b_q)
        out = self.activation(name, (1, -(-h // stride), -(-w // stride), cout), out_q)
        opts = fb.Conv2DOptionsT()
        opts.padding, opts.strideH, opts.strideW = 0, stride, stride
        opts.fusedActivationFunction = _ACT[act]
        self._op("CONV_2D", [x, wt_t, b_t], [out], opts)
        return out

    def depthwise_conv2d(self, name: str, x: Tensor, k: int, stride: int, act: str, out_q: QParams,
                         spread: float = 30.0) -> Tensor:
        _, h, w, c = x.shape
        wt, w_q = self._weights((1, k, k, c), k * k, 3, x.q.scale[0], out_q.scale[0], spread)
        b, b_q = self._bias(c, x.q.scale[0], w_q)
        wt_t = self.const(f"{name}/weights", wt, w_q)
        b_t = self.const(f"{name}/bias", b, b_q)
        out = self.activation(name, (1, -(-h // stride), -(-w // stride), c), out_q)
        opts = fb.DepthwiseConv2DOptionsT()
        opts.padding, opts.strideH, opts.strideW, opts.depthMultiplier = 0, stride, stride, 1
        opts.fusedActivationFunction = _ACT[act]
        self._op("DEPTHWISE_CONV_2D", [x, wt_t, b_t], [out], opts)
        return out

    def fully_connected(self, name: str, x: Tensor, units: int, act: str, out_q: QParams,
                        spread: float = 30.0) -> Tensor:
        k = x.shape[-1]
        wt, w_q = self._weights((units, k), k, None, x.q.scale[0], out_q.scale[0], spread)
        b, b_q = self._bias(units, x.q.scale[0], w_q)
        wt_t = self.const(f"{name}/weights", wt, w_q)
        b_t = self.const(f"{name}/bias", b, b_q)
        out = self.activation(name, (*x.shape[:-1], units), out_q)
        opts = fb.FullyConnectedOptionsT()
        opts.fusedActivationFunction = _ACT[act]
        opts.keepNumDims = True
        self._op("FULLY_CONNECTED", [x, wt_t, b_t], [out], opts)
        return out

    def batch_matmul(self, name: str, a: Tensor, b: Tensor, adj_y: bool, out_q: QParams) -> Tensor:
        n = b.shape[-2] if adj_y else b.shape[-1]
        out = self.activation(name, (*a.shape[:-1], n), out_q)
        opts = fb.BatchMatMulOptionsT()
        opts.adjX, opts.adjY = False, adj_y
        self._op("BATCH_MATMUL", [a, b], [out], opts)
        return out

    def softmax(self, name: str, x: Tensor) -> Tensor:
        out = self.activation(name, x.shape, QParams.per_tensor(1.0 / 256.0, -128))  # TFLite int8 softmax spec
        opts = fb.SoftmaxOptionsT()
        opts.beta = 1.0
        self._op("SOFTMAX", [x], [out], opts)
        return out

    def add(self, name: str, a: Tensor, b: Tensor, out_q: QParams) -> Tensor:
        out = self.activation(name, a.shape, out_q)
        self._op("ADD", [a, b], [out], fb.AddOptionsT())
        return out

    def _binary(self, code: str, name: str, a: Tensor, b: Tensor, out_q: QParams, options) -> Tensor:
        shape = tuple(max(p, q) for p, q in zip(a.shape, b.shape)) if len(a.shape) == len(b.shape) else a.shape
        out = self.activation(name, shape, out_q)
        self._op(code, [a, b], [out], options)
        return out

    def layer_norm(self, name: str, x: Tensor, out_q: QParams, spread: float = 40.0) -> Tensor:
        """LayerNorm over the last axis as the TFLite converter decomposes it into int8 builtins:
        MEAN, SUB, SQUARED_DIFFERENCE, MEAN, ADD eps, RSQRT, MUL, MUL gamma, ADD beta.
        `spread` is the expected std of x in quantized units; it sets the intermediate scales."""
        sx = x.q.scale[0]
        sigma = spread * sx  # expected real std of x
        h = x.shape[-1]
        axis = self.const(f"{name}/axis", np.asarray([len(x.shape) - 1], dtype=np.int32))
        red = fb.ReducerOptionsT()
        red.keepDims = True
        mean = self.activation(f"{name}/mean", (*x.shape[:-1], 1), x.q)
        self._op("MEAN", [x, axis], [mean], red)
        d = self._binary("SUB", f"{name}/centered", x, mean, QParams.per_tensor(sx, 0), fb.SubOptionsT())
        sq_q = QParams.per_tensor(9.0 * sigma**2 / 255.0, -128)  # [0, 9 sigma^2] onto the int8 range
        sq = self._binary("SQUARED_DIFFERENCE", f"{name}/sq", x, mean, sq_q, fb.SquaredDifferenceOptionsT())
        var = self.activation(f"{name}/var", (*x.shape[:-1], 1), sq_q)
        red2 = fb.ReducerOptionsT()
        red2.keepDims = True
        self._op("MEAN", [sq, axis], [var], red2)
        eps = self.const(f"{name}/eps", np.asarray([-127], dtype=np.int8), sq_q)  # one quantization step
        var_eps = self._binary("ADD", f"{name}/var_eps", var, eps, sq_q, fb.AddOptionsT())
        inv = self.activation(f"{name}/rsqrt", var_eps.shape, QParams.per_tensor(4.0 / sigma / 255.0, -128))
        self._op("RSQRT", [var_eps], [inv], None)
        norm_q = QParams.per_tensor(4.0 / 127.0, 0)  # ~N(0, 1) onto +-4
        n = self._binary("MUL", f"{name}/normalized", d, inv, norm_q, fb.MulOptionsT())
        gamma = self.const(f"{name}/gamma", self.rng.integers(80, 120, size=h).astype(np.int8),
                           QParams.per_tensor(0.01))
        beta = self.const(f"{name}/beta", self.rng.integers(-20, 20, size=h).astype(np.int8),
                          QParams.per_tensor(0.01))
        g = self._binary("MUL", f"{name}/scaled", n, gamma, norm_q, fb.MulOptionsT())
        return self._binary("ADD", name, g, beta, out_q, fb.AddOptionsT())

    def reshape(self, name: str, x: Tensor, shape) -> Tensor:
        shape_t = self.const(f"{name}/shape", np.asarray(shape, dtype=np.int32))
        out = self.activation(name, shape, x.q)
        opts = fb.ReshapeOptionsT()
        opts.newShape = list(shape)
        self._op("RESHAPE", [x, shape_t], [out], opts)
        return out

    def transpose(self, name: str, x: Tensor, perm) -> Tensor:
        perm_t = self.const(f"{name}/perm", np.asarray(perm, dtype=np.int32))
        out = self.activation(name, tuple(x.shape[p] for p in perm), x.q)
        self._op("TRANSPOSE", [x, perm_t], [out], fb.TransposeOptionsT())
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


RELU6_Q = (6.0 / 255.0, -128)  # int8 ReLU6 output: [0, 6] onto [-128, 127]


def inverted_bottleneck(h: int = 80, w: int = 80, cin: int = 16, expand: int = 96, cout: int = 24,
                        stride: int = 1, seed: int = 0,
                        x_q: tuple[float, int] = RELU6_Q, y_q: tuple[float, int] = (0.0412, 3)) -> bytes:
    """MobileNetV2 / MCUNet block: 1x1 conv expand + ReLU6, 3x3 depthwise (SAME) + ReLU6, 1x1 conv project."""
    m = ModelBuilder(seed)
    x = m.input("x", (1, h, w, cin), QParams.per_tensor(*x_q))
    e = m.conv2d("expand", x, expand, 1, 1, "relu6", QParams.per_tensor(*RELU6_Q))
    d = m.depthwise_conv2d("depthwise", e, 3, stride, "relu6", QParams.per_tensor(*RELU6_Q))
    y = m.conv2d("project", d, cout, 1, 1, "none", QParams.per_tensor(*y_q))
    m.mark_output(y)
    return m.build()


def bert_encoder(seq: int = 128, hidden: int = 128, heads: int = 2, ffn: int = 512, seed: int = 0,
                 layernorm: bool = True) -> bytes:
    """BERT-tiny (post-LN) encoder layer in the int8 ops TFLM runs: Q/K/V projections (FULLY_CONNECTED),
    head split (RESHAPE + TRANSPOSE), scores and context (BATCH_MATMUL), SOFTMAX, output projection, residual
    ADD + LayerNorm, FFN (FC + ReLU, FC), residual ADD + LayerNorm.

    The 1/sqrt(head_dim) scaling is folded into the query weights' scale.  The FFN uses ReLU: the TFLM
    interpreter has no GELU kernel (both are elementwise on the same tensor, so the arena is the same).
    LayerNorm is decomposed into int8 builtins (see `ModelBuilder.layer_norm`)."""
    hd = hidden // heads
    m = ModelBuilder(seed)
    act_q = QParams.per_tensor(0.05, 0)
    x = m.input("x", (seq, hidden), QParams.per_tensor(0.031, 2))

    def split_heads(name: str, t: Tensor) -> Tensor:  # [S, H*D] -> [H, S, D]
        r = m.reshape(f"{name}/split", t, (seq, heads, hd))
        return m.transpose(f"{name}/heads", r, (1, 0, 2))

    q = split_heads("q", m.fully_connected("q_proj", x, hidden, "none", act_q, spread=10.0))
    k = split_heads("k", m.fully_connected("k_proj", x, hidden, "none", act_q, spread=10.0))
    v = split_heads("v", m.fully_connected("v_proj", x, hidden, "none", act_q))
    scores = m.batch_matmul("scores", q, k, True, QParams.per_tensor(0.125, 0))  # [H, S, S]
    probs = m.softmax("softmax", scores)
    ctx = m.batch_matmul("context", probs, v, False, QParams.per_tensor(0.02, 0))  # [H, S, D]
    ctx = m.reshape("context/merge", m.transpose("context/seq", ctx, (1, 0, 2)), (seq, hidden))
    attn = m.fully_connected("out_proj", ctx, hidden, "none", QParams.per_tensor(0.06, -1))
    h1 = m.add("residual1", x, attn, QParams.per_tensor(0.06, 0))
    if layernorm:
        h1 = m.layer_norm("ln1", h1, QParams.per_tensor(0.03, 0), spread=48.0)
    f = m.fully_connected("ffn1", h1, ffn, "relu", QParams.per_tensor(6.0 / 255.0, -128))
    f2 = m.fully_connected("ffn2", f, hidden, "none", QParams.per_tensor(0.06, 0))
    y = m.add("residual2", h1, f2, QParams.per_tensor(0.06, 0))
    if layernorm:
        y = m.layer_norm("ln2", y, QParams.per_tensor(0.03, 0), spread=18.0)
    m.mark_output(y)
    return m.build()


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


# The MCU comparison workloads (names shared with tilesched's Cortex-M benchmark): builder and its arguments.
WORKLOADS: dict[str, tuple] = {
    "ib_s1_80": (inverted_bottleneck, {"h": 80, "w": 80, "cin": 16, "expand": 96, "cout": 24, "stride": 1}),
    "ib_s2_80": (inverted_bottleneck, {"h": 80, "w": 80, "cin": 16, "expand": 96, "cout": 24, "stride": 2}),
    "bert_tiny_s128": (bert_encoder, {"seq": 128, "hidden": 128, "heads": 2, "ffn": 512}),
    "bert_tiny_s256": (bert_encoder, {"seq": 256, "hidden": 128, "heads": 2, "ffn": 512}),
    "bert_tiny_s512": (bert_encoder, {"seq": 512, "hidden": 128, "heads": 2, "ffn": 512}),
}


def build_workload(name: str, seed: int = 0, **overrides) -> bytes:
    """The .tflite bytes of a named workload; `overrides` change its sizes (tests use small ones)."""
    if name not in WORKLOADS:
        raise KeyError(f"unknown MCU workload {name!r}; known: {sorted(WORKLOADS)}")
    fn, kwargs = WORKLOADS[name]
    return fn(**{**kwargs, **overrides}, seed=seed)
