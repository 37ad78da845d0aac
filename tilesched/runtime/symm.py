"""Symmetric buffers: every rank of a torch.distributed group allocates the same-shaped
tensor, and every rank can address every other rank's copy (CUDA IPC, same node)."""

from __future__ import annotations

from tilesched.runtime import cuda_ipc


class SymmetricBuffer:
    """`local` is this rank's torch tensor; `ptrs[r]` the address of rank r's copy as seen
    from this process (ptrs[rank] is local.data_ptr())."""

    def __init__(self, shape, dtype, group=None, fill=None):
        import torch
        import torch.distributed as dist

        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.local = torch.empty(shape, dtype=dtype, device="cuda")
        if fill is not None:
            self.local.fill_(fill)
        torch.cuda.synchronize()
        cuda_ipc.init()
        mine = cuda_ipc.export_handle(self.local.data_ptr())
        handles: list = [None] * self.world
        dist.all_gather_object(handles, mine, group=group)
        self.ptrs: list[int] = []
        self._opened: list[bytes] = []
        for r, (raw, off) in enumerate(handles):
            if r == self.rank:
                self.ptrs.append(self.local.data_ptr())
            else:
                ptr, key = cuda_ipc.open_handle(raw, off)
                self.ptrs.append(ptr)
                self._opened.append(key)
        self.dtype = dtype
        self.shape = tuple(self.local.shape)

    def peer(self, r: int) -> cuda_ipc.PeerPtr:
        """Rank r's copy as a Triton pointer argument."""
        return cuda_ipc.PeerPtr(self.ptrs[r], self.dtype)

    def addr(self, r: int, elem_offset: int = 0) -> int:
        return self.ptrs[r] + elem_offset * self.local.element_size()

    def close(self) -> None:
        for key in self._opened:
            cuda_ipc.close_handle(key)
        self._opened = []
