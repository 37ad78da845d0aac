"""Pick parameters for a shape: the lock file's entry when it is legal here, else a shape-aware
default (the spec defaults with tiles clamped to the shape, moved to the nearest legal point)."""

from __future__ import annotations

import math

from tilesched.errors import SpecError
from tilesched.ir.bind import Binding, bind
from tilesched.ir.nodes import Program
from tilesched.ir.space import iter_points
from tilesched.spec.loader import SourceInfo
from tilesched.tuner.lockfile import LockFile


def _legal(program: Program, sizes: dict[str, int], params: dict) -> Binding | None:
    try:
        return bind(program, {**_symbolic(program, sizes), **params})
    except SpecError:
        return None


def _symbolic(program: Program, sizes: dict[str, int]) -> dict[str, int]:
    return {a.name: sizes[a.name] for a in program.axes if a.symbolic}


def heuristic_params(program: Program, sizes: dict[str, int]) -> dict:
    """Spec defaults, with each loop tile clamped to its axis (small M gets small BLOCK_M), then the
    legal point nearest to that wish (fewest changed parameters, then smallest log2 distance)."""
    wish = {p.name: p.default for p in program.params}
    for lp in program.loops:
        if isinstance(lp.tile, str) and lp.tile in wish:
            cap = 1 << max(sizes[lp.axis] - 1, 0).bit_length()
            vals = sorted(int(v) for v in program.param(lp.tile).values)
            fitting = [v for v in vals if v <= cap]
            if int(wish[lp.tile]) > cap:
                wish[lp.tile] = fitting[-1] if fitting else vals[0]
    if _legal(program, sizes, wish) is not None:
        return wish
    fixed = dict(program.limit_env())
    fixed.update(sizes)
    fixed.update({k: v for k, v in program.option_map.items() if not isinstance(v, str)})

    def distance(pt: dict) -> tuple:
        changed = sum(pt[k] != wish[k] for k in wish)
        logd = sum(abs(math.log2(pt[k]) - math.log2(wish[k])) for k in wish
                   if isinstance(pt[k], int) and isinstance(wish[k], int) and pt[k] > 0 and wish[k] > 0
                   and not isinstance(pt[k], bool))
        return changed, logd, sorted(pt.items(), key=str)

    best = None
    for pt in iter_points(program.params, program.constraints, fixed):
        if _legal(program, sizes, pt) is None:
            continue
        if best is None or distance(pt) < distance(best):
            best = dict(pt)
    if best is None:
        shape = ", ".join(f"{k}={v}" for k, v in sizes.items())
        raise SpecError([SourceInfo(None).diagnostic((), f"{program.name}: no legal parameters for {shape}")])
    return best


def select_binding(program: Program, sizes: dict[str, int], lock: LockFile | None = None) -> tuple[Binding, str]:
    """(binding, where the parameters came from: 'lock' | 'default'). `sizes` needs the symbolic
    axes; derived ones follow from them."""
    sizes = bind(program, _symbolic(program, sizes), schedule=False).sizes
    if lock is not None:
        entry = lock.select(program, sizes)
        if entry is not None:
            b = _legal(program, sizes, dict(entry.params))
            if b is not None:
                return b, "lock"
    b = _legal(program, sizes, heuristic_params(program, sizes))
    assert b is not None
    return b, "default"
