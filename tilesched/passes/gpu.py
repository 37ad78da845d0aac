"""Passes from a spec to a GPU kernel IR: small pure functions, listed in PIPELINE, each dumpable.

    looptree   loops as a tree, stages at their `at` level (ir/looptree.py)
    structure  spatial grid loops, at most one reduction loop, innermost; nothing outside
    skeleton   axis roles; stages -> instructions in three phases (before, inside, after the
               reduction loop); global tensors a compute stage reads become loads
    carried    accumulators the reduction loop updates start as zeros before it
    sink       what only the epilogue needs moves after the reduction loop
    hoist      loads no tile changes (over whole axes only) happen once per program
    tma        loads / stores a spec marks `engine: tma` go through tensor descriptors
    masks      which axes may be ragged for some point (masked loads, stores, reductions)
    switches   persistent grid, split-K, subtiled epilogue, warps and stages, from `options`

Every stage becomes instructions or the spec is refused at that stage (file:line:col through
`SpecError.located`): `cuda cannot generate <what> yet (stage 'x')`.
"""

from __future__ import annotations

from collections.abc import Callable

from tilesched.errors import SpecError, spec_error
from tilesched.ir.looptree import LoopTree, build_tree, dump_tree
from tilesched.ir.nodes import Program, StageIR
from tilesched.passes.kernel import AxisInfo, Constant, Instr, KernelIR, ValueInfo, dump_kernel

TARGET = "cuda"
UNARY = ("relu", "relu6", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh", "exp", "exp2", "log", "sqrt", "rsqrt",
         "reciprocal", "abs", "neg", "cast")
BINARY = ("bias", "add", "sub", "mul", "scale", "div", "max", "min")
FLOATS = ("fp16", "bf16", "fp32")
OPTIONS = ("num_warps", "num_stages", "persistent", "epilogue_subtile", "split_k")
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
        if t.dtype not in FLOATS:
            raise refuse(stage, f"a {t.dtype} tensor {name}")
        key = (phase, name)
        if key not in self.loaded:
            self.loaded[key] = self.value(name)
            out.append(Instr(op="load", stage=stage.name, out=name, tensor=name))
        return self.loaded[key]

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
            if src.dtype not in FLOATS or dst.dtype not in FLOATS:
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
            out.append(Instr(op="dot", stage=stage.name, out=self.value(acc), args=args,
                             accumulate=phase == "loop" or acc in stage.reads))
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
            if op != "reduce" and self.roles[stage.axis].role == "reduction":
                raise refuse(stage, f"a {op} along the reduction loop's axis {stage.axis} (a loop-carried "
                                    "online form)")
            if op == "reduce" and self.roles[stage.axis].role == "reduction" and stage.reduce == "mean":
                raise refuse(stage, "a mean along the reduction loop's axis (sum, then scale)")
            args = tuple(self.operand(stage, r, phase, out) for r in stage.reads if r != dst or op != "reduce")
            accumulate = op == "reduce" and (phase == "loop" and self.roles[stage.axis].role == "reduction"
                                             or dst in stage.reads)
            out.append(Instr(op=op, stage=stage.name, out=self.value(dst), args=args, axis=stage.axis,
                             reduce=stage.reduce, accumulate=accumulate))
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
                accesses.append(Access(tensor=t.name, axes=t.shape, dtype=t.dtype, layout=t.layout, mode=mode))
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
    2-D tensors without point axes (TMA needs 16-byte aligned rows, checked at launch)."""
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
        if len(a.axes) != 2 or set(a.axes) & set(k.points):
            raise refuse(s, f"TMA {a.mode}s of {len(a.axes)}-D or batched tensors")
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
    if persistent not in (None, False) and k.points:
        raise spec_error(("options", "persistent"), f"{TARGET} cannot generate a persistent grid with point axes "
                                                    f"{list(k.points)} yet")
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
    return k.model_copy(update={"persistent": persistent, "split_k": split_k, "subtile": subtile,
                                "num_warps": opts.get("num_warps"), "num_stages": opts.get("num_stages")})


# ---------------------------------------------------------------------------------- pipeline

Pass = Callable[[Program, LoopTree, KernelIR], KernelIR]
PIPELINE: tuple[tuple[str, Pass], ...] = (("carried", carried), ("sink", sink), ("hoist", hoist), ("tma", tma),
                                          ("masks", masks), ("switches", switches))


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
        k = fn(program, tree, k)
        if trace:
            trace(name, dump_kernel(k))
    return k


def dump_passes(program: Program) -> str:
    """The IR after every pass, as `tilesched plan --dump-ir` prints it."""
    parts: list[str] = []
    lower_kernel(program, lambda name, text: parts.append(f"=== after {name}\n{text}"))
    return "".join(parts)
