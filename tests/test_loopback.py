"""The loopback group matches symmetric buffers across ranks by creation order, as
all_gather_object does across processes (the GPU side is tests/test_overlap_gpu.py)."""

import pytest

from tilesched.runtime.loopback import LoopbackGroup


def test_buffers_match_by_creation_order_whatever_the_rank_order():
    g = LoopbackGroup(3)
    first = [g.exchange(r, 100 + r) for r in (2, 0)]  # ranks 2 and 0 create their first buffer
    assert first[0] is first[1] and first[0] == [100, None, 102]
    second = g.exchange(0, 200)  # rank 0 goes on to its second buffer
    assert second == [200, None, None] and second is not first[0]
    g.exchange(1, 101)
    assert first[0] == [100, 101, 102]
    assert g.member(1).world == 3 and g.member(1).rank == 1


@pytest.mark.parametrize("world,rank", [(0, 0), (2, 2), (2, -1)])
def test_bad_world_or_rank_is_named(world, rank):
    with pytest.raises(ValueError, match="world|rank"):
        LoopbackGroup(world).member(rank)
