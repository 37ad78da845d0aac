"""torch tensors for a spec's inputs and outputs: the oracle's numpy values moved to a device in
the spec's dtypes and layouts, poisoned outputs, and the check of a kernel's outputs against the
semantics oracle (tilesched.semantics)."""

from __future__ import annotations

import numpy as np

from tilesched.ir.bind import Binding
from tilesched.ir.nodes import TensorIR
from tilesched.ir.storage import storage_dtype
from tilesched.semantics import Verdict, compare, poison_value

TORCH_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32", "fp64": "float64", "int8": "int8",
                "uint8": "uint8", "int16": "int16", "int32": "int32", "fp8e4m3": "float8_e4m3fn",
                "fp8e5m2": "float8_e5m2"}


def retyped(program, old: str, new: str):
    """The same program with every `old` tensor dtype replaced by `new` (bf16 -> fp32 for the
    Triton interpreter, whose bf16 dots are not trustworthy)."""
    tensors = tuple(t.model_copy(update={"dtype": new}) if t.dtype == old else t for t in program.tensors)
    return program.model_copy(update={"tensors": tensors})


def torch_dtype(dtype: str):
    import torch

    return getattr(torch, TORCH_DTYPES[dtype])


def storage_torch_dtype(tensor: TensorIR):
    """The torch dtype a caller passes for `tensor`: int32 words when packed (tilesched.ir.storage)."""
    return torch_dtype(storage_dtype(tensor))


def to_device(tensor: TensorIR, values, device):
    """A value in the spec's axis order (as stored: grouped, packed; see tilesched.ir.storage) as a
    torch tensor of the storage dtype, laid out as `layout` says (col_major: the last two axes
    transposed in memory, same values)."""
    import torch

    if not isinstance(values, torch.Tensor):
        values = np.asarray(values)  # (np.ascontiguousarray would make a 0-d scale 1-d)
        values = values if values.flags.c_contiguous else values.copy(order="C")
    t = values if isinstance(values, torch.Tensor) else torch.from_numpy(values)
    t = t.to(device=device, dtype=storage_torch_dtype(tensor))
    if tensor.layout == "col_major" and t.dim() >= 2:
        t = t.mT.contiguous().mT
    return t


def poisoned(tensor: TensorIR, sizes: dict[str, int], device):
    """An output filled with the oracle's poison (NaN for floats): an element a kernel does not
    write fails the check."""
    import torch

    shape = tuple(sizes[a] for a in tensor.shape)
    t = torch.full(shape, poison_value(tensor.dtype), dtype=torch_dtype(tensor.dtype), device=device)
    return t.mT.contiguous().mT if tensor.layout == "col_major" and t.dim() >= 2 else t


def check_outputs(binding: Binding, outputs: dict, want: dict) -> list[Verdict]:
    """Each kernel output (torch) against the oracle's value of the same tensor."""
    out = []
    for name, t in outputs.items():
        got = t.detach().to("cpu")
        got = got.double().numpy() if got.is_floating_point() else got.to(dtype=__import__("torch").int64).numpy()
        w = want[name]
        w = w.detach().cpu().numpy() if hasattr(w, "detach") else np.asarray(w)
        out.append(compare(binding.program, name, got, w))
    return out
