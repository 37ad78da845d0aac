"""A small, safe integer/boolean expression language for axis sizes and constraints.

Expressions are parsed with Python's `ast` and only a whitelist of nodes is
accepted, so a spec can never execute code. Names resolve through a mapping.
Text length, syntax size and every intermediate value are bounded, so an expression
can neither hang nor exhaust memory.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Mapping
from functools import lru_cache

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.Div: operator.truediv,
}
_CMPOPS = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def _is_pow2(x: int) -> bool:
    return isinstance(x, int) and x > 0 and (x & (x - 1)) == 0


FUNCTIONS = {
    "min": min,
    "max": max,
    "cdiv": lambda a, b: -(-a // b),
    "is_pow2": _is_pow2,
    "log2": lambda x: int(math.log2(x)),
    "abs": abs,
}


class ExprError(ValueError):
    """An expression that cannot be parsed or evaluated."""


# Specs come from other people's repositories: bound what an expression may cost to parse and
# evaluate. Every intermediate integer stays below INT_BOUND, so no operation can build a huge one.
MAX_EXPR_CHARS = 1000
MAX_EXPR_NODES = 500
MAX_EXPR_DEPTH = 64
INT_BOUND = 1 << 63
MAX_EXPONENT = 64
_OVERFLOW = "integer overflow (values must stay below 2**63 in magnitude)"

_ALLOWED = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Name, ast.Constant, ast.Call, ast.Load,
    ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.IfExp, *_BINOPS, *_CMPOPS,
)


@lru_cache(maxsize=4096)
def parse(text: str) -> ast.Expression:
    text = str(text)
    if len(text) > MAX_EXPR_CHARS:
        raise ExprError(f"expression {_show(text)} has {len(text)} characters; at most {MAX_EXPR_CHARS}")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"invalid expression {_show(text)}: {exc.msg}") from None
    except (RecursionError, MemoryError):  # Python's own parser recurses
        raise ExprError(f"invalid expression {_show(text)}: it nests too deeply") from None
    except ValueError as exc:  # e.g. a NUL character, on some Python versions
        raise ExprError(f"invalid expression {_show(text)}: {exc}") from None
    _check_size(tree, text)
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ExprError(f"invalid expression {_show(text)}: {type(node).__name__} is not allowed")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, bool, str)):
            raise ExprError(f"invalid expression {_show(text)}: constant {node.value!r} is not allowed")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
                raise ExprError(f"invalid expression {_show(text)}: only {sorted(FUNCTIONS)} may be called")
    return tree


def _show(text) -> str:
    """`text` quoted for a message, shortened when long."""
    text = str(text)
    return repr(text) if len(text) <= 80 else repr(text[:60]) + f"... ({len(text)} characters)"


def _check_size(tree: ast.AST, text: str) -> None:
    """Bound the node count and nesting depth (the evaluator recurses once per level)."""
    count, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_EXPR_NODES:
            raise ExprError(f"invalid expression {_show(text)}: more than {MAX_EXPR_NODES} syntax nodes")
        if depth > MAX_EXPR_DEPTH:
            raise ExprError(f"invalid expression {_show(text)}: it nests more than {MAX_EXPR_DEPTH} levels deep")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


@lru_cache(maxsize=4096)
def names(text: str) -> frozenset[str]:
    """Free names of an expression (function names excluded)."""
    tree = parse(text)
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name)) - calls


def evaluate(text: str | int, env: Mapping[str, object]):
    """Evaluate an expression; raises ExprError naming an unbound name or a bad operation."""
    if isinstance(text, (int, bool)):
        if abs(text) >= INT_BOUND:  # not formatted: str() of a huge int is itself refused
            raise ExprError(f"integer of {abs(text).bit_length()} bits: {_OVERFLOW}")
        return text
    return _eval(parse(text).body, env, text)


def _fail(text, why: str) -> ExprError:
    return ExprError(f"cannot evaluate {_show(text)}: {why}")


def _bounded(v, text):
    """`v` when it is a value an expression may hold: a bool, a string, an int below INT_BOUND
    or a finite float."""
    if isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        if abs(v) >= INT_BOUND:
            raise _fail(text, _OVERFLOW)
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise _fail(text, f"the result {v!r} is not a finite number")
        return v
    raise _fail(text, f"{type(v).__name__} values are not allowed")


def _number(v, text):
    if isinstance(v, str):
        raise _fail(text, "string arithmetic is not allowed")
    return v


def _truth(v, text) -> bool:
    if isinstance(v, str):
        raise _fail(text, f"the string {v!r} is not a truth value")
    return bool(v)


def _arith(op: ast.operator, a, b, text):
    a, b = _number(a, text), _number(b, text)
    if isinstance(op, (ast.Div, ast.FloorDiv, ast.Mod)) and b == 0:
        raise _fail(text, "modulo by zero" if isinstance(op, ast.Mod) else "division by zero")
    if isinstance(op, ast.Pow):
        _check_pow(a, b, text)
    # * needs no pre-check: both operands are below INT_BOUND, so the product has at most 126 bits
    try:
        v = _BINOPS[type(op)](a, b)
    except (ZeroDivisionError, OverflowError) as exc:
        raise _fail(text, str(exc)) from None
    if isinstance(v, complex):
        raise _fail(text, "the result is not a real number")
    return _bounded(v, text)


def _check_pow(a, b, text) -> None:
    """Refuse a power whose result would leave the integer bound, before computing it."""
    if abs(b) > MAX_EXPONENT:
        raise ExprError(f"exponent too large in {_show(text)}")
    # |a| >= 2**(bits - 1), so |a**b| >= 2**((bits - 1) * b)
    if isinstance(a, int) and isinstance(b, int) and b > 0 and (abs(a).bit_length() - 1) * b >= 63:
        raise _fail(text, _OVERFLOW)


def _compare(op: ast.cmpop, a, b, text) -> bool:
    if (isinstance(a, str) or isinstance(b, str)) and not isinstance(op, (ast.Eq, ast.NotEq)):
        raise _fail(text, "strings can only be compared with == or !=")
    return _CMPOPS[type(op)](a, b)


def _eval(node: ast.AST, env: Mapping[str, object], text):
    if isinstance(node, ast.Constant):
        return _bounded(node.value, text)
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise ExprError(f"unknown name {node.id!r} in {_show(text)}")
        return _bounded(env[node.id], text)
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, env, text)
        if isinstance(node.op, ast.Not):
            return not _truth(v, text)
        return _bounded(-_number(v, text) if isinstance(node.op, ast.USub) else +_number(v, text), text)
    if isinstance(node, ast.BinOp):
        return _arith(node.op, _eval(node.left, env, text), _eval(node.right, env, text), text)
    if isinstance(node, ast.BoolOp):
        want = isinstance(node.op, ast.Or)  # the value that decides: True for `or`, False for `and`
        for v in node.values:
            if _truth(_eval(v, env, text), text) == want:
                return want
        return not want
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env, text)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, env, text)
            if not _compare(op, left, right, text):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _truth(_eval(node.test, env, text), text) else node.orelse, env, text)
    if isinstance(node, ast.Call):
        args = [_eval(a, env, text) for a in node.args]
        if any(isinstance(a, str) for a in args):
            raise _fail(text, f"{node.func.id}() takes numbers, not strings")
        try:
            v = FUNCTIONS[node.func.id](*args)
        except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
            raise _fail(text, str(exc)) from None
        return _bounded(v, text)
    raise ExprError(f"invalid expression {_show(text)}")  # pragma: no cover - parse() whitelists nodes
