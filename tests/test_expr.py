import re
import time

import pytest

from tilesched.ir.expr import ExprError, evaluate, names


def test_arithmetic_and_functions():
    env = {"H": 80, "K": 3}
    assert evaluate("(H + 2 * 1 - K) // 2 + 1", env) == 40
    assert evaluate("cdiv(H, 3) == 27 and is_pow2(64) and not is_pow2(48)", env) is True
    assert evaluate("max(H, K) if H > K else 0", env) == 80
    assert names("cdiv(H, BLOCK) * 2") == {"H", "BLOCK"}


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')", "H.__class__", "[x for x in H]", "lambda: 1", "open('f')", "H[0]",
])
def test_code_is_never_executed(text):
    with pytest.raises(ExprError):
        evaluate(text, {"H": 1})


def test_errors_name_the_problem():
    with pytest.raises(ExprError, match="unknown name 'Q'"):
        evaluate("Q + 1", {})
    with pytest.raises(ExprError, match="by zero"):
        evaluate("1 // 0", {})
    with pytest.raises(ExprError, match="exponent too large"):
        evaluate("2 ** 1000", {})


@pytest.mark.parametrize("text, message", [
    ("(((((ROWS+9)**64)**64)**64)**64)**64 > 0", "integer overflow"),  # refused before the first huge power
    ("((10**64)**64)**2", "integer overflow"),
    ("3**40", "integer overflow"),
    ("ROWS * 2**62", "integer overflow"),
    ("'a' * 10**10", "string arithmetic is not allowed"),
    ("-'a'", "string arithmetic is not allowed"),
    ("max('a', 'b')", "max() takes numbers, not strings"),
    ("'a' < 'b'", "strings can only be compared with == or !="),
    ("'a' and ROWS", "not a truth value"),
    ("1/0", "cannot evaluate '1/0': division by zero"),
    ("ROWS // (ROWS - 16)", "division by zero"),
    ("ROWS % 0", "modulo by zero"),
    ("cdiv(ROWS, 0)", "by zero"),
    ("1e308 * 10", "not a finite number"),
    ("1e999 > 0", "not a finite number"),
    ("(-8) ** 0.5", "not a real number"),
    ("x" * 1001, "1001 characters; at most 1000"),
    ("-" * 900 + "1", "nests more than 64 levels deep"),
    ("(" * 300 + "1" + ")" * 300, "invalid expression"),
    ("+".join(["ROWS"] * 200), "invalid expression"),
])
def test_bounds_refuse_costly_or_meaningless_expressions_quickly(text, message):
    start = time.perf_counter()
    with pytest.raises(ExprError, match=re.escape(message)):
        evaluate(text, {"ROWS": 16})
    assert time.perf_counter() - start < 0.5


def test_values_inside_the_bounds_still_evaluate():
    assert evaluate("2**62 + (2**62 - 1)", {}) == 2**63 - 1
    assert evaluate("ROWS * 2**58", {"ROWS": 16}) == 2**62
    assert evaluate("'x' if ROWS > 1 else 'y'", {"ROWS": 16}) == "x"
    assert evaluate("ORDER == 'grouped' and not P", {"ORDER": "grouped", "P": False}) is True
    assert evaluate("2 - P", {"P": True}) == 1
    assert evaluate("ROWS / 3", {"ROWS": 15}) == 5.0
    assert evaluate("0 and 1/0", {}) is False  # and/or still short-circuit


def test_names_bound_to_huge_or_odd_values_are_refused():
    with pytest.raises(ExprError, match="integer overflow"):
        evaluate("X + 0", {"X": 2**70})
    with pytest.raises(ExprError, match="not allowed"):
        evaluate("X", {"X": [1]})
    with pytest.raises(ExprError, match="integer overflow"):
        evaluate(2**70, {})
