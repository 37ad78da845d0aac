"""Untrusted specs: every bound on spec input ends in one located SpecError, quickly.

Specs come from other people's repositories, so a spec must never hang tilesched, exhaust
its memory, or pass validation and then fail later with a traceback.
"""

import time
from pathlib import Path

import pytest

from tilesched import SpecError, bind, load_spec, load_spec_text, lower
from tilesched.cli import main
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


def test_a_long_chain_of_derived_axes_needs_no_recursion():
    # listed outermost first, so each axis waits on the next: 3000 levels deep
    axes = ", ".join(["A0: A0"] + [f"A{i}: A{i - 1} + 1" for i in range(1, 3000)][::-1])
    text = CONV.replace("{H: {size: H, hint: 84}, OH: \"(H - 3) / 2 + 1\", C: 8}", "{H: 84, OH: H, C: 8, " + axes + "}")
    start = time.perf_counter()
    prog, source = lower_text(text)
    assert bind(prog, {"A0": 3}, source).sizes["A2999"] == 3002
    assert time.perf_counter() - start < 10


def test_an_axis_cycle_is_still_reported_with_its_path():
    text = CONV.replace("C: 8}", "C: D, D: E + 1, E: C * 2}")
    assert first_error(text) == "s.yaml:3:55: axes.C.size: axis sizes refer to each other in a cycle: C -> D -> E -> C"


# --- options -------------------------------------------------------------------------------


def test_an_option_string_must_name_a_parameter():
    assert first_error(GEMM.replace("{num_warps: 4}", "{num_warps: \"<text>\"}")) == (
        "s.yaml:13:11: options.num_warps: '<text>' is neither a literal nor a search-space parameter")
    lower_text(GEMM.replace("{num_warps: 4}", "{num_warps: BLOCK_M}"))


# --- the loader --------------------------------------------------------------------------


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": each level is `width` aliases of the level below."""
    lines = ['a0: &a0 "lol"']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def load_error(text: str, seconds: float = 1.0) -> str:
    """The one diagnostic loading `text` gives, which must come within `seconds`."""
    start = time.perf_counter()
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "s.yaml")
    assert time.perf_counter() - start < seconds
    assert len(info.value.diagnostics) == 1, info.value
    return str(info.value.diagnostics[0])


def test_an_alias_bomb_stops_at_the_alias_that_passes_the_node_bound():
    # a5 stands for 66430 nodes: its first use in a6 takes the count past 100000
    assert load_error(alias_bomb()) == "s.yaml:7:10: alias *a5 expands the spec to more than 100000 YAML nodes"


def test_an_alias_may_not_expand_the_spec_too_deep():
    text = "a: &deep " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 30 + "*deep" + "]" * 30 + "\n"
    assert load_error(text) == "s.yaml:2:34: alias *deep expands the spec deeper than 64 levels"


@pytest.mark.parametrize("levels", [65, 600, 100_000])
def test_deep_flow_nesting_is_refused_at_the_first_level_too_deep(levels):
    assert load_error("x: " + "[" * levels + "]" * levels) == "s.yaml:1:67: the spec nests deeper than 64 levels"


def test_deep_block_nesting_is_refused_at_the_first_level_too_deep():
    text = "".join(" " * i + f"k{i}:\n" for i in range(600))
    assert load_error(text) == "s.yaml:64:64: the spec nests deeper than 64 levels"


def test_aliases_within_the_bounds_still_load():
    text = GEMM.replace("A: {shape: [M, K], dtype: fp16}", "A: {shape: &mk [M, K], dtype: &half fp16}")
    prog, _ = lower_text(text.replace("B: {shape: [K, N], dtype: fp16}", "B: {shape: [K, N], dtype: *half}"))
    assert prog.tensor("B").dtype == "fp16"


def test_too_many_nodes_without_aliases_are_refused():
    # no alias: the cost is PyYAML's parser (some 25 000 nodes a second), bounded by the node count
    assert load_error("x: [" + ",".join(["1"] * 100_001) + "]", seconds=20) == (
        "s.yaml:1:199999: the spec has more than 100000 YAML nodes")


@pytest.mark.parametrize("scalar", ["9" * 20, "9" * 60_000, "9223372036854775808", "-9223372036854775809",
                                    "0x" + "f" * 17, "0b" + "1" * 64])
def test_huge_integer_scalars_are_refused(scalar):
    assert load_error(GEMM.replace("N: 256", f"N: {scalar}")) == (
        "s.yaml:3:36: axes.N: integer too large (integers must stay below 2**63)")


def test_a_long_scalar_is_refused():
    assert load_error(GEMM.replace("name: gemm", "name: " + "g" * 70_000)) == (
        "s.yaml:1:7: a scalar of 70000 characters; at most 65536")


def test_a_file_over_one_mib_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "big.yaml"
    with big.open("w") as f:
        f.write(GEMM)
        f.truncate(1 << 40)  # sparse: a terabyte that reading would never get through
    start = time.perf_counter()
    with pytest.raises(SpecError) as info:
        load_spec(big)
    assert time.perf_counter() - start < 1.0
    assert str(info.value) == f"{big}:1:1: the spec is {1 << 40} bytes; at most 1048576 (1 MiB)"


def test_a_file_without_a_size_is_read_only_up_to_the_bound():
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    with pytest.raises(SpecError, match="the spec is more than 1048576 bytes; at most 1048576"):
        load_spec("/dev/zero")


def test_spec_text_over_one_mib_is_refused():
    # half a million characters, but each é is two bytes in UTF-8
    with pytest.raises(SpecError, match=f"the spec is {(1 << 20) + 2} bytes; at most 1048576"):
        load_spec_text("é" * (1 << 19) + "x\n", "s.yaml")


def test_a_spec_of_exactly_one_mib_is_read(tmp_path):
    ok = tmp_path / "ok.yaml"
    ok.write_text(GEMM + "#" * ((1 << 20) - len(GEMM)))
    assert ok.stat().st_size == 1 << 20
    load_spec(ok)


@pytest.mark.parametrize("text, where", [
    (alias_bomb(), "7:10: alias *a5 expands"), ("x: " + "[" * 100_000, "1:67: the spec nests deeper"),
    ("n: " + "9" * 100, "1:4: n: integer too large"),
])
def test_validate_prints_one_line_and_no_traceback(tmp_path, capsys, text, where):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(text)
    assert main(["validate", str(bomb)]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert len(out.err.splitlines()) == 1 and out.err.startswith(f"{bomb}:{where}"), out.err
