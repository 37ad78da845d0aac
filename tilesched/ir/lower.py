"""Lower a `Spec` to the IR, checking everything that needs the whole spec.

All problems are collected and raised together as one `SpecError`, each pointing at
the field that causes it.
"""

from __future__ import annotations

from tilesched.errors import SpecError
from tilesched.ir.deps import derive_deps, topological_order
from tilesched.ir.dtypes import BITS, INT
from tilesched.ir.expr import ExprError, evaluate, names
from tilesched.ir.indexexpr import mask_problems
from tilesched.ir.nodes import AxisIR, ConstraintIR, LoopIR, ParamIR, Program, StageIR, TensorIR
from tilesched.ir.opchecks import OP_CHECKS
from tilesched.ir.space import ConstraintError, domain, iter_points
from tilesched.spec.loader import SourceInfo
from tilesched.spec.models import Spec


class _Report:
    def __init__(self, source: SourceInfo):
        self.source = source
        self.diagnostics = []

    def error(self, loc: tuple, message: str, path: tuple | None = None) -> None:
        self.diagnostics.append(self.source.diagnostic(loc, message, path))


def lower(spec: Spec, source: SourceInfo | None = None) -> Program:
    """Spec -> Program, or SpecError listing every problem with its location."""
    rep = _Report(source or SourceInfo(None))
    axes = _lower_axes(spec, rep)
    sizes = {a.name: a.size for a in axes}
    params = _lower_params(spec, rep)
    param_names = {p.name for p in params}
    tensors = _lower_tensors(spec, rep, sizes)
    loops = _lower_loops(spec, rep, sizes, params)
    _check_tile_order(spec, rep, param_names)
    _check_options(spec, rep, param_names)
    stages = _lower_stages(spec, rep, loops)
    tensor_map = {t.name: t for t in tensors}
    if not rep.diagnostics:
        _check_ops(spec, rep, stages, tensor_map, sizes, param_names)
        _check_aliases(rep, stages, tensor_map, sizes)
        _check_placements(rep, stages, loops, tensor_map)
        _check_fn_constants(spec, rep, stages, sizes, param_names)
        _check_storage(spec, rep, stages, tensor_map, param_names)
        _check_masks(spec, rep, stages, tensor_map, sizes, param_names)
    known_stages = {s.name for s in stages}
    deps = derive_deps(stages, {s.name: [a for a in s.after if a in known_stages] for s in spec.stages})
    order, cycle = topological_order([s.name for s in stages], deps)
    if cycle:
        first = min(cycle, key=lambda n: next(s.index for s in stages if s.name == n))
        idx = next(s.index for s in stages if s.name == first)
        rep.error(("stages", idx), "dependency cycle: " + " -> ".join(cycle + [cycle[0]]))
    constraints = _lower_constraints(spec, rep, sizes, param_names)
    if not rep.diagnostics:
        _check_satisfiable(spec, rep, params, constraints, axes)
    if rep.diagnostics:
        raise SpecError(rep.diagnostics)
    roles = _roles(spec)
    tensors = tuple(t.model_copy(update={"role": roles[t.name]}) for t in tensors)
    return Program(
        name=spec.name, description=spec.description, target=spec.target, axes=axes, tensors=tensors,
        loops=loops, tile_order=spec.tile_order, stages=stages, deps=deps, order=order, limits=spec.limits,
        options=tuple(sorted(spec.options.items())), params=params, constraints=constraints,
    )


MAX_AXIS_SIZE = 1 << 40


def axis_size_problem(size) -> str | None:
    """Why `size` is not a legal axis size ("is not positive", ...), or None."""
    if isinstance(size, bool) or not isinstance(size, int):
        return "is not an integer"
    if size < 1:
        return "is not positive"
    if size > MAX_AXIS_SIZE:
        return "exceeds the largest axis size 2**40"
    return None


def eval_axis_size(name: str, expr: str, env: dict[str, int]) -> int:
    """The size of axis `name` given by `expr` over the axis sizes in `env`; ExprError unless it
    is an integer in 1..2**40. An integral float counts (`H / 2` with an even H); any other
    float is refused, not truncated."""
    v = evaluate(expr, env)
    at = ", ".join(f"{n}={env[n]}" for n in sorted(names(expr) & env.keys()))
    shown = f"axis {name} = {expr} = {v!r}" + (f" at {at}" if at else "")
    if isinstance(v, float):
        if not v.is_integer():
            raise ExprError(f"{shown} is not an integer (use // for floor division)")
        v = int(v)
    why = axis_size_problem(v)
    if why:
        raise ExprError(f"{shown} {why}")
    return v


def _lower_axes(spec: Spec, rep: _Report) -> tuple[AxisIR, ...]:
    exprs = {name: ax.size for name, ax in spec.axes.items()}
    symbols = {n for n, e in exprs.items() if isinstance(e, str) and e == n}
    for name, ax in spec.axes.items():
        if ax.hint is not None and ax.hint > MAX_AXIS_SIZE:
            rep.error(("axes", name, "hint"), f"hint {ax.hint} exceeds the largest axis size 2**40")
    for name, e in exprs.items():
        if isinstance(e, int) and e < 1:
            rep.error(("axes", name, "size"), f"axis size must be positive, got {e}")
        elif isinstance(e, int) and e > MAX_AXIS_SIZE:
            rep.error(("axes", name, "size"), f"axis size {e} {axis_size_problem(e)}")
        elif isinstance(e, str) and e != name:
            try:
                unknown = names(e) - exprs.keys()
            except ExprError as exc:
                rep.error(("axes", name, "size"), str(exc))
                continue
            if unknown:
                rep.error(("axes", name, "size"), f"unknown axis {sorted(unknown)[0]!r} in size {e!r}")
    sizes: dict[str, int | None] = {}

    def depends_on(name: str) -> list[str]:
        e = exprs[name]
        if not isinstance(e, str) or name in symbols:
            return []
        try:
            return [n for n in names(e) if n in exprs]
        except ExprError:
            return []  # reported above

    def size_of(name: str) -> int | None:
        """The size of `name` once every axis it depends on has one, or None."""
        e = exprs[name]
        if isinstance(e, int):
            return e if axis_size_problem(e) is None else None
        if name in symbols:
            return None
        try:
            used = names(e)
        except ExprError:
            return None  # reported above, like an unknown axis
        if used - exprs.keys() or any(sizes[n] is None for n in used):
            return None
        try:
            return eval_axis_size(name, e, {n: sizes[n] for n in used})
        except ExprError as exc:
            rep.error(("axes", name, "size"), str(exc))
            return None

    def resolve(root: str) -> None:
        # depth first without recursion: a chain of thousands of derived axes must not exhaust the stack
        chain: list[str] = []  # axes waiting for the sizes of the ones after them
        todo: list[tuple[str, bool]] = [(root, False)]
        while todo:
            name, deps_done = todo.pop()
            if deps_done:
                chain.pop()
                sizes[name] = size_of(name)
            elif name in chain:
                rep.error(("axes", name, "size"), "axis sizes refer to each other in a cycle: "
                          + " -> ".join(chain[chain.index(name):] + [name]))
                sizes[name] = None
            elif name not in sizes:
                chain.append(name)
                todo.append((name, True))
                todo.extend((n, False) for n in depends_on(name))

    for name in exprs:
        resolve(name)
    return tuple(
        AxisIR(name=n, expr=str(ax.size), size=sizes[n], symbolic=n in symbols, hint=ax.hint)
        for n, ax in spec.axes.items()
    )


def _lower_tensors(spec: Spec, rep: _Report, sizes) -> tuple[TensorIR, ...]:
    out = []
    for name, t in spec.tensors.items():
        for i, ax in enumerate(t.shape):
            if ax not in sizes:
                rep.error(("tensors", name, "shape", i), f"unknown axis {ax!r}", ("tensors", name, "shape"))
        if len(set(t.shape)) != len(t.shape):
            rep.error(("tensors", name, "shape"), "an axis appears twice in the shape")
        if t.placement.axis is not None and t.placement.axis not in t.shape:
            rep.error(("tensors", name, "placement"), f"sharded axis {t.placement.axis!r} is not in the shape")
        if t.quant is not None and t.quant.axis is not None and t.quant.axis not in t.shape:
            rep.error(("tensors", name, "quant", "axis"), f"quant axis {t.quant.axis!r} is not in the shape")
        out.append(TensorIR(
            name=name, shape=tuple(t.shape), dtype=t.dtype, layout=t.layout, scope=t.scope,
            placement=t.placement.kind, shard_axis=t.placement.axis, region=t.region, quant=t.quant, role="input",
            alias=t.alias, group=tuple(t.group.items()), pack=t.pack.axis if t.pack is not None else None,
        ))
    return tuple(out)


def _roles(spec: Spec) -> dict[str, str]:
    written = {t for s in spec.stages for t in s.writes}
    read_after_write = set()
    for s in spec.stages:
        for t in s.reads:
            if any(t in p.writes for p in spec.stages if p is not s):
                read_after_write.add(t)
    roles = {}
    for name, t in spec.tensors.items():
        if t.scope == "tile":
            roles[name] = "tile"
        elif name not in written:
            roles[name] = "input"
        elif name in read_after_write:
            roles[name] = "workspace"
        else:
            roles[name] = "output"
    return roles


def tile_problem(target: str, tile, size: int | None, axis: str) -> str | None:
    """Why `tile` is not legal for `axis` of `size` on `target`, or None."""
    if not isinstance(tile, int) or isinstance(tile, bool) or tile < 1:
        return f"tile size {tile!r} is not a positive integer"
    if target == "cuda" and tile & (tile - 1):
        return f"tile size {tile} is not a power of two (Triton block shapes are)"
    if size is not None:
        cap = 1 << (size - 1).bit_length() if target == "cuda" else size
        if tile > cap:
            return f"tile size {tile} exceeds the size {size} of axis {axis}"
    return None


def _lower_loops(spec: Spec, rep: _Report, sizes, params: tuple[ParamIR, ...]) -> tuple[LoopIR, ...]:
    pmap = {p.name: p for p in params}
    seen = set()
    for i, lp in enumerate(spec.loops):
        loc = ("loops", i)
        if lp.axis not in sizes:
            rep.error(loc + ("axis",), f"unknown axis {lp.axis!r}")
            continue
        if lp.axis in seen:
            rep.error(loc + ("axis",), f"axis {lp.axis!r} is looped twice")
        seen.add(lp.axis)
        if isinstance(lp.tile, str):
            if lp.tile not in pmap:
                rep.error(loc + ("tile",), f"unknown parameter {lp.tile!r} (declare it in search_space.params)")
                continue
            for v in pmap[lp.tile].values:
                why = tile_problem(spec.target, v, sizes[lp.axis], lp.axis)
                if why:
                    rep.error(loc + ("tile",), f"parameter {lp.tile} choice {v!r}: {why}")
                    break
        elif lp.tile is not None:
            why = tile_problem(spec.target, lp.tile, sizes[lp.axis], lp.axis)
            if why:
                rep.error(loc + ("tile",), why)
    return tuple(LoopIR(axis=lp.axis, kind=lp.kind, tile=lp.tile) for lp in spec.loops)


def _check_tile_order(spec: Spec, rep: _Report, param_names: set[str]) -> None:
    to = spec.tile_order
    if to.kind == "grouped" and to.group is None:
        rep.error(("tile_order",), "grouped tile order needs `group` (an integer or a parameter)")
    if isinstance(to.group, str) and to.group not in param_names:
        rep.error(("tile_order", "group"), f"unknown parameter {to.group!r}")
    if to.kind == "rank_rotated" and to.axis not in {lp.axis for lp in spec.loops}:
        rep.error(("tile_order",), "rank_rotated tile order needs `axis`, one of the looped axes")


def _check_options(spec: Spec, rep: _Report, param_names: set[str]) -> None:
    # option values are literals (ints, bools) or name a parameter; no option takes a word of its own
    for name, value in spec.options.items():
        if isinstance(value, str) and value not in param_names:
            rep.error(("options", name), f"{value!r} is neither a literal nor a search-space parameter")


def _lower_stages(spec: Spec, rep: _Report, loops: tuple[LoopIR, ...]) -> tuple[StageIR, ...]:
    loop_axes = [lp.axis for lp in loops]
    names_seen: set[str] = set()
    all_names = {s.name for s in spec.stages}
    out = []
    if not spec.stages:
        rep.error(("stages",), "a spec needs at least one stage")
    for i, s in enumerate(spec.stages):
        loc = ("stages", i)
        if s.name in names_seen:
            rep.error(loc + ("name",), f"duplicate stage name {s.name!r}")
        names_seen.add(s.name)
        for field in ("reads", "writes"):
            for j, t in enumerate(getattr(s, field)):
                if t not in spec.tensors:
                    rep.error(loc + (field, j), f"unknown tensor {t!r}", loc + (field,))
        for j, a in enumerate(s.after):
            if a not in all_names:
                rep.error(loc + ("after", j), f"unknown stage {a!r}", loc + ("after",))
        at = s.at
        if at == "innermost":
            at = loop_axes[-1] if loop_axes else None
        elif at is not None and at not in loop_axes:
            rep.error(loc + ("at",), f"{at!r} is not a looped axis (loops: {', '.join(loop_axes) or 'none'})")
            at = None
        depth = loop_axes.index(at) + 1 if at is not None else 0
        out.append(StageIR(
            index=i, name=s.name, kind=s.kind, op=s.op, reads=tuple(s.reads), writes=tuple(s.writes), at=at,
            depth=depth, fn=tuple(f if isinstance(f, str) else next(iter(f.items())) for f in s.fn), axis=s.axis,
            reduce=s.reduce,
            kernel=tuple(s.kernel) if s.kernel is not None else None, stride=s.stride, padding=s.padding,
            engine=s.engine, granularity=s.granularity, chunks=s.chunks, mask=s.mask,
        ))
    return tuple(out)


def _check_ops(spec, rep, stages, tensor_map, sizes, param_names) -> None:
    for s in stages:
        loc = ("stages", s.index)
        if s.axis is not None and s.axis not in sizes:
            rep.error(loc + ("axis",), f"unknown axis {s.axis!r}")
            continue
        if isinstance(s.chunks, str) and s.chunks not in param_names:
            rep.error(loc + ("chunks",), f"unknown parameter {s.chunks!r}")
        if s.kind == "comm" and s.granularity == "chunk" and s.chunks is None:
            rep.error(loc + ("chunks",), "chunk granularity needs `chunks`")
        for field, msg in OP_CHECKS[s.op](s, tensor_map, sizes):
            rep.error(loc + (field,), f"stage {s.name!r}: {msg}")


def _check_aliases(rep: _Report, stages, tensors: dict[str, TensorIR], sizes) -> None:
    """`alias: x` names the same values under other axis names: an input of x's dtype, quant and sizes."""
    written = {t for s in stages for t in s.writes}
    for t in tensors.values():
        if t.alias is None:
            continue
        loc = ("tensors", t.name, "alias")
        target = tensors.get(t.alias)
        if target is None:
            rep.error(loc, f"unknown tensor {t.alias!r}")
            continue
        problems = []
        if target.alias is not None:
            problems.append(f"{target.name} is itself an alias")
        if t.scope != "global" or target.scope != "global":
            problems.append("aliases name global tensors")
        if t.name in written or target.name in written:
            problems.append("an alias and its tensor are inputs: no stage may write them")
        if (t.dtype, t.quant) != (target.dtype, target.quant):
            problems.append(f"dtype and quant must be {target.name}'s")
        if len(t.shape) != len(target.shape):
            problems.append(f"{target.name} has {len(target.shape)} axes")
        else:
            for a, b in zip(t.shape, target.shape):
                if sizes.get(a) is not None and sizes.get(b) is not None and sizes[a] != sizes[b]:
                    problems.append(f"axis {a}={sizes[a]} but {target.name}'s {b}={sizes[b]}")
        for why in problems:
            rep.error(loc, f"alias of {target.name}: {why}")


def _accumulates_over(stage: StageIR, axis: str, tensors: dict[str, TensorIR]) -> bool:
    """A dot that contracts `axis`, or a reduction along it: reading its own output adds to it."""
    if stage.op == "reduce":
        return stage.axis == axis
    if stage.op == "dot":
        out = stage.writes[0]
        operands = [tensors[n] for n in stage.reads if n != out]
        return len(operands) == 2 and axis in operands[0].shape and axis in operands[1].shape \
            and axis not in tensors[out].shape
    return False


def _check_placements(rep: _Report, stages, loops, tensors: dict[str, TensorIR]) -> None:
    """Where `at` would make a result depend on the tiling, refuse the spec: a stage that updates a
    tensor in place runs once per tile of every loop around it, so around it there may be only
    loops over the tensor's own axes, or the reduction loop it accumulates over."""
    for s in stages:
        for t in s.writes:
            if t not in s.reads:
                continue
            for j, lp in enumerate(loops[:s.depth]):
                if lp.axis in tensors[t].shape or _accumulates_over(s, lp.axis, tensors):
                    continue
                outside = loops[j - 1].axis if j else "null"
                rep.error(("stages", s.index, "at"),
                          f"stage {s.name!r} updates {t} in place once per {lp.axis} tile, and {t} has no {lp.axis} "
                          f"axis: its result would depend on the tile size (place it outside the {lp.axis} loop, "
                          f"e.g. at: {outside})")
                break


def _check_fn_constants(spec: Spec, rep: _Report, stages, sizes, param_names) -> None:
    known = set(sizes) | param_names | set(type(spec.limits).model_fields) | set(spec.options)
    for s in stages:
        for i, f in enumerate(s.fn):
            if isinstance(f, str):
                continue
            name, arg = f
            if isinstance(arg, bool):
                rep.error(("stages", s.index, "fn", i), f"stage {s.name!r}: {name} takes a number, not {arg!r}")
            elif isinstance(arg, str):
                try:
                    unknown = names(arg) - known
                except ExprError as exc:
                    rep.error(("stages", s.index, "fn", i), str(exc))
                    continue
                if unknown:
                    rep.error(("stages", s.index, "fn", i), f"unknown name {sorted(unknown)[0]!r} in {arg!r}")


def _check_storage(spec: Spec, rep: _Report, stages, tensors: dict[str, TensorIR], param_names) -> None:
    """`group` and `pack` describe how an input is stored: over the tensor's own axes, on inputs only;
    a group is a positive integer or an expression over axis sizes and options (a caller's tensors
    must determine it: never a tuned parameter); packing is for integers of at most 8 bits and fp4e2m1."""
    written = {t for s in stages for t in s.writes}
    known = set(spec.axes) | {k for k, v in spec.options.items() if not (isinstance(v, str) and v in param_names)}
    for t in tensors.values():
        loc = ("tensors", t.name)
        if (t.group or t.pack is not None) and (t.scope != "global" or t.name in written):
            rep.error(loc, f"tensor {t.name}: group and pack describe how an input is stored; {t.name} is "
                           f"{'a tile' if t.scope != 'global' else 'written by a stage'}")
        for axis, g in t.group:
            if axis not in t.shape:
                rep.error(loc + ("group", axis), f"group axis {axis!r} is not in the shape of {t.name}")
            if isinstance(g, str):
                try:
                    unknown = names(g) - known
                except ExprError as exc:
                    rep.error(loc + ("group", axis), str(exc))
                    continue
                if unknown:
                    rep.error(loc + ("group", axis), f"unknown name {sorted(unknown)[0]!r} in group {g!r}")
        if t.pack is not None:
            if t.pack not in t.shape:
                rep.error(loc + ("pack",), f"pack axis {t.pack!r} is not in the shape of {t.name}")
            if not (t.dtype in INT and BITS[t.dtype] <= 8 or t.dtype == "fp4e2m1"):
                rep.error(loc + ("pack",), f"{t.dtype} values are not packed (pack integers of at most 8 bits "
                                           "and fp4e2m1)")


MASKED_OPS = ("softmax", "reduce")


def _check_masks(spec: Spec, rep: _Report, stages, tensors: dict[str, TensorIR], sizes, param_names) -> None:
    values = param_names | set(type(spec.limits).model_fields) | set(spec.options)
    for s in stages:
        if s.mask is None:
            continue
        loc = ("stages", s.index, "mask")
        if s.op not in MASKED_OPS or (s.op == "reduce" and s.reduce == "mean"):
            rep.error(loc, f"stage {s.name!r}: a mask leaves elements out of a softmax or a sum/max/min reduce, "
                           f"not {s.op}{' mean' if s.reduce == 'mean' else ''}")
            continue
        x = tensors[s.reads[0]]
        for why in mask_problems(s.mask, set(x.shape), set(sizes), values):
            rep.error(loc, f"stage {s.name!r}: {why}")


def _lower_params(spec: Spec, rep: _Report) -> tuple[ParamIR, ...]:
    out = []
    for name, p in spec.search_space.params.items():
        loc = ("search_space", "params", name)
        if name in spec.axes:
            rep.error(loc, f"parameter {name!r} has the name of an axis")
        try:
            values = domain(p)
        except ValueError as exc:
            rep.error(loc + ("range",), str(exc))
            continue
        if not values:
            rep.error(loc + ("range",), "the range holds no value")
            continue
        default = p.default if p.default is not None else values[0]
        if default not in values:
            rep.error(loc + ("default",), f"default {default!r} is not one of the parameter's values")
        out.append(ParamIR(name=name, values=values, default=default))
    return tuple(out)


def _lower_constraints(spec, rep, sizes, param_names) -> tuple[ConstraintIR, ...]:
    known = set(sizes) | param_names | set(type(spec.limits).model_fields) | set(spec.options)
    out = []
    for i, c in enumerate(spec.search_space.constraints):
        loc = ("search_space", "constraints", i)
        try:
            unknown = names(c.expr) - known
        except ExprError as exc:
            rep.error(loc, str(exc))
            continue
        if unknown:
            rep.error(loc, f"unknown name {sorted(unknown)[0]!r} in constraint {c.expr!r}")
            continue
        out.append(ConstraintIR(expr=c.expr, message=c.message))
    return tuple(out)


def base_env(program_axes, limits, options, bound: dict | None = None) -> dict:
    """Names a constraint may use before parameters are chosen: axes, limits, options."""
    env = {a.name: a.size if a.size is not None else a.hint for a in program_axes}
    env = {k: v for k, v in env.items() if v is not None}
    env.update({k: v for k, v in limits.model_dump().items() if v is not None})
    env.update(options)
    env.update(bound or {})
    return env


def _check_satisfiable(spec, rep, params, constraints, axes) -> None:
    if not constraints:
        return
    pnames = {p.name for p in params}
    env = base_env(axes, spec.limits, {k: v for k, v in spec.options.items() if v not in pnames})
    try:
        found = next(iter_points(params, constraints, env, strict=True), None)
    except ConstraintError as exc:
        rep.error(("search_space", "constraints", constraints.index(exc.constraint)), str(exc))
        return
    if found is None:
        size = 1
        for p in params:
            size *= len(p.values)
        rep.error(("search_space", "constraints"),
                  f"no point of the search space ({size} points) satisfies the constraints")
