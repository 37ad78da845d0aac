"""Materialisation: compute a dot operand once per call instead of once per output tile.

A dot operand built inside the reduction loop from inputs that do not vary along some grid axis
(a low-bit GEMM's dequantised weights: W, Z, S have no M) is recomputed by every output tile
along that axis. With `options: {materialize: true}` (or a bool parameter) the schedule splits the
program in two: a producer that computes the operand over its own axes and stores it to a
workspace, and a consumer, the original program with that chain replaced by a load of the
workspace. The two compose to the original's meaning (the operand keeps its dtype, so rounding is
the same); only the schedule changes. Pure functions on Programs: the GPU passes lower each part.
"""

from __future__ import annotations

from dataclasses import dataclass

from tilesched.ir.bind import Binding, bind
from tilesched.ir.deps import derive_deps, topological_order
from tilesched.ir.nodes import LoopIR, Program, StageIR, TensorIR

OPTION = "materialize"


@dataclass(frozen=True)
class Split:
    operand: str  # the tile tensor computed once per call
    workspace: str  # the global tensor that holds it between the two kernels
    producer: Program
    consumer: Program


def _chain(program: Program, operand: str) -> list[StageIR] | None:
    """The stages that build `operand` (loads and elementwise stages only), in spec order; None
    when something else builds it."""
    writers = {t: s for s in program.stages for t in s.writes}
    chain: dict[str, StageIR] = {}
    todo = [operand]
    while todo:
        t = todo.pop()
        if program.tensor(t).scope != "tile":
            continue  # a global input
        s = writers.get(t)
        if s is None or s.op not in ("load", "elementwise"):
            return None
        if s.name not in chain:
            chain[s.name] = s
            todo += list(s.reads)
    return sorted(chain.values(), key=lambda s: s.index)


def _fits(program: Program, operand: str, chain: list[StageIR]) -> bool:
    reduction = next((lp.axis for lp in program.loops if lp.kind == "reduction"), None)
    axes = set(program.tensor(operand).shape)
    grid = {lp.axis for lp in program.loops if lp.kind == "spatial"}
    if reduction is None or not (grid - axes) or not any(s.kind == "compute" for s in chain):
        return False  # nothing would be computed fewer times
    touched = {t for s in chain for t in s.reads + s.writes}
    return all(s.at == reduction for s in chain) and all(set(program.tensor(t).shape) <= axes for t in touched)


def materialized_operand(program: Program) -> tuple[str, list[StageIR]] | None:
    """The first dot operand (in stage order) the schedule can compute once per call, with the
    stages that build it; None if there is none."""
    for dot in program.stages:
        if dot.op != "dot":
            continue
        for t in dot.reads:
            if t in dot.writes or program.tensor(t).scope != "tile":
                continue
            chain = _chain(program, t)
            if chain and _fits(program, t, chain):
                return t, chain
    return None


def _free(taken: set[str], base: str) -> str:
    """`base`, with underscores appended until no name in `taken` has it."""
    name = base
    while name in taken:
        name += "_"
    return name


def _with_stages(program: Program, name: str, stages: list[StageIR], tensors: list[TensorIR],
                 loops: tuple[LoopIR, ...], options: tuple) -> Program:
    deps = derive_deps(stages, {})
    order, _ = topological_order([s.name for s in stages], deps)
    axes = {a for t in tensors for a in t.shape} | {lp.axis for lp in loops}
    return program.model_copy(update={
        "name": name, "axes": tuple(a for a in program.axes if a.name in axes), "tensors": tuple(tensors),
        "loops": loops, "stages": tuple(stages), "deps": deps, "order": order, "options": options})


def split(program: Program) -> Split | None:
    """The producer and consumer programs of the materialising schedule, or None when no dot
    operand qualifies (see `materialized_operand`)."""
    found = materialized_operand(program)
    if found is None:
        return None
    operand, chain = found
    t = program.tensor(operand)
    ws = _free({x.name for x in program.tensors} | {a.name for a in program.axes}, f"{operand}_ws")
    ws_tensor = t.model_copy(update={"name": ws, "scope": "global", "layout": "row_major", "role": "output",
                                     "group": (), "pack": None, "alias": None})
    in_chain = {s.name for s in chain}
    stage_names = {s.name for s in program.stages}
    kept_opts = tuple((k, v) for k, v in program.options if k in ("num_warps", "num_stages"))

    # producer: the operand's axes as spatial loops in the original order, the chain at the
    # innermost, then a store of the operand
    loops = tuple(LoopIR(axis=lp.axis, kind="spatial", tile=lp.tile) for lp in program.loops if lp.axis in t.shape)
    inner = loops[-1].axis
    stages = [s.model_copy(update={"at": inner, "depth": len(loops)}) for s in chain]
    dot_index = max(s.index for s in chain)
    stages.append(StageIR(index=dot_index, name=_free(stage_names, f"store_{operand}"), kind="memory", op="store",
                          reads=(operand,), writes=(ws,), at=inner, depth=len(loops)))
    touched = {x for s in chain for x in s.reads + s.writes}
    tensors = [x for x in program.tensors if x.name in touched] + [ws_tensor]
    producer = _with_stages(program, f"{program.name}_{OPTION}", stages, tensors, loops, kept_opts)
    producer = producer.model_copy(update={"tile_order": producer.tile_order.model_copy(update={"kind": "row_major"})})

    # consumer: the chain replaced by a load of the workspace where the chain began (a TMA load:
    # the workspace is the schedule's own, allocated with 16-byte aligned rows)
    load = StageIR(index=chain[0].index, name=_free(stage_names, f"load_{operand}"), kind="memory", op="load",
                   reads=(ws,), writes=(operand,), at=chain[0].at, depth=chain[0].depth,
                   engine="tma" if len(t.shape) == 2 else None)
    first = program.stages.index(chain[0])
    stages = [s for s in program.stages[:first] if s.name not in in_chain] + [load] \
        + [s for s in program.stages[first:] if s.name not in in_chain]
    used = {x for s in stages for x in s.reads + s.writes}
    tensors = [x for x in program.tensors if x.name in used] + [ws_tensor.model_copy(update={"role": "input"})]
    options = tuple((k, v) for k, v in program.options if k not in (OPTION, "register_operand"))  # a plain dot now
    consumer = _with_stages(program, f"{program.name}_{OPTION}d", stages, tensors, program.loops, options)
    return Split(operand=operand, workspace=ws, producer=producer, consumer=consumer)


def bind_parts(sp: Split, b: Binding) -> tuple[Binding, Binding]:
    """The producer and the consumer bound at the parameters and sizes of `b` (a binding of the
    program `sp` was split from), for planning and the cost model."""
    values = {**b.params, **{a.name: b.sizes[a.name] for a in b.program.axes if a.symbolic}}

    def part(prog: Program) -> Binding:
        keep = {a.name for a in prog.axes if a.symbolic} | set(b.params)
        return bind(prog, {k: v for k, v in values.items() if k in keep}, schedule=False)

    return part(sp.producer), part(sp.consumer)
