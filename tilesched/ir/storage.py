"""How a tensor's values are stored: group maps, packed sub-byte words and narrow float grids.

A tensor's `shape` is its logical shape; what a caller passes (and a kernel reads) is its
storage, which differs in three ways:

- `group: {K: 128}`: one stored value per 128 consecutive indices along K; the stored extent is
  ceil(K / 128) and logical element k is stored element k // 128.
- `pack: K` (sub-byte dtypes): 32 // bits values per int32 word along K (after grouping), value j
  of a word in bits [j * bits, (j + 1) * bits), low bits first; the stored extent along K is
  ceil(extent / per word) and the storage dtype is int32. Signed values are two's complement.
- fp4e2m1 values are 4-bit codes (sign, 2 exponent bits with bias 1, 1 mantissa bit: 0, 0.5, 1,
  1.5, 2, 3, 4, 6 and their negatives), one per byte (uint8) when not packed.

Everything here is exact numpy (int64 codes, float64 values); `logical` is what the semantics
oracle computes on, `stored` what a kernel receives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from tilesched.ir.dtypes import BITS, FLOAT, per_word
from tilesched.ir.expr import ExprError, evaluate
from tilesched.ir.nodes import TensorIR

SIGNED = frozenset({"int32", "int16", "int8", "int4", "int3", "int2"})
INT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-(1 << 15), (1 << 15) - 1),
             "int32": (-(1 << 31), (1 << 31) - 1), "int4": (-8, 7), "uint4": (0, 15), "int3": (-4, 3),
             "uint3": (0, 7), "int2": (-2, 1), "uint2": (0, 3)}

FP4_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])
# (mantissa bits, minimum normal exponent, largest finite value) of the narrow float formats
NARROW = {"fp8e4m3": (3, -6, 448.0), "fp8e5m2": (2, -14, 57344.0), "fp16": (10, -14, 65504.0),
          "bf16": (7, -126, 3.3895313892515355e38), "fp4e2m1": (1, 0, 6.0)}


def size_env(program, sizes: Mapping[str, int]) -> dict:
    """What a group expression may name: axis sizes and literal options."""
    env = {k: v for k, v in program.option_map.items() if not isinstance(v, str)}
    env.update(sizes)
    return env


def is_stored_differently(t: TensorIR) -> bool:
    return bool(t.group) or t.pack is not None or t.dtype == "fp4e2m1"


def groups(t: TensorIR, env: Mapping[str, object]) -> dict[str, int]:
    """Axis -> group size (ExprError when one is not a positive integer)."""
    out = {}
    for axis, g in t.group:
        v = evaluate(g, env) if isinstance(g, str) else g
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ExprError(f"tensor {t.name}: group {g!r} along {axis} is {v!r}, not a positive integer")
        out[axis] = v
    return out


def grouped_shape(t: TensorIR, sizes: Mapping[str, int], env: Mapping[str, object]) -> tuple[int, ...]:
    g = groups(t, env)
    return tuple(-(-sizes[a] // g.get(a, 1)) for a in t.shape)


def storage_shape(t: TensorIR, sizes: Mapping[str, int], env: Mapping[str, object]) -> tuple[int, ...]:
    """The shape of the tensor a caller passes, in the spec's axis order."""
    shape = list(grouped_shape(t, sizes, env))
    if t.pack is not None:
        j = t.shape.index(t.pack)
        shape[j] = -(-shape[j] // per_word(t.dtype))
    return tuple(shape)


def storage_dtype(t: TensorIR) -> str:
    """The element type a caller passes: int32 words when packed, uint8 codes for unpacked fp4
    and unpacked unsigned sub-byte values, int8 for unpacked signed ones."""
    if t.pack is not None:
        return "int32"
    if t.dtype == "fp4e2m1":
        return "uint8"
    if BITS[t.dtype] < 8:
        return "int8" if t.dtype in SIGNED else "uint8"
    return t.dtype


# ------------------------------------------------------------------------------- packing

def pack_words(values: np.ndarray, axis: int, dtype: str) -> np.ndarray:
    """Integer values (or fp4 codes) of `dtype` packed into int32 words along `axis`."""
    bits, per = BITS[dtype], per_word(dtype)
    v = np.moveaxis(np.asarray(values, dtype=np.int64), axis, -1)
    n = v.shape[-1]
    words = -(-n // per)
    padded = np.zeros(v.shape[:-1] + (words * per,), dtype=np.int64)
    padded[..., :n] = v & ((1 << bits) - 1)
    padded = padded.reshape(v.shape[:-1] + (words, per))
    out = np.zeros(v.shape[:-1] + (words,), dtype=np.int64)
    for j in range(per):
        out |= padded[..., j] << (j * bits)
    out = np.where(out >= 1 << 31, out - (1 << 32), out).astype(np.int32)
    return np.moveaxis(out, -1, axis)


def unpack_words(words: np.ndarray, axis: int, dtype: str, n: int) -> np.ndarray:
    """The `n` values (int64; fp4: codes) of `dtype` packed along `axis` of int32 `words`."""
    bits, per = BITS[dtype], per_word(dtype)
    w = np.moveaxis(np.asarray(words, dtype=np.int64) & 0xFFFFFFFF, axis, -1)
    parts = [(w >> (j * bits)) & ((1 << bits) - 1) for j in range(per)]
    v = np.stack(parts, axis=-1).reshape(w.shape[:-1] + (w.shape[-1] * per,))[..., :n]
    if dtype in SIGNED:
        v = np.where(v >= 1 << (bits - 1), v - (1 << bits), v)
    return np.moveaxis(v, -1, axis)


# ---------------------------------------------------------------------------- narrow floats

def round_to(dtype: str, x: np.ndarray) -> np.ndarray:
    """float64 values rounded to the nearest value of a narrow float format (ties to even,
    saturating at its largest finite value), through float32 first as torch converts float64:
    what a device tensor of that dtype holds."""
    if dtype not in NARROW:
        return np.asarray(x, dtype=np.float64)
    mant, emin, top = NARROW[dtype]
    x = np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)
    a = np.abs(x)
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    e = np.maximum(e, emin)  # subnormals share the smallest normal exponent's spacing
    step = np.exp2(e - mant)
    r = np.round(a / step) * step  # numpy rounds half to even
    return np.sign(x) * np.minimum(r, top)


def fp4_encode(x: np.ndarray) -> np.ndarray:
    """fp4e2m1 codes (int64) of values on its grid (round_to("fp4e2m1", x) first)."""
    x = np.asarray(x, dtype=np.float64)
    mag = np.searchsorted(FP4_VALUES[:8], np.abs(x))
    return np.where(np.signbit(x) & (mag > 0), mag + 8, mag).astype(np.int64)


def fp4_decode(codes: np.ndarray) -> np.ndarray:
    return FP4_VALUES[np.asarray(codes, dtype=np.int64) & 15]


# ------------------------------------------------------------------------ stored <-> logical

def to_storage(t: TensorIR, grouped_values: np.ndarray) -> np.ndarray:
    """Values at the grouped shape (integers, or float64 on the dtype's grid) -> what a caller
    passes: packed words, fp4 codes, or the values themselves."""
    v = grouped_values
    if t.dtype == "fp4e2m1":
        v = fp4_encode(v)
    if t.pack is not None:
        return pack_words(v, t.shape.index(t.pack), t.dtype)
    if t.dtype == "fp4e2m1":
        return v.astype(np.uint8)
    return v


def from_storage(t: TensorIR, stored: np.ndarray, sizes: Mapping[str, int], env: Mapping[str, object]) -> np.ndarray:
    """What a caller passed -> values at the grouped shape (int64, or float64 for fp4)."""
    v = np.asarray(stored)
    if t.pack is not None:
        j = t.shape.index(t.pack)
        v = unpack_words(v, j, t.dtype, grouped_shape(t, sizes, env)[j])
    if t.dtype == "fp4e2m1":
        return fp4_decode(v)
    return v.astype(np.float64) if t.dtype in FLOAT else v.astype(np.int64)


def expand_groups(xp, data, t: TensorIR, sizes: Mapping[str, int], env: Mapping[str, object], integer: bool):
    """Grouped values -> the logical shape (every stored value repeated over its group)."""
    for axis, g in groups(t, env).items():
        j = t.shape.index(axis)
        if g == 1:
            continue
        if integer:
            data = np.repeat(data, g, axis=j)
        else:
            data = xp.repeat(data, g, j)
        index = [slice(None)] * len(t.shape)
        index[j] = slice(0, sizes[axis])
        data = data[tuple(index)]
    return data


def stored_fraction(t: TensorIR, env: Mapping[str, object]) -> float:
    """Stored elements per logical element: 1 / (product of group sizes); 1 for ungrouped tensors
    (packing is in the dtype's bits already)."""
    if not t.group:
        return 1.0
    try:
        return 1.0 / math.prod(groups(t, env).values())
    except ExprError:
        return 1.0


def storage_bytes(t: TensorIR, sizes: Mapping[str, int], env: Mapping[str, object]) -> int:
    shape = storage_shape(t, sizes, env)
    return math.prod(shape) * max(1, BITS[storage_dtype(t)] // 8)
