"""Convolution geometry, shared by the checks, the oracle and the schedules."""

from __future__ import annotations


def pads(padding: int | str, n_in: int, k: int, stride: int) -> tuple[int, int, int]:
    """(pad before, pad after, output size) along one axis. An integer pads both sides equally;
    "same" is TFLite's SAME: output ceil(n / stride), the odd padding row or column at the end."""
    if padding == "same":
        out = -(-n_in // stride)
        total = max((out - 1) * stride + k - n_in, 0)
        return total // 2, total - total // 2, out
    p = int(padding)
    return p, p, (n_in + 2 * p - k) // stride + 1


def window(stage, x_shape: tuple[str, ...], sizes) -> tuple[int, int]:
    """(KH, KW) of a convolution or pooling stage: its `kernel`, or for an average pooling without one
    the whole input (global pooling)."""
    if stage.kernel is not None:
        return tuple(stage.kernel)
    return sizes[x_shape[0]], sizes[x_shape[1]]
