"""Passes from a spec to a GPU kernel IR: small pure functions, listed in PIPELINE, each dumpable.

    looptree   loops as a tree, stages at their `at` level (ir/looptree.py)
    structure  spatial grid loops, at most one reduction loop, innermost; nothing outside
    skeleton   axis roles; stages -> instructions in three phases (before, inside, after the
               reduction loop); global tensors a compute stage reads become loads
    carried    accumulators the reduction loop updates start as zeros before it
    online     a softmax along the reduction loop's axis carries a running maximum and sum and
               rescales the accumulators its probabilities feed; they are divided by the sum
               after the loop; a masked one lets the loop skip tiles its mask leaves out
    sink       what only the epilogue needs moves after the reduction loop
    hoist      loads no tile changes (over whole axes only) happen once per program
    tma        loads / stores a spec marks `engine: tma` go through tensor descriptors
    masks      which axes may be ragged for some point (masked loads, stores, reductions)
    factor     a dot operand's affine dequantisation (group scales, zero points) leaves the sum over
               the contracted axis on the CUDA-core path (tilesched/passes/factor.py)
    register_operand  where the spec asks: the dequantised weights go straight into mma.sync's
               register operand, rendered with explicit layouts (tilesched/passes/register_operand.py)
    warp_specialize  where the spec asks: an online-softmax loop (attention) with a TMA loader
               warp and two consumer warpgroups, rendered with explicit layouts
               (tilesched/passes/warp_specialize.py)
    switches   persistent grid, split-K, subtiled epilogue, materialisation, warps and stages, from
               `options`
    heavy_first  under a mask that keeps more for later tiles of the grid's one axis, the tiles
               launch last first (tilesched/passes/heavy_first.py)

Every stage becomes instructions or the spec is refused at that stage (file:line:col through
`SpecError.located`): `cuda cannot generate <what> yet (stage 'x')`.
"""

from __future__ import annotations

from collections.abc import Callable

from tilesched.errors import SpecError, spec_error
from tilesched.ir.looptree import LoopTree, build_tree, dump_tree
from tilesched.ir.nodes import Program, StageIR
from tilesched.passes.factor import factor
from tilesched.passes.heavy_first import heavy_first
from tilesched.passes.kernel import AxisInfo, Constant, Instr, KernelIR, ValueInfo, dump_kernel, mask_constant
from tilesched.passes.register_operand import register_operand
from tilesched.passes.warp_specialize import warp_specialize
from tilesched.passes.warp_specialize import why_not as ws_why_not

TARGET = "cuda"
UNARY = ("relu", "relu6", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh", "exp", "exp2", "log", "sqrt", "rsqrt",
         "reciprocal", "abs", "neg", "cast")
BINARY = ("bias", "add", "sub", "mul", "scale", "div", "max", "min")
FLOATS = ("fp16", "bf16", "fp32")
# what a kernel loads: floats, fp8, and integers (sub-byte ones packed into int32 words, fp4 codes)
LOADABLE = FLOATS + ("fp8e4m3", "fp8e5m2", "fp4e2m1", "int32", "int16", "int8", "uint8", "int4", "uint4",
                     "int3", "uint3", "int2", "uint2")
STORABLE = FLOATS + ("fp8e4m3", "fp8e5m2")
OPTIONS = ("num_warps", "num_stages", "persistent", "epilogue_subtile", "split_k", "materialize", "register_operand",
           "warp_specialize")
MIN_DOT = 16
LAUNCHER_KEYWORDS = ("out", "params", "sizes")  # Kernel.__call__'s own keywords


def refuse(stage: StageIR, what: str, field: str | None = None) -> SpecError:
    loc = ("stages", stage.index) + ((field,) if field else ())
    return spec_error(loc, f"{TARGET} cannot generate {what} yet (stage {stage.name!r})")


# --------------------------------------------------------------------------------- structure

def structure(program: Program, tree: LoopTree) -> LoopTree:
    """Spatial loops (the grid), then at most one reduction loop, innermost; no stage outside the
    loops (a kernel runs per tile)."""
    if program.target != TARGET:
        raise spec_error(("target",), f"target {program.target!r} is not {TARGET}")
    for t in program.tensors:
        if t.scope == "global" and t.name in LAUNCHER_KEYWORDS:
            raise spec_error(("tensors", t.name), f"{TARGET} cannot generate a tensor named {t.name!r}: the launcher "
                                                  f"takes {t.name}= for itself; rename the tensor")
    for s in program.stages:
        if s.kind == "comm":
            raise refuse(s, f"comm stage {s.op} in a single-GPU kernel (the overlap consumers handle all_gather "
                            "and reduce_scatter)")
    for s in tree.outside:
        raise refuse(s, "a stage outside every loop (`at: null`) in a kernel")
    loops = tree.loops()
    kinds = [lp.kind for lp in loops]
    if "reduction" in kinds[:-1]:
        lp = loops[kinds.index("reduction")]
        raise spec_error(("loops",), f"{TARGET} cannot generate loops inside the reduction loop {lp.axis} yet")
    return tree


# ---------------------------------------------------------------------------------- skeleton

def _axis_roles(program: Program, tree: LoopTree) -> dict[str, AxisInfo]:
    # the rows and columns of a dot's result are block axes even with tile 1 (decode GEMMs);
    # other tile-1 spatial loops (batches) are points: an index, not a block
    dot_axes = {a for s in program.stages if s.op == "dot" for a in program.tensor(s.writes[0]).shape[-2:]}
    roles: dict[str, AxisInfo] = {}
    for lp in tree.loops():
        if lp.kind == "reduction":
            roles[lp.axis] = AxisInfo(name=lp.axis, role="reduction", tile=lp.tile)
        elif lp.tile == 1 and lp.axis not in dot_axes:
            roles[lp.axis] = AxisInfo(name=lp.axis, role="point", tile=1)
        elif lp.tile is None:
            roles[lp.axis] = AxisInfo(name=lp.axis, role="whole")
        else:
            roles[lp.axis] = AxisInfo(name=lp.axis, role="grid", tile=lp.tile)
    for t in program.tensors:
        for a in t.shape:
            roles.setdefault(a, AxisInfo(name=a, role="whole"))
    return roles


class _Builder:
    """Turns the stages of one phase into instructions, with loads for global operands."""

    def __init__(self, program: Program, roles: dict[str, AxisInfo], depth_of: dict[str, int]):
        self.program = program
        self.roles = roles
        self.depth_of = depth_of  # loop axis -> depth (1-based)
        self.values: dict[str, ValueInfo] = {}
        self.constants: list[Constant] = []
        self.loaded: dict[tuple[str, str], str] = {}  # (phase, global tensor) -> value

    def block_axes(self, axes: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(a for a in axes if self.roles[a].role != "point")

    def check_level(self, stage: StageIR, tensor: str) -> None:
        """A stage sees a tile per loop around it; an axis looped deeper has no tile here."""
        for a in self.program.tensor(tensor).shape:
            d = self.depth_of.get(a)
            if d is not None and d > stage.depth:
                raise refuse(stage, f"a stage at {stage.at or 'null'} reading {tensor} over {a}, which is looped "
                                    "inside it")

    def value(self, name: str) -> str:
        t = self.program.tensor(name)
        self.values.setdefault(name, ValueInfo(name=name, axes=self.block_axes(t.shape), dtype=t.dtype))
        return name

    def operand(self, stage: StageIR, name: str, phase: str, out: list[Instr]) -> str:
        """The value of a tensor a compute stage reads; a global one is loaded here first."""
        self.check_level(stage, name)
        t = self.program.tensor(name)
        if t.scope == "tile":
            return self.value(name)
        if t.dtype not in LOADABLE:
            raise refuse(stage, f"a {t.dtype} tensor {name}")
        key = (phase, name)
        if key not in self.loaded:
            self.loaded[key] = self.value(name)
            out.append(Instr(op="load", stage=stage.name, out=name, tensor=name))
        return self.loaded[key]

    def mask_constants(self, stage: StageIR) -> None:
        """Kernel arguments for the names of a mask that are not indices: values and sizes of other axes."""
        from tilesched.ir.indexexpr import mask_names

        indices = set(self.program.tensor(stage.reads[0]).shape)
        used, sized = mask_names(stage.mask)
        for n in sorted(used - indices):
            self.constants.append(Constant(name=mask_constant(stage.name, n), expr=n))
        for a in sorted(sized - indices):
            self.constants.append(Constant(name=mask_constant(stage.name, f"size_{a}"), expr=a))

    def fn_entries(self, stage: StageIR) -> tuple[tuple[str, str | None], ...]:
        out = []
        for i, f in enumerate(stage.fn):
            name, arg = (f, None) if isinstance(f, str) else f
            if name not in UNARY and name not in BINARY:
                raise refuse(stage, f"fn {name}", "fn")
            cname = None
            if arg is not None:
                cname = f"c_{stage.name}_{i}"
                self.constants.append(Constant(name=cname, expr=arg))
            out.append((name, cname))
        return tuple(out)

    def instrs(self, stage: StageIR, phase: str) -> list[Instr]:
        out: list[Instr] = []
        p = self.program
        op = stage.op
        if op in ("load", "copy", "store"):
            src, dst = p.tensor(stage.reads[0]), p.tensor(stage.writes[0])
            self.check_level(stage, src.name)
            self.check_level(stage, dst.name)
            if (src.dtype not in FLOATS or dst.dtype not in FLOATS) and not (
                    op == "load" and src.dtype in LOADABLE or op == "store" and src.dtype in STORABLE
                    and dst.dtype in STORABLE):
                raise refuse(stage, f"{op} of {src.dtype} tensors")
            if src.scope == "global" and dst.scope == "tile":
                out.append(Instr(op="load", stage=stage.name, out=self.value(dst.name), tensor=src.name))
            elif src.scope == "tile" and dst.scope == "global":
                out.append(Instr(op="store", stage=stage.name, tensor=dst.name, args=(self.value(src.name),)))
            elif src.scope == "tile" and dst.scope == "tile":
                out.append(Instr(op="copy", stage=stage.name, out=self.value(dst.name), args=(src.name,)))
            else:
                raise refuse(stage, f"a {op} from global {src.name} to global {dst.name} (a kernel moves tiles)")
            return out
        if op == "dot":
            acc = stage.writes[0]
            a, b = [r for r in stage.reads if r != acc][:2]
            if p.tensor(acc).scope != "tile":
                raise refuse(stage, f"a dot writing the global tensor {acc} (write a tile and store it)")
            args = (self.operand(stage, a, phase, out), self.operand(stage, b, phase, out))
            rows_cols = self.block_axes(p.tensor(acc).shape)
            if len(rows_cols) != 2:
                raise refuse(stage, f"a dot whose result has {len(rows_cols)} block axes (rows and columns, with "
                                    "batch axes looped with tile 1)")
            # inside the reduction loop a dot accumulates over the loop when it contracts the loop's
            # axis (a dot over other axes, e.g. attention scores, yields a fresh tile per iteration)
            contracts_loop = any(self.roles[a].role == "reduction" for a in
                                 (set(p.tensor(a).shape) & set(p.tensor(b).shape)) - set(p.tensor(acc).shape))
            out.append(Instr(op="dot", stage=stage.name, out=self.value(acc), args=args,
                             accumulate=(phase == "loop" and contracts_loop) or acc in stage.reads))
            return out
        if op == "elementwise":
            fn = self.fn_entries(stage)
            args = tuple(self.operand(stage, r, phase, out) for r in stage.reads)
            dst = stage.writes[0]
            if p.tensor(dst).scope != "tile":
                raise refuse(stage, f"an elementwise stage writing the global tensor {dst} (write a tile and store it)")
            out.append(Instr(op="elementwise", stage=stage.name, out=self.value(dst), args=args, fn=fn))
            return out
        if op in ("reduce", "softmax", "layernorm"):
            dst = stage.writes[0]
            if p.tensor(dst).scope != "tile":
                raise refuse(stage, f"a {op} writing the global tensor {dst} (write a tile and store it)")
            online = op == "softmax" and self.roles[stage.axis].role == "reduction"
            if op == "layernorm" and self.roles[stage.axis].role == "reduction":
                raise refuse(stage, f"a {op} along the reduction loop's axis {stage.axis} (a loop-carried "
                                    "online form)")
            if op == "reduce" and self.roles[stage.axis].role == "reduction" and stage.reduce == "mean":
                raise refuse(stage, "a mean along the reduction loop's axis (sum, then scale)")
            args = tuple(self.operand(stage, r, phase, out) for r in stage.reads if r != dst or op != "reduce")
            accumulate = op == "reduce" and (phase == "loop" and self.roles[stage.axis].role == "reduction"
                                             or dst in stage.reads)
            out.append(Instr(op="online_softmax" if online else op, stage=stage.name, out=self.value(dst), args=args,
                             axis=stage.axis, reduce=stage.reduce, accumulate=accumulate, mask=stage.mask,
                             mask_axes=p.tensor(stage.reads[0]).shape if stage.mask else ()))
            if stage.mask:
                self.mask_constants(stage)
            return out
        raise refuse(stage, f"{op} stages")


def skeleton(program: Program, tree: LoopTree) -> KernelIR:
    """Axis roles, and every stage as instructions in the phase where it runs."""
    roles = _axis_roles(program, tree)
    loops = tree.loops()
    depth_of = {lp.axis: i + 1 for i, lp in enumerate(loops)}
    b = _Builder(program, roles, depth_of)
    reduction = next((lp.axis for lp in loops if lp.kind == "reduction"), None)
    spatial = [lp for lp in loops if lp.kind == "spatial"]
    pre, loop, post = [], [], []
    if reduction is None:
        order = [s for lp in spatial for s in lp.before] + [s for lp in reversed(spatial) for s in lp.after]
        for s in order:
            post += b.instrs(s, "post")
    else:
        for s in (s for lp in spatial for s in lp.before):
            pre += b.instrs(s, "pre")
        red = loops[-1]
        for s in red.before + red.after:
            loop += b.instrs(s, "loop")
        for s in (s for lp in reversed(spatial) for s in lp.after):
            post += b.instrs(s, "post")
    if not (pre or loop or post):
        raise spec_error(("stages",), f"{TARGET} cannot generate a kernel without stages inside its loops yet")
    if not any(i.op == "store" for i in pre + loop + post):
        s = program.stage(program.order[-1])
        raise refuse(s, "a kernel that stores nothing")
    grid = tuple(lp.axis for lp in spatial if roles[lp.axis].role == "grid")
    points = tuple(lp.axis for lp in spatial if roles[lp.axis].role == "point")
    accesses = []
    from tilesched.passes.kernel import Access

    for mode, ins in (("load", [i for i in pre + loop + post if i.op == "load"]),
                      ("store", [i for i in pre + loop + post if i.op == "store"])):
        for i in ins:
            t = program.tensor(i.tensor)
            if not any(a.tensor == t.name and a.mode == mode for a in accesses):
                accesses.append(Access(tensor=t.name, axes=t.shape, dtype=t.dtype, layout=t.layout, mode=mode,
                                       group=t.group, pack=t.pack))
    to = program.tile_order
    if to.kind == "rank_rotated":
        raise spec_error(("tile_order",), f"{TARGET} generates rank_rotated tile orders in overlap consumers only")
    used = {a for v in b.values.values() for a in v.axes} | set(grid) | set(points)
    return KernelIR(
        name=program.name, spec=program.name, axes=tuple(roles[a] for a in roles if a in used),
        values=tuple(b.values.values()), accesses=tuple(accesses), constants=tuple(b.constants),
        pre=tuple(pre), loop=tuple(loop), post=tuple(post), carried=(), reduction=reduction, grid=grid,
        points=points, tile_order=to.kind, group=to.group if to.kind == "grouped" else None,
    )


# ----------------------------------------------------------------------------------- carried

def carried(program: Program, tree: LoopTree, k: KernelIR) -> KernelIR:
    """Values the reduction loop updates across iterations start as zeros before it."""
    if k.reduction is None:
        return k
    names = tuple(b.name for b in tree.buffers if b.scope == "carried" and b.name in {v.name for v in k.values})
    written_before = {i.out for i in k.pre}
    inits = tuple(Instr(op="zeros", stage=next(i.stage for i in k.loop if i.out == n), out=n)
                  for n in names if n not in written_before)
    for i in k.loop:  # a carried value read in the loop before any write there is read from `pre`
        if i.out in names and i.op not in ("dot", "reduce", "elementwise", "copy", "load"):
            raise refuse(program.stage(i.stage), f"{i.op} updating {i.out} across the reduction loop")
    post_reads = {a for i in k.post for a in i.args}
    for n in names:
        if n not in post_reads and not any(i.op == "store" and n in i.args for i in k.loop):
            raise refuse(program.stage(next(i.stage for i in k.loop if i.out == n)),
                         f"an accumulator {n} that nothing after the reduction loop uses")
    return k.model_copy(update={"carried": names, "pre": inits + k.pre})


# ------------------------------------------------------------------------------------ online

def online(program: Program, tree: LoopTree, k: KernelIR) -> KernelIR:
    """A softmax along the reduction loop's axis whose probabilities only feed dots contracting that
    axis into accumulators (attention: O = softmax(Q K^T) V) runs online: a running maximum and sum
    per row are carried across the loop, each iteration rescales the accumulators by
    exp(old max - new max) before adding its tile, and after the loop they are divided by the sum.
    With a `mask`, tiles the mask leaves out entirely add nothing, so the loop may skip them
    (`skip`), when nothing else the loop carries would see them."""
    ons = [i for i in k.loop if i.op == "online_softmax"]
    if not ons:
        return k
    loop = list(k.loop)
    values = list(k.values)
    taken = {v.name for v in values}
    pre, post_norm, carried, owned = [], [], list(k.carried), set()
    for i in [j for j in loop if j.op == "online_softmax"]:
        n = loop.index(i)
        stage = program.stage(i.stage)
        p = i.out
        consumers = [j for j in loop if p in j.args]
        for j in consumers:
            if j.op != "dot" or not j.accumulate or j.out not in k.carried or i.axis in k.value(j.out).axes:
                raise refuse(program.stage(j.stage), f"a {j.op} reading {p}, the probabilities of the online softmax "
                                                     f"{stage.name!r} along {i.axis} (only dots contracting {i.axis} "
                                                     "into an accumulator may: they are rescaled as the maximum moves)")
        if any(p in j.args for j in k.post + k.pre):
            raise refuse(stage, f"{p} used outside the reduction loop (an online softmax's tiles exist inside it)")
        if not consumers:
            raise refuse(stage, f"an online softmax along {i.axis} whose probabilities no dot contracts")
        targets = tuple(dict.fromkeys(j.out for j in consumers))
        rows = tuple(a for a in k.value(p).axes if a != i.axis)
        for acc in targets:
            if any(p not in j.args for j in loop if j.out == acc):
                other = next(j for j in loop if j.out == acc and p not in j.args)
                raise refuse(program.stage(other.stage), f"{acc} accumulating both the online softmax's "
                                                         f"probabilities {p} and other products")
            reader = next((j for j in loop if acc in j.args and j.out != acc), None)
            if reader is not None:
                raise refuse(program.stage(reader.stage), f"{acc} read inside the reduction loop (it is not yet "
                                                          "normalised there)")
            if not set(rows) <= set(k.value(acc).axes):
                raise refuse(stage, f"rescaling {acc}[{', '.join(k.value(acc).axes)}] by a maximum over "
                                    f"[{', '.join(rows)}]")
        src = i.args[0]
        producer = next((j for j in loop if j.out == src), None)
        if producer is not None and producer.op == "elementwise" and len(producer.fn) == 1 \
                and producer.fn[0][0] == "scale" and producer.fn[0][1] is not None and len(producer.args) == 1 \
                and not any(src in j.args for j in loop + list(k.post) if j is not i) and src not in k.carried:
            # softmax(c * s): the constant joins the kernel's own scaling to base 2 (one multiply per element)
            loop.remove(producer)
            n = loop.index(i)
            i = i.model_copy(update={"args": producer.args, "fn": producer.fn})
        m, l_ = f"{p}__max", f"{p}__sum"
        for name in (m, l_):
            if name in taken:
                raise refuse(stage, f"a running statistic named {name}: a tensor has that name")
            values.append(ValueInfo(name=name, axes=rows, dtype="fp32"))
        pre += [Instr(op="zeros", stage=i.stage, out=m, reduce="max"), Instr(op="zeros", stage=i.stage, out=l_)]
        carried += [m, l_]
        owned |= {m, l_, *targets}
        loop[n] = i.model_copy(update={"args": i.args + (m, l_), "targets": targets})
        post_norm += [Instr(op="normalize", stage=i.stage, out=acc, args=(acc, l_)) for acc in targets]
    skip = None
    masked = [i for i in ons if i.mask is not None]
    updated = {i.out for i in loop if i.out in carried}
    if len(masked) == 1 and len(ons) == 1 and updated <= owned and not any(i.op == "store" for i in loop):
        skip = masked[0].mask
    return k.model_copy(update={"values": tuple(values), "pre": tuple(pre) + k.pre, "loop": tuple(loop),
                                "post": tuple(post_norm) + k.post, "carried": tuple(carried), "skip": skip})


# -------------------------------------------------------------------------------------- sink

def sink(program: Program, tree: LoopTree, k: KernelIR) -> KernelIR:
    """Work before the reduction loop that only the epilogue needs (an epilogue operand's load)
    moves after the loop: fewer live registers during it, and a subtiled epilogue loads halves."""
    if k.reduction is None:
        return k
    loop_reads = {a for i in k.loop for a in i.args}
    keep, moved = [], []
    for i in k.pre:
        if i.op != "zeros" and i.out not in loop_reads and not any(i.out in j.args for j in keep):
            moved.append(i)
        else:
            keep.append(i)
    return k.model_copy(update={"pre": tuple(keep), "post": tuple(moved) + k.post})


# ------------------------------------------------------------------------------------- hoist

def hoist(program: Program, tree: LoopTree, k: KernelIR) -> KernelIR:
    """Loads of tensors over whole axes only (a LayerNorm's gamma and beta) are the same for every
    tile: a program loads them once, before its tiles (with a persistent grid, once per SM)."""
    def invariant(i: Instr) -> bool:
        return i.op == "load" and all(k.axis(a).role == "whole" for a in program.tensor(i.tensor).shape)

    moved = tuple(i for i in k.pre + k.post if invariant(i))
    if not moved:
        return k
    return k.model_copy(update={"invariant": moved, "pre": tuple(i for i in k.pre if not invariant(i)),
                                "post": tuple(i for i in k.post if not invariant(i))})


# --------------------------------------------------------------------------------------- tma

def tma(program: Program, tree: LoopTree, k: KernelIR) -> KernelIR:
    """Loads and stores whose stage says `engine: tma` read and write through tensor descriptors:
    2-D tiles of 2-D tensors, or of row-major tensors whose other axes are point axes (a batch or
    head index: the box is 1 along them). TMA needs 16-byte aligned rows, checked at launch."""
    marked: dict[tuple[str, str], StageIR] = {}
    for s in program.stages:
        if s.op in ("load", "store") and s.engine == "tma":
            t = s.reads[0] if s.op == "load" else s.writes[0]
            marked[(t, s.op)] = s
    if not marked:
        return k
    accesses = []
    for a in k.accesses:
        s = marked.get((a.tensor, a.mode))
        if s is None:
            accesses.append(a)
            continue
        tiled = [ax for ax in a.axes if ax not in k.points]
        if len(tiled) != 2 or tuple(tiled) != a.axes[-2:] or (len(a.axes) > 2 and a.layout != "row_major"):
            raise refuse(s, f"TMA {a.mode}s other than 2-D tiles of a tensor's last two axes (row-major when "
                            "it has more)")
        if any(ax not in k.points for ax, _ in a.group) or a.pack or a.dtype == "fp4e2m1":
            raise refuse(s, f"TMA {a.mode}s of packed tensors or of tensors grouped along a tiled axis")
        accesses.append(a.model_copy(update={"tma": True}))
    for (t, mode), s in marked.items():
        if not any(a.tensor == t and a.mode == mode for a in accesses):
            raise refuse(s, f"a TMA {mode} of {t}, which the kernel does not {mode}")
    return k.model_copy(update={"accesses": tuple(accesses)})


# ------------------------------------------------------------------------------------- masks

def _choices(program: Program, ref) -> tuple[int, ...]:
    if isinstance(ref, str):
        return tuple(int(v) for v in program.param(ref).values)
    return (int(ref),)


def masks(program: Program, tree: LoopTree, k: KernelIR) -> KernelIR:
    """An axis is masked when some point leaves a partial tile (its size not a multiple of the
    tile, or a symbolic size); a whole-axis block is masked unless its size is a power of two.
    `small`: a tile choice below 16 (a dot over it takes the CUDA-core path)."""
    out = []
    for a in k.axes:
        ax = program.axis(a.name)
        if a.role in ("grid", "reduction"):
            tiles = _choices(program, a.tile)
            masked = ax.size is None or any(ax.size % t for t in tiles)
            small = min(tiles) < MIN_DOT
        elif a.role == "whole":
            masked = ax.size is None or ax.size & (ax.size - 1) != 0
            small = ax.size is None or ax.size < MIN_DOT
        else:
            masked, small = False, False
        out.append(a.model_copy(update={"masked": masked, "small": small}))
    return k.model_copy(update={"axes": tuple(out)})


# ---------------------------------------------------------------------------------- switches

def switches(program: Program, tree: LoopTree, k: KernelIR) -> KernelIR:
    """Persistent grid, split-K and the subtiled epilogue, from `options`, where they apply."""
    opts = program.option_map
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise spec_error(("options",), f"options {unknown} are not {TARGET} options ({', '.join(OPTIONS)})")
    persistent, split_k, subtile = opts.get("persistent"), opts.get("split_k"), opts.get("epilogue_subtile")
    if persistent is True and k.points and ("warp_specialize" not in opts or ws_why_not(k) is not None):
        # the warp-specialised schedule walks every point's tiles; the Triton kernel's grid keeps one axis a
        # point (a parameter is checked per point, at launch)
        raise spec_error(("options", "persistent"), f"{TARGET} generates a persistent grid with point axes "
                                                    f"{list(k.points)} in the warp-specialised schedule only")
    if split_k is not None:
        problem = None
        if k.reduction is None:
            problem = "without a reduction loop"
        elif k.points:
            problem = "with point axes"
        elif any(i.op not in ("zeros",) for i in k.pre):
            problem = "with work before the reduction loop"
        elif any(i.op == "store" for i in k.loop):
            problem = "with stores inside the reduction loop"
        elif any(i.op == "online_softmax" for i in k.loop):
            problem = "with an online softmax (its running maximum is not additive)"
        if problem:
            raise spec_error(("options", "split_k"), f"{TARGET} cannot generate split_k {problem} yet")
    if subtile is not None:
        last = k.grid[-1] if k.grid else None
        bad = next((i for i in k.post if i.op in ("reduce", "softmax", "layernorm") and i.axis == last), None)
        pre_values = {i.out for i in k.pre} - set(k.carried)
        full_width = [a for i in k.post for a in i.args if a in pre_values and last in k.value(a).axes]
        if last is None or bad is not None or not k.carried or full_width:
            raise spec_error(("options", "epilogue_subtile"), f"{TARGET} subtiles an epilogue of elementwise "
                                                              "stages and stores after a reduction loop only")
    materialize = opts.get("materialize")
    if materialize not in (None, False):
        from tilesched.passes.materialize import materialized_operand

        if materialized_operand(program) is None:
            raise spec_error(("options", "materialize"), f"{TARGET} finds no dot operand to materialize: none is "
                                                         "built in the reduction loop by loads and elementwise stages "
                                                         "from inputs that lack a grid axis")
    else:
        materialize = None
    return k.model_copy(update={"persistent": persistent, "split_k": split_k, "subtile": subtile,
                                "materialize": materialize,
                                "num_warps": opts.get("num_warps"), "num_stages": opts.get("num_stages")})


# ---------------------------------------------------------------------------------- pipeline

Pass = Callable[[Program, LoopTree, KernelIR], KernelIR]
PIPELINE: tuple[tuple[str, Pass], ...] = (("carried", carried), ("online", online), ("sink", sink), ("hoist", hoist),
                                          ("tma", tma), ("masks", masks), ("factor", factor),
                                          ("register_operand", register_operand), ("switches", switches),
                                          ("heavy_first", heavy_first), ("warp_specialize", warp_specialize))
QUIET = ("online", "factor", "register_operand", "heavy_first", "warp_specialize")  # dumped only where they change the kernel (kernels without them dump as before)


def lower_kernel(program: Program, trace: Callable[[str, str], None] | None = None) -> KernelIR:
    """Program -> KernelIR through every pass; `trace(name, text)` sees the IR after each."""
    tree = build_tree(program)
    if trace:
        trace("looptree", dump_tree(tree))
    tree = structure(program, tree)
    k = skeleton(program, tree)
    if trace:
        trace("skeleton", dump_kernel(k))
    for name, fn in PIPELINE:
        before, k = k, fn(program, tree, k)
        if trace and (name not in QUIET or k != before):
            trace(name, dump_kernel(k))
    return k


def dump_passes(program: Program) -> str:
    """The IR after every pass, as `tilesched plan --dump-ir` prints it."""
    parts: list[str] = []
    lower_kernel(program, lambda name, text: parts.append(f"=== after {name}\n{text}"))
    return "".join(parts)
