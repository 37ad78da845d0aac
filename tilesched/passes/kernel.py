"""The kernel IR: one GPU kernel as the passes leave it, ready for a target's per-op rules.

Everything here is decided (which axis is a grid axis, a reduction loop or one whole block;
which accesses go through TMA; where masks are needed; persistent grid, split-K, subtiled
epilogue as compile-time switches); a renderer only prints it. Sizes are not fixed here: block
sizes and switches are named (a parameter or a literal), so one rendered module serves every
tuned configuration of a spec.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Ref = int | str | bool | None  # a literal, or the name of the parameter that holds it


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True)


class AxisInfo(_Node):
    name: str
    role: Literal["grid", "point", "reduction", "whole"]
    # grid / reduction: the loop's tile (literal or parameter); whole: None (one block of
    # next_pow2(size)); point: a grid axis of tile 1, an index rather than a block
    tile: Ref = None
    masked: bool = False  # some point may be ragged: loads and reductions mask this axis
    small: bool = False  # some tile choice is below 16 (a dot over it takes the CUDA-core path)


class ValueInfo(_Node):
    """A tile value: a Triton block over `axes` (point axes dropped)."""

    name: str
    axes: tuple[str, ...]
    dtype: str


class Access(_Node):
    """A global tensor the kernel reads or writes."""

    tensor: str
    axes: tuple[str, ...]  # logical axes, in the spec's order (the torch tensor's dimensions)
    dtype: str
    layout: str
    mode: Literal["load", "store"]
    tma: bool = False
    group: tuple[tuple[str, int | str], ...] = ()  # (axis, group size): stored index = index // group
    pack: str | None = None  # sub-byte values packed into int32 words along this axis


class Instr(_Node):
    """One operation on tile values. `op`: load | store | zeros | dot | elementwise | reduce |
    softmax | layernorm | copy | online_softmax (a softmax along the reduction loop's axis: running
    maximum and sum carried across the loop, `targets` rescaled) | normalize (an accumulator
    divided by the running sum after the loop) | affine_dot (a dot whose second operand `via` is
    the elementwise chain `fn` of its args after the first two: tilesched/passes/factor.py)."""

    op: str
    stage: str  # the spec stage it comes from
    out: str | None = None
    args: tuple[str, ...] = ()
    tensor: str | None = None  # load / store: the global tensor
    fn: tuple[tuple[str, str | None], ...] = ()  # elementwise: (fn, constant argument name or None)
    axis: str | None = None
    reduce: str | None = None
    accumulate: bool = False  # dot / reduce: add to the value `out` holds
    mask: str | None = None  # softmax / reduce: an index expression; elements where it is false take no part
    mask_axes: tuple[str, ...] = ()  # the masked tensor's axes (names in the mask that are its indices)
    targets: tuple[str, ...] = ()  # online_softmax: the accumulators its running maximum rescales
    via: str | None = None  # affine_dot: the operand the chain builds (the value where it is not factored)


def producer(k: KernelIR, name: str) -> Instr | None:
    """The instruction that defines value `name` (the last one, in program order)."""
    return next((i for i in reversed(k.invariant + k.pre + k.loop + k.post) if i.out == name), None)


def one_row_axis(k: KernelIR, acc: Access) -> str | None:
    """The axis along which a load of grouped tensor `acc` reads one stored row per tile when the
    group is a multiple of the block (the first grouped tile axis that is not packed)."""
    logical = [a for a in acc.axes if a not in k.points]
    return next((a for a, _ in acc.group if a in logical and a != acc.pack), None)


def mask_constant(stage: str, name: str) -> str:
    """The kernel argument holding a non-index name of a stage's mask (its value at launch)."""
    return f"c_{stage}_mask_{name}"


class Constant(_Node):
    """A scalar a fn takes (`{scale: "1 / K"}`): a kernel argument computed at launch."""

    name: str
    expr: int | float | str


class KernelIR(_Node):
    name: str
    spec: str
    axes: tuple[AxisInfo, ...]
    values: tuple[ValueInfo, ...]
    accesses: tuple[Access, ...]
    constants: tuple[Constant, ...]
    invariant: tuple[Instr, ...] = ()  # once per program, before its tiles (loads no tile changes)
    pre: tuple[Instr, ...]  # per tile, before the reduction loop
    loop: tuple[Instr, ...]  # the reduction loop's body
    post: tuple[Instr, ...]  # per tile, after the reduction loop
    carried: tuple[str, ...]  # values the reduction loop updates (initialised in `pre`)
    reduction: str | None  # the reduction loop's axis
    grid: tuple[str, ...]  # grid axes in loop order; the last two take the tile order
    points: tuple[str, ...]  # point axes (each its own grid dimension)
    tile_order: str = "row_major"
    # the grid's one axis launches its tiles last first (tilesched/passes/heavy_first.py)
    descending: bool = False
    # a persistent grid's CTAs claim their tiles from a counter, in that order (tiles of unequal work)
    claim_tiles: bool = False
    # ... heaviest first across as many points as keep the loop's streamed operands within `claim_span`
    # bytes, where the grid's CTAs take at most `claim_rounds` tiles each (else, or a span of 0, point
    # by point); the launcher sizes the group from the operands' bytes a point
    claim_span: int = 0
    claim_rounds: int = 0
    group: Ref = None
    persistent: Ref = None
    split_k: Ref = None
    subtile: Ref = None  # split the epilogue in two along the last grid axis
    materialize: Ref = None  # compute a dot operand once per call (tilesched/passes/materialize.py)
    # the dequantised dot operand straight into mma.sync's registers (tilesched/passes/register_operand.py)
    register_operand: Ref = None
    # an online-softmax loop with a TMA loader warp and two consumer warpgroups (tilesched/passes/warp_specialize.py)
    warp_specialize: Ref = None
    num_warps: Ref = None
    num_stages: Ref = None
    # the reduction loop visits only tiles this index expression keeps somewhere (others add
    # nothing), and tiles it keeps whole without evaluating it
    skip: str | None = None

    def axis(self, name: str) -> AxisInfo:
        return next(a for a in self.axes if a.name == name)

    def value(self, name: str) -> ValueInfo:
        return next(v for v in self.values if v.name == name)

    def access(self, tensor: str, mode: str) -> Access | None:
        return next((a for a in self.accesses if a.tensor == tensor and a.mode == mode), None)


def walks_tiles(k: KernelIR) -> bool:
    """The Triton kernel has a persistent loop over its tiles (the `persistent` option without point
    axes; with them, only the warp-specialised schedule's kernel walks the tiles, of every point)."""
    return k.persistent is not None and not k.points


def dump_kernel(k: KernelIR) -> str:
    lines = [f"kernel {k.name}"]
    for a in k.axes:
        extra = " masked" if a.masked else ""
        extra += " small" if a.small else ""
        lines.append(f"  axis {a.name}: {a.role}" + (f" tile={a.tile}" if a.tile is not None else "") + extra)
    lines.append(f"  grid {list(k.grid)} points {list(k.points)} order {k.tile_order}"
                 + (" descending" if k.descending else "") + (" claimed" if k.claim_tiles else "") + (f" span={k.claim_span}/{k.claim_rounds}" if k.claim_span else "") + (f" group={k.group}" if k.group is not None else ""))
    sw = {n: getattr(k, n) for n in ("persistent", "split_k", "subtile", "materialize", "register_operand",
                                          "warp_specialize", "num_warps", "num_stages")}
    lines.append("  switches " + " ".join(f"{n}={v}" for n, v in sw.items() if v is not None))
    for a in k.accesses:
        lines.append(f"  {a.mode} {a.tensor}[{', '.join(a.axes)}] {a.dtype} {a.layout}" + (" tma" if a.tma else "")
                     + "".join(f" group({ax}={g})" for ax, g in a.group) + (f" packed({a.pack})" if a.pack else ""))
    for c in k.constants:
        lines.append(f"  constant {c.name} = {c.expr!r}")
    for phase in ("invariant", "pre", "loop", "post"):
        instrs = getattr(k, phase)
        if phase == "invariant" and not instrs:
            continue
        head = f"  {phase}" + (f" (for {k.reduction})" if phase == "loop" and k.reduction else "") + ":"
        lines.append(head)
        for i in instrs:
            lines.append("    " + instr_line(k, i))
    if k.carried:
        lines.append(f"  carried {list(k.carried)}")
    if k.skip:
        lines.append(f"  skip {k.reduction} tiles outside {k.skip!r}")
    return "\n".join(lines) + "\n"


def instr_line(k: KernelIR, i: Instr) -> str:
    out = ""
    if i.out:
        v = k.value(i.out)
        out = f"{i.out}[{', '.join(v.axes)}]:{v.dtype} = "
    args = list(i.args)
    if i.tensor:
        args.insert(0, i.tensor)
    attrs = []
    if i.fn:
        attrs.append("fn=[" + ", ".join(f if c is None else f"{f}:{c}" for f, c in i.fn) + "]")
    if i.axis:
        attrs.append(f"axis={i.axis}")
    if i.reduce:
        attrs.append(f"reduce={i.reduce}")
    if i.accumulate:
        attrs.append("accumulate")
    if i.mask:
        attrs.append(f"mask={i.mask!r}")
    if i.targets:
        attrs.append(f"rescales=[{', '.join(i.targets)}]")
    if i.via:
        attrs.append(f"via={i.via}")
    return f"{out}{i.op}({', '.join(args)}){' ' + ' '.join(attrs) if attrs else ''}  # {i.stage}"
