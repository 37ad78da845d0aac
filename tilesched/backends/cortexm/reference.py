"""Exact integer numpy references for the Cortex-M kernels, with TFLite's requantisation.

Requantisation (TFLite): a real multiplier m = s_in * s_w / s_out is stored as a Q31
`multiplier` and a power-of-two `shift` (QuantizeMultiplier); an int32 accumulator is scaled
by MultiplyByQuantizedMultiplier = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(
acc << max(shift, 0), multiplier), max(-shift, 0)), then the output zero point is added and
the result clamped to the activation range (ReLU / ReLU6 are clamps on quantized values).

Integer softmax (tilesched's, exact and LUT based): for one row of int8 scores s with
scale `score_scale`, d_j = max(s) - s_j in [0, 255]; e_j = LUT[d_j] with
LUT[d] = round(65536 * exp(-score_scale * d)) (uint32, computed once in float64 and emitted
into the C program, so both sides read the same table); sum = sum_j e_j (< 2^32 for rows up
to 65535 keys); p_j = clamp(floor((256 * e_j + sum // 2) / sum) - 128, -128, 127), i.e.
probabilities with scale 1/256 and zero point -128 (TFLite's int8 softmax output range).
Everything after the table is integer arithmetic, so C and numpy agree bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(m: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: m = q * 2^(shift - 31) with q a Q31 in [2^30, 2^31)."""
    if m == 0.0:
        return 0, 0
    frac, shift = math.frexp(m)
    q = int(math.floor(frac * (1 << 31) + 0.5))  # std::round for a positive value
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def quantize_multipliers(ms) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(m)) for m in np.atleast_1d(ms)]
    return (np.array([p[0] for p in pairs], dtype=np.int64), np.array([p[1] for p in pairs], dtype=np.int64))


def _trunc_div(a: np.ndarray, d: int) -> np.ndarray:
    """C integer division (truncates toward zero) of int64 values."""
    q = np.abs(a) // d
    return np.where(a < 0, -q, q)


def multiply_by_quantized_multiplier(acc, mult, shift) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier, elementwise, broadcasting mult/shift."""
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = acc * (np.int64(1) << left)
    x = np.clip(x, INT32_MIN, INT32_MAX)  # the C code shifts in int32; our multipliers are < 1 (left = 0)
    ab = x * mult
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = _trunc_div(ab + nudge, 1 << 31)
    high = np.where((x == INT32_MIN) & (mult == INT32_MIN), INT32_MAX, high)
    mask = (np.int64(1) << right) - 1
    rem = high & mask
    threshold = (mask >> 1) + (high < 0)
    return (high >> right) + (rem > threshold)


def requantize(acc, mult, shift, zp_out: int, lo: int = -128, hi: int = 127) -> np.ndarray:
    out = multiply_by_quantized_multiplier(acc, mult, shift) + zp_out
    return np.clip(out, lo, hi).astype(np.int8)


def act_range(act: str, scale: float, zp: int) -> tuple[int, int]:
    """Quantized clamp of an activation (TFLite CalculateActivationRangeQuantized)."""
    if act == "none":
        return -128, 127
    if act == "relu":
        return max(-128, zp), 127
    if act == "relu6":
        return max(-128, zp), min(127, zp + int(math.floor(6.0 / scale + 0.5)))
    raise ValueError(f"unknown activation {act!r}")


def softmax_lut(score_scale: float) -> np.ndarray:
    d = np.arange(256, dtype=np.float64)
    return np.floor(65536.0 * np.exp(-score_scale * d) + 0.5).astype(np.int64)


def softmax_int8(s: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """The integer softmax of the module docstring over the last axis of int8 scores."""
    s = s.astype(np.int64)
    e = lut[s.max(axis=-1, keepdims=True) - s]
    total = e.sum(axis=-1, keepdims=True)
    p = (256 * e + total // 2) // total - 128
    return np.clip(p, -128, 127).astype(np.int8)


def conv1x1(x: np.ndarray, w: np.ndarray, bias: np.ndarray, zp_in: int) -> np.ndarray:
    """x [..., C] int8, w [CO, C] int8 -> int32 accumulators [..., CO]."""
    return (x.astype(np.int64) - zp_in) @ w.astype(np.int64).T + bias


def depthwise3x3(x: np.ndarray, w: np.ndarray, bias: np.ndarray, zp_in: int, stride: int, pad: int) -> np.ndarray:
    """x [H, W, E], w [KH, KW, E]: zero padding of (x - zp), TFLite semantics."""
    h, wd, e = x.shape
    kh, kw, _ = w.shape
    xp = np.zeros((h + 2 * pad, wd + 2 * pad, e), dtype=np.int64)
    xp[pad:pad + h, pad:pad + wd] = x.astype(np.int64) - zp_in
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    acc = np.zeros((oh, ow, e), dtype=np.int64) + bias
    for i in range(kh):
        for j in range(kw):
            acc += xp[i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride] * w[i, j].astype(np.int64)
    return acc
