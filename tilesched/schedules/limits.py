"""Hardware limits checked before any expensive work: one place that says whether a bound
point fits `limits.smem_bytes` (CUDA) and `limits.sram_bytes` (Cortex-M).

The checks here are cheap bounds from the tensors and tiles alone, so `plan`, `run`, `emit`
and the tuner refuse a point before planning memory, compiling or launching anything; the
exact arena of a memory plan is checked by `check_arena` once a plan exists."""

from __future__ import annotations

from math import prod

from tilesched.errors import SpecError, spec_error
from tilesched.ir.bind import Binding
from tilesched.ir.dtypes import nbytes

# No Cortex-M part has more SRAM than this; a spec that needs more is refused before its
# memory plan is built (the planner's work grows with the problem's rows and segments).
MAX_MCU_ARENA_BYTES = 1 << 24


def _bytes(b: Binding, tensor) -> int:
    return int(nbytes(tensor.dtype, prod(b.sizes[a] for a in tensor.shape)))


def arena_lower_bound(b: Binding) -> tuple[int, str]:
    """The largest network tensor the arena must hold whole (an input is live before the first
    step, an output after the last), with its name: no memory plan can be smaller."""
    resident = [t for t in b.program.tensors if t.scope == "global" and t.region != "flash"]
    if not resident:
        return 0, ""
    t = max(resident, key=lambda t: _bytes(b, t))
    return _bytes(b, t), t.name


def smem_estimate(b: Binding) -> int:
    """Shared memory of one program: every tile loaded inside the reduction loop, `num_stages`
    deep (the software pipeline's buffers)."""
    red = next((lp.axis for lp in b.program.loops if lp.kind == "reduction"), None)
    stages = int(b.option("num_stages", 2) or 2)
    staged = [s.writes[0] for s in b.program.stages if s.kind == "memory" and s.op == "load" and s.at == red]
    return stages * sum(int(nbytes(b.program.tensor(t).dtype, prod(b.tile(a) for a in b.program.tensor(t).shape)))
                        for t in staged)


def _point(b: Binding) -> str:
    return " ".join(f"{k}={v}" for k, v in {**b.sizes, **b.params}.items() if k in _named(b))


def _named(b: Binding) -> set[str]:
    return {a.name for a in b.program.axes if a.symbolic} | set(b.params)


def limit_problem(b: Binding) -> SpecError | None:
    """Why the point `b` cannot fit its target's limits (checked from sizes alone), or None."""
    prog = b.program
    if prog.target.startswith("cortex-m"):
        need, name = arena_lower_bound(b)
        cap = prog.limits.sram_bytes
        if cap is not None and need > cap:
            return spec_error(("limits", "sram_bytes"), f"{name} alone needs {need:,} B of SRAM at {_point(b)}, "
                                                        f"more than sram_bytes {cap:,} B")
        if need > MAX_MCU_ARENA_BYTES:
            return spec_error(("axes",), f"{name} alone needs {need:,} B at {_point(b)}: more SRAM than any "
                                         f"Cortex-M has ({MAX_MCU_ARENA_BYTES:,} B at most)")
    elif prog.target == "cuda" and prog.limits.smem_bytes is not None:
        need = smem_estimate(b)
        if need > prog.limits.smem_bytes:
            return spec_error(("limits", "smem_bytes"), f"the pipelined tiles need {need:,} B of shared memory at "
                                                        f"{_point(b)}, more than smem_bytes {prog.limits.smem_bytes:,}")
    return None


def check_limits(b: Binding) -> None:
    """Raise the `limit_problem` of `b`, if any."""
    problem = limit_problem(b)
    if problem is not None:
        raise problem


def check_arena(b: Binding, peak_bytes: int) -> None:
    """A memory plan's arena against `limits.sram_bytes`."""
    cap = b.program.limits.sram_bytes
    if cap is not None and peak_bytes > cap:
        raise spec_error(("limits", "sram_bytes"), f"the memory plan needs a {peak_bytes:,} B arena at {_point(b)}, "
                                                   f"more than sram_bytes {cap:,} B (try smaller tiles)")
