"""Index expressions: masks over the positions of a tensor's elements (`mask: "SQ >= SK"`).

In a mask, the name of an axis of the masked tensor is the element's 0-based index along that
axis; `size(X)` is the size of axis X; any other name is a value as in constants (the size of
another axis, a parameter, an option). Integer arithmetic only: `+ - * // %` (Python's floor
division and modulo, by a divisor without indices), comparisons (chained), `and`, `or`, `not`,
`min`, `max`, `abs`. Causal attention is `SQ >= SK`; the same aligned to the bottom right
(FlashAttention's convention when SQ < SK) `SQ + size(SK) - size(SQ) >= SK`; a sliding window
of 256 keys `SQ >= SK and SQ - SK < 256`; block-local attention `SQ // 64 == SK // 64`.

One parse, three readings: exact on numpy index grids (the oracle), exact on Triton blocks of
offsets (a kernel's masked tiles), and by intervals over a box of indices (a kernel's test of
whether a whole tile is masked out, or not masked at all, to skip it or drop the mask).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from functools import lru_cache

import numpy as np

from tilesched.ir.expr import ExprError, _check_size, _show

MAX_MASK_CHARS = 1000
_FUNCS = ("min", "max", "abs", "size")
_ARITH = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod)
_CMP = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Name, ast.Constant, ast.Call,
            ast.Load, ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, *_ARITH, *_CMP)


@lru_cache(maxsize=1024)
def parse_mask(text: str) -> ast.Expression:
    """The checked syntax tree of a mask; ExprError says what is wrong."""
    text = str(text)
    if len(text) > MAX_MASK_CHARS:
        raise ExprError(f"mask {_show(text)} has {len(text)} characters; at most {MAX_MASK_CHARS}")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"invalid mask {_show(text)}: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExprError(f"invalid mask {_show(text)}: it nests too deeply or is malformed") from None
    _check_size(tree, text)
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            what = type(node).__name__
            if isinstance(node, (ast.Div, ast.Pow)):
                what = "/" if isinstance(node, ast.Div) else "**"
            raise ExprError(f"invalid mask {_show(text)}: {what} is not allowed (integer + - * // %, comparisons, "
                            "and/or/not, min/max/abs/size)")
        if isinstance(node, ast.Constant) and (isinstance(node.value, bool) or not isinstance(node.value, int)):
            raise ExprError(f"invalid mask {_show(text)}: constant {node.value!r} is not an integer")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS or node.keywords:
                raise ExprError(f"invalid mask {_show(text)}: only {', '.join(_FUNCS)} may be called")
            if node.func.id == "size" and (len(node.args) != 1 or not isinstance(node.args[0], ast.Name)):
                raise ExprError(f"invalid mask {_show(text)}: size() takes one axis name")
    return tree


def _size_args(tree) -> set[str]:
    return {n.args[0].id for n in ast.walk(tree) if isinstance(n, ast.Call) and n.func.id == "size"}


def mask_names(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """(names used as indices or values, axes used in size()) of a mask."""
    tree = parse_mask(text)
    return frozenset(_names_in(tree)), frozenset(_size_args(tree))


def mask_problems(text: str, indices: set[str], sizes: set[str], values: set[str]) -> list[str]:
    """What is wrong with a mask over a tensor with axes `indices`, given the axes `sizes` and the
    other names `values` (parameters, options, limits) constants may use."""
    try:
        tree = parse_mask(text)
        used, sized = mask_names(text)
    except ExprError as exc:
        return [str(exc)]
    out = []
    for n in sorted(used - indices - sizes - values):
        out.append(f"unknown name {n!r} in mask {_show(text)}")
    for n in sorted(sized - sizes):
        out.append(f"size({n}): {n!r} is not an axis")
    if not used & indices:
        out.append(f"mask {_show(text)} uses no index of the masked tensor ({', '.join(sorted(indices))})")
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.FloorDiv, ast.Mod)):
            inner = _names_in(node.right)
            if inner & indices:
                out.append(f"mask {_show(text)}: a divisor holds an index ({', '.join(sorted(inner & indices))}); "
                           "divide by constants")
    return out


def _names_in(node) -> set[str]:
    """Names in a subtree used as indices or values (not function names, not size() arguments)."""
    calls = {id(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)}
    inside = {id(n.args[0]) for n in ast.walk(node) if isinstance(n, ast.Call) and n.func.id == "size"}
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and id(n) not in calls and id(n) not in inside}


# ------------------------------------------------------------------------------------ numpy

def eval_mask(text: str, axes: tuple[str, ...], sizes: Mapping[str, int], env: Mapping[str, object]) -> np.ndarray:
    """The mask as a numpy bool array broadcastable to a tensor over `axes` (index grids along
    each axis; `env` holds the values of other names)."""
    grids = {}
    for j, a in enumerate(axes):
        shape = [1] * len(axes)
        shape[j] = sizes[a]
        grids[a] = np.arange(sizes[a], dtype=np.int64).reshape(shape)
    return eval_mask_at(text, grids, sizes, env)


def eval_mask_at(text: str, grids: Mapping[str, np.ndarray], sizes: Mapping[str, int],
                 env: Mapping[str, object]) -> np.ndarray:
    """The mask at the indices `grids` gives per axis (broadcastable int64 arrays)."""

    def ev(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in grids:
                return grids[node.id]
            return _int_value(env, node.id, text)
        if isinstance(node, ast.Call):
            if node.func.id == "size":
                return int(sizes[node.args[0].id])
            args = [ev(a) for a in node.args]
            if node.func.id == "abs":
                return np.abs(args[0])
            fold = np.minimum if node.func.id == "min" else np.maximum
            out = args[0]
            for a in args[1:]:
                out = fold(out, a)
            return out
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            if isinstance(node.op, ast.Not):
                return np.logical_not(v)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and np.any(np.asarray(b) <= 0):
                raise ExprError(f"mask {_show(text)}: divides by {b}, not a positive number")
            return {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.FloorDiv: np.floor_divide,
                    ast.Mod: np.mod}[type(node.op)](a, b)
        if isinstance(node, ast.BoolOp):
            vals = [ev(v) for v in node.values]
            fold = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = vals[0]
            for v in vals[1:]:
                out = fold(out, v)
            return out
        if isinstance(node, ast.Compare):
            left, out = ev(node.left), True
            for op, comp in zip(node.ops, node.comparators):
                right = ev(comp)
                out = np.logical_and(out, _CMP_FN[type(op)](left, right))
                left = right
            return out
        raise ExprError(f"invalid mask {_show(text)}")  # pragma: no cover - parse_mask whitelists nodes

    return np.asarray(ev(parse_mask(text).body), dtype=bool)


def _int_value(env, name: str, text: str) -> int:
    if name not in env:
        raise ExprError(f"unknown name {name!r} in mask {_show(text)}")
    v = env[name]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ExprError(f"mask {_show(text)}: {name} = {v!r} is not an integer")
    return int(v)


_CMP_FN = {ast.Eq: np.equal, ast.NotEq: np.not_equal, ast.Lt: np.less, ast.LtE: np.less_equal,
           ast.Gt: np.greater, ast.GtE: np.greater_equal}
_CMP_TXT = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}


# ----------------------------------------------------------------------------------- Triton

# floor division and modulo by a positive divisor, from truncating operations on non-negative values
TRITON_HELPERS = '''
@triton.jit
def _fdiv(a, b):
    # floor(a / b) for b > 0, exact for negative a (Triton's // truncates)
    return tl.where(a >= 0, a // b, -((b - 1 - a) // b))


@triton.jit
def _fmod(a, b):
    return a - b * _fdiv(a, b)
'''


def _lit(x: str) -> int | None:
    try:
        return int(x)
    except ValueError:
        return None


def triton_mask(text: str, index: Callable[[str], str], size: Callable[[str], str],
                value: Callable[[str], str]) -> str:
    """The mask as a Triton expression: `index(axis)` is the broadcast block of that axis's
    indices (`o_SQ[:, None]`), `size(axis)` its size, `value(name)` another name's value."""
    tree = parse_mask(text)

    def ev(node) -> str:
        if isinstance(node, ast.Constant):
            return str(node.value)
        if isinstance(node, ast.Name):
            try:
                return index(node.id)
            except KeyError:
                return value(node.id)
        if isinstance(node, ast.Call):
            if node.func.id == "size":
                return size(node.args[0].id)
            args = [ev(a) for a in node.args]
            if node.func.id == "abs":
                return f"tl.abs({args[0]})"
            fn = "tl.minimum" if node.func.id == "min" else "tl.maximum"
            out = args[0]
            for a in args[1:]:
                out = f"{fn}({out}, {a})"
            return out
        if isinstance(node, ast.UnaryOp):
            v = ev(node.operand)
            return f"~({v})" if isinstance(node.op, ast.Not) else (f"(-{v})" if isinstance(node.op, ast.USub) else v)
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.FloorDiv):
                return f"_fdiv({a}, {b})"
            if isinstance(node.op, ast.Mod):
                return f"_fmod({a}, {b})"
            return f"({a} {dict([(ast.Add, '+'), (ast.Sub, '-'), (ast.Mult, '*')])[type(node.op)]} {b})"
        if isinstance(node, ast.BoolOp):
            op = " & " if isinstance(node.op, ast.And) else " | "
            return "(" + op.join(ev(v) for v in node.values) + ")"
        if isinstance(node, ast.Compare):
            parts, left = [], ev(node.left)
            for op, comp in zip(node.ops, node.comparators):
                right = ev(comp)
                parts.append(f"({left} {_CMP_TXT[type(op)]} {right})")
                left = right
            return parts[0] if len(parts) == 1 else "(" + " & ".join(parts) + ")"
        raise ExprError(f"invalid mask {_show(text)}")  # pragma: no cover

    return ev(tree.body)


def uses_division(text: str) -> bool:
    return any(isinstance(n, ast.BinOp) and isinstance(n.op, (ast.FloorDiv, ast.Mod))
               for n in ast.walk(parse_mask(text)))


def triton_bounds(text: str, box: Callable[[str], tuple[str, str]], size: Callable[[str], str],
                  value: Callable[[str], str]) -> tuple[str, str]:
    """Scalar Triton expressions (all_true, none_true): whether the mask holds at every index of a
    box, and whether it holds at none, judged by interval arithmetic (`box(axis)` gives the first
    and last index along an axis; an axis not in the box raises KeyError). Both are safe: each
    may say False where a finer analysis would say True, never the reverse."""
    tree = parse_mask(text)

    def num(node) -> tuple[str, str]:
        if isinstance(node, ast.Constant):
            return str(node.value), str(node.value)
        if isinstance(node, ast.Name):
            try:
                return box(node.id)
            except KeyError:
                v = value(node.id)
                return v, v
        if isinstance(node, ast.Call):
            if node.func.id == "size":
                v = size(node.args[0].id)
                return v, v
            args = [num(a) for a in node.args]
            if node.func.id == "abs":
                lo, hi = args[0]
                return (f"tl.where({lo} >= 0, {lo}, tl.where({hi} <= 0, -({hi}), 0))",
                        f"tl.maximum(-({lo}), {hi})")
            fn = "tl.minimum" if node.func.id == "min" else "tl.maximum"
            lo, hi = args[0]
            for a_lo, a_hi in args[1:]:
                lo, hi = _fold2(fn, lo, a_lo), _fold2(fn, hi, a_hi)
            return lo, hi
        if isinstance(node, ast.UnaryOp):
            lo, hi = num(node.operand)
            if isinstance(node.op, ast.USub):
                return _neg(hi), _neg(lo)
            return lo, hi
        if isinstance(node, ast.BinOp):
            (alo, ahi), (blo, bhi) = num(node.left), num(node.right)
            if isinstance(node.op, ast.Add):
                return _arith(alo, "+", blo), _arith(ahi, "+", bhi)
            if isinstance(node.op, ast.Sub):
                return _arith(alo, "-", bhi), _arith(ahi, "-", blo)
            if isinstance(node.op, ast.Mult):
                return _mul(alo, ahi, blo, bhi)
            if isinstance(node.op, ast.FloorDiv):  # divisors are constants (> 0): monotone in the dividend
                return _fdiv(alo, blo), _fdiv(ahi, blo)
            return "0", _arith(blo, "-", "1")  # a modulo lies in [0, b)
        raise ExprError(f"mask {_show(text)}: a truth value where a number belongs")

    def truth(node) -> tuple[str, str]:
        if isinstance(node, ast.BoolOp):
            parts = [truth(v) for v in node.values]
            if isinstance(node.op, ast.And):
                return _join(" & ", [t for t, _ in parts]), _join(" | ", [f for _, f in parts])
            return _join(" | ", [t for t, _ in parts]), _join(" & ", [f for _, f in parts])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            t, f = truth(node.operand)
            return f, t
        if isinstance(node, ast.Compare):
            parts, left = [], num(node.left)
            for op, comp in zip(node.ops, node.comparators):
                right = num(comp)
                parts.append(_compare(type(op), left, right))
                left = right
            return _join(" & ", [t for t, _ in parts]), _join(" | ", [f for _, f in parts])
        lo, hi = num(node)  # a number as a truth value: nonzero
        return _join(" | ", [f"({lo} > 0)", f"({hi} < 0)"]), f"(({lo} == 0) & ({hi} == 0))"

    return truth(tree.body)


def _join(op: str, parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else "(" + op.join(parts) + ")"


def _compare(op, a: tuple[str, str], b: tuple[str, str]) -> tuple[str, str]:
    (alo, ahi), (blo, bhi) = a, b
    if op is ast.GtE:
        return f"({alo} >= {bhi})", f"({ahi} < {blo})"
    if op is ast.Gt:
        return f"({alo} > {bhi})", f"({ahi} <= {blo})"
    if op is ast.LtE:
        return f"({ahi} <= {blo})", f"({alo} > {bhi})"
    if op is ast.Lt:
        return f"({ahi} < {blo})", f"({alo} >= {bhi})"
    same = f"(({alo} == {ahi}) & ({blo} == {bhi}) & ({alo} == {blo}))"
    apart = f"(({ahi} < {blo}) | ({alo} > {bhi}))"
    return (same, apart) if op is ast.Eq else (apart, same)


def _arith(a: str, op: str, b: str) -> str:
    la, lb = _lit(a), _lit(b)
    if la is not None and lb is not None:
        return str(la + lb if op == "+" else la - lb)
    if lb == 0:
        return a
    if la == 0 and op == "+":
        return b
    return f"({a} {op} {b})"


def _neg(a: str) -> str:
    la = _lit(a)
    return str(-la) if la is not None else f"(-({a}))"


def _fold2(fn: str, a: str, b: str) -> str:
    la, lb = _lit(a), _lit(b)
    if la is not None and lb is not None:
        return str(min(la, lb) if fn == "tl.minimum" else max(la, lb))
    return f"{fn}({a}, {b})"


def _fdiv(a: str, b: str) -> str:
    la, lb = _lit(a), _lit(b)
    if la is not None and lb is not None:
        return str(la // lb)
    return f"_fdiv({a}, {b})"


def _mul(alo: str, ahi: str, blo: str, bhi: str) -> tuple[str, str]:
    for (xlo, xhi), (clo, chi) in (((alo, ahi), (blo, bhi)), ((blo, bhi), (alo, ahi))):
        c = _lit(clo)
        if c is not None and clo == chi:
            if c >= 0:
                return _scale(xlo, c), _scale(xhi, c)
            return _scale(xhi, c), _scale(xlo, c)
    prods = [f"({x} * {y})" for x in (alo, ahi) for y in (blo, bhi)]
    lo, hi = prods[0], prods[0]
    for p in prods[1:]:
        lo, hi = f"tl.minimum({lo}, {p})", f"tl.maximum({hi}, {p})"
    return lo, hi


def _scale(x: str, c: int) -> str:
    lx = _lit(x)
    if lx is not None:
        return str(lx * c)
    return x if c == 1 else f"({x} * {c})"
