"""The tile IR: a spec's loops as a tree, each stage attached at its `at` level, and every tensor
as a buffer with a scope. Target-independent; the GPU passes (tilesched.passes) and the MCU
schedules read it.

    for M in tiles of BLOCK_M:            (spatial)
      for N in tiles of BLOCK_N:          (spatial)
        for K in tiles of BLOCK_K:        (reduction)
          load_a: A -> a_tile
          mma: dot(a_tile, b_tile, acc) -> acc
        store_c: acc -> C

Stages at one level keep the program's dependency order. A stage that sits at a level but
depends on a stage inside a deeper loop runs after that loop; one that does not runs before
it. Buffers: `global` (in memory; input, output or workspace), `tile` (on-chip, per tile) or
`carried` (a tile buffer a reduction loop updates across its iterations: accumulators).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from tilesched.ir.nodes import Program, StageIR


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True)


class Buffer(_Node):
    name: str
    axes: tuple[str, ...]
    dtype: str
    scope: Literal["global", "tile", "carried"]
    role: str  # input | output | workspace | tile
    layout: str = "row_major"


class Loop(_Node):
    axis: str
    kind: Literal["spatial", "reduction"]
    tile: int | str | None  # literal, parameter name, or None (the whole axis in one tile)
    before: tuple[StageIR, ...] = ()  # stages at this level that run before the inner loop
    inner: Loop | None = None
    after: tuple[StageIR, ...] = ()  # stages at this level that depend on the inner loop


class LoopTree(_Node):
    program: str
    buffers: tuple[Buffer, ...]
    outside: tuple[StageIR, ...]  # `at: null`: once, outside every loop
    root: Loop | None
    outside_after: tuple[str, ...] = ()  # the `outside` stages that depend on the loops (they run after them)

    def loops(self) -> list[Loop]:
        out, lp = [], self.root
        while lp is not None:
            out.append(lp)
            lp = lp.inner
        return out

    def buffer(self, name: str) -> Buffer:
        return next(b for b in self.buffers if b.name == name)


def _inside(stage: StageIR, depth: int) -> bool:
    return stage.depth > depth


def build_tree(program: Program) -> LoopTree:
    """Loops nested in spec order, each stage at its `at` depth, in dependency order."""
    order = [program.stage(n) for n in program.order]
    loops = list(program.loops)
    deps = {s.name: {d.src for d in program.deps_of(s.name)} for s in order}

    def depends_on_deeper(stage: StageIR, depth: int) -> bool:
        deeper = {s.name for s in order if s.depth > depth}
        seen, todo = set(), list(deps[stage.name])
        while todo:
            n = todo.pop()
            if n in deeper:
                return True
            if n not in seen:
                seen.add(n)
                todo.extend(d for d in deps[n] if program.stage(n).depth == depth)
        return False

    def level(depth: int) -> Loop | None:
        if depth > len(loops):
            return None
        here = [s for s in order if s.depth == depth]
        inner = level(depth + 1)
        before = tuple(s for s in here if inner is None or not depends_on_deeper(s, depth))
        after = tuple(s for s in here if s not in before)
        if depth == 0:
            return Loop(axis="", kind="spatial", tile=None, before=before, inner=inner, after=after)
        lp = loops[depth - 1]
        return Loop(axis=lp.axis, kind=lp.kind, tile=lp.tile, before=before, inner=inner, after=after)

    top = level(0)
    outside = top.before + top.after
    return LoopTree(program=program.name, buffers=_buffers(program), outside=outside, root=top.inner,
                    outside_after=tuple(s.name for s in top.after))


def _buffers(program: Program) -> tuple[Buffer, ...]:
    reduction = {lp.axis for lp in program.loops if lp.kind == "reduction"}
    carried = set()
    for s in program.stages:
        # written inside a reduction loop whose axis it lacks: the loop updates it across iterations
        enclosing = {lp.axis for lp in program.loops[:s.depth]} & reduction
        for t in s.writes:
            if program.tensor(t).scope == "tile" and enclosing - set(program.tensor(t).shape):
                carried.add(t)
    out = []
    for t in program.tensors:
        scope = "global" if t.scope == "global" else ("carried" if t.name in carried else "tile")
        out.append(Buffer(name=t.name, axes=t.shape, dtype=t.dtype, scope=scope, role=t.role, layout=t.layout))
    return tuple(out)


def dump_tree(tree: LoopTree) -> str:
    """The tree as indented text (`tilesched plan --dump-ir`)."""
    lines = [f"looptree {tree.program}"]
    for b in tree.buffers:
        lines.append(f"  buffer {b.name}[{', '.join(b.axes)}] {b.dtype} {b.scope}"
                     + (f" {b.role}" if b.scope == "global" else "") + (" col_major" if b.layout == "col_major" else ""))
    for s in tree.outside:
        lines.append(f"  {_stage_line(s)}")

    def walk(lp: Loop | None, indent: str) -> None:
        if lp is None:
            return
        tile = "whole axis" if lp.tile is None else f"tiles of {lp.tile}"
        lines.append(f"{indent}for {lp.axis} in {tile} ({lp.kind}):")
        for s in lp.before:
            lines.append(f"{indent}  {_stage_line(s)}")
        walk(lp.inner, indent + "  ")
        for s in lp.after:
            lines.append(f"{indent}  {_stage_line(s)}")

    walk(tree.root, "  ")
    return "\n".join(lines) + "\n"


def _stage_line(s: StageIR) -> str:
    attrs = []
    if s.fn:
        attrs.append("fn=[" + ", ".join(f if isinstance(f, str) else f"{f[0]}:{f[1]}" for f in s.fn) + "]")
    if s.axis:
        attrs.append(f"axis={s.axis}")
    if s.reduce:
        attrs.append(f"reduce={s.reduce}")
    if s.engine:
        attrs.append(f"engine={s.engine}")
    extra = f" {' '.join(attrs)}" if attrs else ""
    return f"{s.name}: {s.op}({', '.join(s.reads)}) -> {', '.join(s.writes)}{extra}"
