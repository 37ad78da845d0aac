"""The overlap protocol on the CPU: one process per rank over shared memory, producers and
consumers following the scheduler's plans (see tilesched.runtime.cpusim); what each rank
computed is checked against the semantics oracle run SPMD."""

import pytest

from tests.conftest import ROOT
from tilesched import load_program
from tilesched.backends.cuda.io import retyped
from tilesched.runtime.cpusim import SimOptions, sim_inputs, simulate
from tilesched.schedules.overlap import build_plan, plan_binding
from tilesched.semantics import compare, run_spec_ranks

SPEC = {"all_gather": "ag_gemm", "reduce_scatter": "gemm_rs"}


def plans(collective, world, chunks=2, rows_per_chunk=16, cols=24, depth=20):
    rows = world * chunks * rows_per_chunk
    return tuple(build_plan(collective, r, world, engine="sm", rows=rows, cols=cols, depth=depth,
                            chunks_per_rank=chunks, block_m=8, block_n=8, block_k=8) for r in range(world))


@pytest.mark.parametrize("collective", ["all_gather", "reduce_scatter"])
@pytest.mark.parametrize("world,chunks", [(2, 2), (3, 1), (4, 2)])
def test_protocol_computes_the_collective(collective, world, chunks):
    ps = plans(collective, world, chunks, cols=20)  # 20 columns: a ragged last column tile
    opts = SimOptions(calls=3, lag=(world - 1, 0.05))  # skewed ranks, 3 epochs, both parities
    res = simulate(ps, opts)
    assert res.errors == {}
    assert len(res.outputs) == 3 * world
    # the simulation computes in float64: the spec retyped so, its tolerance, and nearly exact
    b = plan_binding(retyped(load_program(ROOT / "configs" / f"{SPEC[collective]}.yaml"), "bf16", "fp64"), ps[0])
    for call in range(1, 4):
        want = run_spec_ranks(b, world, sim_inputs(ps[0], opts.seed, call))
        for r in range(world):
            v = compare(b.program, "C", res.outputs[(r, call)], want[r]["C"])
            assert v.ok and v.max_error < 1e-12, f"rank {r}, call {call}: {v.why or v.max_error}"
    for p in ps:  # every call consumes (AG) / produces (RS) the chunks in the plan's order
        assert [c for e, c in res.consumed[p.rank] if e == 2] == list(p.order)


@pytest.mark.parametrize("collective", ["all_gather", "reduce_scatter"])
def test_poison_catches_a_consumer_that_skips_its_waits(collective):
    res = simulate(plans(collective, 2), SimOptions(calls=1, skip_waits=True, lag=(1, 0.3)))
    assert "PoisonRead" in {t for t, _ in res.errors.values()}


@pytest.mark.parametrize("collective", ["all_gather", "reduce_scatter"])
def test_watchdog_names_rank_and_chunk(collective):
    ps = plans(collective, 2)
    victim = ps[1].producer[0].chunk  # rank 1's first producer step never happens
    res = simulate(ps, SimOptions(calls=1, drop=(1, victim), max_spin_s=0.3))
    waiter = ps[1].producer[0].dst  # the rank the dropped chunk was for
    kind, msg = res.errors[waiter]
    assert kind == "SignalTimeout"
    assert msg.startswith(f"rank {waiter}: timed out waiting for chunk {victim}")
