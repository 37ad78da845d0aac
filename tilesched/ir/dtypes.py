"""Facts about element types that several passes need."""

BITS = {
    "fp64": 64, "fp32": 32, "fp16": 16, "bf16": 16, "fp8e4m3": 8, "fp8e5m2": 8,
    "int32": 32, "int16": 16, "int8": 8, "uint8": 8, "int4": 4,
}
FLOAT = frozenset({"fp64", "fp32", "fp16", "bf16", "fp8e4m3", "fp8e5m2"})
INT = frozenset(BITS) - FLOAT

# accumulator types a dot/conv may write for given operand types
ACCUMULATORS = {
    "fp32": {"fp32", "fp64"},
    "fp64": {"fp64"},
    "fp16": {"fp32", "fp16"},
    "bf16": {"fp32"},
    "fp8e4m3": {"fp32", "fp16"},
    "fp8e5m2": {"fp32", "fp16"},
    "int8": {"int32"},
    "uint8": {"int32"},
    "int4": {"int32"},
    "int16": {"int32"},
    "int32": {"int32"},
}


def nbytes(dtype: str, elements: int) -> float:
    """Bytes of `elements` values (int4 packs two per byte)."""
    return elements * BITS[dtype] / 8
