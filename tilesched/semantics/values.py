"""Values of the semantics oracle: whole tensors over named axes, with their quantisation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tilesched.ir.dtypes import FLOAT
from tilesched.semantics.quant import f32


@dataclass(frozen=True)
class QInfo:
    """real = scale * (q - zero_point); `scale` a float, or a 1-D array along `axis` (per channel)."""

    scale: float | np.ndarray
    zero_point: int = 0
    axis: str | None = None

    def same_as(self, other: QInfo | None) -> bool:
        return (other is not None and self.zero_point == other.zero_point and self.axis == other.axis
                and np.array_equal(np.asarray(self.scale), np.asarray(other.scale)))

    def scale_along(self, axes: tuple[str, ...]):
        """The scale broadcastable over data with `axes`."""
        if self.axis is None:
            return self.scale
        shape = [1] * len(axes)
        shape[axes.index(self.axis)] = -1
        return np.asarray(self.scale).reshape(shape)

    @property
    def per_tensor(self) -> bool:
        return self.axis is None


@dataclass(frozen=True)
class Value:
    """A whole tensor: float64 data (numpy or torch) for float dtypes, numpy int64 for integers."""

    data: object
    axes: tuple[str, ...]
    dtype: str
    quant: QInfo | None = None

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT


def declared_quant(tensor, sizes: dict[str, int]) -> QInfo | None:
    """The spec's `quant` of a tensor, as a QInfo (float32 scales, as a .tflite file holds them)."""
    q = tensor.quant
    if q is None:
        return None
    if isinstance(q.scale, list):
        if q.axis is None:
            if len(q.scale) != 1:
                raise ValueError(f"tensor {tensor.name}: a list of scales needs `quant.axis`")
            return QInfo(f32(q.scale[0]), int(q.zero_point))
        n = sizes[q.axis]
        if len(q.scale) not in (1, n):
            raise ValueError(f"tensor {tensor.name}: {len(q.scale)} scales for axis {q.axis} of size {n}")
        scales = np.asarray(f32(q.scale * (n if len(q.scale) == 1 else 1)), dtype=np.float64)
        return QInfo(scales, int(q.zero_point), q.axis)
    return QInfo(f32(q.scale), int(q.zero_point))


def align(xp, v: Value, axes: tuple[str, ...]):
    """`v`'s data with its axes in the order of `axes` (axes it lacks broadcast)."""
    present = [a for a in axes if a in v.axes]
    data = v.data
    perm = [v.axes.index(a) for a in present]
    if perm != list(range(len(perm))):
        data = xp.transpose(data, perm) if v.is_float else np.transpose(data, perm)
    if len(present) == len(axes):
        return data
    index = tuple(slice(None) if a in v.axes else None for a in axes)
    return data[index]
