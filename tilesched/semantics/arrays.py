"""The array operations the semantics oracle needs, over numpy or torch.

The oracle's float path is written once against this small namespace, so the same
definition runs in numpy float64 on the CPU and in torch float64 on a GPU (for benchmark
shapes, where a CPU float64 reference would take minutes). Integer (quantised) semantics are
numpy int64 only: they are exact and run at MCU sizes."""

from __future__ import annotations

import math

import numpy as np

_ERF = np.frompyfunc(math.erf, 1, 1)  # numpy has no erf; math.erf is the C library's, in float64


class NumpyOps:
    name = "numpy"

    def asarray(self, x):
        return np.asarray(x, dtype=np.float64)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    def zeros(self, shape):
        return np.zeros(shape, dtype=np.float64)

    def einsum(self, spec: str, *xs):
        return np.einsum(spec, *xs, optimize=True)

    def transpose(self, x, perm):
        return np.transpose(x, perm)

    def expand(self, x, index):
        return x[index]

    def erf(self, x):
        return _ERF(np.asarray(x, dtype=np.float64)).astype(np.float64)

    exp = staticmethod(np.exp)
    exp2 = staticmethod(np.exp2)
    log = staticmethod(np.log)
    sqrt = staticmethod(np.sqrt)
    tanh = staticmethod(np.tanh)
    abs = staticmethod(np.abs)
    maximum = staticmethod(np.maximum)
    minimum = staticmethod(np.minimum)

    def reduce(self, how: str, x, axis: int):
        return {"sum": np.sum, "max": np.max, "min": np.min, "mean": np.mean}[how](x, axis=axis)

    def seterr(self):
        return np.errstate(all="ignore")

    def repeat(self, x, n: int, axis: int):
        return np.repeat(x, n, axis=axis)

    def where(self, cond: np.ndarray, x, y):
        """`cond` a numpy bool array (broadcast), x/y arrays or numbers."""
        return np.where(cond, x, y)

    def isfinite(self, x):
        return np.isfinite(x)


class TorchOps:
    """float64 torch on the tensors' device."""

    name = "torch"

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = device

    def asarray(self, x):
        t = self.torch
        if isinstance(x, t.Tensor):
            return x.to(self.device, t.float64)
        return t.as_tensor(np.asarray(x, dtype=np.float64), device=self.device)

    def to_numpy(self, x) -> np.ndarray:
        return x.detach().cpu().numpy() if isinstance(x, self.torch.Tensor) else np.asarray(x)

    def zeros(self, shape):
        return self.torch.zeros(shape, dtype=self.torch.float64, device=self.device)

    def einsum(self, spec: str, *xs):
        return self.torch.einsum(spec, *xs)

    def transpose(self, x, perm):
        return x.permute(*perm)

    def expand(self, x, index):
        return x[index]

    def erf(self, x):
        return self.torch.special.erf(x)

    def exp(self, x):
        return self.torch.exp(x)

    def exp2(self, x):
        return self.torch.exp2(x)

    def log(self, x):
        return self.torch.log(x)

    def sqrt(self, x):
        return self.torch.sqrt(x)

    def tanh(self, x):
        return self.torch.tanh(x)

    def abs(self, x):
        return self.torch.abs(x)

    def maximum(self, x, y):
        return self.torch.maximum(x, self.asarray(y) if not isinstance(y, self.torch.Tensor) else y)

    def minimum(self, x, y):
        return self.torch.minimum(x, self.asarray(y) if not isinstance(y, self.torch.Tensor) else y)

    def reduce(self, how: str, x, axis: int):
        t = self.torch
        if how == "sum":
            return x.sum(dim=axis)
        if how == "mean":
            return x.mean(dim=axis)
        return (t.amax if how == "max" else t.amin)(x, dim=axis)

    def seterr(self):
        import contextlib

        return contextlib.nullcontext()

    def repeat(self, x, n: int, axis: int):
        return x.repeat_interleave(n, dim=axis)

    def where(self, cond, x, y):
        t = self.torch
        if not isinstance(cond, t.Tensor):
            cond = t.as_tensor(np.asarray(cond), device=self.device)
        x = x if isinstance(x, t.Tensor) else t.tensor(float(x), dtype=t.float64, device=self.device)
        y = y if isinstance(y, t.Tensor) else t.tensor(float(y), dtype=t.float64, device=self.device)
        return t.where(cond, x, y)

    def isfinite(self, x):
        return self.torch.isfinite(x)


NUMPY = NumpyOps()
