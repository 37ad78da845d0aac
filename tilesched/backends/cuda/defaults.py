"""Pick parameters for a shape: the lock file's entry when it is legal here, else a shape-aware
default (the spec defaults with tiles clamped to the shape, moved to the nearest legal point)."""

from __future__ import annotations

from tilesched.ir.bind import Binding, bind
from tilesched.ir.fit import heuristic_params, legal, symbolic
from tilesched.ir.nodes import Program
from tilesched.tuner.lockfile import LockFile


def select_binding(program: Program, sizes: dict[str, int], lock: LockFile | None = None) -> tuple[Binding, str]:
    """(binding, where the parameters came from: 'lock' | 'default'). `sizes` needs the symbolic
    axes; derived ones follow from them."""
    sizes = bind(program, symbolic(program, sizes), schedule=False).sizes
    if lock is not None:
        entry = lock.select(program, sizes)
        if entry is not None:
            b = legal(program, sizes, dict(entry.params))
            if b is not None:
                return b, "lock"
    b = legal(program, sizes, heuristic_params(program, sizes))
    assert b is not None
    return b, "default"
