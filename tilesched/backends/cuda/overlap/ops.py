"""AllGather+GEMM and GEMM+ReduceScatter on the GPUs of one node, driven by the plans of
`tilesched.schedules.overlap` (one process per GPU, torch.distributed group for bootstrap).

AllGather+GEMM (push, copy engine): a side stream copies this rank's shard, chunk by chunk,
into every peer's symmetric gathered buffer over NVLink (cuMemcpyAsync: the copy engine,
no SM) and raises the chunk's flag on that peer (cuStreamWriteValue32, fenced after the
copy). The GEMM starts at once on the rank's own chunks, read straight from the shard;
programs reaching a remote chunk wait on its flag.

GEMM+ReduceScatter (push, SMs): the GEMM stores each tile of a peer's chunk into the
owner's receive slot and counts it on the owner's signal; the tiles of the rank's own
chunks come last, and their epilogue waits for the peers' counts, adds the received
partial tiles and stores the result (no separate reduce kernel).

Buffers alternate by call parity, so call e + 2 never overwrites what call e still reads:
a rank's producer for call e + 2 starts after its GEMM of call e + 1, which needed every
peer's data of call e + 1, which each peer sent only after finishing its GEMM of call e.
Signals are epoch counters, never reset.
"""

from __future__ import annotations

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

    def _checked(self, name, t, shape):
        if tuple(t.shape) != tuple(shape) or t.dtype != self.torch.bfloat16 or not t.is_contiguous():
            raise ValueError(f"{self.plan.collective} rank {self.plan.rank}: {name} must be a contiguous bf16 "
                             f"tensor of shape {tuple(shape)}, got {t.dtype} {tuple(t.shape)} "
                             f"strides {tuple(t.stride())}")
        return t


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
        self.flags = SymmetricBuffer((plan.n_signals,), t.int32, group, fill=0)
        self.side = t.cuda.Stream()
        t.cuda.synchronize()

    def __call__(self, a_shard, b, out=None):
        t, p = self.torch, self.plan
        self._checked("a_shard", a_shard, (self.rows_per_rank, p.depth))
        self._checked("b", b, (p.depth, p.cols))
        self.epoch += 1
        e, par = self.epoch, self.epoch % 2
        main = t.cuda.current_stream()
        self.side.wait_stream(main)  # the shard is written, and this rank's previous GEMM is done
        row_bytes = p.depth * a_shard.element_size()
        lo = p.rank * self.rows_per_rank
        slot = par * p.rows * row_bytes
        for s in p.producer:  # push own chunks to the peers, neighbour r-1 first
            c = p.chunks[s.chunk]
            cuda_ipc.memcpy_async(self.a_full.ptrs[s.dst] + slot + c.row_start * row_bytes,
                                  a_shard.data_ptr() + (c.row_start - lo) * row_bytes,
                                  (c.row_stop - c.row_start) * row_bytes, self.side.cuda_stream)
            cuda_ipc.write_value32(self.flags.addr(s.signal_rank, s.signal), e, self.side.cuda_stream)
        if out is None:
            out = t.empty((p.rows, p.cols), dtype=b.dtype, device="cuda")
        self._checked("out", out, (p.rows, p.cols))
        L.ag_gemm(self.mod, p, a_shard, self.a_full.local[par], b, out, self.flags.local, self.order, self.status, e,
                  self.max_spin, self.cfg)
        main.wait_stream(self.side)  # a_shard stays alive and unchanged until the pushes are done
        return out

    def gemm_only(self, a_full, b, out):
        """The same consumer kernel with every chunk present (no communication): the
        GEMM-alone time of the overlap efficiency."""
        t, p = self.torch, self.plan
        if not hasattr(self, "_all_set"):
            self._all_set = t.full((p.n_signals,), 1 << 30, dtype=t.int32, device="cuda")
        lo = p.rank * self.rows_per_rank
        L.ag_gemm(self.mod, p, a_full[lo:lo + self.rows_per_rank], a_full, b, out, self._all_set, self.order,
                  self.status, 1, self.max_spin, self.cfg)
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
        self._checked("a", a, (p.rows, p.depth))
        self._checked("b", b, (p.depth, p.cols))
        self.epoch += 1
        e, par = self.epoch, self.epoch % 2
        slot_bytes = p.world * self.rows_per_rank * p.cols * 2
        recvs = [cuda_ipc.PeerPtr(self.recv.ptrs[d] + par * slot_bytes, t.bfloat16) for d in range(p.world)]
        sigs = [self.sig.peer(d) for d in range(p.world)]
        if out is None:
            out = t.empty((self.rows_per_rank, p.cols), dtype=t.bfloat16, device="cuda")
        self._checked("out", out, (self.rows_per_rank, p.cols))
        L.gemm_rs(self.mod, p, a, b, out, self.order, self.recv.local[par], self.sig.local, recvs, sigs, self.status,
                  e, self.max_spin, self.cfg)
        return out

    def gemm_only(self, a, b, out):
        """The same kernel with every peer's count already in place and every partial tile
        kept in this rank's own receive buffer (no communication): the GEMM-alone time of
        the overlap efficiency. `out` gets this rank's partial sums plus whatever the
        receive buffer holds: a timing, not a result."""
        t, p = self.torch, self.plan
        if not hasattr(self, "_alone"):
            self._alone = (t.full((p.n_signals,), 1 << 30, dtype=t.int32, device="cuda"),
                           t.zeros((p.n_signals,), dtype=t.int32, device="cuda"))
        counted, scratch = self._alone
        recv = self.recv.local[0]
        L.gemm_rs(self.mod, p, a, b, out, self.order, recv, counted, [recv] * p.world, [scratch] * p.world,
                  self.status, 1, self.max_spin, self.cfg)
        return out
