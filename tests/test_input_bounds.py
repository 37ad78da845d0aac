"""Untrusted specs: every bound on spec input ends in one located SpecError, quickly.

Specs come from other people's repositories, so a spec must never hang tilesched, exhaust
its memory, or pass validation and then fail later with a traceback.
"""

import time

import pytest

from tilesched import SpecError, bind, load_spec_text, lower
from tilesched.ir.bind import parse_assignments
from tilesched.ir.nodes import ConstraintIR, ParamIR
from tilesched.ir.space import ConstraintError, iter_points

GEMM = """\
name: gemm
target: cuda
axes: {M: {size: M, hint: 256}, N: 256, K: 128}
tensors:
  A: {shape: [M, K], dtype: fp16}
  B: {shape: [K, N], dtype: fp16}
  acc: {shape: [M, N], dtype: fp32, scope: tile}
  C: {shape: [M, N], dtype: fp16}
loops:
  - {axis: M, tile: BLOCK_M}
  - {axis: N, tile: 64}
  - {axis: K, tile: 32, kind: reduction}
options: {num_warps: 4}
search_space:
  params:
    BLOCK_M: {choices: [64, 128]}
  constraints:
    - "BLOCK_M <= 128"
stages:
  - {name: mma, kind: compute, op: dot, reads: [A, B], writes: [acc], at: K}
  - {name: store, kind: memory, op: store, reads: [acc], writes: [C], at: N}
"""


def lower_text(text: str):
    spec, source = load_spec_text(text, "s.yaml")
    return lower(spec, source), source


def first_error(text: str) -> str:
    start = time.perf_counter()
    with pytest.raises(SpecError) as info:
        lower_text(text)
    assert time.perf_counter() - start < 1.0
    return str(info.value.diagnostics[0])


# --- constraints that cannot be evaluated -------------------------------------------------


def test_division_by_zero_in_a_constraint_is_reported_at_the_constraint():
    text = GEMM.replace('"BLOCK_M <= 128"', '"BLOCK_M <= 128"\n    - "M // (BLOCK_M - 64) > 0"')
    assert first_error(text) == ("s.yaml:19:7: search_space.constraints[1]: cannot evaluate 'M // (BLOCK_M - 64) > 0':"
                                 " division by zero at BLOCK_M=64, M=256")


def test_a_constant_constraint_that_cannot_be_evaluated_is_not_unsatisfiable():
    assert first_error(GEMM.replace('"BLOCK_M <= 128"', '"1/0"')) == (
        "s.yaml:18:7: search_space.constraints[0]: cannot evaluate '1/0': division by zero")


def test_a_point_where_a_constraint_fails_to_evaluate_is_reported_by_bind():
    # the first point (BLOCK_M=128) is legal, so the spec validates; plan at BLOCK_M=64 reports the constraint
    text = GEMM.replace("[64, 128]", "[128, 64]").replace('"BLOCK_M <= 128"', '"M % (BLOCK_M - 64) == 0"')
    prog, source = lower_text(text)
    with pytest.raises(SpecError) as info:
        bind(prog, {"BLOCK_M": 64}, source)
    assert str(info.value) == ("s.yaml:18:7: search_space.constraints[0]: cannot evaluate 'M % (BLOCK_M - 64) == 0':"
                               " modulo by zero at BLOCK_M=64, M=256")


def test_iter_points_treats_unevaluable_points_as_illegal_unless_strict():
    params = (ParamIR(name="B", values=(0, 1, 2), default=1),)
    constraints = (ConstraintIR(expr="4 % B == 0"),)
    assert list(iter_points(params, constraints, {})) == [{"B": 1}, {"B": 2}]
    with pytest.raises(ConstraintError, match="modulo by zero at B=0") as info:
        list(iter_points(params, constraints, {}, strict=True))
    assert info.value.constraint == constraints[0]


def test_a_constraint_that_overflows_is_refused_at_once():
    text = GEMM.replace('"BLOCK_M <= 128"', '"(((((BLOCK_M+9)**64)**64)**64)**64)**64 > 0"')
    assert "s.yaml:18:7: search_space.constraints[0]: cannot evaluate" in first_error(text)
    assert "integer overflow" in first_error(text)


def test_string_repetition_in_a_constraint_is_refused():
    text = GEMM.replace('"BLOCK_M <= 128"', "\"'a' * 10**10 != ''\"")
    assert "string arithmetic is not allowed" in first_error(text)


# --- axis sizes ------------------------------------------------------------------------------

CONV = """\
name: conv
target: cortex-m4
axes: {H: {size: H, hint: 84}, OH: "(H - 3) / 2 + 1", C: 8}
tensors: {x: {shape: [H, C], dtype: int8}, t: {shape: [H, C], dtype: int8, scope: tile}, y: {shape: [OH], dtype: int8}}
stages: [{name: load, kind: memory, op: load, reads: [x], writes: [t], at: null}]
"""


def test_a_derived_axis_size_must_be_an_integer_not_truncated():
    prog, source = lower_text(CONV)
    with pytest.raises(SpecError) as info:
        bind(prog, {}, source)
    assert str(info.value) == ("s.yaml:3:32: axes.OH: axis OH = (H - 3) / 2 + 1 = 41.5 at H=84 is not an integer "
                               "(use // for floor division)")
    assert bind(prog, {"H": 85}, source).sizes["OH"] == 42  # an integral float is a size


def test_a_fixed_derived_axis_size_must_be_an_integer():
    text = CONV.replace("{size: H, hint: 84}", "84")
    assert first_error(text) == ("s.yaml:3:15: axes.OH.size: axis OH = (H - 3) / 2 + 1 = 41.5 at H=84 is not an integer "
                                 "(use // for floor division)")


@pytest.mark.parametrize("size, message", [
    ('"((10**64)**64)**2"', "integer overflow"),
    ('"2**41"', "axis N = 2**41 = 2199023255552 exceeds the largest axis size 2**40"),
    ("2199023255553", "axis size 2199023255553 exceeds the largest axis size 2**40"),
])
def test_huge_axis_sizes_are_refused_at_the_axis(size, message):
    error = first_error(GEMM.replace("N: 256", f"N: {size}"))
    assert error.startswith("s.yaml:3:33: axes.N.size: "), error
    assert message in error


def test_a_huge_hint_is_refused_at_the_hint():
    assert first_error(GEMM.replace("hint: 256", "hint: 2199023255553")) == (
        "s.yaml:3:21: axes.M.hint: hint 2199023255553 exceeds the largest axis size 2**40")


def test_set_values_are_bounded():
    prog, source = lower_text(GEMM)
    with pytest.raises(SpecError, match=r"axis M must be a positive integer of at most 2\*\*40, got 2199023255553"):
        bind(prog, parse_assignments(["M=2199023255553"]), source)
    start = time.perf_counter()
    for digits in (20, 5000):
        with pytest.raises(SpecError, match="--set M: integer too large"):
            parse_assignments(["M=" + "9" * digits])
    assert time.perf_counter() - start < 0.5
    assert parse_assignments(["M=9223372036854775807"]) == {"M": 2**63 - 1}


# --- options -------------------------------------------------------------------------------


def test_an_option_string_must_name_a_parameter():
    assert first_error(GEMM.replace("{num_warps: 4}", "{num_warps: \"<text>\"}")) == (
        "s.yaml:13:11: options.num_warps: '<text>' is neither a literal nor a search-space parameter")
    lower_text(GEMM.replace("{num_warps: 4}", "{num_warps: BLOCK_M}"))
