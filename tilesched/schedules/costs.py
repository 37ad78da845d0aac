"""Per-stage work and traffic of a bound program: bytes moved, FLOPs and MACs.

Traffic follows the tile loops: a stage runs once per iteration of the loops around it,
and each run touches one tile of every tensor it reads or writes. A tensor whose axes
do not include an enclosing loop's axis is fetched again on every iteration of that
loop (e.g. GEMM re-reads A once per column of tiles).
"""

from __future__ import annotations

from functools import lru_cache
from math import prod

from pydantic import BaseModel, ConfigDict

from tilesched.ir.bind import Binding
from tilesched.ir.conv import window
from tilesched.ir.dtypes import nbytes
from tilesched.ir.nodes import StageIR

FLOPS_PER_ELEMENT = {
    "bias": 1, "add": 1, "sub": 1, "mul": 1, "scale": 1, "div": 4, "max": 1, "min": 1, "relu": 1, "relu6": 1,
    "cast": 0, "exp": 4, "exp2": 4, "log": 4, "sqrt": 4, "rsqrt": 4, "reciprocal": 4, "abs": 1, "neg": 1,
    "gelu": 8, "gelu_tanh": 10, "silu": 5, "sigmoid": 4, "tanh": 6,
}


class StageCost(BaseModel):
    model_config = ConfigDict(frozen=True)

    runs: int  # executions of the stage
    bytes_read: float
    bytes_written: float
    flops: float
    macs: float
    comm_bytes: float  # bytes each rank receives over the interconnect


def numel(b: Binding, tensor: str) -> int:
    return prod(b.sizes[a] for a in b.program.tensor(tensor).shape)


def enclosing(b: Binding, stage: StageIR) -> list[str]:
    return [lp.axis for lp in b.program.loops[: stage.depth]]


def traffic(b: Binding, stage: StageIR, tensor: str) -> float:
    """Bytes of `tensor` this stage moves over all its runs (global tensors only)."""
    t = b.program.tensor(tensor)
    if t.scope == "tile":
        return 0.0
    halo = _conv_halo(b, stage, tensor)
    aligned = aligned_axes(b.program)
    refetch = 1.0
    for ax in enclosing(b, stage):
        if ax in halo:
            refetch *= halo[ax]
        elif not any(aligned.get(a, a) == aligned.get(ax, ax) for a in t.shape):
            refetch *= b.n_tiles(ax)
    if t.group:  # one stored value per group (tilesched.ir.storage)
        from tilesched.ir.storage import stored_fraction

        refetch *= stored_fraction(t, b.env())
    return nbytes(t.dtype, numel(b, tensor)) * refetch


@lru_cache(maxsize=64)
def aligned_axes(program) -> dict[str, str]:
    """Spatial axes that convolutions map onto each other (input rows H ~ output rows OH),
    as a map from axis to a representative: a loop over OH walks H too."""
    rep: dict[str, str] = {}

    def find(a: str) -> str:
        while rep.get(a, a) != a:
            a = rep[a]
        return a

    for s in program.stages:
        if s.op in ("conv2d", "depthwise_conv2d", "avgpool2d"):
            x, out = program.tensor(s.reads[0]), program.tensor(s.writes[0])
            for i, o in zip(x.shape[:2], out.shape[:2]):
                ri, ro = find(i), find(o)
                if ri != ro:
                    rep[max(ri, ro)] = min(ri, ro)
    return {a: find(a) for a in rep}


def _conv_halo(b: Binding, stage: StageIR, tensor: str) -> dict[str, float]:
    """For a conv's input, loops over its output rows/cols fetch overlapping input windows:
    per output-axis loop, the fraction of input re-read (>= 1 with a halo)."""
    if stage.op not in ("conv2d", "depthwise_conv2d", "avgpool2d") or tensor != stage.reads[0]:
        return {}
    x, out = b.program.tensor(tensor), b.program.tensor(stage.writes[0])
    factors = {}
    for in_ax, out_ax, k in zip(x.shape[:2], out.shape[:2], window(stage, x.shape, b.sizes)):
        tile = b.tile(out_ax)
        rows = b.n_tiles(out_ax) * ((tile - 1) * stage.stride + k)
        factors[out_ax] = max(rows / b.sizes[in_ax], 1.0) if in_ax != out_ax else 1.0
    return factors


def stage_cost(b: Binding, stage: StageIR) -> StageCost:
    runs = prod(b.n_tiles(ax) for ax in enclosing(b, stage))
    rd = sum(traffic(b, stage, t) for t in stage.reads)
    wr = sum(traffic(b, stage, t) for t in stage.writes)
    flops = macs = comm = 0.0
    world = b.program.limits.world_size or 1
    if stage.op == "dot":
        axes = {a for t in stage.reads + stage.writes for a in b.program.tensor(t).shape}
        macs = float(prod(b.sizes[a] for a in axes))
        flops = 2 * macs
    elif stage.op in ("conv2d", "depthwise_conv2d"):
        x, out = b.program.tensor(stage.reads[0]), stage.writes[0]
        per_out = stage.kernel[0] * stage.kernel[1] * (b.sizes[x.shape[-1]] if stage.op == "conv2d" else 1)
        macs = float(numel(b, out) * per_out)
        flops = 2 * macs
    elif stage.op == "avgpool2d":
        kh, kw = window(stage, b.program.tensor(stage.reads[0]).shape, b.sizes)
        flops = float(numel(b, stage.writes[0]) * kh * kw)
    elif stage.op == "elementwise":
        names = [f if isinstance(f, str) else f[0] for f in stage.fn]  # ("scale", 0.5) has a constant
        flops = float(numel(b, stage.writes[0]) * sum(FLOPS_PER_ELEMENT[f] for f in names))
    elif stage.op in ("reduce", "requantize"):
        flops = float(numel(b, stage.reads[0]))
    elif stage.op == "softmax":
        flops = float(5 * numel(b, stage.reads[0]))
    elif stage.op == "layernorm":
        flops = float(8 * numel(b, stage.reads[0]))
    elif stage.kind == "comm" and stage.reads:
        t = b.program.tensor(stage.reads[0])
        full = nbytes(t.dtype, numel(b, t.name))
        share = (world - 1) / world
        comm = {"all_gather": full * share, "reduce_scatter": full * share, "all_reduce": 2 * full * share,
                "all_to_all": full * share / world}.get(stage.op, full / world)
    return StageCost(runs=runs, bytes_read=rd, bytes_written=wr, flops=flops, macs=macs, comm_bytes=comm)
