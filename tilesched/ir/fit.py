"""Parameters that fit a shape: the spec's defaults with each loop tile clamped to its axis, moved to
the nearest legal point. The launcher starts from them where no lock entry applies, and `plan`, `run`
and `tune` fall back on them where the defaults do not fit the sizes given (a row tile of 16 at a
decode shape of M = 1)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from tilesched.errors import SpecError
from tilesched.ir.bind import Binding, bind
from tilesched.ir.nodes import Program
from tilesched.ir.space import iter_points
from tilesched.spec.loader import SourceInfo


def legal(program: Program, sizes: Mapping[str, int], params: Mapping[str, object]) -> Binding | None:
    try:
        return bind(program, {**symbolic(program, sizes), **params})
    except SpecError:
        return None


def symbolic(program: Program, sizes: Mapping[str, int]) -> dict[str, int]:
    return {a.name: sizes[a.name] for a in program.axes if a.symbolic}


def heuristic_params(program: Program, sizes: Mapping[str, int], pinned: Mapping[str, object] | None = None) -> dict:
    """Spec defaults (and `pinned` values), with each unpinned loop tile clamped to its axis (small M
    gets small BLOCK_M), then the legal point nearest to that wish (fewest changed parameters, then
    smallest log2 distance) among those that keep the pins."""
    pinned = dict(pinned or {})
    wish = {p.name: p.default for p in program.params} | pinned
    for lp in program.loops:
        if isinstance(lp.tile, str) and lp.tile in wish and lp.tile not in pinned:
            cap = 1 << max(sizes[lp.axis] - 1, 0).bit_length()
            vals = sorted(int(v) for v in program.param(lp.tile).values)
            fitting = [v for v in vals if v <= cap]
            if int(wish[lp.tile]) > cap:
                wish[lp.tile] = fitting[-1] if fitting else vals[0]
    if legal(program, sizes, wish) is not None:
        return wish
    fixed = dict(program.limit_env())
    fixed.update(sizes)
    fixed.update({k: v for k, v in program.option_map.items() if not isinstance(v, str)})
    fixed.update(pinned)

    def distance(pt: dict) -> tuple:
        changed = sum(pt[k] != wish[k] for k in wish)
        logd = sum(abs(math.log2(pt[k]) - math.log2(wish[k])) for k in wish
                   if isinstance(pt[k], int) and isinstance(wish[k], int) and pt[k] > 0 and wish[k] > 0
                   and not isinstance(pt[k], bool))
        return changed, logd, sorted(pt.items(), key=str)

    best = None
    free = [p for p in program.params if p.name not in pinned]
    for pt in iter_points(free, program.constraints, fixed):
        pt = {**pt, **pinned}
        if legal(program, sizes, pt) is None:
            continue
        if best is None or distance(pt) < distance(best):
            best = dict(pt)
    if best is None:
        shape = ", ".join(f"{k}={v}" for k, v in sizes.items())
        raise SpecError([SourceInfo(None).diagnostic((), f"{program.name}: no legal parameters for {shape}")])
    return best


def bind_fitting(program: Program, values: Mapping[str, object], source: SourceInfo | None = None) -> Binding:
    """`bind(program, values)`, or where the defaults of the parameters `values` leaves free do not
    fit its sizes, the binding at the nearest legal point that keeps `values`; the error of the plain
    binding when there is none."""
    try:
        return bind(program, values, source)
    except SpecError as exc:
        refused = exc
    try:
        sizes = bind(program, values, source, schedule=False).sizes
        params = {p.name: values[p.name] for p in program.params if p.name in values}
        return bind(program, {**symbolic(program, sizes), **heuristic_params(program, sizes, params)}, source)
    except SpecError:
        raise refused from None
