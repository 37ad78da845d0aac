"""The spec language: what a user writes, in YAML or through `SpecBuilder`.

These models check the *form* of a spec (types, enums, required fields). Checks that
need the whole spec (names resolve, shapes agree, dependencies are acyclic, the
search space is non-empty) live in `tilesched.ir.lower`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from tilesched.spec.names import check_name

# a name that generated Python and C can use as written (see tilesched.spec.names)
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"), AfterValidator(check_name)]
Scalar = bool | int | float | str

DType = Literal[
    "fp64", "fp32", "fp16", "bf16", "fp8e4m3", "fp8e5m2", "int32", "int16", "int8", "uint8", "int4",
    "uint4", "int3", "uint3", "int2", "uint2", "fp4e2m1",
]
Target = Literal["cuda", "cortex-m4", "cortex-m7"]
StageKind = Literal["memory", "compute", "comm"]

MEMORY_OPS = ("load", "store", "copy")
COMPUTE_OPS = (
    "dot", "elementwise", "reduce", "softmax", "conv2d", "depthwise_conv2d", "avgpool2d", "requantize", "layernorm",
)
COMM_OPS = (
    "all_gather", "reduce_scatter", "all_reduce", "all_to_all", "broadcast", "put", "get", "signal", "wait",
)
OPS_BY_KIND = {"memory": MEMORY_OPS, "compute": COMPUTE_OPS, "comm": COMM_OPS}

# binary fns combine x with the next tensor the stage reads, or with a constant: `{mul: 0.5}`
BinaryFn = Literal["bias", "add", "sub", "mul", "scale", "div", "max", "min"]
UnaryFn = Literal[
    "relu", "relu6", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh", "exp", "exp2", "log", "sqrt", "rsqrt",
    "reciprocal", "abs", "neg", "cast",
]
ElementwiseFn = BinaryFn | UnaryFn
FnConstant = int | float | str  # a number, or an expression over axes, parameters and options


def _one_constant(v: dict) -> dict:
    if len(v) != 1:
        raise ValueError("a fn with a constant is one entry, e.g. {scale: 0.125} or {add: \"1 / D\"}")
    return v


FnEntry = ElementwiseFn | Annotated[dict[BinaryFn, FnConstant], AfterValidator(_one_constant)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Axis(_Model):
    """A named iteration/shape dimension.

    `size` is an integer, a symbol bound at plan time (e.g. ``M``), or an expression over
    other axes (e.g. ``(H + 2*1 - 3) // 2 + 1``). `hint` is the value `plan` uses for a
    symbol that is not bound on the command line.
    """

    size: int | str
    hint: int | None = Field(default=None, ge=1)
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        # `M: 4096` and `M: M` are shorthands for `M: {size: ...}`.
        if isinstance(data, (int, str)) and not isinstance(data, bool):
            return {"size": data}
        return data


class Quant(_Model):
    """Affine int quantisation as TFLite defines it: real = scale * (q - zero_point)."""

    scale: float | list[float] = 1.0
    zero_point: int = 0
    axis: str | None = None  # per-channel along this axis when `scale` is a list


class Placement(_Model):
    """Where a tensor lives across ranks (GPUs) and, on MCUs, in which memory region.

    kind: ``local`` (no distribution), ``replicated`` (every rank holds all of it),
    ``sharded`` (split along `axis` across ranks) or ``partial`` (every rank holds a
    partial sum that a reduction completes).
    """

    kind: Literal["local", "replicated", "sharded", "partial"] = "local"
    axis: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        if isinstance(data, str):
            if data.startswith("sharded(") and data.endswith(")"):
                return {"kind": "sharded", "axis": data[len("sharded("):-1].strip()}
            return {"kind": data}
        return data

    @model_validator(mode="after")
    def _axis_iff_sharded(self):
        if (self.kind == "sharded") != (self.axis is not None):
            raise ValueError("a sharded placement names exactly one axis; other placements name none")
        return self


class Pack(_Model):
    """Sub-byte values stored packed into wider words along one axis: `32 // bits` values per
    int32 word (int4: 8, int3: 10, int2: 16), value j of a word in bits [j*bits, (j+1)*bits)."""

    axis: Identifier
    into: Literal["int32"] = "int32"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        return {"axis": data} if isinstance(data, str) else data


class Tensor(_Model):
    """A tensor over named axes. `scope: tile` marks an on-chip intermediate (registers,
    shared memory, or an MCU arena buffer) that never reaches global memory.

    `group: {K: 128}` stores one value per 128 consecutive indices along K (the logical tensor
    still has axis K: element k reads stored element k // 128); a group is an integer or an
    expression over axis sizes (`{H: "H // HKV"}`: grouped-query attention). `pack: K` stores
    sub-byte values packed into int32 words along K."""

    shape: list[Identifier]
    dtype: DType
    layout: Literal["row_major", "col_major"] = "row_major"
    scope: Literal["global", "tile"] = "global"
    placement: Placement = Placement()
    region: Literal["hbm", "sram", "flash"] | None = None
    quant: Quant | None = None
    alias: Identifier | None = None  # the same values as that tensor, its axes renamed in order
    group: dict[Identifier, Annotated[int, Field(ge=1)] | str] = {}  # axis -> values share one stored element
    pack: Pack | None = None  # sub-byte values packed into int32 words along an axis
    description: str = ""


class Loop(_Model):
    """One tile loop, outermost first. `tile` is an integer or a search-space parameter;
    without one the loop covers the whole axis in one tile."""

    axis: Identifier
    kind: Literal["spatial", "reduction"] = "spatial"
    tile: int | Identifier | None = None


class TileOrder(_Model):
    """The order in which spatial tiles are visited (the program-id mapping on GPUs).

    - ``row_major`` / ``column_major``: plain orders over the first two spatial loops.
    - ``grouped``: `group` rows of tiles swept column by column (L2 reuse).
    - ``rank_rotated``: tiles along `axis` start at this rank's own shard (comm overlap).
    """

    kind: Literal["row_major", "column_major", "grouped", "rank_rotated"] = "row_major"
    group: int | Identifier | None = None
    axis: Identifier | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        return {"kind": data} if isinstance(data, str) else data


class Stage(_Model):
    """One annotated stage of the tile program.

    `at` names the loop the stage runs inside (each iteration of that loop and the loops
    around it); ``null`` means outside every tile loop; ``innermost`` (the default) is the
    innermost loop.
    """

    name: Identifier
    kind: StageKind
    op: str
    reads: list[Identifier] = []
    writes: list[Identifier] = []
    at: Identifier | None = "innermost"
    after: list[Identifier] = []
    # op attributes
    fn: list[FnEntry] = []
    axis: Identifier | None = None  # reduce/softmax/layernorm axis
    reduce: Literal["sum", "max", "min", "mean"] | None = None
    kernel: list[int] | None = None  # conv / pool: [KH, KW]
    stride: int = Field(default=1, ge=1)
    padding: Annotated[int, Field(ge=0)] | Literal["same"] = 0  # rows/columns each side, or TFLite's SAME
    # softmax / reduce: elements where this index expression is false take no part ("SQ >= SK": causal)
    mask: str | None = None
    # comm / execution attributes
    engine: Literal["sm", "copy_engine", "tma", "dma", "cpu"] | None = None
    granularity: Literal["tile", "chunk", "tensor"] = "tensor"
    chunks: int | Identifier | None = None
    description: str = ""

    @model_validator(mode="after")
    def _op_matches_kind(self):
        allowed = OPS_BY_KIND[self.kind]
        if self.op not in allowed:
            raise ValueError(f"op {self.op!r} is not a {self.kind} op; expected one of {', '.join(allowed)}")
        return self


class Param(_Model):
    """A search-space parameter: a list of `choices`, or an integer `range` [lo, hi]
    walked by `step` (or by powers of two with ``pow2: true``)."""

    choices: list[Scalar] | None = None
    range: tuple[int, int] | None = None
    step: int = Field(default=1, ge=1)
    pow2: bool = False
    default: Scalar | None = None
    description: str = ""

    @model_validator(mode="after")
    def _exactly_one_domain(self):
        if (self.choices is None) == (self.range is None):
            raise ValueError("a parameter has exactly one of `choices` or `range`")
        if self.choices is not None and len(self.choices) == 0:
            raise ValueError("`choices` is empty")
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError(f"`range` {list(self.range)} is empty")
        return self


class Constraint(_Model):
    """A boolean expression over parameters, axes and limits that every point must satisfy."""

    expr: str
    message: str = ""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        return {"expr": data} if isinstance(data, str) else data


class SearchSpace(_Model):
    params: dict[Identifier, Param] = {}
    constraints: list[Constraint] = []


class Limits(_Model):
    """Hardware limits; constraints may refer to them by name (e.g. ``smem_bytes``)."""

    smem_bytes: int | None = Field(default=None, ge=1)
    registers_per_thread: int | None = Field(default=None, ge=1)
    sram_bytes: int | None = Field(default=None, ge=1)
    flash_bytes: int | None = Field(default=None, ge=1)
    world_size: int | None = Field(default=None, ge=1)


class Spec(_Model):
    """A whole operator: axes, tensors, tile loops, ordered stages, target, limits and search space."""

    name: Identifier
    description: str = ""
    target: Target
    axes: dict[Identifier, Axis]
    tensors: dict[Identifier, Tensor]
    loops: list[Loop] = []
    tile_order: TileOrder = TileOrder()
    stages: list[Stage]
    limits: Limits = Limits()
    options: dict[Identifier, Scalar] = {}
    search_space: SearchSpace = SearchSpace()
