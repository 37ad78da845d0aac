"""Device buffers generated kernels keep between calls.

Split-K counts the shares of each output tile that have finished in an int32 counter; the last
share resets it, so the counters are zero between calls and need no clearing per call (a clearing
kernel would cost as much as a decode-sized GEMM). One set per device and stream: kernels on two
streams may run at once and must not count into each other's tiles.
"""

from __future__ import annotations

_COUNTERS: dict = {}


def arrival_counters(device, tiles: int):
    """Zeroed int32 counters, at least `tiles` of them, for the current stream of `device`."""
    import torch

    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (str(device), stream)
    have = _COUNTERS.get(key)
    if have is None or have.numel() < tiles:
        size = 1 << max(tiles - 1, 255).bit_length()  # powers of two from 256: few reallocations
        have = torch.zeros(size, dtype=torch.int32, device=device)
        _COUNTERS[key] = have
    return have
