"""Thin, checked wrappers over the CUDA driver API (cuda-python) used by the runtime."""

from __future__ import annotations

import ctypes

IPC_HANDLE_BYTES = 64


def _driver():
    from cuda.bindings import driver

    return driver


class CudaError(RuntimeError):
    pass


def check(result, what: str):
    """cuda-python returns (CUresult, *values): raise on error, return the value(s)."""
    err, *vals = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        d = _driver()
        _, name = d.cuGetErrorName(err)
        raise CudaError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name} ({int(err)})")
    if not vals:
        return None
    return vals[0] if len(vals) == 1 else tuple(vals)


def init() -> None:
    check(_driver().cuInit(0), "cuInit")


def base_and_offset(ptr: int) -> tuple[int, int]:
    """The allocation holding `ptr` and the offset into it (IPC handles name allocations)."""
    d = _driver()
    base, _size = check(d.cuMemGetAddressRange(d.CUdeviceptr(ptr)), "cuMemGetAddressRange")
    return int(base), ptr - int(base)


def export_handle(ptr: int) -> tuple[bytes, int]:
    """(IPC handle bytes of ptr's allocation, offset of ptr in it): picklable."""
    d = _driver()
    base, off = base_and_offset(ptr)
    h = check(d.cuIpcGetMemHandle(d.CUdeviceptr(base)), "cuIpcGetMemHandle")
    return ctypes.string_at(h.getPtr(), IPC_HANDLE_BYTES), off


# Two tensors of one caching-allocator segment share a handle: map each handle once and
# count its users.
_opened: dict[bytes, list[int]] = {}


def open_handle(raw: bytes, offset: int) -> tuple[int, bytes]:
    """Map a peer's allocation: (pointer to the exported address, key to close it later)."""
    if raw not in _opened:
        d = _driver()
        h = d.CUipcMemHandle()
        ctypes.memmove(h.getPtr(), raw, IPC_HANDLE_BYTES)
        base = check(d.cuIpcOpenMemHandle(h, d.CUipcMem_flags.CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS),
                     "cuIpcOpenMemHandle")
        _opened[raw] = [int(base), 0]
    _opened[raw][1] += 1
    return _opened[raw][0] + offset, raw


def close_handle(key: bytes) -> None:
    entry = _opened[key]
    entry[1] -= 1
    if entry[1] == 0:
        d = _driver()
        del _opened[key]
        check(d.cuIpcCloseMemHandle(d.CUdeviceptr(entry[0])), "cuIpcCloseMemHandle")


def memcpy_async(dst: int, src: int, nbytes: int, stream: int) -> None:
    """Copy over UVA on `stream`: between GPUs this runs on the copy engine over NVLink."""
    d = _driver()
    check(d.cuMemcpyAsync(d.CUdeviceptr(dst), d.CUdeviceptr(src), nbytes, d.CUstream(stream)), "cuMemcpyAsync")


def write_value32(addr: int, value: int, stream: int) -> None:
    """Set a 32-bit flag from the stream, after all earlier work on it, with a memory fence
    before the write (the default flag) so the data it announces is visible first."""
    d = _driver()
    check(d.cuStreamWriteValue32(d.CUstream(stream), d.CUdeviceptr(addr), d.cuuint32_t(value),
                                 d.CUstreamWriteValue_flags.CU_STREAM_WRITE_VALUE_DEFAULT), "cuStreamWriteValue32")


class PeerPtr:
    """A raw device pointer Triton accepts as a tensor argument (data_ptr + dtype)."""

    def __init__(self, ptr: int, dtype):
        self._ptr, self.dtype = int(ptr), dtype

    def data_ptr(self) -> int:
        return self._ptr
