"""TFLite's integer arithmetic, bit for bit: the one implementation the semantics oracle, the
Cortex-M backend and the TFLite Micro baseline all use.

Affine quantisation: real = scale * (q - zero_point). Scales are stored as float32 (as in a
.tflite file); effective multipliers are computed in float64 from those float32 values.
- `quantize_multiplier(m)`: m = q * 2^(shift - 31), q a Q31 in [2^30, 2^31) (QuantizeMultiplier).
- `multiply_by_quantized_multiplier(x, q, shift)`: RoundingDivideByPOT(SaturatingRounding-
  DoublingHighMul(x << max(shift, 0), q), max(-shift, 0)) (MultiplyByQuantizedMultiplier).
- `requantize(acc, q, shift, zp, lo, hi)`: the int32 accumulator to int8 with an activation clamp.
- `add_int8` / `mul_int8`: TFLite's reference int8 ADD (left shift 20, both inputs rescaled to
  twice the larger input scale) and MUL.
- Integer softmax (exact, LUT based): for one row of int8 scores s with scale `score_scale`,
  d_j = max(s) - s_j in [0, 255]; e_j = LUT[d_j], LUT[d] = round(65536 * exp(-score_scale * d))
  (computed once in float64 and emitted into generated C, so both read the same table);
  sum = sum_j e_j; p_j = clamp(floor((256 * e_j + sum // 2) / sum) - 128, -128, 127):
  probabilities with scale 1/256 and zero point -128 (TFLite's int8 softmax output range).
- `lut_int8(f, in_q, out_q)`: any unary real function on int8 as a 256-entry table,
  q_out = clamp(round_half_away(f(s_in * (q - zp_in)) / s_out) + zp_out).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT8_MIN, INT8_MAX = -128, 127
ADD_LEFT_SHIFT = 20  # TFLite's int8 ADD/SUB


def f32(x) -> np.ndarray | float:
    """Scales as a .tflite file stores them."""
    if np.ndim(x) == 0:
        return float(np.float32(x))
    return np.asarray(x, dtype=np.float32).astype(np.float64)


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
    x = np.clip(acc * (np.int64(1) << left), INT32_MIN, INT32_MAX)  # C shifts in int32
    ab = x * mult
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = _trunc_div(ab + nudge, 1 << 31)
    high = np.where((x == INT32_MIN) & (mult == INT32_MIN), INT32_MAX, high)
    mask = (np.int64(1) << right) - 1
    rem = high & mask
    threshold = (mask >> 1) + (high < 0)
    return (high >> right) + (rem > threshold)


def requant_multipliers(acc_scale, out_scale) -> tuple[np.ndarray, np.ndarray]:
    """(Q31 multiplier, shift) arrays (the shape of `acc_scale`) for acc_scale / out_scale: the
    effective scale in float64 from float32 scales, as TFLM computes it."""
    mult = np.asarray(acc_scale, dtype=np.float64) / float(out_scale)
    q, shift = quantize_multipliers(mult.reshape(-1))
    return q.reshape(mult.shape), shift.reshape(mult.shape)


def requantize(acc, mult, shift, zp_out: int, lo: int = INT8_MIN, hi: int = INT8_MAX) -> np.ndarray:
    out = multiply_by_quantized_multiplier(acc, mult, shift) + zp_out
    return np.clip(out, lo, hi).astype(np.int64)


def act_range(act: str, scale: float, zp: int) -> tuple[int, int]:
    """Quantized clamp of an activation (TFLite CalculateActivationRangeQuantized)."""
    if act == "none":
        return INT8_MIN, INT8_MAX
    if act == "relu":
        return max(INT8_MIN, zp), INT8_MAX
    if act == "relu6":
        return max(INT8_MIN, zp), min(INT8_MAX, zp + int(math.floor(6.0 / scale + 0.5)))
    raise ValueError(f"unknown activation {act!r}")


def add_int8(q1, s1: float, z1: int, q2, s2: float, z2: int, s_out: float, z_out: int,
             lo: int = INT8_MIN, hi: int = INT8_MAX) -> np.ndarray:
    """TFLite's reference int8 ADD (broadcasting)."""
    s1, s2, s_out = f32(s1), f32(s2), f32(s_out)
    twice_max = 2.0 * max(s1, s2)
    m1, sh1 = quantize_multiplier(s1 / twice_max)
    m2, sh2 = quantize_multiplier(s2 / twice_max)
    mo, sho = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * s_out))
    a = (np.asarray(q1, dtype=np.int64) - z1) * (1 << ADD_LEFT_SHIFT)
    b = (np.asarray(q2, dtype=np.int64) - z2) * (1 << ADD_LEFT_SHIFT)
    raw = multiply_by_quantized_multiplier(a, m1, sh1) + multiply_by_quantized_multiplier(b, m2, sh2)
    out = multiply_by_quantized_multiplier(raw, mo, sho) + z_out
    return np.clip(out, lo, hi).astype(np.int64)


def mul_int8(q1, s1: float, z1: int, q2, s2: float, z2: int, s_out: float, z_out: int,
             lo: int = INT8_MIN, hi: int = INT8_MAX) -> np.ndarray:
    """TFLite's reference int8 MUL (broadcasting)."""
    m, sh = quantize_multiplier(f32(s1) * f32(s2) / f32(s_out))
    raw = (np.asarray(q1, dtype=np.int64) - z1) * (np.asarray(q2, dtype=np.int64) - z2)
    out = multiply_by_quantized_multiplier(raw, m, sh) + z_out
    return np.clip(out, lo, hi).astype(np.int64)


def round_half_away(x: np.ndarray) -> np.ndarray:
    """std::round: halves away from zero (numpy's round goes to even)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize(real, scale, zp: int, lo: int = INT8_MIN, hi: int = INT8_MAX) -> np.ndarray:
    """Real values to int8 (TFLite QUANTIZE: round half away from zero, then clamp)."""
    q = round_half_away(np.asarray(real, dtype=np.float64) / np.asarray(f32(scale))) + zp
    return np.clip(q, lo, hi).astype(np.int64)


def dequantize(q, scale, zp: int) -> np.ndarray:
    return np.asarray(f32(scale)) * (np.asarray(q, dtype=np.float64) - zp)


def lut_int8(fn: Callable[[np.ndarray], np.ndarray], in_scale: float, in_zp: int, out_scale: float,
             out_zp: int) -> np.ndarray:
    """The table of `fn` from int8 (in_scale, in_zp) to int8 (out_scale, out_zp), indexed by q + 128."""
    q = np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.int64)
    with np.errstate(all="ignore"):
        y = fn(dequantize(q, in_scale, in_zp))
    y = np.nan_to_num(y, nan=0.0, posinf=1e30, neginf=-1e30)
    return quantize(y, out_scale, out_zp)


def softmax_lut(score_scale: float) -> np.ndarray:
    d = np.arange(256, dtype=np.float64)
    return np.floor(65536.0 * np.exp(-f32(score_scale) * d) + 0.5).astype(np.int64)


def softmax_int8(s: np.ndarray, lut: np.ndarray, axis: int = -1) -> np.ndarray:
    """The integer softmax of the module docstring over `axis` of int8 scores."""
    s = np.asarray(s, dtype=np.int64)
    e = lut[s.max(axis=axis, keepdims=True) - s]
    total = e.sum(axis=axis, keepdims=True)
    p = (256 * e + total // 2) // total - 128
    return np.clip(p, INT8_MIN, INT8_MAX).astype(np.int64)
