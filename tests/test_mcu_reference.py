"""The integer references: TFLite requantisation against a scalar port, the LUT softmax."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tilesched.semantics import quant as ref


def _srdhm(a: int, b: int) -> int:
    if a == b == -(2**31):
        return 2**31 - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return _cdiv(ab + nudge, 1 << 31)


def _cdiv(a: int, d: int) -> int:  # C division: truncate toward zero
    q = abs(a) // d
    return q if a >= 0 else -q


def _rdbpot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    rem = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > threshold else 0)


def _mbqm(x: int, q: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    return _rdbpot(_srdhm(x * (1 << left), q), right)


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**24), 2**24), st.floats(1e-6, 0.99))
def test_multiply_by_quantized_multiplier_matches_scalar_port(acc, m):
    q, shift = ref.quantize_multiplier(m)
    assert int(ref.multiply_by_quantized_multiplier(acc, q, shift)) == _mbqm(acc, q, shift)
    assert abs(_mbqm(acc, q, shift) - acc * m) <= 1 + abs(acc * m) * 1e-6


def test_quantize_multiplier_normalises():
    for m in (0.5, 0.25, 0.0023, 0.99999999999):
        q, shift = ref.quantize_multiplier(m)
        assert 2**30 <= q < 2**31
        assert math.isclose(q * 2.0 ** (shift - 31), m, rel_tol=1e-9)


def test_rounding_of_exact_ties_like_gemmlowp():
    """SaturatingRoundingDoublingHighMul nudges by 2^30 (or 1 - 2^30) and truncates: exact
    halves round up for positives and toward zero for negatives (x * 0.5 here)."""
    q, shift = ref.quantize_multiplier(0.5)
    got = ref.multiply_by_quantized_multiplier(np.array([1, 3, -1, -3, 5, -5]), q, shift)
    assert got.tolist() == [1, 2, 0, -1, 3, -2]
    # with a right shift, RoundingDivideByPOT rounds halves away from zero
    q, shift = ref.quantize_multiplier(0.25)
    assert ref.multiply_by_quantized_multiplier(np.array([2, -2, 6, -6]), q, shift).tolist() == [1, -1, 2, -2]


def test_softmax_is_a_distribution():
    rng = np.random.default_rng(0)
    s = rng.integers(-128, 128, size=(16, 100)).astype(np.int8)
    p = ref.softmax_int8(s, ref.softmax_lut(0.125)).astype(np.int64) + 128
    assert np.all(np.abs(p.sum(axis=1) - 256) <= 100 // 2 + 1)  # each term rounds by at most 1/2
    assert np.all(np.argmax(p, axis=1) == np.argmax(s, axis=1))
    flat = ref.softmax_int8(np.zeros((1, 4), np.int8), ref.softmax_lut(0.125))
    assert flat.tolist() == [[-64, -64, -64, -64]]


def test_act_ranges():
    assert ref.act_range("relu6", 6 / 255, -128) == (-128, 127)
    assert ref.act_range("relu6", 0.05, 0) == (0, 120)
    assert ref.act_range("relu", 0.04, -5) == (-5, 127)
