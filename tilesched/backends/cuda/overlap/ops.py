"""AllGather+GEMM and GEMM+ReduceScatter on the GPUs of one node, driven by the plans of
`tilesched.schedules.overlap` (one process per GPU, torch.distributed group for bootstrap).

AllGather+GEMM (pull, copy engine): a rank stages its shard in its half of the symmetric
gathered buffer and raises its `ready` flag; a side stream waits for each peer's `ready`,
copies the peer's chunks over NVLink (cuMemcpyAsync, copy engine) and raises the local
flag of each chunk (cuStreamWriteValue32); the GEMM starts at once on the local chunks and
each program waits on its chunk's flag.

GEMM+ReduceScatter (push, SMs): the GEMM stores each tile of partial sums into the owner's
receive slot and counts it on the owner's signal; the owner's reduce kernel sums a chunk
once every source's count is complete.

Buffers alternate by call parity, so call e+1 never overwrites what call e still reads
(a rank cannot run two calls ahead of a peer: each call waits on every peer's signals).
Signals are epoch counters, never reset.
"""

from __future__ import annotations

import warnings

from tilesched.backends.cuda.overlap import launch as L
from tilesched.backends.cuda.overlap.render import load, render
from tilesched.runtime import cuda_ipc
from tilesched.runtime.symm import SymmetricBuffer
from tilesched.runtime.watchdog import check_status
from tilesched.schedules.overlap import OverlapPlan

DEFAULT_MAX_SPIN = 1 << 26  # polls before a wait reports a timeout (seconds on a GPU)


class _Op:
    def __init__(self, plan: OverlapPlan, program: str, group, cfg: L.LaunchConfig, max_spin: int):
        import torch

        self.torch = torch
        self.plan, self.group, self.cfg, self.max_spin = plan, group, cfg, max_spin
        self.mod = load(render(plan, program))
        self.order = torch.tensor(plan.order, dtype=torch.int32, device="cuda")
        self.status = torch.zeros(L.STATUS_WORDS, dtype=torch.int32, device="cuda")
        self.epoch = 0
        self.rows_per_rank = plan.rows // plan.world

    def check(self) -> None:
        """Synchronise and raise SignalTimeout if any wait of this rank timed out."""
        self.torch.cuda.synchronize()
        check_status(self.status, self.plan.collective)


class AllGatherGemm(_Op):
    """C[M, N] = all_gather(A_shard)[M, K] @ B[K, N]."""

    def __init__(self, plan: OverlapPlan, group=None, program: str = "ag_gemm", cfg: L.LaunchConfig = L.DEFAULT,
                 max_spin: int = DEFAULT_MAX_SPIN):
        if plan.collective != "all_gather" or plan.engine != "copy_engine":
            raise ValueError(f"AllGatherGemm runs all_gather plans on the copy engine, got {plan.collective} "
                             f"on {plan.engine} (an SM-driven gather is not implemented)")
        super().__init__(plan, program, group, cfg, max_spin)
        t = self.torch
        self.a_full = SymmetricBuffer((2, plan.rows, plan.depth), t.bfloat16, group)
        self.ready = SymmetricBuffer((2,), t.int32, group, fill=0)
        self.flags = t.zeros(plan.n_signals, dtype=t.int32, device="cuda")
        # High priority: when SMs free up, the side stream's one-program wait on a peer's
        # `ready` flag is scheduled before more of the GEMM's spinning programs (which
        # would otherwise hold every SM while waiting for the copies that wait gates).
        self.side = t.cuda.Stream(priority=-1)
        self.own = [c for c in plan.chunks if c.owner == plan.rank]
        sms = t.cuda.get_device_properties(t.cuda.current_device()).multi_processor_count
        if plan.chunks_per_rank * plan.tiles_per_chunk < sms:
            # The side stream's ready-wait needs an SM; with fewer local tiles than SMs the
            # GEMM's spinning programs can hold them all until the wait's poll bound expires.
            warnings.warn(f"rank {plan.rank}: {plan.chunks_per_rank * plan.tiles_per_chunk} local tiles < {sms} SMs: "
                          "the copy gate may be starved (use smaller tiles or more rows per rank)", stacklevel=2)
        t.cuda.synchronize()

    def __call__(self, a_shard, b, out=None):
        t, p = self.torch, self.plan
        self.epoch += 1
        e, par = self.epoch, self.epoch % 2
        main = t.cuda.current_stream()
        lo = p.rank * self.rows_per_rank
        full = self.a_full.local[par]
        full[lo:lo + self.rows_per_rank].copy_(a_shard)
        cuda_ipc.write_value32(self.ready.addr(p.rank, par), e, main.cuda_stream)
        for c in self.own:
            cuda_ipc.write_value32(self.flags.data_ptr() + 4 * c.id, e, main.cuda_stream)
        self.side.wait_stream(main)
        row_bytes = p.depth * full.element_size()
        base = par * p.rows
        with t.cuda.stream(self.side):
            waited = set()
            for s in p.producer:
                if s.src not in waited:  # the peer's shard for this call is staged
                    L.wait(self.mod, cuda_ipc.PeerPtr(self.ready.addr(s.src, par), t.int32), e, self.status,
                           p.rank, s.chunk, self.max_spin)
                    waited.add(s.src)
                c = p.chunks[s.chunk]
                off = (base + c.row_start) * row_bytes
                cuda_ipc.memcpy_async(self.a_full.ptrs[p.rank] + off, self.a_full.ptrs[s.src] + off,
                                      (c.row_stop - c.row_start) * row_bytes, self.side.cuda_stream)
                cuda_ipc.write_value32(self.flags.data_ptr() + 4 * s.signal, e, self.side.cuda_stream)
        if out is None:
            out = t.empty((p.rows, p.cols), dtype=b.dtype, device="cuda")
        L.ag_gemm(self.mod, p, full, b, out, self.flags, self.order, self.status, e, self.max_spin, self.cfg)
        main.wait_stream(self.side)
        return out

    def gemm_only(self, a_full, b, out):
        """The same consumer kernel with every chunk present (no communication): the
        GEMM-alone time of the overlap efficiency."""
        t = self.torch
        if not hasattr(self, "_all_set"):
            self._all_set = t.full((self.plan.n_signals,), 1 << 30, dtype=t.int32, device="cuda")
        L.ag_gemm(self.mod, self.plan, a_full, b, out, self._all_set, self.order, self.status, 1, self.max_spin,
                  self.cfg)
        return out


class GemmReduceScatter(_Op):
    """C_shard[M / world, N] = reduce_scatter(A[M, K] @ B[K, N]) over rows."""

    def __init__(self, plan: OverlapPlan, group=None, program: str = "gemm_rs",
                 cfg: L.LaunchConfig = L.DEFAULT, max_spin: int = DEFAULT_MAX_SPIN):
        if plan.collective != "reduce_scatter" or plan.engine != "sm":
            raise ValueError(f"GemmReduceScatter runs reduce_scatter plans on SMs, got {plan.collective} "
                             f"on {plan.engine} (a copy-engine reduce-scatter is not implemented)")
        super().__init__(plan, program, group, cfg, max_spin)
        t = self.torch
        self.recv = SymmetricBuffer((2, plan.world, self.rows_per_rank, plan.cols), t.bfloat16, group)
        self.sig = SymmetricBuffer((plan.n_signals,), t.int32, group, fill=0)
        t.cuda.synchronize()

    def __call__(self, a, b, out=None):
        t, p = self.torch, self.plan
        self.epoch += 1
        e, par = self.epoch, self.epoch % 2
        slot_bytes = p.world * self.rows_per_rank * p.cols * 2
        recvs = [cuda_ipc.PeerPtr(self.recv.ptrs[d] + par * slot_bytes, t.bfloat16) for d in range(p.world)]
        sigs = [self.sig.peer(d) for d in range(p.world)]
        L.gemm_rs(self.mod, p, a, b, self.order, recvs, sigs, self.cfg)
        if out is None:
            out = t.empty((self.rows_per_rank, p.cols), dtype=t.bfloat16, device="cuda")
        L.rs_reduce(self.mod, p, self.recv.local[par], self.sig.local, out, self.status, e * p.tiles_per_chunk,
                    self.max_spin, self.cfg)
        return out
