"""The overlap protocol on the CPU: one process per rank over shared memory, producers and
consumers following the scheduler's plans (see tilesched.runtime.cpusim)."""

import pytest

from tilesched.runtime.cpusim import SimOptions, simulate
from tilesched.schedules.overlap import build_plan


def plans(collective, world, chunks=2, rows_per_chunk=16, cols=24, depth=20):
    rows = world * chunks * rows_per_chunk
    return tuple(build_plan(collective, r, world, engine="sm", rows=rows, cols=cols, depth=depth,
                            chunks_per_rank=chunks, block_m=8, block_n=8, block_k=8) for r in range(world))


@pytest.mark.parametrize("collective", ["all_gather", "reduce_scatter"])
@pytest.mark.parametrize("world,chunks", [(2, 2), (3, 1), (4, 2)])
def test_protocol_computes_the_collective(collective, world, chunks):
    ps = plans(collective, world, chunks, cols=20)  # 20 columns: a ragged last column tile
    res = simulate(ps, SimOptions(calls=3, lag=(world - 1, 0.05)))  # skewed ranks, 3 epochs, both parities
    assert res.errors == {}
    assert len(res.rel_err) == 3 * world and max(res.rel_err.values()) < 1e-12
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
