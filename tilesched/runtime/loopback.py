"""All ranks of a node in one process on one GPU: a stand-in for a torch.distributed
group, so the overlap ops run their real kernels, streams and signals where only one GPU
is at hand (each rank's kernels on its own stream, each kernel given a share of the SMs
so that every rank's persistent programs are resident at once).

Symmetric buffers are matched across ranks by the order in which each rank creates them,
as `all_gather_object` matches them across processes."""

from __future__ import annotations


class LoopbackGroup:
    def __init__(self, world: int):
        if world < 1:
            raise ValueError(f"a loopback group needs at least one rank, got world={world}")
        self.world = world
        self._exchanges: list[list[int | None]] = []
        self._created = [0] * world

    def member(self, rank: int) -> LoopbackRank:
        if not 0 <= rank < self.world:
            raise ValueError(f"rank {rank} is outside the loopback group of world {self.world}")
        return LoopbackRank(self, rank)

    def exchange(self, rank: int, ptr: int) -> list[int | None]:
        """Publish this rank's address of its next symmetric buffer; the returned list fills
        in as the other ranks create theirs."""
        i = self._created[rank]
        self._created[rank] += 1
        if i == len(self._exchanges):
            self._exchanges.append([None] * self.world)
        self._exchanges[i][rank] = ptr
        return self._exchanges[i]


class LoopbackRank:
    """One rank's view of a LoopbackGroup (what a process group is to one process)."""

    def __init__(self, group: LoopbackGroup, rank: int):
        self.group, self.rank = group, rank

    @property
    def world(self) -> int:
        return self.group.world
