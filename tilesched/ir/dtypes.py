"""Facts about element types that several passes need."""

BITS = {
    "fp64": 64, "fp32": 32, "fp16": 16, "bf16": 16, "fp8e4m3": 8, "fp8e5m2": 8, "fp4e2m1": 4,
    "int32": 32, "int16": 16, "int8": 8, "uint8": 8, "int4": 4,
    "uint4": 4, "int3": 3, "uint3": 3, "int2": 2, "uint2": 2,
}
FLOAT = frozenset({"fp64", "fp32", "fp16", "bf16", "fp8e4m3", "fp8e5m2", "fp4e2m1"})
INT = frozenset(BITS) - FLOAT
# values no hardware stores one per byte: on CUDA they are packed into int32 words (`pack`)
SUB_BYTE = frozenset(d for d, b in BITS.items() if b < 8)
PACK_WORD_BITS = 32


def per_word(dtype: str) -> int:
    """Values of `dtype` in one packed int32 word (int4: 8, int3: 10, int2: 16)."""
    return PACK_WORD_BITS // BITS[dtype]

# accumulator types a dot/conv may write for given operand types
ACCUMULATORS = {
    "fp32": {"fp32", "fp64"},
    "fp64": {"fp64"},
    "fp16": {"fp32", "fp16"},
    "bf16": {"fp32"},
    "fp8e4m3": {"fp32", "fp16"},
    "fp8e5m2": {"fp32", "fp16"},
    "fp4e2m1": {"fp32"},
    "int8": {"int32"},
    "uint8": {"int32"},
    "int4": {"int32"},
    "uint4": {"int32"}, "int3": {"int32"}, "uint3": {"int32"}, "int2": {"int32"}, "uint2": {"int32"},
    "int16": {"int32"},
    "int32": {"int32"},
}


def nbytes(dtype: str, elements: int) -> float:
    """Bytes of `elements` values (int4 packs two per byte)."""
    return elements * BITS[dtype] / 8
