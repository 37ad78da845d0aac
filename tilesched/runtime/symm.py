"""Symmetric buffers: every rank of a torch.distributed group allocates the same-shaped
tensor, and every rank can address every other rank's copy (CUDA IPC, same node; or, for
a `LoopbackRank`, ranks simulated in one process on one GPU)."""

from __future__ import annotations

from tilesched.runtime import cuda_ipc
from tilesched.runtime.loopback import LoopbackRank


class SymmetricBuffer:
    """`local` is this rank's torch tensor; `ptrs[r]` the address of rank r's copy as seen
    from this process (ptrs[rank] is local.data_ptr())."""

    def __init__(self, shape, dtype, group=None, fill=None):
        import torch

        self.group = group
        self.dtype = dtype
        self.local = torch.empty(shape, dtype=dtype, device="cuda")
        self.shape = tuple(self.local.shape)
        self._opened: list[bytes] = []
        if fill is not None:
            self.local.fill_(fill)
        torch.cuda.synchronize()
        cuda_ipc.init()
        if isinstance(group, LoopbackRank):
            self.rank, self.world = group.rank, group.world
            self._ptrs = group.group.exchange(self.rank, self.local.data_ptr())
            return
        import torch.distributed as dist

        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        mine = cuda_ipc.export_handle(self.local.data_ptr())
        handles: list = [None] * self.world
        dist.all_gather_object(handles, mine, group=group)
        self._ptrs: list[int | None] = []
        for r, (raw, off) in enumerate(handles):
            if r == self.rank:
                self._ptrs.append(self.local.data_ptr())
            else:
                ptr, key = cuda_ipc.open_handle(raw, off)
                self._ptrs.append(ptr)
                self._opened.append(key)

    @property
    def ptrs(self) -> list[int]:
        """Every rank's copy, as addresses in this process."""
        missing = [r for r, p in enumerate(self._ptrs) if p is None]
        if missing:
            raise RuntimeError(f"rank {self.rank}: ranks {missing} have not created this symmetric buffer yet "
                               "(in a loopback group, create every rank's op before calling one)")
        return self._ptrs

    def peer(self, r: int) -> cuda_ipc.PeerPtr:
        """Rank r's copy as a Triton pointer argument."""
        return cuda_ipc.PeerPtr(self.ptrs[r], self.dtype)

    def addr(self, r: int, elem_offset: int = 0) -> int:
        return self.ptrs[r] + elem_offset * self.local.element_size()

    def close(self) -> None:
        for key in self._opened:
            cuda_ipc.close_handle(key)
        self._opened = []
