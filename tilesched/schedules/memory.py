"""Memory planning for MCU tile programs: one SRAM arena, offsets by segment lifetimes.

The tile program comes from the Cortex-M lowering (tilesched.passes.mcu: `events`, a dry run of the
same kernel IR the C is rendered from). A buffer is a run of equal segments (rows, ring slots, heads).
From the tile program's events every segment gets its live intervals: a write opens one, later reads extend it to
their step; network inputs are live from before the first step, outputs until after the
last. Two segments may share bytes only when their intervals are disjoint, and an interval
that ends at step t still blocks a write at step t (a step reads before it writes, but
the C code is free to interleave within a step). Placement is greedy lowest-offset, exact
over segment pairs: every (placed segment, new segment) pair that is live at the same time
forbids an open range of offsets, and the lowest aligned offset outside all of them is
taken. So an output may sit over input rows already consumed (vMCU's segment overlap),
decided by the access pattern alone. A few buffer orders are tried; the smallest arena
wins. Flash tensors (weights, biases, tables) are not in the arena.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import permutations

import numpy as np

from tilesched.ir.bind import Binding
from tilesched.schedules.limits import check_limits

ALIGN = 4


@dataclass(frozen=True)
class PlanBuffer:
    name: str
    seg_bytes: int
    n_segs: int
    role: str  # input | output | scratch
    what: str = ""

    @property
    def size(self) -> int:
        return self.seg_bytes * self.n_segs


@dataclass(frozen=True)
class Event:
    step: int
    buffer: str
    seg: int
    access: str  # "r" | "w"
    tag: str  # the logical data the segment holds (written) or must still hold (read)


@dataclass(frozen=True)
class TileProgram:
    kind: str
    shape: object  # the lowered kernel (tilesched.passes.mcu_ir.McuKernel)
    buffers: tuple[PlanBuffer, ...]
    steps: tuple[str, ...]
    events: tuple[Event, ...]
    naive_bytes: int  # every activation tensor whole and live at once (no reuse)


@dataclass(frozen=True)
class PlacedBuffer:
    name: str
    offset: int
    size: int
    seg_bytes: int
    n_segs: int
    role: str
    first_step: int  # -1: live before the first step (inputs)
    last_step: int  # len(steps): live after the last step (outputs)
    what: str = ""


@dataclass(frozen=True)
class TimelinePoint:
    step: int
    name: str
    live_bytes: int  # bytes of live segments
    high_water: int  # highest arena byte in use


@dataclass(frozen=True)
class MemoryPlan:
    program: TileProgram
    buffers: tuple[PlacedBuffer, ...]
    peak_bytes: int  # arena size
    timeline: tuple[TimelinePoint, ...]
    order: tuple[str, ...]  # the buffer order that won
    binding: Binding | None = None  # the bound spec the program was lowered from

    @property
    def naive_bytes(self) -> int:
        return self.program.naive_bytes

    def buffer(self, name: str) -> PlacedBuffer:
        return next(b for b in self.buffers if b.name == name)

    @property
    def offsets(self) -> dict[str, int]:
        return {b.name: b.offset for b in self.buffers}


def lifetimes(prog: TileProgram) -> dict[str, list[list[tuple[int, int]]]]:
    """buffer -> segment -> list of live intervals [start, end] (inclusive steps)."""
    end = len(prog.steps)
    live: dict[str, list[list[list[int]]]] = {b.name: [[] for _ in range(b.n_segs)] for b in prog.buffers}
    for b in prog.buffers:
        if b.role == "input":
            for seg in live[b.name]:
                seg.append([-1, -1])
    for ev in prog.events:
        ivs = live[ev.buffer][ev.seg]
        if ev.access == "w":
            if ivs and ivs[-1][1] == ev.step:
                continue  # read-modify-write of the segment within one step: one live range
            ivs.append([ev.step, ev.step])
        elif not ivs:
            raise ValueError(f"{ev.buffer}[{ev.seg}] is read at step {ev.step} before any write")
        else:
            ivs[-1][1] = max(ivs[-1][1], ev.step)
    for b in prog.buffers:
        if b.role == "output":
            for seg in live[b.name]:
                if seg:
                    seg[-1][1] = end
    return {k: [[tuple(iv) for iv in seg] for seg in v] for k, v in live.items()}


def _flat(buf: PlanBuffer, ivs: list[list[tuple[int, int]]]) -> np.ndarray:
    """Rows (byte_lo, byte_hi, t0, t1) for every live interval of every segment (intervals of one segment
    that touch, [a, b] and [b + 1, c], merged: the same steps)."""
    rows = []
    for i, seg in enumerate(ivs):
        merged: list[list[int]] = []
        for t0, t1 in sorted(seg):
            if merged and t0 <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], t1)
            else:
                merged.append([t0, t1])
        rows.extend((i * buf.seg_bytes, (i + 1) * buf.seg_bytes, t0, t1) for t0, t1 in merged)
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def _align(x: int) -> int:
    return -(-x // ALIGN) * ALIGN


def _lowest_offset(new: np.ndarray, placed: list[tuple[int, np.ndarray]]) -> int:
    forbidden = []
    for off, rows in placed:
        if not len(rows) or not len(new):
            continue
        a, b = rows[:, None, :], new[None, :, :]
        overlap_t = (a[..., 2] <= b[..., 3]) & (b[..., 2] <= a[..., 3])
        lo = off + a[..., 0] - b[..., 1]
        hi = off + a[..., 1] - b[..., 0]
        forbidden.append(np.stack([lo[overlap_t], hi[overlap_t]], axis=1))
    if not forbidden:
        return 0
    iv = np.concatenate(forbidden)
    iv = iv[np.argsort(iv[:, 0], kind="stable")]
    cand = 0
    for start in range(0, len(iv), 4096):  # most searches end early: convert a chunk at a time
        for lo, hi in iv[start:start + 4096].tolist():
            if lo >= cand:
                return cand
            if hi > cand:
                cand = _align(hi)
    return cand


def _place(prog: TileProgram, order: tuple[str, ...], flat: dict[str, np.ndarray]) -> tuple[dict[str, int], int]:
    placed: list[tuple[int, np.ndarray]] = []
    offsets: dict[str, int] = {}
    for name in order:
        off = _lowest_offset(flat[name], placed)
        offsets[name] = off
        placed.append((off, flat[name]))
    peak = max(offsets[b.name] + b.size for b in prog.buffers)
    return offsets, peak


def candidate_orders(prog: TileProgram) -> list[tuple[str, ...]]:
    names = [b.name for b in prog.buffers]
    if len(names) <= 6:
        return list(permutations(names))
    size = {b.name: b.size for b in prog.buffers}
    role = {b.name: b.role for b in prog.buffers}
    rank = {"output": 0, "input": 1, "scratch": 2}
    return [
        tuple(names),
        tuple(sorted(names, key=lambda n: -size[n])),
        tuple(sorted(names, key=lambda n: (rank[role[n]], -size[n]))),
        tuple(sorted(names, key=lambda n: (-rank[role[n]], -size[n]))),
    ]


def place_program(prog: TileProgram) -> MemoryPlan:
    live = lifetimes(prog)
    flat = {b.name: _flat(b, live[b.name]) for b in prog.buffers}
    best = None
    for order in candidate_orders(prog):
        offsets, peak = _place(prog, order, flat)
        if best is None or peak < best[1]:
            best = (offsets, peak, order)
    offsets, peak, order = best
    end = len(prog.steps)
    placed = []
    for b in prog.buffers:
        ts = [t for seg in live[b.name] for iv in seg for t in iv]
        placed.append(PlacedBuffer(name=b.name, offset=offsets[b.name], size=b.size, seg_bytes=b.seg_bytes,
                                   n_segs=b.n_segs, role=b.role, first_step=min(ts, default=0),
                                   last_step=max(ts, default=end), what=b.what))
    return MemoryPlan(program=prog, buffers=tuple(placed), peak_bytes=peak,
                      timeline=_timeline(prog, live, offsets), order=order)


def _timeline(prog: TileProgram, live, offsets) -> tuple[TimelinePoint, ...]:
    n = len(prog.steps)
    live_bytes = np.zeros(n, dtype=np.int64)
    high = np.zeros(n, dtype=np.int64)
    for b in prog.buffers:
        for i, seg in enumerate(live[b.name]):
            top = offsets[b.name] + (i + 1) * b.seg_bytes
            for t0, t1 in seg:
                lo, hi = max(t0, 0), min(t1, n - 1)
                live_bytes[lo:hi + 1] += b.seg_bytes
                high[lo:hi + 1] = np.maximum(high[lo:hi + 1], top)
    return tuple(TimelinePoint(i, prog.steps[i], int(live_bytes[i]), int(high[i])) for i in range(n))


def plan_memory(binding: Binding) -> MemoryPlan:
    """The arena plan of a bound MCU spec: the events of its lowered kernel, placed."""
    from tilesched.passes.mcu import events, lower_mcu

    check_limits(binding)  # before building the tile program, whose size grows with the problem
    return replace(place_program(events(binding, lower_mcu(binding))), binding=binding)


def format_memory_plan(plan: MemoryPlan, max_points: int = 12) -> str:
    lines = [f"memory plan: arena peak {plan.peak_bytes} B ({plan.peak_bytes / 1024:.1f} KiB); "
             f"naive (every activation whole, no reuse) {plan.naive_bytes} B; "
             f"{len(plan.program.steps)} tile steps"]
    lines.append(f"  {'buffer':<7}{'offset':>9}{'size':>9}{'segments':>14}  {'live steps':<16}role")
    for b in sorted(plan.buffers, key=lambda b: (b.offset, b.name)):
        segs = f"{b.n_segs}x{b.seg_bytes}"
        lines.append(f"  {b.name:<7}{b.offset:>9}{b.size:>9}{segs:>14}  {f'{b.first_step}..{b.last_step}':<16}"
                     f"{b.role}: {b.what}")
    shared = [(a.name, b.name) for i, a in enumerate(plan.buffers) for b in plan.buffers[i + 1:]
              if a.offset < b.offset + b.size and b.offset < a.offset + a.size]
    if shared:
        lines.append("  overlapping by segment lifetimes: " + ", ".join(f"{a}/{b}" for a, b in shared))
    tl = plan.timeline
    stride = max(1, -(-len(tl) // max_points))
    pts = list(tl[::stride])
    peak_pt = max(tl, key=lambda p: p.high_water)
    if peak_pt not in pts:
        pts = sorted(pts + [peak_pt], key=lambda p: p.step)
    lines.append(f"timeline (every {stride} steps, and the peak):")
    for p in pts:
        bar = "#" * max(1, round(40 * p.high_water / plan.peak_bytes))
        lines.append(f"  {p.step:>6} {p.name:<20}{p.live_bytes:>9} B live {p.high_water:>9} B high  {bar}")
    return "\n".join(lines)


def min_memory_binding(program, values=None, source=None):
    """The legal parameter point with the smallest arena (ties: fewer tile steps, then the
    first point in spec order): the memory-minimising choice of tile sizes.
    Returns (Binding, MemoryPlan)."""
    from itertools import product

    from tilesched.errors import SpecError
    from tilesched.ir.bind import bind

    values = dict(values or {})
    free = [p for p in program.params if p.name not in values]
    best = None
    for combo in product(*(p.values for p in free)):
        try:
            b = bind(program, {**values, **dict(zip((p.name for p in free), combo))}, source)
        except SpecError:
            continue
        plan = plan_memory(b)
        key = (plan.peak_bytes, len(plan.program.steps))
        if best is None or key < best[0]:
            best = (key, b, plan)
    if best is None:
        raise SpecError([(source or _no_source()).diagnostic((), f"{program.name}: no legal parameter point")])
    return best[1], best[2]


def _no_source():
    from tilesched.spec.loader import SourceInfo

    return SourceInfo(None)
