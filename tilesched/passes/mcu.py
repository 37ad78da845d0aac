"""Passes from a spec to the Cortex-M kernel IR (passes/mcu_ir.py): small pure functions, each dumpable.

    looptree   loops as a tree, stages at their `at` level (ir/looptree.py)
    structure  int8 ops the C rules render, the spec's loops, one network input and one output;
               weights, biases and norm parameters become flash constants
    chains     stages at one level that run point by point (a depthwise pixel, then the 1x1 convolution
               of that pixel; a dot with its requantize; an FFN row): intermediates are one vector each
    layouts    memory order of every materialised tensor: what a consumer contracts is contiguous
    schedule   (bound) the spec's loops over blocks; per level, the chain whose output leaves the level
               runs over its block, the chains it reads run on demand: a convolution's input rows from
               the last computed one (a ring carries them across blocks) or, with `halo: recompute`,
               the whole window again; chains outside every loop run whole, one memory step per row
    buffers    (bound) a dry run of the schedule: arena buffers, each ring folded to the rows live at
               once, segments (the planner's unit) from what each step writes
    events     the dry run's segment reads and writes: the memory planner's input (schedules/memory.py)

Every stage becomes part of a chain or the spec is refused at that stage (file:line:col through
`SpecError.located`): `cortex-m7 cannot generate <what> yet (stage 'x')`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from math import prod

from tilesched.errors import SpecError, spec_error
from tilesched.ir.bind import Binding
from tilesched.ir.conv import pads, window
from tilesched.ir.dtypes import FLOAT
from tilesched.ir.looptree import LoopTree, build_tree, dump_tree
from tilesched.ir.nodes import Program, StageIR
from tilesched.passes.mcu_ir import (
    BufferInfo,
    Chain,
    Expr,
    Fill,
    LoopNode,
    McuKernel,
    OpNode,
    Run,
    TensorInfo,
    dump_buffers,
    dump_chains,
    dump_layouts,
    dump_schedule,
    emax,
    emin,
)
from tilesched.semantics import fns as F

TARGETS = ("cortex-m4", "cortex-m7")
OPS = ("conv2d", "depthwise_conv2d", "avgpool2d", "dot", "requantize", "elementwise", "softmax", "layernorm",
       "load", "store", "copy")
OPTIONS = {"halo": ("cache", "recompute"), "fuse": None}
HEADS = ("conv", "dw", "pool")  # rules that read windows of their input: they start a chain


def refuse(program: Program, stage: StageIR, what: str, field: str | None = None) -> SpecError:
    loc = ("stages", stage.index) + ((field,) if field else ())
    return spec_error(loc, f"{program.target} cannot generate {what} yet (stage {stage.name!r})")


# ------------------------------------------------------------------------------------------ structure

def tensor_infos(program: Program) -> dict[str, TensorInfo]:
    return {t.name: TensorInfo(name=t.name, axes=t.shape, dtype=t.dtype, scope=t.scope, role=t.role,
                               region=t.region, alias=t.alias) for t in program.tensors}


def _writers(program: Program) -> dict[str, StageIR]:
    return {t: s for s in program.stages for t in s.writes}


def _readers(program: Program) -> dict[str, list[StageIR]]:
    out: dict[str, list[StageIR]] = {}
    for s in program.stages:
        for t in dict.fromkeys(s.reads):
            out.setdefault(t, []).append(s)
    return out


def dot_roles(program: Program, stage: StageIR) -> tuple[str, str, tuple[str, ...]]:
    """(A, B, contracted axes) of a dot: B holds the output's last axis (each output vector element is
    a row of B), A the point's operand; contracted axes in A's order."""
    out = program.tensor(stage.writes[0])
    ops = [n for n in stage.reads if n != out.name]
    x, y = (program.tensor(n) for n in ops[:2])
    v = out.shape[-1]
    if (v in x.shape) == (v in y.shape):
        raise refuse(program, stage, f"a dot whose output axis {v} is not one operand's alone")
    a, b = (x, y) if v in y.shape else (y, x)
    contracted = tuple(ax for ax in a.shape if ax in b.shape and ax not in out.shape)
    points = set(out.shape[:-1])
    if not set(a.shape) - set(contracted) <= points or not set(b.shape) - set(contracted) <= points | {v}:
        raise refuse(program, stage, f"a dot whose operands {a.name}[{', '.join(a.shape)}] and "
                                     f"{b.name}[{', '.join(b.shape)}] are not a vector per output point times a "
                                     "matrix")
    return a.name, b.name, contracted


def _param_roles(program: Program) -> tuple[set[str], set[str]]:
    """Global inputs read as parameters (weights, biases, norm scales) and as activations."""
    params, acts = set(), set()
    for s in program.stages:
        r = s.reads
        if s.op in ("conv2d", "depthwise_conv2d"):
            acts.add(r[0])
            params.update(r[1:])
        elif s.op == "dot":
            a, b, _ = dot_roles(program, s)
            acts.add(a)
            (params if program.tensor(b).scope == "global" else acts).add(b)
        elif s.op == "requantize":
            acts.add(r[0])
            params.update(r[1:])
        elif s.op == "layernorm":
            acts.add(r[0])
            params.update(r[1:])
        else:
            acts.update(r)
    return params, acts


def constants(program: Program) -> set[str]:
    """Global inputs that live in flash: `region: flash`, or read only as parameters."""
    params, acts = _param_roles(program)
    out = set()
    for t in program.tensors:
        if t.role != "input" or t.alias is not None:
            continue
        if t.region == "flash" or (t.name in params and t.name not in acts):
            out.add(t.name)
    return out


def structure(program: Program, tree: LoopTree) -> LoopTree:
    """What the C rules render: int8 activations (int32 accumulators), the ops of `OPS`, spatial loops,
    one network input (aliases of it included) and one output; everything else is refused at its stage."""
    if program.target not in TARGETS:
        raise spec_error(("target",), f"target {program.target!r} is not a Cortex-M target")
    unknown = sorted(set(program.option_map) - set(OPTIONS))
    if unknown:
        raise spec_error(("options",), f"options {unknown} are not {program.target} options "
                                       f"({', '.join(OPTIONS)})")
    _check_option_values(program)
    for lp in program.loops:
        if lp.kind != "spatial":
            raise spec_error(("loops",), f"{program.target} cannot generate reduction loops ({lp.axis}) yet")
    for s in program.stages:
        if s.op not in OPS:
            raise refuse(program, s, f"{_article(s.op)} {s.op} stage")
        for name in s.reads + s.writes:
            t = program.tensor(name)
            if t.dtype in FLOAT:
                raise refuse(program, s, f"a {t.dtype} tensor {name} (int8 and int32 only)")
        if s.op == "dot" and s.writes[0] in s.reads:
            raise refuse(program, s, "a dot that accumulates into its output")
        _check_stage(program, s)
    from tilesched.semantics import input_names, output_names

    outs = output_names(program)
    if len(outs) != 1:
        s = next((s for s in program.stages if set(s.writes) & set(outs[1:])), program.stages[-1])
        raise spec_error(("stages", s.index), f"{program.target} cannot generate a kernel with {len(outs)} outputs "
                                              f"({', '.join(outs)}) yet")
    writers = _writers(program)
    for s in program.stages:
        for t in s.reads:
            if t in outs and t in writers and writers[t].name != s.name:
                raise refuse(program, s, f"a stage reading the network output {t}")
    consts = constants(program)
    acts = [n for n in input_names(program) if n not in consts]
    if len(acts) > 1:
        second = acts[1]
        s = next(s for s in program.stages if second in s.reads or any(program.tensor(r).alias == second
                                                                         for r in s.reads))
        raise refuse(program, s, f"a second network input {second} (one input, {acts[0]}; give parameters "
                                 "`region: flash`)")
    if program.tensor(outs[0]).dtype != "int8":
        s = writers[outs[0]]
        raise refuse(program, s, f"an {program.tensor(outs[0]).dtype} network output")
    return tree


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _check_stage(program: Program, s: StageIR) -> None:
    from tilesched.semantics.ops import fn_items

    items = fn_items(s)
    t = program.tensor
    if s.op in ("conv2d", "depthwise_conv2d"):
        w = t(s.reads[1])
        if t(s.reads[0]).dtype != "int8" or w.quant is None or t(s.reads[0]).quant is None:
            raise refuse(program, s, "a convolution of unquantised tensors")
        if t(s.writes[0]).dtype not in ("int8", "int32"):
            raise refuse(program, s, f"a {t(s.writes[0]).dtype} convolution output")
    if s.op == "dot":
        for n in s.reads:
            if t(n).dtype != "int8":
                raise refuse(program, s, f"a dot of {t(n).dtype} operands (int8 only)")
    if s.op in ("softmax", "layernorm"):
        x = t(s.reads[0])
        if x.dtype != "int8" or s.axis != x.shape[-1] or t(s.writes[0]).shape[-1] != s.axis:
            raise refuse(program, s, f"an int8 {s.op} along an axis other than the last one of its input and "
                                     "output", "axis")
        for n in s.reads[1:]:
            if t(n).dtype != "int8" or t(n).quant is None:
                raise refuse(program, s, f"layernorm parameters {n} that are not quantised int8")
    if s.op == "avgpool2d" and t(s.reads[0]).dtype != "int8":
        raise refuse(program, s, "average pooling of non-int8 tensors")
    if s.op == "elementwise":
        names = [n for n, _ in items]
        if any(a is not None for _, a in items):
            raise refuse(program, s, "an elementwise fn with a constant", "fn")
        if "cast" in names or t(s.reads[0]).dtype != "int8" or t(s.writes[0]).dtype != "int8":
            raise refuse(program, s, "elementwise stages other than int8 -> int8 (casts, int32 arithmetic)", "fn")
        binary = [n for n in names if F.is_binary(n)]
        if len(binary) > 1 or any(n not in ("add", "sub", "mul") for n in binary):
            raise refuse(program, s, "elementwise chains other than unary fns around one add/sub/mul", "fn")
        if binary and len(s.reads) != 2:
            raise refuse(program, s, "an elementwise stage reading more than two tensors")
        for n in s.reads[1:]:
            if set(t(n).shape) != set(t(s.writes[0]).shape):
                raise refuse(program, s, f"a broadcast operand {n}[{', '.join(t(n).shape)}]")
        if t(s.reads[0]).shape[-1] != t(s.writes[0]).shape[-1]:
            raise refuse(program, s, "an elementwise stage that changes the last axis")
    if s.op in ("load", "store", "copy"):
        if t(s.reads[0]).dtype != "int8" or t(s.reads[0]).shape[-1] != t(s.writes[0]).shape[-1]:
            raise refuse(program, s, f"a {s.op} that is not an int8 copy along the same last axis")
    if s.op == "requantize":
        if t(s.writes[0]).dtype != "int8":
            raise refuse(program, s, f"a requantize into {t(s.writes[0]).dtype}")
        if t(s.reads[0]).shape[-1] != t(s.writes[0]).shape[-1]:
            raise refuse(program, s, "a requantize that changes the last axis")


# ------------------------------------------------------------------------------------------ chains

def op_of(program: Program, s: StageIR) -> OpNode:
    out = s.writes[0]
    r = s.reads
    if s.op == "conv2d":
        one = tuple(s.kernel) == (1, 1) and s.stride == 1 and s.padding in (0, "same")
        ins = (("a", r[0]), ("b", r[1])) + ((("bias", r[2]),) if len(r) > 2 else ())
        if one:
            return OpNode("fc", (s.name,), ins, out, (("conv", True),))
        return OpNode("conv", (s.name,), (("x", r[0]), ("w", r[1])) + ins[2:], out)
    if s.op == "depthwise_conv2d":
        return OpNode("dw", (s.name,), (("x", r[0]), ("w", r[1])) + ((("bias", r[2]),) if len(r) > 2 else ()), out)
    if s.op == "avgpool2d":
        return OpNode("pool", (s.name,), (("x", r[0]),), out)
    if s.op == "dot":
        a, b, contracted = dot_roles(program, s)
        return OpNode("fc", (s.name,), (("a", a), ("b", b)), out, (("contracted", contracted),))
    if s.op == "requantize":
        return OpNode("requant", (s.name,), (("x", r[0]),) + ((("bias", r[1]),) if len(r) > 1 else ()), out)
    if s.op in ("softmax",):
        return OpNode("softmax", (s.name,), (("x", r[0]),), out)
    if s.op == "layernorm":
        roles = ("x", "gamma", "beta")
        return OpNode("layernorm", (s.name,), tuple(zip(roles, r)), out)
    # elementwise, load, store, copy
    return OpNode("eltwise", (s.name,), (("x", r[0]),) + ((("y", r[1]),) if len(r) > 1 else ()), out)


@dataclass
class _Draft:
    depth: int
    group: str
    ops: list


def _levels(program: Program, tree: LoopTree) -> list[tuple[int, str, list[StageIR]]]:
    """(depth, before|after, stages) in nesting order: outside-before, loop 1 before, ..., loop 1 after,
    outside-after."""
    after0 = set(tree.outside_after)
    out_before = [s for s in tree.outside if s.name not in after0]
    out_after = [s for s in tree.outside if s.name in after0]
    levels = [(0, "before", out_before)]
    tail = [(0, "after", out_after)]
    for d, lp in enumerate(tree.loops(), 1):
        levels.append((d, "before", list(lp.before)))
        tail.insert(0, (d, "after", list(lp.after)))
    return levels + tail


def _point_local(program: Program, op: OpNode, s: StageIR, t: str) -> bool:
    """Does `s` (as `op`) read the pix tensor `t` one vector per output point?"""
    tt, out = program.tensor(t), program.tensor(op.out if op.rule != "fc" else s.writes[0])
    if set(tt.shape[:-1]) != set(out.shape[:-1]):
        return False
    if op.rule == "fc":
        if op.inp("a") != t:
            return False
        contracted = op.attr("contracted") or (tt.shape[-1],)
        return tuple(contracted) == (tt.shape[-1],)
    if op.rule in ("eltwise", "requant"):
        return tt.shape[-1] == out.shape[-1]
    if op.rule in ("softmax", "layernorm"):
        return op.inp("x") == t
    return False


def chains(program: Program, tree: LoopTree, ends: set[str] = frozenset()) -> tuple[Chain, ...]:
    """Group every level's stages into chains (see the module docstring); a chain ends at the stages in
    `ends` (the boundaries of fused groups)."""
    readers = _readers(program)
    consts = constants(program)
    forced: set[str] = set()  # tensors a later check found must be materialised
    while True:
        drafts: list[_Draft] = []
        for depth, group, stages in _levels(program, tree):
            cur: _Draft | None = None
            for s in stages:
                op = op_of(program, s)
                if cur is not None and _fuses_requant(program, cur, s, readers, forced):
                    last = cur.ops[-1]
                    cur.ops[-1] = replace(last, stages=last.stages + (s.name,), out=s.writes[0],
                                          ins=last.ins + ((("rbias", s.reads[1]),) if len(s.reads) > 1 else ()),
                                          attrs=last.attrs + (("requant", s.name),))
                    continue
                if cur is not None and not set(cur.ops[-1].stages) & ends and _joins(program, cur, s, op, forced):
                    cur.ops.append(op)
                    continue
                cur = _Draft(depth, group, [op])
                drafts.append(cur)
        more = set()
        for d in drafts:
            inside = {st for op in d.ops for st in op.stages}
            for op in d.ops[:-1]:
                if any(r.name not in inside for r in readers.get(op.out, [])) or \
                        program.tensor(op.out).scope == "global":
                    more.add(op.out)
        if not more - forced:
            break
        forced |= more
    out = []
    for i, d in enumerate(drafts):
        produced = [op.out for op in d.ops]
        pix = tuple(produced[:-1])
        reads, cs = [], []
        for op in d.ops:
            for _, t in op.ins:
                if t in produced:
                    continue
                (cs if t in consts else reads).append(t)
        first = program.stage(d.ops[0].stages[0]).name
        out.append(Chain(name=f"c{i}_{first}", depth=d.depth, ops=tuple(d.ops), out=produced[-1],
                         points=program.tensor(produced[-1]).shape[:-1], pix=pix,
                         reads=tuple(dict.fromkeys(reads)), consts=tuple(dict.fromkeys(cs)), group=d.group))
    return tuple(out)


def _fuses_requant(program, cur: _Draft, s: StageIR, readers, forced) -> bool:
    if s.op != "requantize" or not cur.ops:
        return False
    last = cur.ops[-1]
    return (last.rule in ("fc", "conv", "dw") and last.out == s.reads[0] and last.attr("requant") is None
            and program.tensor(last.out).dtype == "int32" and len(readers.get(last.out, [])) == 1
            and last.out not in forced)


def _joins(program, cur: _Draft, s: StageIR, op: OpNode, forced) -> bool:
    produced = {o.out for o in cur.ops}
    inner = [t for t in s.reads if t in produced]
    if not inner or op.rule in HEADS:
        return False
    return all(t not in forced and _point_local(program, op, s, t) for t in inner)


# ------------------------------------------------------------------------------------------ layouts

def layouts(program: Program, cs: tuple[Chain, ...], tinfo: dict[str, TensorInfo]) -> dict[str, tuple[str, ...]]:
    """Memory order per materialised tensor (aliases resolved to their tensor): the spec's order unless a
    dot needs its contracted axes last (A) or [slice axes, output axis, contracted axes] (B in SRAM)."""
    want: dict[str, tuple[tuple[str, ...], str]] = {}
    materialised = set()
    for c in cs:
        materialised.add(c.out)
        materialised.update(c.reads)

    def base(name: str) -> tuple[str, tuple[str, ...]]:
        t = tinfo[name]
        if t.alias:
            return t.alias, t.axes
        return name, t.axes

    def require(name: str, order: tuple[str, ...], stage: str) -> None:
        target, axes = base(name)
        tgt_axes = tinfo[target].axes
        pos = tuple(tgt_axes[axes.index(a)] for a in order)  # in the target's axis names
        if pos == tgt_axes and target not in want:
            return
        prev = want.get(target)
        if prev is not None and prev[0] != pos:
            s = program.stage(stage)
            raise refuse(program, s, f"{target} in two memory orders ({', '.join(prev[0])} for stage {prev[1]!r}, "
                                     f"{', '.join(pos)} here)")
        if tinfo[target].scope == "global" and pos != tgt_axes:
            s = program.stage(stage)
            raise refuse(program, s, f"the network tensor {target} in another axis order ({', '.join(pos)})")
        want[target] = (pos, stage)

    for c in cs:
        for op in c.ops:
            if op.rule != "fc" or op.attr("conv"):
                continue
            a, b = op.inp("a"), op.inp("b")
            contracted = tuple(op.attr("contracted"))
            out = program.tensor(program.stage(op.stages[0]).writes[0])
            if a in materialised:
                at = program.tensor(a).shape
                require(a, tuple(x for x in at if x not in contracted) + contracted, op.stages[0])
            if b in materialised:
                bt = program.tensor(b).shape
                slices = tuple(x for x in bt if x in out.shape[:-1])
                require(b, slices + (out.shape[-1],) + contracted, op.stages[0])
    out = {}
    for name in sorted(materialised):
        target, _ = base(name)
        out[target] = want.get(target, (tinfo[target].axes, ""))[0]
    return out


# ------------------------------------------------------------------------------------------ bounds

def _lo(r):
    return r[0]


def _min(*xs):
    return emin(*xs) if any(isinstance(x, Expr) for x in xs) else min(xs)


def _max(*xs):
    return emax(*xs) if any(isinstance(x, Expr) for x in xs) else max(xs)


def read_boxes(program: Program, tinfo: dict[str, TensorInfo], sizes: dict[str, int], chain: Chain,
               region: dict) -> dict[str, dict]:
    """The box of every materialised tensor `chain` reads while it computes `region` (point axis ->
    inclusive (lo, hi), ints or Exprs), as axis -> (lo, hi) over the tensor's own axes."""
    boxes: dict[str, dict] = {}

    def by_name(t: str) -> dict:
        return {a: region.get(a, (0, sizes[a] - 1)) for a in tinfo[t].axes}

    def union(t: str, box: dict) -> None:
        if t not in boxes:
            boxes[t] = box
            return
        old = boxes[t]
        boxes[t] = {a: (_min(old[a][0], box[a][0]), _max(old[a][1], box[a][1])) for a in box}

    inner = set(chain.pix)
    for op in chain.ops:
        st = program.stage(op.stages[0]) if op.stages else None
        for role, t in op.ins:
            if t in inner or t in chain.consts:
                continue
            if op.rule in HEADS and role == "x":
                x = program.tensor(t)
                o = program.tensor(st.writes[0])
                box = {}
                kernel = window(st, x.shape, sizes)
                for i, (ia, oa) in enumerate(zip(x.shape[:2], o.shape[:2])):
                    k = kernel[i]
                    p = pads(st.padding, sizes[ia], k, st.stride)[0]
                    lo, hi = region.get(oa, (0, sizes[oa] - 1))
                    box[ia] = (_max(0, lo * st.stride - p), _min(sizes[ia] - 1, hi * st.stride - p + (k - 1)))
                box[x.shape[2]] = (0, sizes[x.shape[2]] - 1)
                union(t, box)
            elif op.rule == "fc" and op.attr("conv") and role == "a":
                x = program.tensor(t)
                o = program.tensor(st.writes[0])
                box = {ia: region.get(oa, (0, sizes[oa] - 1)) for ia, oa in zip(x.shape[:2], o.shape[:2])}
                box[x.shape[2]] = (0, sizes[x.shape[2]] - 1)
                union(t, box)
            elif op.rule == "colsum":
                union(t, by_name(t))
            else:
                union(t, by_name(t))
    return boxes


# ------------------------------------------------------------------------------------------ schedule

def _enclosing(tree: LoopTree, depth: int) -> list:
    return tree.loops()[:depth]


def fuse_boundaries(program: Program, value) -> set[str]:
    """The stages the option `fuse` names (a parameter's value: stage names separated by commas): each
    ends a row-fused group of the stages outside every loop."""
    if value in (None, "", "none"):
        return set()
    names = {x.strip() for x in str(value).split(",") if x.strip()}
    unknown = sorted(names - {s.name for s in program.stages})
    if unknown:
        raise spec_error(("options", "fuse"), f"fuse names unknown stages {unknown}")
    return names


def _check_option_values(program: Program) -> None:
    for key, allowed in OPTIONS.items():
        v = program.option_map.get(key)
        if v is None:
            continue
        param = next((p for p in program.params if p.name == v), None)
        for value in (param.values if param is not None else (v,)):
            if key == "fuse":
                fuse_boundaries(program, value)
            elif value not in allowed:
                raise spec_error(("options", key), f"option {key} is one of {', '.join(allowed)}, not {value!r}")


def schedule(b: Binding, tree: LoopTree, k: McuKernel) -> McuKernel:
    """Loop nodes, runs and fills with their regions (see the module docstring)."""
    program, sizes = b.program, b.sizes
    halo = str(b.option("halo", "cache"))
    loops = tree.loops()
    by_level: dict[tuple[int, str], list[Chain]] = {}
    for c in k.chains:
        by_level.setdefault((c.depth, c.group), []).append(c)
    readers: dict[str, list[Chain]] = {}
    for c in k.chains:
        for t in c.reads:
            readers.setdefault(t, []).append(c)
    producer = {c.out: c for c in k.chains}
    outputs = {t.name for t in program.tensors if t.role == "output"}
    loop_nodes = [LoopNode(var=f"b_{lp.axis}", axis=lp.axis, tile=b.tile(lp.axis), count=b.n_tiles(lp.axis),
                           size=sizes[lp.axis]) for lp in loops]
    boundaries = fuse_boundaries(program, b.option("fuse"))
    done_vars: list[str] = []

    def full(a: str):
        return (Expr.const(0), Expr.const(sizes[a] - 1))

    def boxes(c: Chain, region: dict) -> dict:
        return read_boxes(program, k.tensors, sizes, c, region)

    def runs_for(cs: list[Chain], tiles: dict, can_pull: bool) -> list[Run]:
        """Runs of the chains of one level (a spec loop's body, or a fused group's row loop): the chains
        whose output stays in the level are demanded by the others, pulled row by row when their rows
        follow a window that moves with the loop (rows carried across iterations in a ring), else run over
        the whole demanded box every iteration (the halo recomputed)."""
        demanded = {c.name for i, c in enumerate(cs)
                    if tiles and c.out not in outputs and readers.get(c.out)
                    and all(r in cs[i + 1:] for r in readers[c.out])}
        pulled: set[str] = set()

        def fills_for(c: Chain, region: dict) -> tuple:
            out = []
            for t, box in boxes(c, region).items():
                d = producer.get(t)
                if d is None or d.name not in pulled:
                    continue
                first = d.points[0]
                dv, row = f"done_{d.out}", f"r_{d.out}"
                if dv not in done_vars:
                    done_vars.append(dv)
                rest = tuple((a,) + full(a) for a in d.points[1:])
                inner_region = {first: (Expr.var(row), Expr.var(row)), **{a: full(a) for a in d.points[1:]}}
                out.append(Fill(d.name, dv, row, box[first][0], box[first][1], rest, fills_for(d, inner_region)))
            return tuple(out)

        bulk_box: dict[str, dict] = {}
        for i in range(len(cs) - 1, -1, -1):
            c = cs[i]
            if not tiles:
                region = {a: full(a) for a in c.points}
            elif c.name not in demanded:
                region = {a: tiles.get(a, full(a)) for a in c.points}
            else:
                box = None
                for r in readers[c.out]:
                    if r.name in pulled:
                        continue  # pulled consumers pull this chain row by row themselves
                    rb = boxes(r, bulk_box[r.name])[c.out]
                    box = rb if box is None else {a: (emin(box[a][0], rb[a][0]), emax(box[a][1], rb[a][1]))
                                                   for a in rb}
                first = c.points[0]
                moving = box is None or not (box[first][0].is_const and box[first][1].is_const)
                if can_pull and moving:
                    pulled.add(c.name)
                    continue
                region = {a: (box[a] if a == first else full(a)) for a in c.points}
            bulk_box[c.name] = region
        return [Run(c.name, tuple((a,) + bulk_box[c.name][a] for a in c.points), fills_for(c, bulk_box[c.name]))
                for c in cs if c.name not in pulled]

    def groups(cs: list[Chain]) -> list[list[Chain]]:
        """Chains outside every loop in fused groups: each ends at a chain rendering a stage `fuse` names,
        or at a chain whose output is read outside the group (a skip connection, the network output)."""
        out, cur = [], []
        for c in cs:
            cur.append(c)
            if set(c.stages) & boundaries:
                out.append(cur)
                cur = []
        if cur:
            out.append(cur)
        split = []
        for g in out:
            start = 0
            for i, c in enumerate(g):
                later = g[i + 1:]
                if i < len(g) - 1 and (c.out in outputs or any(r not in later for r in readers.get(c.out, []))):
                    split.append(g[start:i + 1])
                    start = i + 1
            split.append(g[start:])
        return [g for g in split if g]

    def level_nodes(depth: int, group: str) -> list:
        cs = by_level.get((depth, group), [])
        if depth > 0:
            tiles = {ln.axis: (ln.lo(), ln.hi()) for ln in loop_nodes[:depth]}
            return list(runs_for(cs, tiles, can_pull=depth == 1 and halo == "cache"))
        nodes: list = []
        for g in groups(cs):
            last = g[-1]
            if len(g) == 1 or not last.points:
                nodes.extend(runs_for(g, {}, False))
                continue
            axis = last.points[0]
            ln = LoopNode(var=f"g_{last.out}", axis=axis, tile=1, count=sizes[axis], size=sizes[axis])
            body = runs_for(g, {axis: (ln.lo(), ln.hi())}, can_pull=halo == "cache")
            nodes.append(replace(ln, body=tuple(body)))
        return nodes

    def build(depth: int) -> tuple:
        nodes: list = level_nodes(depth, "before")
        if depth < len(loop_nodes):
            ln = loop_nodes[depth]
            nodes.append(replace(ln, body=build(depth + 1)))
        nodes.extend(level_nodes(depth, "after"))
        return tuple(nodes)

    body = build(0)
    return replace(k, body=body, done_vars=tuple(done_vars), sizes=dict(sizes), halo=halo)


# ------------------------------------------------------------------------------------------ dry run

@dataclass(frozen=True)
class Step:
    name: str
    chain: str
    region: tuple[tuple[str, int, int], ...]


def dry_run(k: McuKernel) -> list[Step]:
    """The schedule executed in Python: every chain call with its concrete region."""
    env: dict[str, int] = {v: -1 for v in k.done_vars}
    steps: list[Step] = []
    first_axis = {c.name: c.points[0] for c in k.chains if c.points}

    def fill(f):
        lo, hi = f.lo.ev(env), f.hi.ev(env)
        rest = tuple((a, x.ev(env), y.ev(env)) for a, x, y in f.rest)
        for r in range(max(env[f.done] + 1, lo), hi + 1):
            env[f.row] = r
            for g in f.inner:
                fill(g)
            reg = ((first_axis[f.chain], r, r),) + rest
            steps.append(Step(_step_name(f.chain, reg), f.chain, reg))
        env[f.done] = max(env[f.done], hi)

    def walk(nodes):
        for n in nodes:
            if isinstance(n, LoopNode):
                for i in range(n.count):
                    env[n.var] = i
                    walk(n.body)
                continue
            for f in n.fills:
                fill(f)
            reg = [(a, lo.ev(env), hi.ev(env)) for a, lo, hi in n.region]
            if any(lo > hi for _, lo, hi in reg):
                continue
            if reg:  # one memory step per row: the chain computes its points row by row
                a0, lo0, hi0 = reg[0]
                for r in range(lo0, hi0 + 1):
                    rr = ((a0, r, r),) + tuple(reg[1:])
                    steps.append(Step(_step_name(n.chain, rr), n.chain, rr))
            else:
                steps.append(Step(_step_name(n.chain, reg), n.chain, tuple(reg)))

    walk(k.body)
    return steps


def _step_name(chain: str, reg) -> str:
    return f"{chain}[" + ",".join(f"{lo}" if lo == hi else f"{lo}:{hi}" for _, lo, hi in reg) + "]"


def op_scratch(program: Program, sizes: dict[str, int], op: OpNode) -> int:
    """Bytes of a rule's per-point scratch in the arena: the im2col patch of a convolution."""
    if op.rule == "conv":
        st = program.stage(op.stages[0])
        x = program.tensor(op.inp("x"))
        return st.kernel[0] * st.kernel[1] * sizes[x.shape[2]]
    return 0


def buffers(b: Binding, k: McuKernel) -> McuKernel:
    """Arena buffers from the dry run: materialised tensors (rings folded, segments), chain vectors, scratch."""
    program, sizes = b.program, b.sizes
    steps = dry_run(k)
    chain_of = {c.name: c for c in k.chains}
    tinfo = k.tensors
    materialised: list[str] = []
    for c in k.chains:
        for t in (*c.reads, c.out):
            base = tinfo[t].alias or t
            if base not in materialised:
                materialised.append(base)
    # the accesses of every materialised tensor, in step order: (step, 'r'|'w', box over its own axes)
    access: dict[str, list] = {t: [] for t in materialised}
    for i, st in enumerate(steps):
        c = chain_of[st.chain]
        region = {a: (lo, hi) for a, lo, hi in st.region}
        for t, box in read_boxes(program, k.tensors, sizes, c, region).items():
            base = tinfo[t].alias or t
            if tinfo[t].alias:
                box = {ta: box[a] for a, ta in zip(tinfo[t].axes, tinfo[base].axes)}
            access[base].append((i, "r", box))
        out_box = {a: region.get(a, (0, sizes[a] - 1)) for a in tinfo[c.out].axes}
        access[c.out].append((i, "w", out_box))
    bufs: list[BufferInfo] = []
    for t in materialised:
        info = tinfo[t]
        axes = k.layouts.get(t, info.axes)
        n = tuple(sizes[a] for a in axes)
        role = "input" if info.role == "input" else "output" if info.role == "output" else "scratch"
        ext0 = n[0]
        if role == "scratch":
            ext0 = _fold(axes[0], n[0], access[t])
        seg_depth = 1
        for _, acc, box in access[t]:
            if acc != "w":
                continue
            for j, a in enumerate(axes[1:], 1):
                if box[a] != (0, sizes[a] - 1):
                    seg_depth = max(seg_depth, j + 1)
        if seg_depth >= len(axes) and len(axes) > 1:
            raise SpecError([_diag(program, f"{t}: writes that cover part of a vector are not planned yet")])
        if len(axes) == 1:
            seg_depth = 0 if ext0 == n[0] else 1
        what = ("network input" if role == "input" else "network output" if role == "output" else
                ("ring of " if ext0 < n[0] else "") + f"{t}")
        bufs.append(BufferInfo(name=t, tensor=t, dtype=info.dtype, axes=axes, sizes=n, extents=(ext0,) + n[1:],
                               seg_depth=seg_depth, role=role, what=what))
    for c in k.chains:
        for t in c.pix:
            info = tinfo[t]
            v = info.axes[-1]
            bufs.append(BufferInfo(name=f"v_{t}", tensor=t, dtype=info.dtype, axes=(v,), sizes=(sizes[v],),
                                   extents=(sizes[v],), seg_depth=0, role="scratch", what=f"one vector of {t}"))
        for op in c.ops:
            n = op_scratch(program, sizes, op)
            if n:
                bufs.append(BufferInfo(name=f"s_{op.out}", tensor=op.out, dtype="int8", axes=("patch",), sizes=(n,),
                                       extents=(n,), seg_depth=0, role="scratch",
                                       what=f"im2col patch of {op.stages[0]}"))
    return replace(k, buffers=tuple(bufs))


def _diag(program: Program, msg: str):
    from tilesched.spec.loader import SourceInfo

    return SourceInfo(None).diagnostic((), f"{program.name}: {msg}")


def _fold(axis: str, n: int, accesses: list) -> int:
    """The smallest ring (rows of the first memory axis, coordinate % extent) that never overwrites a
    row some later step still reads; `n` (no folding) when none smaller works."""
    trace = []  # (index, row, acc)
    for i, acc, box in accesses:
        lo, hi = box[axis]
        for r in range(lo, hi + 1):
            trace.append((i, acc, r))
    # live ranges: for every write of a row, the step of its last read before the next write
    until: dict[int, int] = {}
    last_write: dict[int, int] = {}
    for j, (i, acc, r) in enumerate(trace):
        if acc == "w":
            last_write[r] = j
            until[j] = -1
        elif r in last_write:
            until[last_write[r]] = i
    live_max = 0
    live: dict[int, int] = {}
    for j, (i, acc, r) in enumerate(trace):
        if acc == "w":
            live = {row: u for row, u in live.items() if u >= i}
            live[r] = until[j]
            live_max = max(live_max, len(live))
    for cand in range(max(live_max, 1), n):
        if _ring_ok(trace, until, cand):
            return cand
    return n


def _ring_ok(trace, until, ring: int) -> bool:
    slot: dict[int, tuple[int, int]] = {}
    for j, (i, acc, r) in enumerate(trace):
        s = r % ring
        if acc == "w":
            cur = slot.get(s)
            if cur is not None and cur[0] != r and cur[1] >= i:
                return False
            slot[s] = (r, until[j])
        else:
            cur = slot.get(s)
            if cur is None or cur[0] != r:
                return False
    return True


# ------------------------------------------------------------------------------------------ events

def segments(buf: BufferInfo, box: dict) -> list[tuple[int, str]]:
    """(segment index, logical tag) of every segment a box touches."""
    ranges = [range(box[a][0], box[a][1] + 1) for a in buf.axes[:buf.seg_depth]]
    out = []

    def rec(j, idx, coords):
        if j == len(ranges):
            out.append((idx, ",".join(map(str, coords))))
            return
        for c in ranges[j]:
            e = buf.extents[j]
            rec(j + 1, idx * e + (c % e), coords + (c,))

    rec(0, 0, ())
    return out


def events(b: Binding, k: McuKernel):
    """The tile program of the memory planner (schedules/memory.py) from the dry run."""
    from tilesched.schedules.memory import Event, TileProgram
    from tilesched.schedules.memory import PlanBuffer as PB

    program, sizes = b.program, b.sizes
    steps = dry_run(k)
    chain_of = {c.name: c for c in k.chains}
    by_tensor = {bf.tensor: bf for bf in k.buffers if not bf.name.startswith(("v_", "s_"))}
    evs: list[Event] = []
    for i, st in enumerate(steps):
        c = chain_of[st.chain]
        region = {a: (lo, hi) for a, lo, hi in st.region}
        for t, box in read_boxes(program, k.tensors, sizes, c, region).items():
            info = k.tensors[t]
            base = info.alias or t
            if info.alias:
                box = {ta: box[a] for a, ta in zip(info.axes, k.tensors[base].axes)}
            bf = by_tensor[base]
            for seg, tag in segments(bf, box):
                evs.append(Event(i, bf.name, seg, "r", f"{base}[{tag}]"))
        for bf in k.buffers:
            if bf.name.startswith(("v_", "s_")) and (bf.tensor in c.pix or any(o.out == bf.tensor for o in c.ops)):
                if bf.name.startswith("s_") or bf.tensor in c.pix:
                    evs.append(Event(i, bf.name, 0, "w", f"{bf.name}@{i}"))
                    evs.append(Event(i, bf.name, 0, "r", f"{bf.name}@{i}"))
        bf = by_tensor[c.out]
        out_box = {a: region.get(a, (0, sizes[a] - 1)) for a in k.tensors[c.out].axes}
        for seg, tag in segments(bf, out_box):
            evs.append(Event(i, bf.name, seg, "w", f"{c.out}[{tag}]"))
    pbufs = tuple(PB(bf.name, bf.seg_bytes, bf.n_segs, bf.role, bf.what) for bf in k.buffers)
    naive = sum(prod(sizes[a] for a in t.axes) * (4 if t.dtype == "int32" else 1) for t in k.tensors.values()
                if t.name not in constants(program) and t.alias is None and t.role != "aux")
    return TileProgram(kind="mcu", shape=k, buffers=pbufs, steps=tuple(s.name for s in steps), events=tuple(evs),
                       naive_bytes=naive)


# ------------------------------------------------------------------------------------------ pipeline

def lower_structure(program: Program, trace: Callable[[str, str], None] | None = None,
                    fuse=None) -> McuKernel:
    """The passes that need no sizes: structure, chains, layouts (what `generation_problem` checks);
    `fuse`: the value of the `fuse` option (the stages that end fused groups)."""
    tree = build_tree(program)
    if trace:
        trace("looptree", dump_tree(tree))
    structure(program, tree)
    k = McuKernel(name=program.name, target=program.target, tensors=tensor_infos(program))
    k = replace(k, chains=chains(program, tree, fuse_boundaries(program, fuse)))
    k = _add_colsums(program, k)
    if trace:
        trace("chains", dump_chains(k))
    k = replace(k, layouts=layouts(program, k.chains, k.tensors))
    if trace:
        trace("layouts", dump_layouts(k))
    return k


def _add_colsums(program: Program, k: McuKernel) -> McuKernel:
    """A dot whose A operand has a zero point and whose B operand is in SRAM needs B's sums along the
    contracted axes (sum (a - za) b = sum a b - za sum b): an auxiliary chain computes them once, right
    after B's producer."""
    tensors = dict(k.tensors)
    cs = list(k.chains)
    consts = constants(program)
    for c in list(cs):
        new_ops = []
        for op in c.ops:
            if op.rule == "fc" and not op.attr("conv"):
                a, b = op.inp("a"), op.inp("b")
                qa = program.tensor(a).quant
                if b not in consts and qa is not None and qa.zero_point != 0:
                    contracted = tuple(op.attr("contracted"))
                    out = program.tensor(program.stage(op.stages[0]).writes[0])
                    bt = program.tensor(b)
                    axes = tuple(x for x in bt.shape if x in out.shape[:-1]) + (out.shape[-1],)
                    name = f"{b}__colsum"
                    if name not in tensors:
                        tensors[name] = TensorInfo(name=name, axes=axes, dtype="int32", scope="tile", role="aux")
                        prod_i = next((i for i, x in enumerate(cs) if x.out == b), None)
                        if prod_i is None:
                            raise refuse(program, program.stage(op.stages[0]),
                                         f"a dot with a zero point on {a} times the network input {b}")
                        pc = cs[prod_i]
                        aux = Chain(name=f"{pc.name}_colsum", depth=pc.depth,
                                    ops=(OpNode("colsum", (), (("b", b),), name, (("contracted", contracted),)),),
                                    out=name, points=axes[:-1], pix=(), reads=(b,), consts=(), group=pc.group)
                        cs.insert(prod_i + 1, aux)
                    op = replace(op, ins=op.ins + (("colsum", name),))
            new_ops.append(op)
        if new_ops != list(c.ops):
            i = cs.index(c)
            reads = tuple(dict.fromkeys(c.reads + tuple(t for op in new_ops for r, t in op.ins if r == "colsum")))
            cs[i] = replace(c, ops=tuple(new_ops), reads=reads)
    return replace(k, tensors=tensors, chains=tuple(cs))


def lower_mcu(b: Binding, trace: Callable[[str, str], None] | None = None) -> McuKernel:
    """Binding -> McuKernel through every pass; `trace(name, text)` sees the IR after each."""
    program = b.program
    k = lower_structure(program, trace, b.option("fuse"))
    tree = build_tree(program)
    k = schedule(b, tree, k)
    if trace:
        trace("schedule", dump_schedule(k))
    k = buffers(b, k)
    if trace:
        trace("buffers", dump_buffers(k))
    return k


def dump_passes(b: Binding) -> str:
    parts: list[str] = []
    lower_mcu(b, lambda name, text: parts.append(f"=== after {name}\n{text}"))
    return "".join(parts)


def generation_problem(program: Program) -> SpecError | None:
    """Why the Cortex-M backend cannot generate `program` (a SpecError naming the stage), or None."""
    try:
        lower_structure(program)
    except SpecError as exc:
        return exc
    return None
