"""The kernel plan: every decision the CUDA templates need, derived from the IR by pure functions.

`kernel_plan(program)` decides what code exists (operand roles, layouts, epilogue ops, TMA or
pointer loads, which switches are compile-time parameters). `launch_plan(kplan, binding)` decides
one launch (block sizes, masks from the schedule's ragged flags, grid, persistent or not). The
templates only render a KernelPlan; the launcher only executes a LaunchPlan.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from tilesched.errors import SpecError, spec_error
from tilesched.ir.bind import Binding
from tilesched.ir.nodes import Program, StageIR
from tilesched.schedules.plan import derive_schedule
from tilesched.semantics.ops import fn_items

TRITON_DTYPES = {"fp16": "tl.float16", "bf16": "tl.bfloat16", "fp32": "tl.float32"}
INPUT_DTYPES = ("fp16", "bf16", "fp32")
ELEMENT_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}
UNARY_FNS = ("relu", "relu6", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh", "exp", "cast")
BINARY_FNS = ("bias", "add", "mul")
# spec `options` the CUDA backend reads; each is a literal or the name of a search-space parameter
OPTIONS = ("num_warps", "num_stages", "persistent", "epilogue_subtile", "split_k")
MIN_DOT = 16  # tl.dot needs every block dimension >= 16; smaller BLOCK_M uses a CUDA-core reduction


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Operand(_Frozen):
    """A global tensor the kernel reads or writes, with the logical axes it is indexed by."""

    name: str
    dtype: str
    layout: str  # row_major | col_major (of the last two axes)
    axes: tuple[str, ...]  # roles, e.g. ("b", "m", "k"); b = batch


class EpilogueOp(_Frozen):
    fn: str
    operand: Operand | None = None  # the tensor a binary fn (bias/add/mul) reads


class KernelPlan(_Frozen):
    """What one spec's kernel module contains (independent of sizes and tuned parameters)."""

    name: str  # kernel function prefix
    spec: str
    a: Operand
    b: Operand
    c: Operand
    acc_dtype: str
    axes: dict[str, str]  # role -> spec axis name: m, n, k, and b when batched
    tile_params: dict[str, str | int]  # role -> spec parameter (or literal) of the loop tile
    tile_order: str  # row_major | column_major | grouped
    group: str | int | None  # GROUP_M source for grouped order
    epilogue: tuple[EpilogueOp, ...]
    tma: bool  # loads/stores through Hopper tensor descriptors
    persistent: str | bool | None  # literal, parameter name, or None (absent: one program per tile)
    epilogue_subtile: str | bool | None
    split_k: str | int | None  # K split across programs (fp32 atomics + a finishing epilogue kernel)
    small_m: bool  # some BLOCK_M choice is below MIN_DOT: render the CUDA-core path too
    k_mask: bool  # K may be ragged for some point: render the masked K loop
    num_warps: str | int | None
    num_stages: str | int | None

    @property
    def batched(self) -> bool:
        return "b" in self.axes

    @property
    def extra_operands(self) -> tuple[Operand, ...]:
        return tuple(op.operand for op in self.epilogue if op.operand is not None)


class LaunchPlan(_Frozen):
    """One launch: grid, compile-time constants and launch options."""

    grid: tuple[int, ...]
    constexprs: dict[str, int | bool]
    num_warps: int
    num_stages: int
    persistent: bool
    split_k: int
    tiles: int  # spatial output tiles per batch


def _fail(msg: str, loc: tuple = ()) -> SpecError:
    return spec_error(loc, msg)


def _refuse(stage: StageIR, what: str) -> SpecError:
    """The one form of every refusal: the stage, and what this target cannot generate yet."""
    return spec_error(("stages", stage.index), f"cuda cannot generate {what} yet (stage {stage.name!r})")


def _roles(shape: tuple[str, ...], axes: dict[str, str]) -> tuple[str, ...]:
    inv = {v: k for k, v in axes.items()}
    return tuple(inv[a] for a in shape)


class _Dataflow(BaseModel):
    """The stages of a spec matched to the one kernel shape this template renders:
    (load ->) dot -> elementwise* -> store, each stage used exactly once."""

    model_config = ConfigDict(frozen=True)

    dot: StageIR
    a: str  # global tensors read by the dot (through a load or directly)
    b: str
    acc: str
    epilogue: tuple[StageIR, ...]
    store: StageIR


def match_dataflow(program: Program) -> _Dataflow:
    """Account for every stage: render it in the GEMM kernel or refuse it, naming the stage."""
    stages = [program.stage(n) for n in program.order]
    for s in stages:
        if s.kind == "comm":
            raise _refuse(s, f"comm stage {s.op} in a single-GPU kernel (the overlap backend generates "
                             "all_gather/reduce_scatter consumers)")
        if s.op not in ("load", "store", "dot", "elementwise"):
            raise _refuse(s, f"{s.op} stages")
    dots = [s for s in stages if s.op == "dot"]
    if not dots:
        raise _refuse(stages[0], "a kernel without a dot stage (the GEMM family is what it generates today)")
    if len(dots) > 1:
        raise _refuse(dots[1], "a second dot in one kernel")
    dot = dots[0]
    writer = {}
    for s in stages:
        for t in s.writes:
            writer.setdefault(t, []).append(s)
    used: set[str] = {dot.name}
    acc = dot.writes[0]
    operands = [r for r in dot.reads if r != acc]
    sources = []
    for name in operands:
        t = program.tensor(name)
        if t.scope == "global":
            if name in writer:
                raise _refuse(writer[name][0], f"a stage writing the dot operand {name}")
            sources.append(name)
            continue
        fills = writer.get(name, [])
        load = fills[0] if fills else None
        if load is None or load.op != "load":
            raise _refuse(fills[0] if fills else dot, f"dot operand {name} filled by a {load.op if load else 'missing'} "
                                                     "stage (an operand prologue)")
        if len(fills) > 1:
            raise _refuse(fills[1], f"a stage that modifies the loaded operand {name} (an operand prologue)")
        src = program.tensor(load.reads[0])
        if src.scope != "global":
            raise _refuse(load, f"a load from the tile tensor {src.name}")
        sources.append(src.name)
        used.add(load.name)
    if program.tensor(acc).scope != "tile":
        raise _refuse(dot, f"a dot accumulating into the global tensor {acc}")
    current = acc
    epilogue = []
    store = None
    for s in stages:
        if s.name in used:
            continue
        if s.op == "elementwise":
            if not s.reads or s.reads[0] != current:
                raise _refuse(s, f"an elementwise stage that does not continue the dot's result ({current})")
            for extra in s.reads[1:]:
                if program.tensor(extra).scope != "global" or extra in writer:
                    raise _refuse(s, f"an epilogue operand {extra} that is not a global input")
            for name, arg in fn_items(s):
                if arg is not None or (name not in UNARY_FNS and name not in BINARY_FNS):
                    what = f"fn {name!r} with a constant" if arg is not None else f"fn {name!r}"
                    raise spec_error(("stages", s.index, "fn"), f"cuda cannot generate {what} yet "
                                                                f"(stage {s.name!r})")
            if program.tensor(s.writes[0]).scope != "tile":
                raise _refuse(s, f"an elementwise stage writing the global tensor {s.writes[0]} (store it instead)")
            epilogue.append(s)
            current = s.writes[0]
        elif s.op == "store":
            if store is not None:
                raise _refuse(s, "a second store")
            if s.reads[0] != current:
                raise _refuse(s, f"a store of {s.reads[0]}, which is not the kernel's result {current}")
            store = s
        else:  # an unused load
            raise _refuse(s, f"a {s.op} whose tile no dot reads")
    if store is None:
        raise _refuse(stages[-1], "a kernel that stores no result")
    return _Dataflow(dot=dot, a=sources[0], b=sources[1], acc=acc, epilogue=tuple(epilogue), store=store)


def kernel_plan(program: Program) -> KernelPlan:
    """Decide what the kernel module for `program` contains. Raises SpecError, placed at the stage
    it concerns, for what the CUDA backend cannot generate."""
    if program.target != "cuda":
        raise _fail(f"{program.name}: target {program.target!r} is not cuda", ("target",))
    flow = match_dataflow(program)
    dot = flow.dot
    acc = program.tensor(flow.acc)
    a_glob, b_glob = program.tensor(flow.a), program.tensor(flow.b)
    c_glob = program.tensor(flow.store.writes[0])
    a_shape, b_shape = a_glob.shape, b_glob.shape
    contracted = (set(a_shape) & set(b_shape)) - set(acc.shape)
    if len(contracted) != 1:
        raise _refuse(dot, f"a dot contracting {len(contracted)} axes")
    k_ax = next(iter(contracted))
    if len(acc.shape) not in (2, 3):
        raise _refuse(dot, "a dot whose result is not [M, N] or [BATCH, M, N]")
    m_ax, n_ax = acc.shape[-2], acc.shape[-1]
    axes = {"m": m_ax, "n": n_ax, "k": k_ax}
    if len(acc.shape) == 3:
        axes["b"] = acc.shape[0]
    if a_shape[-2:] != (m_ax, k_ax) or b_shape[-2:] != (k_ax, n_ax):
        raise _refuse(dot, f"dot operands other than [.., {m_ax}, {k_ax}] @ [.., {k_ax}, {n_ax}] (use `layout: "
                           "col_major` for a transposed operand)")
    for t in (a_glob, b_glob):
        if t.dtype not in INPUT_DTYPES:
            raise _refuse(dot, f"dot operands of dtype {t.dtype}")
    if acc.dtype != "fp32":
        raise _refuse(dot, f"a {acc.dtype} accumulator")
    if c_glob.dtype not in INPUT_DTYPES:
        raise _refuse(flow.store, f"a {c_glob.dtype} output")

    def operand(t) -> Operand:
        return Operand(name=t.name, dtype=t.dtype, layout=t.layout, axes=_roles(t.shape, axes))

    epilogue: list[EpilogueOp] = []
    for s in flow.epilogue:
        extra = [program.tensor(n) for n in s.reads[1:]]
        for fn in s.fn:
            if fn in BINARY_FNS:
                if not extra:
                    raise _refuse(s, f"fn {fn} without a tensor to combine with")
                t = extra.pop(0)
                if set(t.shape) - {axes.get("b"), m_ax, n_ax}:
                    raise _refuse(s, f"an epilogue operand {t.name} with axes outside the output tile")
                epilogue.append(EpilogueOp(fn=fn, operand=operand(t)))
            elif fn != "cast":  # the store casts to the output dtype anyway
                epilogue.append(EpilogueOp(fn=fn))
        if extra:
            raise _refuse(s, f"reads {[t.name for t in extra]} that no fn uses")

    tiles: dict[str, str | int] = {}
    for role in ("m", "n", "k"):
        lp = program.loop(axes[role])
        if lp is None or lp.tile is None:
            raise _fail(f"cuda cannot generate a kernel whose axis {axes[role]} has no tiled loop yet", ("loops",))
        tiles[role] = lp.tile
    if "b" in axes:
        lp = program.loop(axes["b"])
        if lp is None or lp.tile not in (1, None):
            raise _fail(f"cuda cannot generate a batch axis {axes['b']} with tiles other than 1 yet", ("loops",))

    opts = program.option_map
    unknown = set(opts) - set(OPTIONS)
    if unknown:
        raise _fail(f"options {sorted(unknown)} are not CUDA options ({', '.join(OPTIONS)})", ("options",))
    memory = [program.stage(n) for n in program.order if program.stage(n).op in ("load", "store")]
    engines = {s.engine for s in memory}
    tma = engines == {"tma"}
    if "tma" in engines and not tma:
        odd = next(s for s in memory if s.engine != "tma")
        raise _refuse(odd, "a mix of TMA and pointer loads/stores (set engine: tma on every load and store, or "
                           "on none)")
    if tma and any(program.tensor(n).scope == "global" for n in dot.reads):
        raise _refuse(dot, "TMA loads of operands the dot reads directly (add load stages with engine: tma)")
    persistent = opts.get("persistent")
    if tma and "b" in axes:
        raise _refuse(dot, "TMA loads of batched GEMMs")
    if persistent not in (None, False) and "b" in axes:
        raise _fail("cuda cannot generate a persistent grid for batched GEMMs yet", ("options", "persistent"))

    split_k = opts.get("split_k")
    if split_k is not None and (not tma or "b" in axes):
        raise _fail("cuda generates split_k for non-batched TMA GEMMs only", ("options", "split_k"))

    def choices(ref) -> tuple[int, ...]:
        if isinstance(ref, str):
            return tuple(int(v) for v in program.param(ref).values)
        return (int(ref),)

    k_axis = program.axis(k_ax)
    k_mask = k_axis.size is None or any(k_axis.size % c for c in choices(tiles["k"]))
    to = program.tile_order
    if to.kind == "rank_rotated":
        raise _fail("cuda generates rank_rotated tile orders in the overlap backend only", ("tile_order",))
    return KernelPlan(
        name=program.name, spec=program.name, a=operand(a_glob), b=operand(b_glob), c=operand(c_glob),
        acc_dtype=acc.dtype, axes=axes, tile_params=tiles, tile_order=to.kind, group=to.group,
        epilogue=tuple(epilogue), tma=tma, persistent=persistent, epilogue_subtile=opts.get("epilogue_subtile"),
        split_k=split_k,
        small_m=min(choices(tiles["m"])) < MIN_DOT, k_mask=k_mask,
        num_warps=opts.get("num_warps"), num_stages=opts.get("num_stages"),
    )


def launch_plan(kp: KernelPlan, b: Binding, num_sms: int = 132) -> LaunchPlan:
    """Block sizes, masks and grid for one bound point. Masks come from the schedule: an axis
    whose last tile is partial gets masked loads (pointer path; TMA clips in hardware)."""
    sched = derive_schedule(b)
    ragged = {g.axis: g.ragged for g in sched.grid}
    bm, bn, bk = (b.tile(kp.axes[r]) for r in ("m", "n", "k"))
    if bn < MIN_DOT or bk < MIN_DOT:
        raise _fail(f"{kp.spec}: BLOCK_N={bn} and BLOCK_K={bk} must be >= {MIN_DOT} (tl.dot)")
    if kp.tma:  # a tensor descriptor's block spans at least 16 bytes along the tensor's contiguous axis
        for op in (kp.a, kp.c):
            if op.layout == "col_major" and bm * ELEMENT_BYTES[op.dtype] < 16:
                raise _fail(f"{kp.spec}: BLOCK_M={bm} is {bm * ELEMENT_BYTES[op.dtype]} bytes of the col_major "
                            f"{op.name}, whose TMA blocks need at least 16 bytes along M (BLOCK_M >= "
                            f"{16 // ELEMENT_BYTES[op.dtype]})")
    m, n = b.sizes[kp.axes["m"]], b.sizes[kp.axes["n"]]
    tiles = -(-m // bm) * -(-n // bn)
    persistent = bool(b.value(kp.persistent, False)) if kp.persistent is not None else False
    subtile = bool(b.value(kp.epilogue_subtile, False)) if kp.epilogue_subtile is not None else False
    if subtile and bn < 2 * MIN_DOT:
        subtile = False  # half a tile narrower than 16 columns is not worth a second store
    group = int(b.value(kp.group, 1)) if kp.tile_order == "grouped" else 1
    const: dict[str, int | bool] = {
        "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group,
        "EVEN_M": not ragged[kp.axes["m"]], "EVEN_N": not ragged[kp.axes["n"]], "EVEN_K": not ragged[kp.axes["k"]],
    }
    if kp.persistent is not None:
        const["PERSISTENT"] = persistent
        const["NUM_SMS"] = num_sms
    if kp.epilogue_subtile is not None:
        const["EPILOGUE_SUBTILE"] = subtile
    split = int(b.value(kp.split_k, 1)) if kp.split_k is not None else 1
    if kp.split_k is not None:
        if split > 1 and persistent:
            raise _fail(f"{kp.spec}: split_k={split} with a persistent grid is not generated (constrain them apart)")
        const["SPLIT_K"] = split
    if persistent:
        grid: tuple[int, ...] = (min(num_sms, tiles),)
    else:
        grid = (tiles,)
    if kp.batched:
        grid = grid + (b.sizes[kp.axes["b"]],)
    elif split > 1:
        grid = grid + (split,)
    return LaunchPlan(grid=grid, constexprs=const, num_warps=int(b.value(kp.num_warps, 4)),
                      num_stages=int(b.value(kp.num_stages, 3)), persistent=persistent, split_k=split, tiles=tiles)


def retyped(program: Program, old: str, new: str) -> Program:
    """The same program with every `old` tensor dtype replaced by `new` (e.g. bf16 -> fp16 for the
    Triton interpreter, whose bf16 dots are not trustworthy)."""
    tensors = tuple(t.model_copy(update={"dtype": new}) if t.dtype == old else t for t in program.tensors)
    return program.model_copy(update={"tensors": tensors})
