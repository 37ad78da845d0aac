"""Compute-communication overlap schedules: pure functions from a bound program with a
chunked `comm` stage to the per-rank plan every producer and consumer follows.

One plan per rank says, for a row-sharded collective fused with a GEMM:
- the chunking: every rank's shard of the sharded axis is cut into `chunks` chunks; a
  chunk is identified globally by ``owner * chunks + local`` (owner = the rank whose
  shard it is);
- the consumer's chunk order (``rank_rotated``: the rank's own chunks first, then its
  neighbours' in ring order, so local work hides the first transfers);
- the producer's steps: which chunk moves from which rank to which, on which engine
  (copy engine on a side stream, or SMs inside the kernel) and which signal it raises;
- the consumer's waits: the signal index and the value it must see before touching a chunk.

Collectives register a builder in `COLLECTIVES`; all_gather and reduce_scatter are
implemented. all_reduce (= reduce_scatter followed by all_gather over the same chunks)
and all_to_all (every chunk has one destination, chosen by rank) fit the same
`OverlapPlan` and slot in as two more builders.

The runtime (tilesched.runtime), the generated Triton kernels and the CPU protocol
simulation all read these plans; none of them re-derives an order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from tilesched.ir.bind import Binding, bind
from tilesched.ir.dtypes import nbytes
from tilesched.ir.nodes import Program, StageIR

# Cost-model constants (the timeline is a prediction, not a measurement).
# Peer copy-engine bandwidth, one direction: measured on 2x H200 (NV18) by the project
# lead with cudaMemcpyPeerAsync (brief of issue 6).
PEER_COPY_GBPS = 359.0
# SM stores to a peer over NVLink: assumed equal to the copy engine (not measured here).
PEER_STORE_GBPS = 359.0
# bf16 GEMM throughput of a Triton kernel on H200: brief of issue 6 (~700 TFLOP/s; our persistent
# consumer alone measured 676-687, bench/results/overlap-loopback-h200.json); the
# device page measured cuBLAS at 769-798 TFLOP/s on 8192^3.
GEMM_TFLOPS = 700.0
# HBM bandwidth, bytes read + written: device-to-device copy measured at ~4.3 TB/s on
# H200 (device KINDS.md, 2026-11-04).
HBM_GBPS = 4300.0
# Launch / signal latency per chunk hand-off (flag write seen by a spinning block): assumed.
SIGNAL_US = 5.0


class OverlapError(ValueError):
    """The program has no overlap schedule at this point (names what is missing)."""


@dataclass(frozen=True)
class Chunk:
    id: int  # global chunk id = owner * chunks_per_rank + local
    owner: int  # the rank whose shard of the sharded axis holds these rows
    local: int  # index among the owner's chunks
    row_start: int  # rows [row_start, row_stop) of the full (gathered / unreduced) tensor
    row_stop: int


@dataclass(frozen=True)
class ProducerStep:
    """Move one chunk from `src` to `dst` and raise signal `signal` on `signal_rank`."""

    chunk: int
    src: int
    dst: int
    engine: str  # copy_engine | sm
    signal: int  # index into the signal pad of `signal_rank`
    signal_rank: int
    increment: int  # how much one step adds to the signal (1 flag write, or tiles per chunk)


@dataclass(frozen=True)
class Wait:
    """Before consuming `chunk`, signal `signal` of this rank's pad must reach `count` * epoch."""

    chunk: int
    signal: int
    count: int


@dataclass(frozen=True)
class OverlapPlan:
    collective: str
    rank: int
    world: int
    engine: str
    rows: int  # size of the sharded axis (global)
    cols: int  # N
    depth: int  # K
    chunks_per_rank: int
    chunk_rows: int
    block_m: int
    block_n: int
    block_k: int
    chunks: tuple[Chunk, ...]  # all chunks, by id
    order: tuple[int, ...]  # consumer (GEMM) chunk order on this rank
    producer: tuple[ProducerStep, ...]  # steps this rank drives, in issue order
    waits: tuple[Wait, ...]  # this rank's waits, in consumer order
    n_signals: int  # size of each rank's signal pad

    @property
    def tiles_per_chunk(self) -> int:
        return (self.chunk_rows // self.block_m) * -(-self.cols // self.block_n)

    def waits_for(self, chunk: int) -> tuple[Wait, ...]:
        """What this rank waits on before consuming `chunk` (none for a local all-gather chunk)."""
        return tuple(w for w in self.waits if w.chunk == chunk)


def comm_stage(b: Binding) -> StageIR:
    """The program's chunked comm stage (exactly one is supported)."""
    found = [s for s in b.program.stages if s.kind == "comm" and s.granularity == "chunk"]
    if len(found) != 1:
        raise OverlapError(f"{b.program.name}: an overlap schedule needs exactly one comm stage with "
                           f"granularity: chunk, found {len(found)}")
    return found[0]


def _geometry(b: Binding, stage: StageIR, world: int) -> dict:
    prog = b.program
    if prog.tile_order.kind != "rank_rotated":
        raise OverlapError(f"{prog.name}: overlap needs tile_order rank_rotated, got {prog.tile_order.kind}")
    axis = prog.tile_order.axis
    dots = [s for s in prog.stages if s.op == "dot"]
    if len(dots) != 1:
        raise OverlapError(f"{prog.name}: overlap fuses one GEMM, found {len(dots)} dot stages")
    red = [lp.axis for lp in prog.loops if lp.kind == "reduction"]
    spatial = [lp.axis for lp in prog.loops if lp.kind == "spatial" and lp.axis != axis]
    if len(red) != 1 or len(spatial) != 1:
        raise OverlapError(f"{prog.name}: overlap needs loops (M, N spatial; K reduction)")
    chunks = int(b.value(stage.chunks))
    rows, bm = b.sizes[axis], b.tile(axis)
    if rows % (world * chunks * bm):
        raise OverlapError(f"{prog.name}: {axis}={rows} is not a multiple of world*chunks*BLOCK_{axis} "
                           f"= {world}*{chunks}*{bm}; every chunk must be whole row tiles")
    n_axis, k_axis = spatial[0], red[0]
    return dict(rows=rows, cols=b.sizes[n_axis], depth=b.sizes[k_axis], chunks_per_rank=chunks,
                chunk_rows=rows // (world * chunks), block_m=bm, block_n=b.tile(n_axis), block_k=b.tile(k_axis))


def _chunks(world: int, per_rank: int, chunk_rows: int) -> tuple[Chunk, ...]:
    out = []
    for owner in range(world):
        for local in range(per_rank):
            cid = owner * per_rank + local
            out.append(Chunk(cid, owner, local, cid * chunk_rows, (cid + 1) * chunk_rows))
    return tuple(out)


def rotated_ranks(rank: int, world: int, start: int = 0) -> tuple[int, ...]:
    """Ranks in ring order beginning at rank + start."""
    return tuple((rank + start + i) % world for i in range(world))


def _all_gather(rank: int, world: int, engine: str, g: dict) -> OverlapPlan:
    # Push model: rank r copies each of its own chunks into every peer's gathered buffer
    # (its copy engine writes the peer over NVLink) and raises the chunk's flag *on that
    # peer*. It serves the peers in reverse ring order r-1, r-2, ..., because a consumer
    # takes remote chunks in ring order r+1, r+2, ...: every rank's first remote chunk is
    # the first one its neighbour sends. The GEMM consumes its own chunks first, straight
    # from the local shard, so they need no wait.
    c = g["chunks_per_rank"]
    chunks = _chunks(world, c, g["chunk_rows"])
    order = tuple(owner * c + local for owner in rotated_ranks(rank, world) for local in range(c))
    producer = tuple(
        ProducerStep(chunk=rank * c + local, src=rank, dst=(rank - i) % world, engine=engine, signal=rank * c + local,
                     signal_rank=(rank - i) % world, increment=1)
        for i in range(1, world) for local in range(c)
    )
    waits = tuple(Wait(chunk=cid, signal=cid, count=1) for cid in order if chunks[cid].owner != rank)
    return OverlapPlan(collective="all_gather", rank=rank, world=world, engine=engine, chunks=chunks, order=order,
                       producer=producer, waits=waits, n_signals=world * c, **g)


def _reduce_scatter(rank: int, world: int, engine: str, g: dict) -> OverlapPlan:
    # Push model: rank r computes the partial rows of every chunk, the chunks owned by its
    # neighbour r+1 first and its own last. A tile of a peer's chunk is stored straight
    # into the owner's receive slot [r] and adds 1 to the owner's signal (r, chunk). A tile
    # of an own chunk is the reduction: it waits until every peer's signal for the chunk
    # reached tiles_per_chunk, adds their partial tiles to its accumulator and stores the
    # result (the peers computed these chunks first, so the wait is normally already over).
    c = g["chunks_per_rank"]
    chunks = _chunks(world, c, g["chunk_rows"])
    order = tuple(owner * c + local for owner in rotated_ranks(rank, world, start=1) for local in range(c))
    tiles = (g["chunk_rows"] // g["block_m"]) * -(-g["cols"] // g["block_n"])
    producer = tuple(
        ProducerStep(chunk=cid, src=rank, dst=chunks[cid].owner, engine=engine,
                     signal=rank * c + chunks[cid].local, signal_rank=chunks[cid].owner, increment=tiles)
        for cid in order if chunks[cid].owner != rank
    )
    own = [cid for cid in order if chunks[cid].owner == rank]
    waits = tuple(Wait(chunk=cid, signal=src * c + chunks[cid].local, count=tiles)
                  for cid in own for src in rotated_ranks(rank, world, start=1) if src != rank)
    return OverlapPlan(collective="reduce_scatter", rank=rank, world=world, engine=engine, chunks=chunks, order=order,
                       producer=producer, waits=waits, n_signals=world * c, **g)


# collective -> plan builder; all_reduce / all_to_all slot in here (see module docstring).
COLLECTIVES: dict[str, Callable[[int, int, str, dict], OverlapPlan]] = {
    "all_gather": _all_gather,
    "reduce_scatter": _reduce_scatter,
}


def derive_overlap(b: Binding, rank: int, world: int | None = None) -> OverlapPlan:
    """The overlap plan of `rank` among `world` ranks (default: the spec's world_size limit)."""
    stage = comm_stage(b)
    world = world or b.program.limits.world_size or 1
    if not 0 <= rank < world:
        raise OverlapError(f"rank {rank} is outside world {world}")
    if stage.op not in COLLECTIVES:
        raise OverlapError(f"{b.program.name}: stage {stage.name}: overlap of {stage.op} is not implemented "
                           f"(implemented: {', '.join(COLLECTIVES)})")
    engine = stage.engine or ("copy_engine" if stage.op == "all_gather" else "sm")
    if engine not in ("copy_engine", "sm"):
        raise OverlapError(f"stage {stage.name}: engine {engine!r} cannot drive GPU overlap (copy_engine or sm)")
    return COLLECTIVES[stage.op](rank, world, engine, _geometry(b, stage, world))


def build_plan(collective: str, rank: int, world: int, *, engine: str, rows: int, cols: int, depth: int,
               chunks_per_rank: int, block_m: int, block_n: int, block_k: int) -> OverlapPlan:
    """The plan from explicit geometry (what `derive_overlap` computes from a binding)."""
    if rows % (world * chunks_per_rank * block_m):
        raise OverlapError(f"rows={rows} is not a multiple of world*chunks*block_m = "
                           f"{world}*{chunks_per_rank}*{block_m}")
    g = dict(rows=rows, cols=cols, depth=depth, chunks_per_rank=chunks_per_rank,
             chunk_rows=rows // (world * chunks_per_rank), block_m=block_m, block_n=block_n, block_k=block_k)
    return COLLECTIVES[collective](rank, world, engine, g)


def plan_binding(program: Program, plan: OverlapPlan) -> Binding:
    """`program` bound at `plan`'s geometry (rows, cols, depth, chunks per rank and blocks), for
    checking the plan's kernels against the semantics oracle: the oracle needs the sizes only, so
    the search space (which offers no small test blocks) goes unchecked; the binding derives the
    same geometry as the plan."""
    stages = [s for s in program.stages if s.kind == "comm" and s.granularity == "chunk"]
    if len(stages) != 1 or stages[0].op != plan.collective:
        raise OverlapError(f"{program.name}: no chunked {plan.collective} stage to match the plan")
    axis = program.tile_order.axis
    spatial = [lp for lp in program.loops if lp.kind == "spatial" and lp.axis != axis]
    red = [lp for lp in program.loops if lp.kind == "reduction"]
    if len(spatial) != 1 or len(red) != 1 or program.loop(axis) is None:
        raise OverlapError(f"{program.name}: overlap needs loops (M, N spatial; K reduction)")
    n_loop, k_loop = spatial[0], red[0]
    want = {axis: plan.rows, n_loop.axis: plan.cols, k_loop.axis: plan.depth}
    values = {a: v for a, v in want.items() if program.axis(a).symbolic}
    for ref, v in ((stages[0].chunks, plan.chunks_per_rank), (program.loop(axis).tile, plan.block_m),
                   (n_loop.tile, plan.block_n), (k_loop.tile, plan.block_k)):
        if isinstance(ref, str):
            values[ref] = v
    b = bind(program, values, schedule=False)
    g = _geometry(b, stages[0], plan.world)
    mismatch = {k: (v, getattr(plan, k)) for k, v in g.items() if v != getattr(plan, k)}
    if mismatch:
        raise OverlapError(f"{program.name} cannot be bound at the plan's geometry: " +
                           ", ".join(f"{k} {v} (the plan's {p})" for k, (v, p) in mismatch.items()))
    return b


def derive_all(b: Binding, world: int | None = None) -> tuple[OverlapPlan, ...]:
    world = world or b.program.limits.world_size or 1
    return tuple(derive_overlap(b, r, world) for r in range(world))


# ---------------------------------------------------------------- predicted timeline


@dataclass(frozen=True)
class Event:
    rank: int
    track: str  # compute | comm | memory
    name: str
    start_us: float
    dur_us: float


def _gemm_us(p: OverlapPlan, rows: int) -> float:
    return 2.0 * rows * p.cols * p.depth / (GEMM_TFLOPS * 1e12) * 1e6


def _gemm_bytes(p: OverlapPlan, rows: int, elem: int) -> float:
    # A rows once, B once per chunk (L2 holds it across the chunk's row tiles), C once.
    return elem * (rows * p.depth + p.depth * p.cols + rows * p.cols)


def predict_timeline(plans: tuple[OverlapPlan, ...], elem_bytes: int = 2) -> tuple[Event, ...]:
    """Per rank: chunk transfers on the comm track, chunk GEMMs on the compute track (each
    starts when its chunk's signals are raised and the previous one is done), and each
    GEMM's HBM traffic on the memory track."""
    events: list[Event] = []
    if plans and plans[0].collective == "all_gather":
        arrive: dict[tuple[int, int], float] = {}  # (destination rank, chunk) -> flag raised
        for p in plans:
            events += _copies_ag(p, elem_bytes, arrive)
        for p in plans:
            events += _gemms_ag(p, elem_bytes, arrive)
    else:
        for p in plans:
            events += _timeline_rs(p, elem_bytes)
    return tuple(events)


def _copies_ag(p: OverlapPlan, elem: int, arrive: dict) -> list[Event]:
    ev, t = [], 0.0
    bw = PEER_COPY_GBPS if p.engine == "copy_engine" else PEER_STORE_GBPS
    for s in p.producer:  # transfers are serial on one engine
        dur = p.chunk_rows * p.depth * elem / (bw * 1e9) * 1e6
        ev.append(Event(p.rank, "comm", f"copy chunk {s.chunk} (rank {s.src}->{s.dst})", t, dur))
        t += dur
        arrive[(s.dst, s.chunk)] = t + SIGNAL_US
    return ev


def _gemms_ag(p: OverlapPlan, elem: int, arrive: dict) -> list[Event]:
    ev, t = [], 0.0
    for cid in p.order:
        start = max(t, arrive.get((p.rank, cid), 0.0))
        dur = _gemm_us(p, p.chunk_rows)
        ev.append(Event(p.rank, "compute", f"gemm chunk {cid}", start, dur))
        mem = _gemm_bytes(p, p.chunk_rows, elem) / (HBM_GBPS * 1e9) * 1e6
        ev.append(Event(p.rank, "memory", f"hbm chunk {cid}", start, min(mem, dur)))
        t = start + dur
    return ev


def _timeline_rs(p: OverlapPlan, elem: int) -> list[Event]:
    ev, t = [], 0.0
    for cid in p.order:
        owner = p.chunks[cid].owner
        dur = _gemm_us(p, p.chunk_rows)
        what = f"for rank {owner}" if owner != p.rank else "own, reduced in the epilogue"
        ev.append(Event(p.rank, "compute", f"gemm chunk {cid} ({what})", t, dur))
        mem = _gemm_bytes(p, p.chunk_rows, elem) / (HBM_GBPS * 1e9) * 1e6
        if owner != p.rank:  # the epilogue's peer stores stream out while the chunk computes
            push = p.chunk_rows * p.cols * elem / (PEER_STORE_GBPS * 1e9) * 1e6
            ev.append(Event(p.rank, "comm", f"push chunk {cid} (rank {p.rank}->{owner})", t, max(push, dur)))
        else:  # the epilogue also reads world - 1 partial tiles per output tile
            mem += (p.world - 1) * p.chunk_rows * p.cols * elem / (HBM_GBPS * 1e9) * 1e6
        ev.append(Event(p.rank, "memory", f"hbm chunk {cid}", t, min(mem, dur)))
        t += dur
    return ev


def plain_timeline(b: Binding) -> tuple[Event, ...]:
    """A program without a chunked comm stage: its stages one after another on their tracks
    (compute stages at GEMM rate, memory stages at HBM rate)."""
    from tilesched.schedules.costs import stage_cost

    ev, t = [], 0.0
    for name in b.program.order:
        s = b.program.stage(name)
        c = stage_cost(b, s)
        if s.kind == "compute":
            dur, track = c.flops / (GEMM_TFLOPS * 1e12) * 1e6, "compute"
        elif s.kind == "memory":
            dur, track = (c.bytes_read + c.bytes_written) / (HBM_GBPS * 1e9) * 1e6, "memory"
        else:
            dur, track = c.comm_bytes / (PEER_COPY_GBPS * 1e9) * 1e6, "comm"
        ev.append(Event(0, track, s.name, t, dur))
        t += dur
    return tuple(ev)


def timeline_for(b: Binding) -> tuple[Event, ...]:
    try:
        comm_stage(b)
    except OverlapError:
        return plain_timeline(b)
    elem = max(nbytes(t.dtype, 1) for t in b.program.tensors if t.scope == "global")
    return predict_timeline(derive_all(b), elem_bytes=int(elem))


TRACKS = ("compute", "memory", "comm")


def chrome_trace(events: tuple[Event, ...], title: str) -> str:
    """Chrome trace JSON (chrome://tracing, Perfetto): one process per rank, one thread per track."""
    out = []
    for rank in sorted({e.rank for e in events}):
        out.append({"ph": "M", "name": "process_name", "pid": rank, "tid": 0, "args": {"name": f"{title} rank {rank}"}})
        for tid, track in enumerate(TRACKS):
            out.append({"ph": "M", "name": "thread_name", "pid": rank, "tid": tid, "args": {"name": track}})
    for e in events:
        out.append({"ph": "X", "name": e.name, "cat": e.track, "pid": e.rank, "tid": TRACKS.index(e.track),
                    "ts": round(e.start_us, 3), "dur": round(e.dur_us, 3)})
    return json.dumps({"traceEvents": out, "displayTimeUnit": "ms"}, indent=1, sort_keys=True) + "\n"


def predicted_makespan_us(events: tuple[Event, ...]) -> float:
    return max((e.start_us + e.dur_us for e in events), default=0.0)
