"""Axis sizes from the shapes of the tensors a caller passes (launchers, runners)."""

from __future__ import annotations

from collections.abc import Mapping

from tilesched.ir.expr import ExprError, evaluate, names
from tilesched.ir.nodes import Program


class ShapeError(ValueError):
    """Tensors that do not fit the spec together, or sizes the tensors do not determine."""


def solve_sizes(program: Program, shapes: Mapping[str, tuple[int, ...]],
                given: Mapping[str, int] | None = None) -> dict[str, int]:
    """Every axis size: read off `shapes` (tensor name -> shape, in the spec's axis order),
    with `given` for symbols no tensor shows (e.g. NB of a derived axis P = NB * H * W); fixed
    and derived axes are checked against what the tensors say."""
    sizes: dict[str, int] = {}
    origin: dict[str, str] = {}
    for k, v in (given or {}).items():
        if k not in {a.name for a in program.axes}:
            raise ShapeError(f"{program.name}: {k} is not an axis")
        sizes[k], origin[k] = int(v), "given"
    stored: list[tuple[str, tuple[int, ...]]] = []  # grouped / packed tensors: checked once sizes are known
    for name, shape in shapes.items():
        t = program.tensor(name)
        if len(shape) != len(t.shape):
            raise ShapeError(f"{program.name}: tensor {name} has {len(shape)} dimensions; the spec says "
                             f"{len(t.shape)} [{', '.join(t.shape)}]")
        if t.group or t.pack is not None:
            stored.append((name, tuple(int(n) for n in shape)))
        hidden = {a for a, _ in t.group} | ({t.pack} if t.pack else set())
        for axis, n in zip(t.shape, shape):
            if axis in hidden:  # a stored extent, not the axis size
                continue
            if axis in sizes and sizes[axis] != int(n):
                raise ShapeError(f"{program.name}: {name} says {axis}={int(n)}, {origin[axis]} says {sizes[axis]}")
            sizes[axis], origin[axis] = int(n), name
    for name, shape in stored:  # a group that is a bare symbol follows from a grouped extent (GQA: G = H / HKV)
        t = program.tensor(name)
        for axis, g in t.group:
            j = t.shape.index(axis)
            if isinstance(g, str) and g not in sizes and axis in sizes and axis != t.pack \
                    and any(a.name == g and a.symbolic for a in program.axes):
                if shape[j] < 1 or sizes[axis] % shape[j]:
                    raise ShapeError(f"{program.name}: {name} stores {shape[j]} groups of {axis}={sizes[axis]}: "
                                     f"pass {g}=N")
                sizes[g], origin[g] = sizes[axis] // shape[j], name
    pending = [a for a in program.axes if not a.symbolic]
    for a in program.axes:
        if a.symbolic and a.name not in sizes:
            used_by = [d.name for d in pending if a.name in _names(d.expr)]
            hint = f" (it sizes {', '.join(used_by)}): pass {a.name}=N" if used_by else ""
            raise ShapeError(f"{program.name}: no tensor shows the size of axis {a.name}{hint}")
    while pending:
        ready = [a for a in pending if _names(a.expr) <= sizes.keys()]
        if not ready:
            raise ShapeError(f"{program.name}: cannot size axes {[a.name for a in pending]}")
        for a in ready:
            try:
                v = evaluate(int(a.expr) if a.expr.isdigit() else a.expr, sizes)
            except ExprError as exc:
                raise ShapeError(f"{program.name}: axis {a.name}: {exc}") from None
            if a.name in sizes and sizes[a.name] != v:
                raise ShapeError(f"{program.name}: {origin[a.name]} says {a.name}={sizes[a.name]}, but "
                                 f"{a.name} = {a.expr} = {v}")
            sizes[a.name] = int(v)
            pending.remove(a)
    if stored:
        from tilesched.ir.storage import size_env, storage_shape

        env = size_env(program, sizes)
        for name, shape in stored:
            try:
                want = storage_shape(program.tensor(name), sizes, env)
            except ExprError as exc:
                raise ShapeError(f"{program.name}: {exc}") from None
            if shape != want:
                raise ShapeError(f"{program.name}: tensor {name} is stored as {list(shape)}; at "
                                 + ", ".join(f"{a}={sizes[a]}" for a in program.tensor(name).shape)
                                 + f" the spec stores {list(want)}")
    return sizes


def _names(expr: str) -> frozenset[str]:
    return frozenset() if expr.isdigit() else names(expr)
