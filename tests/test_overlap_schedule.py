"""The overlap scheduler: chunking, rank-rotated order, signals, waits, predicted trace."""

import json

import pytest

from tests.conftest import ROOT
from tilesched import SpecError, bind, load_program
from tilesched.cli import main
from tilesched.schedules.overlap import (
    COLLECTIVES,
    OverlapError,
    build_plan,
    chrome_trace,
    derive_all,
    derive_overlap,
    plan_binding,
    predicted_makespan_us,
    timeline_for,
)

AG = ROOT / "configs" / "ag_gemm.yaml"
RS = ROOT / "configs" / "gemm_rs.yaml"


@pytest.mark.parametrize("world", [2, 3, 4, 8])
def test_all_gather_plan(world):
    b = bind(load_program(AG), {"M": 128 * 2 * 8 * 3 * world})
    plans = derive_all(b, world)
    c = plans[0].chunks_per_rank
    for p in plans:
        assert p.engine == "copy_engine" and p.collective == "all_gather"
        # own chunks first, then the neighbours' in ring order; every chunk exactly once
        assert [p.chunks[x].owner for x in p.order] == [(p.rank + i // c) % world for i in range(world * c)]
        assert sorted(p.order) == list(range(world * c))
        # push: every own chunk to every peer, the neighbour r-1 first, raising the chunk's flag there
        assert [(s.dst, s.chunk) for s in p.producer] == [((p.rank - i) % world, p.rank * c + j)
                                                           for i in range(1, world) for j in range(c)]
        assert all(s.src == p.rank and s.dst == s.signal_rank != p.rank and s.signal == s.chunk for s in p.producer)
        # waits on the remote chunks only, in consumption order (own chunks are read from the shard)
        assert [w.chunk for w in p.waits] == [x for x in p.order if p.chunks[x].owner != p.rank]
        rows = sorted((ch.row_start, ch.row_stop) for ch in p.chunks)  # chunks tile the rows exactly
        assert rows[0][0] == 0 and rows[-1][1] == p.rows and all(a[1] == b_[0] for a, b_ in zip(rows, rows[1:]))
    # every flag raised by exactly one producer is awaited by its rank; a rank's first remote
    # chunk is the first one its neighbour sends
    raised = sorted((s.signal_rank, s.signal) for p in plans for s in p.producer)
    awaited = sorted((p.rank, w.signal) for p in plans for w in p.waits)
    assert raised == awaited and len(set(raised)) == len(raised)
    for p in plans:
        nxt = plans[(p.rank + 1) % world]
        assert (nxt.producer[0].dst, nxt.producer[0].chunk) == (p.rank, p.waits[0].chunk)


@pytest.mark.parametrize("world", [2, 4])
def test_reduce_scatter_plan(world):
    b = bind(load_program(RS))
    plans = derive_all(b, world) if world == 2 else tuple(
        build_plan("reduce_scatter", r, world, engine="sm", rows=4096, cols=512, depth=256, chunks_per_rank=2,
                   block_m=128, block_n=256, block_k=64) for r in range(world))
    for p in plans:
        owners = [p.chunks[x].owner for x in p.order]
        assert owners[0] == (p.rank + 1) % world and owners[-1] == p.rank  # neighbour first, own last
        assert all(s.src == p.rank and s.dst == p.chunks[s.chunk].owner == s.signal_rank != p.rank
                   for s in p.producer)
        # own chunks (last) wait for every peer's partial tiles of that chunk
        assert {w.chunk for w in p.waits} == {x for x in p.order if p.chunks[x].owner == p.rank}
        assert len(p.waits) == (world - 1) * p.chunks_per_rank
        assert all(s.increment == p.tiles_per_chunk for s in p.producer)
    # every (source, chunk) signal raised by exactly one producer is awaited by the owner
    raised = sorted((s.signal_rank, s.signal) for p in plans for s in p.producer)
    awaited = sorted((p.rank, w.signal) for p in plans for w in p.waits)
    assert raised == awaited and len(set(raised)) == len(raised)


def test_errors_name_the_problem():
    b = bind(load_program(ROOT / "configs" / "gemm_bf16.yaml"))
    with pytest.raises(OverlapError, match="comm stage"):
        derive_overlap(b, 0)
    with pytest.raises(OverlapError, match="multiple of world"):
        derive_overlap(bind(load_program(AG), {"M": 512}), 0, world=4)
    with pytest.raises(OverlapError, match="outside world"):
        derive_overlap(bind(load_program(AG)), 2)
    assert set(COLLECTIVES) == {"all_gather", "reduce_scatter"}


def test_timeline_overlaps_and_trace_loads(tmp_path):
    b = bind(load_program(AG))
    ev = timeline_for(b)
    makespan = predicted_makespan_us(ev)
    comm = sum(e.dur_us for e in ev if e.track == "comm" and e.rank == 0)
    compute = sum(e.dur_us for e in ev if e.track == "compute" and e.rank == 0)
    assert compute <= makespan < compute + comm  # the copies hide behind the local chunks
    # a chunk's GEMM on rank r never starts before the copy that brings it to r ends
    ends = {(int(e.name.split("->")[1].rstrip(")")), e.name.split()[2]): e.start_us + e.dur_us
            for e in ev if e.track == "comm"}
    assert len(ends) == 4  # world 2, 2 chunks per rank: each rank receives 2
    checked = 0
    for e in ev:
        if e.track == "compute" and (e.rank, e.name.split()[2]) in ends:
            assert e.start_us >= ends[(e.rank, e.name.split()[2])]
            checked += 1
    assert checked == len(ends)
    doc = json.loads(chrome_trace(ev, "ag_gemm"))
    xs = [e for e in doc["traceEvents"] if e["ph"] == "X"]
    assert len(xs) == len(ev) and {e["cat"] for e in xs} == {"compute", "comm", "memory"}
    out = tmp_path / "t.json"
    assert main(["plan", str(RS), "--trace", str(out)]) == 0
    assert any(e["cat"] == "comm" for e in json.loads(out.read_text())["traceEvents"] if e["ph"] == "X")
    assert main(["plan", str(ROOT / "configs" / "gemm_bf16.yaml"), "--trace", str(out)]) == 0


@pytest.mark.parametrize("spec,collective", [(AG, "all_gather"), (RS, "reduce_scatter")])
def test_plan_binding_derives_the_plan(spec, collective):
    """A kernel test's small geometry (blocks the search space does not offer) binds the spec for
    the semantics oracle, and the binding derives the very plan."""
    prog = load_program(spec)
    p = build_plan(collective, 1, 3, engine="copy_engine" if collective == "all_gather" else "sm", rows=96, cols=40,
                   depth=24, chunks_per_rank=2, block_m=16, block_n=32, block_k=16)
    b = plan_binding(prog, p)
    assert (b.sizes, b.params["CHUNKS"], b.params["BLOCK_M"]) == ({"M": 96, "N": 40, "K": 24}, 2, 16)
    assert derive_overlap(b, 1, 3) == p
    with pytest.raises(SpecError, match="BLOCK_M=16 is not one of"):
        bind(prog, {"M": 96, "N": 40, "K": 24, "BLOCK_M": 16})  # the schedule's checks still hold by default
    other = RS if spec == AG else AG
    with pytest.raises(OverlapError, match=f"no chunked {collective} stage"):
        plan_binding(load_program(other), p)
