"""Render a kernel IR as a Triton module: the kernel and the host `launch`. The renderer decides
nothing: the passes did (tilesched/passes/gpu.py); the instructions become code through the
per-op rules (triton_rules.py). Deterministic: the same IR gives the same bytes.
"""

from __future__ import annotations

from tilesched.backends.cuda import gluon_schedules
from tilesched.backends.cuda.triton_rules import (
    RULES,
    TL_DTYPES,
    Ctx,
    block_shape,
    group_constant,
    index,
    mask_bounds,
)
from tilesched.errors import spec_error
from tilesched.passes.kernel import Instr, KernelIR, walks_tiles


class _Lines:
    def __init__(self):
        self.lines: list[str] = []

    def add(self, text: str = "", indent: int = 0) -> None:
        self.lines.extend(("    " * indent + ln) if ln else "" for ln in text.split("\n"))

    def block(self, lines: list[str], indent: int) -> None:
        for ln in lines:
            self.add(ln, indent)


def _tiled(k: KernelIR) -> list[str]:
    return [a.name for a in k.axes if a.role in ("grid", "reduction", "whole")]


def signature(k: KernelIR) -> list[str]:
    """Kernel parameters: tensors (pointers or descriptors), workspaces, sizes, strides, constants,
    then the compile-time block sizes, EVEN_ flags and switches."""
    args = []
    for a in k.accesses:
        args.append(f"d_{a.tensor}_{a.mode}" if a.tma else f"p_{a.tensor}")
    args = list(dict.fromkeys(args))
    args += [f"ws_{c}" for c in k.carried] + ["ws_arrived"] if k.split_k is not None else []
    args += [f"n_{a.name}" for a in k.axes]
    for t in dict.fromkeys(a.tensor for a in k.accesses):
        acc = next(a for a in k.accesses if a.tensor == t)
        if not all(x.tma for x in k.accesses if x.tensor == t):
            args += [f"s_{t}_{ax}" for ax in acc.axes]
    args += [c.name for c in k.constants]
    const = [f"BLOCK_{a}: tl.constexpr" for a in _tiled(k)]
    const += [f"EVEN_{a.name}: tl.constexpr" for a in k.axes if a.masked]
    const += list(dict.fromkeys(f"{group_constant(a.tensor, ax)}: tl.constexpr" for a in k.accesses for ax, _ in a.group))
    if k.tile_order == "grouped":
        const.append("GROUP: tl.constexpr")
    if walks_tiles(k):
        const += ["PERSISTENT: tl.constexpr", "NUM_SMS: tl.constexpr"]
    if k.split_k is not None:
        const.append("SPLIT_K: tl.constexpr")
    if k.subtile is not None:
        const.append("EPILOGUE_SUBTILE: tl.constexpr")
    const += [f"{c}: tl.constexpr" for c in gluon_schedules.constants(k)]  # a point that sets one runs its Gluon kernel
    names = args + [c.split(":")[0] for c in const]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise spec_error(("tensors",), f"cuda cannot name kernel arguments apart: {dup}; rename the tensors or "
                                       "axes whose names run together")
    return args + const


def _coords(k: KernelIR) -> list[str]:
    """Tile coordinates from tile_id: leading grid axes row-major, the last two by the tile order."""
    g = list(k.grid)
    if not g:
        return []
    if len(g) == 1:  # (descending: the heaviest tiles first, tilesched/passes/heavy_first.py)
        return [f"pid_{g[0]} = tiles_{g[0]} - 1 - tile_id" if k.descending else f"pid_{g[0]} = tile_id"]
    lines = []
    last2 = g[-2:]
    lead = g[:-2]
    rest = "tile_id"
    if lead:
        inner = f"(tiles_{last2[0]} * tiles_{last2[1]})"
        lines.append(f"inner_id = tile_id % {inner}")
        rem = f"tile_id // {inner}"
        for ax in reversed(lead):
            lines.append(f"pid_{ax} = ({rem}) % tiles_{ax}")
            rem = f"({rem}) // tiles_{ax}"
        rest = "inner_id"
    a, b = last2
    if k.tile_order == "column_major":
        lines += [f"pid_{a} = {rest} % tiles_{a}", f"pid_{b} = {rest} // tiles_{a}"]
        return lines
    group = "GROUP" if k.tile_order == "grouped" else "1"
    lines.append(f"pid_{a}, pid_{b} = _tile_coords({rest}, tiles_{a}, tiles_{b}, {group})")
    return lines


def _ctx(k: KernelIR, phase: str) -> Ctx:
    ctx = Ctx(k=k, phase=phase)
    for a in k.axes:
        if a.role in ("grid", "reduction", "whole"):
            ctx.block[a.name] = f"BLOCK_{a.name}"
            ctx.offs[a.name] = f"o_{a.name}"
        if a.role == "grid":
            ctx.start[a.name] = f"pid_{a.name} * BLOCK_{a.name}"
        elif a.role == "reduction":
            ctx.start[a.name] = f"it_{a.name} * BLOCK_{a.name}"
        elif a.role == "whole":
            ctx.start[a.name] = "0"
    return ctx


def _emit(ctx: Ctx, instrs: tuple[Instr, ...]) -> list[str]:
    out: list[str] = []
    for i in instrs:
        out += RULES[i.op](ctx, i)
    return out


def _offsets(k: KernelIR, axes) -> list[str]:
    lines = []
    for a in axes:
        role = k.axis(a).role
        if role == "grid":
            lines.append(f"o_{a} = pid_{a} * BLOCK_{a} + tl.arange(0, BLOCK_{a})")
        elif role == "whole":
            lines.append(f"o_{a} = tl.arange(0, BLOCK_{a})")
    return lines


def _post(k: KernelIR, base: Ctx) -> list[str]:
    """The epilogue; with EPILOGUE_SUBTILE, twice over the two halves of the last grid axis."""
    if k.subtile is None:
        return _emit(base, k.post)
    n = k.grid[-1]
    lines = ["if EPILOGUE_SUBTILE:  # two half-width epilogues: fewer live registers, overlapped stores"]
    body: list[str] = []
    for c in k.carried:
        v = k.value(c)
        if n not in v.axes:
            continue
        if v.axes[-1] != n or len(v.axes) != 2:
            raise spec_error(("options", "epilogue_subtile"), f"cuda subtiles [.., {n}] accumulators only ({c})")
        body.append(f"v_{c}_0, v_{c}_1 = tl.split(tl.permute(tl.reshape(v_{c}, (BLOCK_{v.axes[0]}, 2, BLOCK_{n} // 2)),"
                    " (0, 2, 1)))")
    for half in (0, 1):
        ctx = Ctx(k=k, suffix=f"_{half}", offs=dict(base.offs), block=dict(base.block), start=dict(base.start),
                  phase="post")
        ctx.offs[n] = f"o_{n}_{half}"
        ctx.block[n] = f"(BLOCK_{n} // 2)"
        ctx.start[n] = f"pid_{n} * BLOCK_{n} + {half} * (BLOCK_{n} // 2)"
        body.append(f"o_{n}_{half} = pid_{n} * BLOCK_{n} + {half} * (BLOCK_{n} // 2) + tl.arange(0, BLOCK_{n} // 2)")
        body += _emit(ctx, k.post)
    lines += ["    " + ln for ln in body]
    lines.append("else:")
    lines += ["    " + ln for ln in _emit(base, k.post)]
    return lines


def _tile_body(k: KernelIR) -> list[str]:
    """One output tile: coordinates, offsets, the phases."""
    lines = _coords(k) + _offsets(k, [a.name for a in k.axes if a.role == "grid"])
    ctx = _ctx(k, "pre")
    lines += _emit(ctx, k.pre)
    if k.reduction is not None:
        r = k.reduction
        lines.append(f"tiles_{r} = (n_{r} + BLOCK_{r} - 1) // BLOCK_{r}")
        if k.split_k is not None:
            lines += [f"lo_{r} = 0", f"hi_{r} = tiles_{r}",
                      "if SPLIT_K > 1:  # this program sums one contiguous share of the reduction tiles",
                      f"    per_split = (tiles_{r} + SPLIT_K - 1) // SPLIT_K",
                      f"    lo_{r} = tl.program_id(1) * per_split",
                      f"    hi_{r} = tl.minimum(lo_{r} + per_split, tiles_{r})",
                      f"for it_{r} in tl.range(lo_{r}, hi_{r}):"]
        elif k.skip is not None:
            lines += _skipping_loops(k)
        else:
            lines.append(f"for it_{r} in tl.range(0, tiles_{r}):")
        if k.skip is None or k.split_k is not None:
            body = [f"o_{r} = it_{r} * BLOCK_{r} + tl.arange(0, BLOCK_{r})"]
            body += _emit(_ctx(k, "loop"), k.loop)
            lines += ["    " + ln for ln in body]
    post = _post(k, _ctx(k, "post"))
    if k.split_k is not None:
        lines += ["if SPLIT_K > 1:"] + ["    " + ln for ln in _split_k_meet(k)]
        lines += ["else:", "    finishing = True", "if finishing:"] + ["    " + ln for ln in post]
    else:
        lines += post
    return lines


def _split_k_meet(k: KernelIR) -> list[str]:
    """Split-K in one launch: each share stores its partial sums in its own fp32 workspace slice
    and counts itself in the tile's arrival counter; the share that arrives last (`finishing`) adds
    the slices in share order (the same sum whatever the arrival order), resets the counter for the
    next call and runs the epilogue. The barrier orders every thread's stores before the counting
    atomic (release); its acquire makes the other shares' slices visible, read past L1 (.cg)."""
    lines = ["# the shares of a tile meet in the fp32 workspace; the last to arrive finishes the tile",
             "share = tl.program_id(1).to(tl.int64)"]
    for c in k.carried:
        v = k.value(c)
        lines.append(f"tl.store({_ws_ptrs(v.axes, c, 'share')}, v_{c}{_ws_mask(k, v.axes)})")
    lines += ["tl.debug_barrier()",
              "arrived = tl.atomic_add(ws_arrived + tile_id, 1, sem='acq_rel', scope='gpu')",
              "finishing = arrived == SPLIT_K - 1",
              "if finishing:"]
    body = []
    for c in k.carried:
        v = k.value(c)
        mask = _ws_mask(k, v.axes)
        rest = f"{mask}{', other=0.0' if mask else ''}, cache_modifier='.cg')"
        body += [f"v_{c} = tl.load({_ws_ptrs(v.axes, c, '0')}{rest}", "for other in tl.static_range(1, SPLIT_K):",
                 f"    v_{c} += tl.load({_ws_ptrs(v.axes, c, 'other')}{rest}"]
    body.append("tl.atomic_xchg(ws_arrived + tile_id, 0, sem='relaxed', scope='gpu')  # ready for the next call")
    return lines + ["    " + ln for ln in body]


def _skipping_loops(k: KernelIR) -> list[str]:
    """The reduction loop of a kernel whose `skip` mask leaves tiles out: the tiles it keeps
    somewhere lie in [lo, hi) (found by interval tests from both ends); those it keeps whole,
    [a, b), run without evaluating it; the rest of [lo, hi) runs masked."""
    r = k.reduction
    i = next(i for i in k.loop if i.mask == k.skip)

    def tests(tile: str) -> tuple[str, str]:
        whole, none = mask_bounds(k, i, i.mask_axes, tile)
        if k.axis(r).masked:  # a ragged last tile is never whole
            whole = f"({whole} & (({tile} + 1) * BLOCK_{r} <= n_{r}))"
        return whole, none

    lines = [f"# tiles of {r} outside [lo_{r}, hi_{r}) hold nothing the mask {k.skip!r} keeps; tiles in "
             f"[a_{r}, b_{r}) it keeps whole",
             f"lo_{r} = 0",
             f"while (lo_{r} < tiles_{r}) & {tests(f'lo_{r}')[1]}:",
             f"    lo_{r} += 1",
             f"hi_{r} = tiles_{r}",
             f"while (hi_{r} > lo_{r}) & {tests(f'(hi_{r} - 1)')[1]}:",
             f"    hi_{r} -= 1",
             f"a_{r} = lo_{r}",
             f"while (a_{r} < hi_{r}) & ({tests(f'a_{r}')[0]} == 0):",
             f"    a_{r} += 1",
             f"b_{r} = a_{r}",
             f"while (b_{r} < hi_{r}) & {tests(f'b_{r}')[0]}:",
             f"    b_{r} += 1",
             f"for it_{r} in tl.range(a_{r}, b_{r}):  # whole tiles: no mask"]
    whole = _ctx(k, "loop")
    whole.whole_tiles.add(r)
    whole.unmasked = True
    body = [f"o_{r} = it_{r} * BLOCK_{r} + tl.arange(0, BLOCK_{r})"] + _emit(whole, k.loop)
    lines += ["    " + ln for ln in body]
    lines.append(f"for j_{r} in tl.range(0, (a_{r} - lo_{r}) + (hi_{r} - b_{r})):  # partly masked tiles")
    body = [f"it_{r} = tl.where(j_{r} < a_{r} - lo_{r}, lo_{r} + j_{r}, b_{r} + j_{r} - (a_{r} - lo_{r}))",
            f"o_{r} = it_{r} * BLOCK_{r} + tl.arange(0, BLOCK_{r})"] + _emit(_ctx(k, "loop"), k.loop)
    lines += ["    " + ln for ln in body]
    return lines


def _ws_ptrs(axes: tuple[str, ...], c: str, share: str) -> str:
    """Pointers into share `share`'s slice of the [SPLIT_K, *axes] workspace of accumulator `c`."""
    terms = [f"{share} * " + " * ".join(f"n_{b}" for b in axes)]
    for j, a in enumerate(axes):
        stride = " * ".join(f"n_{b}" for b in axes[j + 1:]) or "1"
        terms.append(f"o_{a}{index(axes, a)} * {stride}")
    return f"ws_{c} + " + " + ".join(terms)


def _ws_mask(k: KernelIR, axes: tuple[str, ...]) -> str:
    parts = [f"(o_{a} < n_{a}){index(axes, a)}" for a in axes if k.axis(a).masked]
    return f", mask={' & '.join(parts)}" if parts else ""


def _kernel(k: KernelIR) -> list[str]:
    w = _Lines()
    sig = signature(k)
    w.add("@triton.jit")
    w.add(f"def {k.name}_kernel(")
    for a in sig:
        w.add(f"{a},", 1)
    w.add("):")
    for g in k.grid:
        w.add(f"tiles_{g} = (n_{g} + BLOCK_{g} - 1) // BLOCK_{g}", 1)
    total = " * ".join(f"tiles_{g}" for g in k.grid) or "1"
    for j, p in enumerate(k.points):
        w.add(f"pid_{p} = tl.program_id({j + 1}).to(tl.int64)", 1)
    # what no tile changes: whole-axis offsets and the loads the hoist pass moved here
    w.block(_offsets(k, [a.name for a in k.axes if a.role == "whole"]), 1)
    w.block(_emit(_ctx(k, "pre"), k.invariant), 1)
    body = _tile_body(k)
    if walks_tiles(k):
        w.add("if PERSISTENT:  # one program per SM walks the tiles with stride NUM_SMS", 1)
        w.add(f"for tile_id in tl.range(tl.program_id(0), {total}, NUM_SMS):", 2)
        w.block(body, 3)
        w.add("else:", 1)
        w.add("tile_id = tl.program_id(0)", 2)
        w.block(body, 2)
    else:
        w.add("tile_id = tl.program_id(0)", 1)
        w.block(body, 1)
    return w.lines


HELPERS = '''
# Helpers are defined here rather than taken from triton.language's @jit library, so the module
# also runs in the interpreter when triton was imported before TRITON_INTERPRET was set.
@triton.jit
def _add(x, y):
    return x + y


@triton.jit
def _max(x, y):
    return tl.maximum(x, y)


@triton.jit
def _min(x, y):
    return tl.minimum(x, y)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tile_coords(tile_id, tiles_a, tiles_b, GROUP: tl.constexpr):
    # GROUP rows of tiles swept column by column (GROUP = 1: row-major order), so the rows of
    # the first operand and the columns of the second stay in L2
    width = GROUP * tiles_b
    first = (tile_id // width) * GROUP
    rows = tl.minimum(tiles_a - first, GROUP)
    return first + (tile_id % width) % rows, (tile_id % width) // rows
'''


def _host(k: KernelIR, prefix: str = "", gluon: tuple = ()) -> list[str]:
    w = _Lines()
    w.add(f"def {prefix}launch_args(cfg, t, n, c):")
    w.add('"""Kernel arguments: `cfg` a Launch (grid, constexprs, warps, stages), `t` the checked torch', 1)
    w.add("tensors by spec name (logical shapes), `n` the axis sizes, `c` the constants.\"\"\"", 1)
    w.add("k = cfg.constexprs", 1)
    args = []
    for a in k.accesses:
        if a.tma:
            logical = a.axes
            mem = logical if a.layout == "row_major" else logical[::-1]
            src = f"t[{a.tensor!r}]" + ("" if mem == logical else ".mT")
            blocks = []
            for ax in mem:
                if ax in k.points:  # a point axis: the box takes one index
                    blocks.append("1")
                elif a.mode == "store" and k.subtile is not None and k.grid and ax == k.grid[-1]:
                    blocks.append(f'k["BLOCK_{ax}"] // 2 if k["EPILOGUE_SUBTILE"] else k["BLOCK_{ax}"]')
                else:
                    blocks.append(f'k["BLOCK_{ax}"]')
            w.add(f"d_{a.tensor}_{a.mode} = TensorDescriptor.from_tensor({src}, [{', '.join(blocks)}])", 1)
            args.append(f"d_{a.tensor}_{a.mode}")
        else:
            args.append(f"t[{a.tensor!r}]")
    args = list(dict.fromkeys(args))
    if k.split_k is not None:
        w.add('if k["SPLIT_K"] > 1:  # partial sums per share (no zeroing needed), arrival counters per tile', 1)
        w.add("import torch", 2)
        w.add("", 0)
        w.add("from tilesched.backends.cuda.workspace import arrival_counters", 2)
        w.add("", 0)
        for c in k.carried:
            shape = ", ".join(f"n[{ax!r}]" for ax in k.value(c).axes)
            w.add(f'ws_{c} = torch.empty((k["SPLIT_K"], {shape}), dtype=torch.float32, device=cfg.device)', 2)
        w.add("ws_arrived = arrival_counters(cfg.device, cfg.grid[0])", 2)
        w.add("else:", 1)
        for c in k.carried:
            w.add(f"ws_{c} = None  # unused", 2)
        w.add("ws_arrived = None", 2)
        args += [f"ws_{c}" for c in k.carried] + ["ws_arrived"]
    args += [f"n[{a.name!r}]" for a in k.axes]
    for tname in dict.fromkeys(a.tensor for a in k.accesses):
        acc = next(a for a in k.accesses if a.tensor == tname)
        if not all(x.tma for x in k.accesses if x.tensor == tname):
            args += [f"t[{tname!r}].stride({j})" for j in range(len(acc.axes))]
    args += [f"c[{x.name!r}]" for x in k.constants]
    w.add("args = (", 1)
    for a in args:
        w.add(f"{a},", 2)
    w.add(")", 1)
    w.add("return args, dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages, **k)", 1)
    w.add("")
    w.add("")
    w.add(f"def {prefix}launch(cfg, t, n, c):")
    w.add('"""Launch the kernel for one call."""', 1)
    for s in gluon:  # launch dispatches on the point
        w.add(f'if cfg.constexprs["{s.constant}"]:  # the {s.name} schedule\'s kernel', 1)
        w.add(f"return {s.prefix}launch(cfg, t, n, c)", 2)
    w.add(f"args, kwargs = {prefix}launch_args(cfg, t, n, c)", 1)
    w.add(f"{k.name}_kernel[cfg.grid](*args, **kwargs)", 1)
    return w.lines


def _uses_division(k: KernelIR) -> bool:
    from tilesched.ir.indexexpr import uses_division

    return any(i.mask is not None and uses_division(i.mask) for i in k.pre + k.loop + k.post)


def render(k: KernelIR, parts: tuple[tuple[str, KernelIR], ...] = ()) -> str:
    """The Triton module of a kernel IR. `parts`: (prefix, kernel IR) of the kernels of another
    schedule of the same spec (materialisation's producer and consumer), each with its host
    functions `<prefix>launch_args` and `<prefix>launch`."""
    gluon = gluon_schedules.rendered(k)  # the Gluon kernels of the optional schedules ride along
    every = (k,) + tuple(p for _, p in parts)
    w = _Lines()
    w.add(f"# Generated by tilesched from spec {k.spec}; do not edit.")
    w.add(f"# grid {', '.join(k.grid) or '-'}" + (f" x points {', '.join(k.points)}" if k.points else "")
          + (f", reduction over {k.reduction}" if k.reduction else "") + f"; tile order {k.tile_order}.")
    w.add("import triton")
    w.add("import triton.language as tl")
    if any(a.tma for x in every for a in x.accesses):
        w.add("from triton.tools.tensor_descriptor import TensorDescriptor")
    w.lines += list(dict.fromkeys(ln for s in gluon for ln in s.imports.splitlines()))
    w.add("")
    w.add(HELPERS.rstrip("\n"))
    for block in dict.fromkeys(b for s in gluon for b in s.helpers):
        w.add(block.rstrip("\n"))
    if any(_uses_division(x) for x in every):
        from tilesched.ir.indexexpr import TRITON_HELPERS

        w.add("")
        w.add(TRITON_HELPERS.rstrip("\n"))
    w.add("")
    w.add("")
    w.lines += _kernel(k)
    w.add("")
    w.add("")
    w.lines += _host(k, gluon=tuple(gluon))
    positional = [a for a in signature(k) if ":" not in a]
    for s in gluon:
        w.lines += ["", "", f"# the {s.name} schedule (tilesched/passes/{s.option}.py), in Gluon",
                    *s.kernel(k, positional), "", "", *s.host(k)]
    for prefix, part in parts:
        w.add("")
        w.add("")
        w.add(f"# {prefix.rstrip('_')}: {part.name}")
        w.lines += _kernel(part)
        w.add("")
        w.add("")
        w.lines += _host(part, prefix)
    text = "\n".join(ln.rstrip() for ln in w.lines).strip("\n") + "\n"
    return text


__all__ = ["render", "signature", "TL_DTYPES", "block_shape"]
