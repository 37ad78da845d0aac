"""Bind a program to concrete axis sizes and parameter values: one point of the space."""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from tilesched.errors import SpecError
from tilesched.ir.expr import INT_BOUND, ExprError, names
from tilesched.ir.lower import axis_size_problem, eval_axis_size, tile_problem
from tilesched.ir.nodes import AxisIR, Program
from tilesched.ir.space import ConstraintError, violated
from tilesched.spec.loader import SourceInfo
from tilesched.spec.models import Scalar


class Binding(BaseModel):
    """A program at one point: every axis has a size, every parameter a value."""

    model_config = ConfigDict(frozen=True)

    program: Program
    sizes: dict[str, int]
    params: dict[str, Scalar]

    def value(self, ref: int | str | None, default=None):
        """A literal, or the value of the parameter/axis/option it names."""
        if ref is None:
            return default
        if isinstance(ref, str):
            if ref in self.params:
                return self.params[ref]
            if ref in self.sizes:
                return self.sizes[ref]
            return self.option(ref, ref)
        return ref

    def option(self, name: str, default=None):
        v = self.program.option_map.get(name, default)
        return self.params.get(v, v) if isinstance(v, str) else v

    def tile(self, axis: str) -> int:
        """Tile size along `axis` (the whole axis when it is not looped or has no tile)."""
        lp = self.program.loop(axis)
        if lp is None or lp.tile is None:
            return self.sizes[axis]
        return int(self.value(lp.tile))

    def n_tiles(self, axis: str) -> int:
        return -(-self.sizes[axis] // self.tile(axis))

    def env(self) -> dict[str, object]:
        env = dict(self.program.limit_env())
        env.update({k: self.option(k) for k in self.program.option_map})
        env.update(self.sizes)
        env.update(self.params)
        return env


def bind(program: Program, values: Mapping[str, object] | None = None, source: SourceInfo | None = None,
         schedule: bool = True) -> Binding:
    """Resolve symbolic axes (from `values`, else hints) and parameters (from `values`, else
    defaults); check the point against tile legality and every constraint. Errors point
    into `source` when it is given.

    `schedule=False` binds for the semantics alone (tilesched.semantics, whose values never
    depend on tiles): parameter domains, tile legality and the search space's constraints are
    properties of a schedule and go unchecked, so a test may bind a spec at the sizes and
    blocks of a small kernel the search space would not offer."""
    source = source or SourceInfo(None)

    def _error(msg: str, loc: tuple = ()) -> SpecError:
        return SpecError([source.diagnostic(loc, msg)])

    values = dict(values or {})
    axis_names = {a.name for a in program.axes}
    param_names = {p.name for p in program.params}
    for k in values:
        if k not in axis_names and k not in param_names:
            raise _error(f"--set {k}: not an axis or parameter of {program.name} "
                         f"(axes: {', '.join(sorted(axis_names))}; params: {', '.join(sorted(param_names)) or 'none'})")
    sizes: dict[str, int] = {}
    for a in program.axes:
        if a.symbolic:
            v = values.get(a.name, a.hint)
            if v is None:
                raise _error(f"axis {a.name} is symbolic: bind it with --set {a.name}=N", ("axes", a.name))
            if axis_size_problem(v):
                raise _error(f"axis {a.name} must be a positive integer of at most 2**40, got {v!r}", ("axes", a.name))
            sizes[a.name] = v
        elif a.name in values:
            raise _error(f"axis {a.name} has the fixed size {a.expr}; it cannot be set", ("axes", a.name))
    for a in _dependency_order([a for a in program.axes if a.name not in sizes]):
        try:
            sizes[a.name] = a.size if a.size is not None else eval_axis_size(a.name, a.expr, sizes)
        except ExprError as exc:
            raise _error(str(exc), ("axes", a.name)) from None
    params: dict[str, Scalar] = {}
    for p in program.params:
        v = values.get(p.name, p.default)
        if schedule and v not in p.values:
            raise _error(f"{p.name}={v!r} is not one of {list(p.values)}", ("search_space", "params", p.name))
        params[p.name] = v
    b = Binding(program=program, sizes=sizes, params=params)
    if not schedule:
        return b
    for lp in program.loops:
        if lp.tile is not None:
            why = tile_problem(program.target, b.value(lp.tile), sizes[lp.axis], lp.axis)
            if why:
                raise _error(why, ("loops", next(i for i, x in enumerate(program.loops) if x is lp), "tile"))
    try:
        bad = violated(program.constraints, b.env())
    except ConstraintError as exc:
        raise _error(str(exc), ("search_space", "constraints", program.constraints.index(exc.constraint))) from None
    if bad is not None:
        raise _error(f"constraint {bad.expr!r} fails at this point" + (f": {bad.message}" if bad.message else ""),
                     ("search_space", "constraints", program.constraints.index(bad)))
    return b


def _dependency_order(axes: list[AxisIR]) -> list[AxisIR]:
    """`axes` with each after the axes its size refers to: depth first, without recursion
    (lower() has refused cycles and unknown names)."""
    by_name = {a.name: a for a in axes}
    order: list[AxisIR] = []
    seen: set[str] = set()
    for root in axes:
        todo = [(root.name, False)]
        while todo:
            name, deps_done = todo.pop()
            if deps_done:
                order.append(by_name[name])
            elif name in by_name and name not in seen:
                seen.add(name)
                todo.append((name, True))
                todo.extend((n, False) for n in names(by_name[name].expr))
    return order


def parse_assignments(items: list[str]) -> dict[str, object]:
    """['BLOCK_M=128', 'M=4096', 'ORDER=grouped'] -> {'BLOCK_M': 128, ...}."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SpecError([SourceInfo(None).diagnostic((), f"--set {item!r}: expected NAME=VALUE")])
        out[key.strip()] = _parse_value(key.strip(), raw.strip())
    return out


_INT_TEXT = re.compile(r"[+-]?[0-9][0-9_]*")


def _parse_value(key: str, raw: str) -> object:
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    # digits counted before int(): converting thousands of them is slow, and no axis or tile needs them
    too_large = SpecError([SourceInfo(None).diagnostic((), f"--set {key}: integer too large (at most 2**63 - 1)")])
    if _INT_TEXT.fullmatch(raw) and len(raw.lstrip("+-").replace("_", "")) > 19:
        raise too_large
    try:
        val = int(raw)
    except ValueError:
        try:
            return float(raw)
        except ValueError:
            return raw
    if abs(val) >= INT_BOUND:
        raise too_large
    return val
