"""Run every rank of an overlap op in one process on one GPU (see
`tilesched.runtime.loopback`): each rank's calls go to its own stream and its persistent
kernel gets `sms_per_rank` programs, so all ranks' programs are resident together and
their waits are answered by the other ranks' real producers."""

from __future__ import annotations

from dataclasses import replace

from tilesched.backends.cuda.overlap import launch as L
from tilesched.backends.cuda.overlap.ops import AllGatherGemm, GemmReduceScatter
from tilesched.runtime.loopback import LoopbackGroup
from tilesched.schedules.overlap import OverlapPlan

OP_OF = {"all_gather": AllGatherGemm, "reduce_scatter": GemmReduceScatter}


def default_sms_per_rank(world: int) -> int:
    """An equal share of the SMs per rank, one share left for copies and other streams."""
    import torch

    return max(1, torch.cuda.get_device_properties(0).multi_processor_count // (world + 1))


class LoopbackNode:
    """`ops[r]` is rank r's op; `call(args)` launches every rank's call (args[r]) on its stream."""

    def __init__(self, plans: list[OverlapPlan], cfg: L.LaunchConfig = L.DEFAULT, max_spin: int | None = None,
                 sms_per_rank: int | None = None):
        import torch

        self.torch = torch
        world = len(plans)
        if sorted(p.rank for p in plans) != list(range(world)) or any(p.world != world for p in plans):
            raise ValueError(f"a loopback node needs one plan per rank 0..{world - 1} of world {world}")
        cfg = replace(cfg, num_sms=sms_per_rank or cfg.num_sms or default_sms_per_rank(world))
        group = LoopbackGroup(world)
        extra = {} if max_spin is None else {"max_spin": max_spin}
        plans = sorted(plans, key=lambda p: p.rank)
        self.ops = [OP_OF[p.collective](p, group=group.member(p.rank), cfg=cfg, **extra) for p in plans]
        self.streams = [torch.cuda.Stream() for _ in plans]

    def call(self, args) -> list:
        """Launch every rank's call after the work queued so far; returns their outputs
        (complete once `synchronize` returns)."""
        t = self.torch
        now = t.cuda.current_stream()
        outs = []
        for op, s, a in zip(self.ops, self.streams, args):
            s.wait_stream(now)
            with t.cuda.stream(s):
                outs.append(op(*a))
        for s in self.streams:
            now.wait_stream(s)
        return outs

    def check(self) -> None:
        """Synchronise and raise the first rank's SignalTimeout, if any wait timed out."""
        for op in self.ops:
            op.check()
