"""Derive the schedule of a bound program: tile grid, loop and tile order, stage order,
dependencies and per-stage costs. Pure: Binding -> Schedule."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from tilesched.ir.bind import Binding
from tilesched.schedules.costs import StageCost, stage_cost


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class GridAxis(_Frozen):
    axis: str
    kind: str
    size: int
    tile: int
    tiles: int
    ragged: bool  # the last tile is partial and needs masking


class PlannedStage(_Frozen):
    name: str
    kind: str
    op: str
    at: str | None
    waits_for: tuple[str, ...]
    engine: str | None
    cost: StageCost


class Schedule(_Frozen):
    program: str
    target: str
    sizes: dict[str, int]
    params: dict[str, object]
    grid: tuple[GridAxis, ...]
    programs: int  # independent spatial tiles (GPU programs / MCU outer iterations)
    loop_order: tuple[str, ...]
    tile_order: str
    stages: tuple[PlannedStage, ...]
    totals: StageCost


def derive_schedule(b: Binding) -> Schedule:
    prog = b.program
    grid = tuple(
        GridAxis(axis=lp.axis, kind=lp.kind, size=b.sizes[lp.axis], tile=b.tile(lp.axis),
                 tiles=b.n_tiles(lp.axis), ragged=b.sizes[lp.axis] % b.tile(lp.axis) != 0)
        for lp in prog.loops
    )
    programs = 1
    for g in grid:
        if g.kind == "spatial":
            programs *= g.tiles
    to = prog.tile_order
    order = to.kind
    if to.kind == "grouped":
        order += f"(group={b.value(to.group)})"
    elif to.kind == "rank_rotated":
        order += f"(axis={to.axis})"
    stages = []
    for name in prog.order:
        s = prog.stage(name)
        stages.append(PlannedStage(
            name=s.name, kind=s.kind, op=s.op, at=s.at, engine=s.engine,
            waits_for=tuple(sorted({d.src for d in prog.deps_of(s.name)}, key=prog.order.index)),
            cost=stage_cost(b, s),
        ))
    totals = StageCost(
        runs=sum(s.cost.runs for s in stages),
        bytes_read=sum(s.cost.bytes_read for s in stages),
        bytes_written=sum(s.cost.bytes_written for s in stages),
        flops=sum(s.cost.flops for s in stages),
        macs=sum(s.cost.macs for s in stages),
        comm_bytes=sum(s.cost.comm_bytes for s in stages),
    )
    return Schedule(
        program=prog.name, target=prog.target, sizes=dict(b.sizes), params=dict(b.params), grid=grid,
        programs=programs, loop_order=tuple(lp.axis for lp in prog.loops), tile_order=order,
        stages=tuple(stages), totals=totals,
    )


def _si(x: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}"


def format_schedule(s: Schedule) -> str:
    lines = [f"{s.program}  (target {s.target})"]
    lines.append("sizes:  " + " ".join(f"{k}={v}" for k, v in s.sizes.items()))
    if s.params:
        lines.append("params: " + " ".join(f"{k}={v}" for k, v in s.params.items()))
    if s.grid:
        parts = [f"{g.axis} {g.size}/{g.tile} = {g.tiles}{' (ragged)' if g.ragged else ''}"
                 + (" [reduction]" if g.kind == "reduction" else "") for g in s.grid]
        lines.append("tile grid: " + " x ".join(parts) + f"  -> {s.programs} programs")
        lines.append("loop order: " + " > ".join(s.loop_order) + f"   tile order: {s.tile_order}")
    else:
        lines.append("tile grid: none (one program)")
    lines.append("stages (dependency order):")
    w = max([len(st.name) for st in s.stages] + [5]) + 2
    head = f"  {'stage':<{w}}{'kind':<9}{'op':<17}{'at':<6}{'runs':>9}{'read':>13}{'written':>13}{'FLOPs':>13}{'MACs':>13}"
    lines.append(head)
    for st in s.stages:
        c = st.cost
        extra = f"  comm {_si(c.comm_bytes, 'B')}/rank" if c.comm_bytes else ""
        lines.append(
            f"  {st.name:<{w}}{st.kind:<9}{st.op:<17}{(st.at or '-'):<6}{c.runs:>9}{_si(c.bytes_read, 'B'):>13}"
            f"{_si(c.bytes_written, 'B'):>13}{_si(c.flops, 'FLOP'):>13}{_si(c.macs, 'MAC'):>13}{extra}"
        )
    lines.append("dependencies:")
    deps = [f"  {st.name} <- {', '.join(st.waits_for)}" for st in s.stages if st.waits_for]
    lines.extend(deps or ["  none"])
    t = s.totals
    moved = t.bytes_read + t.bytes_written
    intensity = f", {t.flops / moved:.1f} FLOP/B" if moved else ""
    lines.append(f"totals: {_si(moved, 'B')} moved, {_si(t.flops, 'FLOP')}, {_si(t.macs, 'MAC')}{intensity}"
                 + (f", {_si(t.comm_bytes, 'B')} comm/rank" if t.comm_bytes else ""))
    return "\n".join(lines)
