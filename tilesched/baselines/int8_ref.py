"""TFLite's int8 quantization arithmetic in numpy, bit for bit: QuantizeMultiplier,
MultiplyByQuantizedMultiplier, and reference CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED kernels.

These are what TFLM's int8 kernels compute (checked bit-exact in tests/test_tflm_baseline.py), so they double
as the integer reference for tilesched's Cortex-M kernels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# one implementation of TFLite's rounding, shared with the Cortex-M backend's reference
from tilesched.semantics.quant import act_range, multiply_by_quantized_multiplier, quantize_multiplier

__all__ = [
    "QParams",
    "quantize_multiplier",
    "multiply_by_quantized_multiplier",
    "conv2d_int8_reference",
    "depthwise_conv2d_int8_reference",
    "fully_connected_int8_reference",
]


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
    return act_range(act, out_q.scale[0], out_q.zero_point[0])


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
