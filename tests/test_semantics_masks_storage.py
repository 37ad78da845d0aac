"""The language constructs of attention and low-bit GEMMs in the oracle: masks from index
expressions, group maps, packed sub-byte values, narrow float grids."""

from __future__ import annotations

import numpy as np
import pytest

from tilesched import bind, lower
from tilesched.errors import SpecError
from tilesched.ir.dtypes import BITS, per_word
from tilesched.ir.indexexpr import eval_mask
from tilesched.ir.storage import FP4_VALUES, fp4_decode, fp4_encode, pack_words, round_to, unpack_words
from tilesched.semantics import random_inputs, run_spec
from tilesched.spec import load_spec_text

ROWS = """
name: rows
target: cuda
axes: {M: {size: M, hint: 6}, N: {size: N, hint: 9}}
tensors:
  X: {shape: [M, N], dtype: fp32}
  Y: {shape: [M, N], dtype: fp32}
  R: {shape: [M], dtype: fp32}
stages:
  - {name: sm, kind: compute, op: softmax, axis: N, MASK reads: [X], writes: [Y]}
  - {name: red, kind: compute, op: reduce, reduce: REDUCE, axis: N, MASK reads: [X], writes: [R]}
"""


def _program(text: str):
    spec, source = load_spec_text(text)
    return lower(spec, source)


def _rows(mask: str, reduce: str = "sum"):
    m = f'mask: "{mask}", ' if mask else ""
    return _program(ROWS.replace("MASK ", m).replace("REDUCE", reduce))


def test_masked_softmax_and_reductions():
    mask = "N <= M - 2"  # rows 0 and 1 keep nothing
    b = bind(_rows(mask), {"M": 6, "N": 9}, schedule=False)
    x = np.random.default_rng(0).normal(size=(6, 9))
    out = run_spec(b, {"X": x})
    keep = np.arange(9)[None, :] <= np.arange(6)[:, None] - 2
    want = np.zeros_like(x)
    for i in range(2, 6):
        e = np.exp(x[i, keep[i]] - x[i, keep[i]].max())
        want[i, keep[i]] = e / e.sum()
    assert np.allclose(out["Y"], want) and not out["Y"][:2].any()
    assert np.allclose(out["Y"][2:].sum(1), 1.0)
    assert np.allclose(out["R"], np.where(keep, x, 0).sum(1))
    for how, fill, fn in (("max", -np.inf, np.max), ("min", np.inf, np.min)):
        b = bind(_rows(mask, how), {"M": 6, "N": 9}, schedule=False)
        r = run_spec(b, {"X": x})["R"]
        assert np.array_equal(r, fn(np.where(keep, x, fill), axis=1))


@pytest.mark.parametrize("mask,why", [
    ("N >= Q", "unknown name 'Q'"),
    ("M // N > 0", "a divisor holds an index"),
    ("M / 2 > N", "/ is not allowed"),
    ("size(M) > 3", "uses no index"),
    ("N ** 2 > M", r"\*\* is not allowed"),
])
def test_bad_masks_are_refused_at_validate(mask, why):
    with pytest.raises(SpecError, match=why):
        _rows(mask)


def test_masks_belong_to_softmax_and_reductions():
    text = ROWS.replace("MASK ", "").replace("REDUCE", "mean")
    text = text.replace("op: reduce, reduce: mean,", 'op: reduce, reduce: mean, mask: "N < M",')
    with pytest.raises(SpecError, match="not reduce mean"):
        _program(text)
    text = ROWS.replace("MASK ", "").replace("REDUCE", "sum").replace(
        "{name: sm, kind: compute, op: softmax, axis: N,", '{name: sm, kind: compute, op: elementwise, fn: [relu], mask: "N < M",')
    with pytest.raises(SpecError, match="not elementwise"):
        _program(text)


def test_mask_values_and_sizes():
    m = eval_mask("SQ + size(SK) - size(SQ) >= SK and SK > W", ("SQ", "SK"), {"SQ": 2, "SK": 4}, {"W": 0})
    assert m.astype(int).tolist() == [[False, True, True, False], [False, True, True, True]]
    assert eval_mask("SQ // 2 == SK // 2", ("SQ", "SK"), {"SQ": 4, "SK": 4}, {}).sum() == 8
    assert eval_mask("(SQ - SK) % 3 == 0", ("SQ", "SK"), {"SQ": 3, "SK": 5}, {})[0].tolist() == [
        True, False, False, True, False]  # Python's modulo of negative numbers


@pytest.mark.parametrize("dtype", ["uint4", "int4", "uint2", "int2", "uint3", "int3", "uint8", "int8", "fp4e2m1"])
def test_pack_roundtrip(dtype):
    rng = np.random.default_rng(BITS[dtype])
    lo, hi = (-(1 << (BITS[dtype] - 1)), (1 << (BITS[dtype] - 1)) - 1) if dtype.startswith("int") else (
        0, (1 << BITS[dtype]) - 1)
    v = rng.integers(lo, hi + 1, size=(37, 5))
    words = pack_words(v, 0, dtype)
    assert words.dtype == np.int32 and words.shape == (-(-37 // per_word(dtype)), 5)
    assert np.array_equal(unpack_words(words, 0, dtype, 37), v)
    assert np.array_equal(unpack_words(pack_words(v, 1, dtype), 1, dtype, 5), v)


def test_pack_layout_is_low_bits_first():
    assert int(pack_words(np.arange(1, 9)[:, None], 0, "uint4")[0, 0]) & 0xFFFFFFFF == 0x87654321
    assert pack_words(np.array([[-1], [0]]), 0, "int2")[0, 0] == 0b0011


def test_narrow_float_grids_match_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).normal(scale=3.0, size=4000)
    x = np.concatenate([x, [0.0, 1e-4, 3e-3, -2.5e-3, 300.0, -447.0, 0.015625, 0.0146484375]])
    for dtype, tdt in (("fp8e4m3", torch.float8_e4m3fn), ("fp8e5m2", torch.float8_e5m2), ("fp16", torch.float16),
                       ("bf16", torch.bfloat16)):
        want = torch.from_numpy(x).to(tdt).double().numpy()
        assert np.array_equal(round_to(dtype, x), want), dtype


def test_fp4_codes():
    assert fp4_decode(np.arange(16)).tolist() == FP4_VALUES.tolist()
    v = round_to("fp4e2m1", np.array([0.2, 0.3, 0.8, 1.3, 2.4, 2.6, 5.1, 7.0, -0.74, -9.0]))
    assert v.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 6.0, 6.0, -0.5, -6.0]
    assert np.array_equal(fp4_decode(fp4_encode(v)), v)


GROUPED = """
name: grouped
target: cuda
axes: {K: {size: K, hint: 10}, N: {size: N, hint: 3}}
tensors:
  W: {shape: [K, N], dtype: uint4, pack: K}
  S: {shape: [K, N], dtype: fp16, group: {K: 4}}
  Y: {shape: [K, N], dtype: fp32}
stages:
  - {name: deq, kind: compute, op: elementwise, fn: [cast, {sub: 8}, mul], reads: [W, S], writes: [Y]}
"""


def test_grouped_and_packed_inputs():
    b = bind(_program(GROUPED), {"K": 10, "N": 3}, schedule=False)
    ins = random_inputs(b, np.random.default_rng(2))
    assert ins["W"].dtype == np.int32 and ins["W"].shape == (2, 3) and ins["S"].shape == (3, 3)
    w = unpack_words(ins["W"], 0, "uint4", 10)
    s = np.repeat(ins["S"], 4, axis=0)[:10]
    assert np.allclose(run_spec(b, ins)["Y"], (w - 8) * s)
    with pytest.raises(ValueError, match="stored shape"):
        run_spec(b, {"W": w, "S": ins["S"]})


@pytest.mark.parametrize("change,why", [
    ("S: {shape: [K, N], dtype: fp16, group: {M: 4}}", "group axis 'M' is not in the shape"),
    ("S: {shape: [K, N], dtype: fp16, group: {K: X}}", "unknown name 'X' in group"),
    ("S: {shape: [K, N], dtype: fp16, pack: K}", "fp16 values are not packed"),
    ("S: {shape: [K, N], dtype: fp16, group: {K: 0}}", "greater than or equal to 1"),
    ("Y: {shape: [K, N], dtype: fp32, group: {K: 2}}", "group and pack describe how an input is stored"),
])
def test_storage_checks(change, why):
    name = change.split(":")[0]
    lines = ["  " + change if ln.strip().startswith(f"{name}:") else ln for ln in GROUPED.splitlines()]
    with pytest.raises(SpecError, match=why):
        _program("\n".join(lines))
