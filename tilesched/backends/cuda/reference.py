"""Random inputs, poisoned outputs and the float64 numpy reference for a kernel plan."""

from __future__ import annotations

import math

import numpy as np

from tilesched.backends.cuda.plan import KernelPlan, Operand

TORCH_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
# ||out - ref|| / ||ref|| and max|out - ref| / max|ref| bounds by the coarsest dtype involved:
# fp32 dots run as tf32 on the tensor cores, fp16/bf16 round the stored output
TOLERANCE = {"fp32": (2e-3, 1e-2), "fp16": (3e-3, 1e-2), "bf16": (2e-2, 5e-2)}
_RANK = {"fp32": 0, "fp16": 1, "bf16": 2}


def logical_shape(op: Operand, sizes: dict[str, int], axes: dict[str, str]) -> tuple[int, ...]:
    return tuple(sizes[axes[r]] for r in op.axes)


def make_tensor(op: Operand, sizes, axes, gen, device, scale: float = 1.0):
    """A random tensor of `op`'s logical shape, stored as its layout says (col_major: the last two
    axes transposed in memory)."""
    import torch

    shape = logical_shape(op, sizes, axes)
    dt = getattr(torch, TORCH_DTYPES[op.dtype])
    if torch.device(device).type == "cuda":  # draw on the device: host RNG is too slow for GPU sizes
        g = torch.Generator(device=device).manual_seed(int(gen.integers(1 << 62)))
        t = (torch.rand(shape, generator=g, device=device, dtype=torch.float32) * (2 * scale) - scale).to(dt)
    else:
        t = torch.from_numpy(gen.uniform(-scale, scale, size=shape)).to(dt)
    if op.layout == "col_major" and len(shape) >= 2:
        t = t.mT.contiguous().mT  # same values, transposed storage
    return t


def make_inputs(kp: KernelPlan, sizes: dict[str, int], device, seed: int | None = None) -> dict:
    gen = np.random.default_rng(seed)
    k = sizes[kp.axes["k"]]
    ins = {kp.a.name: make_tensor(kp.a, sizes, kp.axes, gen, device),
           kp.b.name: make_tensor(kp.b, sizes, kp.axes, gen, device, scale=math.sqrt(3.0 / k))}
    for op in kp.extra_operands:
        ins[op.name] = make_tensor(op, sizes, kp.axes, gen, device)
    return ins


def poisoned_output(kp: KernelPlan, sizes: dict[str, int], device):
    """NaN everywhere: an element the kernel does not write fails the check."""
    import torch

    shape = logical_shape(kp.c, sizes, kp.axes)
    return torch.full(shape, float("nan"), dtype=getattr(torch, TORCH_DTYPES[kp.c.dtype]), device=device)


def _np(t) -> np.ndarray:
    return t.detach().to("cpu").double().numpy()


def _gelu(x):
    import torch  # float64 erf (numpy has none)

    return 0.5 * x * (1.0 + torch.erf(torch.from_numpy(x / math.sqrt(2.0))).numpy())


_UNARY = {
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.minimum(np.maximum(x, 0.0), 6.0),
    "gelu": _gelu,
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "exp": np.exp,
}


def _broadcast(op: Operand, x: np.ndarray) -> np.ndarray:
    """Give an epilogue operand the (b, m, n) axes of the output tile it broadcasts over."""
    idx = tuple(slice(None) if r in op.axes else None for r in ("b", "m", "n"))
    return x[idx]


_UNARY_TORCH = {
    "relu": lambda x: x.clamp_min(0.0),
    "relu6": lambda x: x.clamp(0.0, 6.0),
    "gelu": lambda x: 0.5 * x * (1.0 + __import__("torch").erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + (math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)).tanh()),
    "silu": lambda x: x * x.sigmoid(),
    "sigmoid": lambda x: x.sigmoid(),
    "tanh": lambda x: x.tanh(),
    "exp": lambda x: x.exp(),
}


def reference(kp: KernelPlan, inputs: dict):
    """float64 result of the whole fused operator: numpy on the CPU; for large CUDA inputs, float64
    torch on the inputs' GPU (the same IEEE float64 arithmetic, without minutes of CPU time)."""
    a, b = inputs[kp.a.name], inputs[kp.b.name]
    on_gpu = a.device.type == "cuda" and a.numel() * b.shape[-1] > 1 << 24
    if on_gpu:
        x = a.double() @ b.double()
        get, unary = (lambda t: t.double()), _UNARY_TORCH
    else:
        x = np.matmul(_np(a), _np(b))
        get, unary = _np, _UNARY
    if not kp.batched:
        x = x[None]
    for op in kp.epilogue:
        if op.operand is not None:
            y = _broadcast(op.operand, get(inputs[op.operand.name]))
            x = x + y if op.fn in ("bias", "add") else x * y
        else:
            x = unary[op.fn](x)
    return x if kp.batched else x[0]


def tolerance(kp: KernelPlan) -> tuple[float, float]:
    worst = max((kp.a.dtype, kp.c.dtype), key=_RANK.__getitem__)
    return TOLERANCE[worst]


def compare(kp: KernelPlan, out, ref: np.ndarray) -> tuple[bool, float, float, str]:
    """(ok, norm-relative error, max-relative error, why) of a kernel output against the reference."""
    if isinstance(ref, np.ndarray):
        got, xp_norm, xp_max = _np(out), (lambda t: float(np.linalg.norm(t))), (lambda t: float(np.max(np.abs(t))))
        finite = np.isfinite(got)
    else:  # torch float64 on the GPU
        got, xp_norm, xp_max = out.double(), (lambda t: float(t.norm())), (lambda t: float(t.abs().max()))
        finite = got.isfinite()
    if tuple(got.shape) != tuple(ref.shape):
        return False, math.inf, math.inf, f"output shape {tuple(got.shape)} != reference {tuple(ref.shape)}"
    n_bad = int((~finite).sum())
    if n_bad:
        return False, math.inf, math.inf, f"{n_bad} of {got.numel() if hasattr(got, 'numel') else got.size} outputs are not finite (unwritten?)"
    scale = xp_norm(ref) or 1.0
    rel = xp_norm(got - ref) / scale
    mx = xp_max(got - ref) / (xp_max(ref) or 1.0)
    tol_norm, tol_max = tolerance(kp)
    ok = rel <= tol_norm and mx <= tol_max
    why = "" if ok else f"error {rel:.2e} (bound {tol_norm:.0e}), max {mx:.2e} (bound {tol_max:.0e})"
    return ok, rel, mx, why
