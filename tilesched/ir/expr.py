"""A small, safe integer/boolean expression language for axis sizes and constraints.

Expressions are parsed with Python's `ast` and only a whitelist of nodes is
accepted, so a spec can never execute code. Names resolve through a mapping.
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


@lru_cache(maxsize=4096)
def parse(text: str) -> ast.Expression:
    try:
        tree = ast.parse(str(text), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"invalid expression {text!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(
            node,
            (
                ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Name,
                ast.Constant, ast.Call, ast.Load, ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd,
                ast.IfExp, *_BINOPS, *_CMPOPS,
            ),
        ):
            raise ExprError(f"invalid expression {text!r}: {type(node).__name__} is not allowed")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, bool, str)):
            raise ExprError(f"invalid expression {text!r}: constant {node.value!r} is not allowed")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
                raise ExprError(f"invalid expression {text!r}: only {sorted(FUNCTIONS)} may be called")
    return tree


def names(text: str) -> frozenset[str]:
    """Free names of an expression (function names excluded)."""
    tree = parse(text)
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name)) - calls


def evaluate(text: str | int, env: Mapping[str, object]):
    """Evaluate an expression; raises ExprError naming an unbound name or a bad operation."""
    if isinstance(text, (int, bool)):
        return text
    return _eval(parse(text).body, env, text)


def _eval(node: ast.AST, env: Mapping[str, object], text):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise ExprError(f"unknown name {node.id!r} in {text!r}")
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, env, text)
        return {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}[type(node.op)](v)
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, env, text), _eval(node.right, env, text)
        if isinstance(node.op, ast.Pow) and isinstance(b, (int, float)) and abs(b) > 64:
            raise ExprError(f"exponent too large in {text!r}")
        try:
            return _BINOPS[type(node.op)](a, b)
        except (ZeroDivisionError, TypeError, OverflowError) as exc:
            raise ExprError(f"cannot evaluate {text!r}: {exc}") from None
    if isinstance(node, ast.BoolOp):
        vals = (_eval(v, env, text) for v in node.values)
        return all(vals) if isinstance(node.op, ast.And) else any(vals)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env, text)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, env, text)
            try:
                if not _CMPOPS[type(op)](left, right):
                    return False
            except TypeError as exc:
                raise ExprError(f"cannot evaluate {text!r}: {exc}") from None
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _eval(node.test, env, text) else node.orelse, env, text)
    if isinstance(node, ast.Call):
        args = [_eval(a, env, text) for a in node.args]
        try:
            return FUNCTIONS[node.func.id](*args)
        except (TypeError, ValueError, ZeroDivisionError) as exc:
            raise ExprError(f"cannot evaluate {text!r}: {exc}") from None
    raise ExprError(f"invalid expression {text!r}")  # pragma: no cover - parse() whitelists nodes
