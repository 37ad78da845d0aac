"""The Cortex-M search over fusion boundaries and tile sizes of a whole network: which stages outside the
spec's loops end a row-fused group (the `fuse` option), how halo rows are obtained (`halo`: cached in
rings or recomputed), and the parameters of the spec's own loops (e.g. ROWS of a query-block loop),
under `limits.sram_bytes`.

Every point is planned (the memory plan of the lowered kernel: exact peak SRAM, fast) and its executed
multiply-accumulates counted by a dry run of its schedule (`session.kernel_macs`: recomputed halo rows
included). Per parameter point and halo mode the boundary sets visited are: every candidate (layer by
layer), none (everything fused), the fused prefixes (MCUNetV2: the first k groups fused, the rest layer
by layer), and first-improvement descents on the peak (toggling one boundary at a time) from "every
candidate". Instructions come from QEMU for a few points spread over the peak range (`measure_front`);
the Pareto front is peak SRAM vs instructions over those."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace

from tilesched.errors import SpecError
from tilesched.ir.bind import Binding, bind

BIG = 1 << 40  # the peak of a point the lowering refuses


@dataclass(frozen=True)
class Point:
    fuse: str  # stages ending groups, comma separated, or "none"
    halo: str
    params: tuple[tuple[str, object], ...]
    peak_bytes: int
    macs: int = 0  # executed (recomputed halo rows included)
    instructions: int | None = None
    flash_bytes: int | None = None
    bit_exact: bool | None = None

    @property
    def fuse_set(self) -> frozenset[str]:
        return frozenset(x for x in self.fuse.split(",") if x) if self.fuse != "none" else frozenset()

    def as_dict(self) -> dict:
        return {"fuse": self.fuse, "halo": self.halo, "params": dict(self.params), "peak_bytes": self.peak_bytes,
                "macs": self.macs, "instructions": self.instructions, "flash_bytes": self.flash_bytes,
                "bit_exact": self.bit_exact}


def with_options(b: Binding, fuse: str, halo: str = "cache", params: dict | None = None) -> Binding:
    """`b` with the options `fuse` and `halo` set to literal values and its parameters updated."""
    prog = b.program
    opts = {**dict(prog.options), "fuse": fuse, "halo": halo}
    prog = prog.model_copy(update={"options": tuple(sorted(opts.items()))})
    return bind(prog, {**{a: b.sizes[a] for a in (x.name for x in prog.axes if x.symbolic)},
                       **b.params, **(params or {})})


def candidates(b: Binding) -> list[str]:
    """Stages outside every loop whose output is no larger than what they read (a block's output, a
    projection, a residual add; not an expansion): where a group may end without materialising an
    expanded tensor."""
    from tilesched.passes.mcu import constants

    prog, sizes = b.program, b.sizes
    consts = constants(prog)

    def size(t: str) -> int:
        n = 1
        for a in prog.tensor(t).shape:
            n *= sizes[a]
        return n

    out = []
    for s in prog.stages:
        if s.depth != 0:
            continue
        acts = [t for t in s.reads if t not in consts and prog.tensor(t).dtype == "int8"]
        if acts and size(s.writes[0]) <= max(size(t) for t in acts):
            out.append(s.name)
    return out


def param_points(b: Binding) -> list[dict]:
    """The legal points of the spec's own parameters (loop tiles) at b's sizes; [{}] without any."""
    from tilesched.tuner.space import Space

    prog = b.program
    if not prog.params:
        return [{}]
    sizes = {a.name: b.sizes[a.name] for a in prog.axes if a.symbolic}
    return Space(prog, sizes).legal_points or [dict(b.params)]


def evaluate(b: Binding, fuse: frozenset[str], order: list[str], halo: str, params: dict) -> Point:
    from tilesched.backends.cortexm.session import kernel_macs
    from tilesched.schedules.memory import plan_memory

    value = ",".join(s for s in order if s in fuse) or "none"
    try:
        plan = plan_memory(with_options(b, value, halo, params))
    except SpecError:
        return Point(value, halo, tuple(sorted(params.items())), BIG)
    return Point(value, halo, tuple(sorted(params.items())), plan.peak_bytes, kernel_macs(plan))


def search(b: Binding, halos: tuple[str, ...] = ("cache",), params: list[dict] | None = None,
           passes: int = 2, log: Callable[[str], None] | None = None) -> list[Point]:
    """Every point visited (see the module docstring), lowest peak first."""
    order = candidates(b)
    seen: dict[tuple, Point] = {}
    for pp, halo in itertools.product(params if params is not None else param_points(b), halos):
        _descend(b, order, halo, pp, seen, passes, log)
    return sorted(seen.values(), key=lambda p: (p.peak_bytes, p.macs, p.fuse))


def _descend(b: Binding, order: list[str], halo: str, pp: dict, seen: dict, passes: int, log) -> None:
    def ev(s) -> int:
        key = (tuple(sorted(pp.items())), halo, frozenset(s))
        if key not in seen:
            seen[key] = evaluate(b, frozenset(s), order, halo, pp)
            if log:
                p = seen[key]
                log(f"  {halo:<9} {dict(pp)} {len(s):>3} boundaries: peak {p.peak_bytes} B, {p.macs} MACs")
        return seen[key].peak_bytes

    ev(set())
    for k in range(1, len(order)):  # fused prefixes
        ev(set(order[k:]))
    cur = set(order)
    best = ev(cur)
    for _ in range(passes):  # first improvement, in network order: toggle one boundary at a time
        start = best
        for c in order:
            v = ev(cur ^ {c})
            if v < best:
                cur, best = cur ^ {c}, v
        if best == start:
            break


def spread(points: list[Point], k: int, budget: int | None = None) -> list[Point]:
    """Up to k points to measure: of the points no other beats on both peak and MACs (within the SRAM
    budget when one is given, else all), the lowest peak, the highest and evenly spaced between."""
    pts = [p for p in points if p.peak_bytes < BIG and (budget is None or p.peak_bytes <= budget)]
    if not pts:
        pts = [min(points, key=lambda p: p.peak_bytes)]
    front: list[Point] = []
    for p in sorted(pts, key=lambda p: (p.peak_bytes, p.macs)):
        if not front or p.macs < front[-1].macs:
            front.append(p)
    # equal MACs differ in overhead only: keep distinct peaks of the whole feasible set too
    by_peak = sorted({p.peak_bytes: p for p in sorted(pts, key=lambda p: (p.peak_bytes, p.macs), reverse=True)}
                     .values(), key=lambda p: p.peak_bytes)
    pool = list(dict.fromkeys(front + by_peak))
    pool.sort(key=lambda p: p.peak_bytes)
    if len(pool) <= k:
        return pool
    idx = sorted({round(i * (len(pool) - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]
    return [pool[i] for i in idx]


def measure_point(b: Binding, p: Point, target: str | None = None, seed: int | None = None) -> Point:
    """`p` run under QEMU (on `target`, default the spec's) on fresh random inputs, checked against the
    oracle: instructions, flash bytes, bit_exact."""
    from tilesched.backends.cortexm import session

    bb = with_options(b, p.fuse, p.halo, dict(p.params))
    if target is not None:
        bb = bb.model_copy(update={"program": bb.program.model_copy(update={"target": target})})
    rep = session.run_binding(bb, seed=seed)
    return replace(p, instructions=rep.run.instructions, flash_bytes=rep.run.text_bytes, bit_exact=bool(rep.ok))


def measure_front(b: Binding, points: list[Point], k: int = 4, seed: int | None = None,
                  log: Callable[[str], None] | None = None) -> list[Point]:
    """The spread points measured (see `spread`)."""
    out = []
    for p in spread(points, k, b.program.limits.sram_bytes):
        m = measure_point(b, p, seed=seed)
        if log:
            log(f"  measured peak {m.peak_bytes} B: {m.instructions} instructions, bit-exact {m.bit_exact}")
        out.append(m)
    return out


def pareto(points: list[Point]) -> list[Point]:
    """Points no other point beats on both peak SRAM and instructions (of those measured and correct)."""
    pts = [p for p in points if p.instructions is not None and p.bit_exact]
    front: list[Point] = []
    for p in sorted(pts, key=lambda p: (p.peak_bytes, p.instructions)):
        if not front or p.instructions < front[-1].instructions:
            front.append(p)
    return front


def best(points: list[Point]) -> Point:
    """The lowest peak (fewest instructions among equal peaks)."""
    return min(points, key=lambda p: (p.peak_bytes, p.instructions if p.instructions is not None else BIG))
