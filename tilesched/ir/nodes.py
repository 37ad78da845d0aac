"""The IR: the validated, immutable form of a spec.

Everything is a frozen pydantic model over tuples, so IR values hash, compare by value
and serialise to JSON. Source positions are not part of the IR: the same operator
written in YAML or with the builder lowers to an equal `Program`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from tilesched.spec.models import Limits, Quant, Scalar, TileOrder


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AxisIR(_Node):
    name: str
    expr: str  # the size as written: "4096", "M", "(H - 3) // 2 + 1"
    size: int | None  # None while it depends on an unbound symbol
    symbolic: bool = False  # the size is a symbol bound at plan time
    hint: int | None = None


class TensorIR(_Node):
    name: str
    shape: tuple[str, ...]
    dtype: str
    layout: str
    scope: str
    placement: str  # local | replicated | sharded | partial
    shard_axis: str | None
    region: str | None
    quant: Quant | None
    role: Literal["input", "output", "workspace", "tile"]
    alias: str | None = None  # the values of that tensor, axes renamed in order
    group: tuple[tuple[str, int | str], ...] = ()  # (axis, group size): one stored value per group of indices
    pack: str | None = None  # sub-byte values packed into int32 words along this axis


class LoopIR(_Node):
    axis: str
    kind: Literal["spatial", "reduction"]
    tile: int | str | None  # literal, parameter name, or whole axis


class StageIR(_Node):
    index: int  # position in the spec
    name: str
    kind: str
    op: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    at: str | None  # enclosing loop axis, resolved; None = outside all loops
    depth: int  # number of enclosing loops
    fn: tuple[str | tuple[str, int | float | str], ...] = ()  # "relu", or ("scale", 0.5) with a constant
    axis: str | None = None
    reduce: str | None = None
    kernel: tuple[int, ...] | None = None
    stride: int = 1
    padding: int | str = 0  # or "same"
    mask: str | None = None  # index expression: elements where it is false take no part
    engine: str | None = None
    granularity: str = "tensor"
    chunks: int | str | None = None


class Dep(_Node):
    """`dst` must wait for `src`. kind: raw (reads what src wrote), war (overwrites what src
    read), waw (overwrites what src wrote), order (explicit `after`)."""

    src: str
    dst: str
    tensor: str | None
    kind: Literal["raw", "war", "waw", "order"]


class ParamIR(_Node):
    name: str
    values: tuple[Scalar, ...]  # the enumerated domain
    default: Scalar


class ConstraintIR(_Node):
    expr: str
    message: str = ""


class Program(_Node):
    name: str
    description: str
    target: str
    axes: tuple[AxisIR, ...]
    tensors: tuple[TensorIR, ...]
    loops: tuple[LoopIR, ...]
    tile_order: TileOrder
    stages: tuple[StageIR, ...]
    deps: tuple[Dep, ...]
    order: tuple[str, ...]  # stages in a dependency-respecting order (spec order where free)
    limits: Limits
    options: tuple[tuple[str, Scalar], ...]
    params: tuple[ParamIR, ...]
    constraints: tuple[ConstraintIR, ...]

    # lookups (linear: programs are small)
    def axis(self, name: str) -> AxisIR:
        return next(a for a in self.axes if a.name == name)

    def tensor(self, name: str) -> TensorIR:
        return next(t for t in self.tensors if t.name == name)

    def stage(self, name: str) -> StageIR:
        return next(s for s in self.stages if s.name == name)

    def param(self, name: str) -> ParamIR:
        return next(p for p in self.params if p.name == name)

    def loop(self, axis: str) -> LoopIR | None:
        return next((lp for lp in self.loops if lp.axis == axis), None)

    @property
    def option_map(self) -> dict[str, Scalar]:
        return dict(self.options)

    def deps_of(self, stage: str) -> tuple[Dep, ...]:
        return tuple(d for d in self.deps if d.dst == stage)

    def limit_env(self) -> dict[str, int]:
        return {k: v for k, v in self.limits.model_dump().items() if v is not None}
