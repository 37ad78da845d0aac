"""The Cortex-M kernel IR: what the MCU passes (passes/mcu.py) decide, ready for the per-op C rules
(backends/cortexm/c_rules.py) and for the memory events (`events` in passes/mcu.py).

- `Expr`: small integer expressions over loop variables and fill counters, evaluated in Python (events,
  ring sizes) and printed as C (the generated loops): one description of every region.
- `OpNode`: one C rule applied per point of a chain (a convolution pixel, a fully connected vector, a
  softmax row, ...), rendering one or more spec stages (a dot and the requantize that follows it).
- `Chain`: ops that run point by point, their intermediates one vector each (`pix` buffers); it writes
  one materialised tensor. Its points are the output's axes but the last (the vector axis).
- `BufferInfo`: a materialised tensor (or a chain's vector, or an auxiliary sum) in the arena: memory
  order of its axes, the first axis possibly folded (a ring of rows, a tile), segments for the planner.
- Schedule nodes: `LoopNode` (a spec loop over blocks of an axis), `Run` (a chain over a region of its
  points) and `Fill` (a chain demanded by another, computed one row at a time from the last row computed
  + 1 up to the last row needed, each row first filling its own inputs: rows are pulled depth first, so a
  ring holds only the rows a consumer's window spans, carried across blocks). A run computes its points
  row by row (the first point axis outermost), so the memory events have one step per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ------------------------------------------------------------------------------------ expressions


@dataclass(frozen=True)
class Expr:
    op: str  # c (constant) | v (variable) | + | * | // | min | max
    args: tuple = ()

    # construction with constant folding
    @staticmethod
    def const(n: int) -> Expr:
        return Expr("c", (int(n),))

    @staticmethod
    def var(name: str) -> Expr:
        return Expr("v", (name,))

    @property
    def is_const(self) -> bool:
        return self.op == "c"

    @property
    def value(self) -> int:
        assert self.op == "c"
        return self.args[0]

    def __add__(self, other) -> Expr:
        other = _e(other)
        if self.is_const and other.is_const:
            return Expr.const(self.value + other.value)
        if other.is_const and other.value == 0:
            return self
        if self.is_const and self.value == 0:
            return other
        if self.op == "+" and self.args[1].is_const and other.is_const:
            return self.args[0] + (self.args[1].value + other.value)
        return Expr("+", (self, other))

    def __radd__(self, other) -> Expr:
        return _e(other) + self

    def __sub__(self, other) -> Expr:
        return self + (_e(other) * -1)

    def __mul__(self, k: int) -> Expr:
        assert isinstance(k, int)
        if self.is_const:
            return Expr.const(self.value * k)
        if k == 1:
            return self
        if k == 0:
            return Expr.const(0)
        if self.op == "+" and self.args[1].is_const:
            return self.args[0] * k + self.args[1].value * k
        return Expr("*", (self, Expr.const(k)))

    def __floordiv__(self, k: int) -> Expr:
        return self.floordiv(k)

    def floordiv(self, k: int) -> Expr:
        if self.is_const:
            return Expr.const(self.value // k)
        if k == 1:
            return self
        return Expr("//", (self, Expr.const(k)))

    def ev(self, env: dict[str, int]) -> int:
        op, a = self.op, self.args
        if op == "c":
            return a[0]
        if op == "v":
            return env[a[0]]
        if op == "+":
            return a[0].ev(env) + a[1].ev(env)
        if op == "*":
            return a[0].ev(env) * a[1].ev(env)
        if op == "//":
            return a[0].ev(env) // a[1].ev(env)
        if op == "min":
            return min(x.ev(env) for x in a)
        if op == "max":
            return max(x.ev(env) for x in a)
        raise ValueError(op)

    def c(self) -> str:
        """C text. `//` is floor division: the generated code only divides non-negative values (row
        coordinates), where C's truncation agrees."""
        op, a = self.op, self.args
        if op == "c":
            return str(a[0])
        if op == "v":
            return a[0]
        if op == "+":
            if a[1].is_const and a[1].value < 0:
                return f"({a[0].c()} - {-a[1].value})"
            return f"({a[0].c()} + {a[1].c()})"
        if op == "*":
            return f"({a[0].c()} * {a[1].c()})"
        if op == "//":
            return f"({a[0].c()} / {a[1].c()})"
        if op in ("min", "max"):
            out = a[0].c()
            for x in a[1:]:
                out = f"TS_{op.upper()}({out}, {x.c()})"
            return out
        raise ValueError(op)

    def __str__(self) -> str:
        op, a = self.op, self.args
        if op in ("c", "v"):
            return str(a[0])
        if op == "+":
            return f"{a[0]} + {a[1]}"
        if op == "*":
            return f"{a[0]}*{a[1]}"
        if op == "//":
            return f"({a[0]}) // {a[1]}"
        return f"{op}({', '.join(str(x) for x in a)})"


def _e(x) -> Expr:
    return x if isinstance(x, Expr) else Expr.const(x)


def emin(*xs) -> Expr:
    xs = [_e(x) for x in xs]
    consts = [x.value for x in xs if x.is_const]
    rest = [x for x in xs if not x.is_const]
    if not rest:
        return Expr.const(min(consts))
    if consts:
        rest.append(Expr.const(min(consts)))
    return rest[0] if len(rest) == 1 else Expr("min", tuple(rest))


def emax(*xs) -> Expr:
    xs = [_e(x) for x in xs]
    consts = [x.value for x in xs if x.is_const]
    rest = [x for x in xs if not x.is_const]
    if not rest:
        return Expr.const(max(consts))
    if consts:
        rest.append(Expr.const(max(consts)))
    return rest[0] if len(rest) == 1 else Expr("max", tuple(rest))


Range = tuple[Expr, Expr]  # inclusive [lo, hi]


# ---------------------------------------------------------------------------------------- tensors

@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the MCU passes see it: the spec's (or a synthetic auxiliary one: column sums)."""

    name: str
    axes: tuple[str, ...]
    dtype: str
    scope: str  # global | tile
    role: str  # input | output | tile | aux
    region: str | None = None  # flash for constants
    alias: str | None = None

    @property
    def point_axes(self) -> tuple[str, ...]:
        return self.axes[:-1]

    @property
    def vector_axis(self) -> str:
        return self.axes[-1]


# ---------------------------------------------------------------------------------------- ops, chains

@dataclass(frozen=True)
class OpNode:
    """One rule per point. `rule`: conv | dw | pool | fc | eltwise | requant | softmax | layernorm | colsum.
    `stages`: the spec stages rendered (a dot with its requantize: two). `ins`: (role, tensor) pairs
    (roles per rule: x, w, bias, a, b, y, gamma, beta, src); `out` the tensor written."""

    rule: str
    stages: tuple[str, ...]
    ins: tuple[tuple[str, str], ...]
    out: str
    attrs: tuple[tuple[str, object], ...] = ()

    def inp(self, role: str) -> str | None:
        return next((t for r, t in self.ins if r == role), None)

    def attr(self, key: str, default=None):
        return dict(self.attrs).get(key, default)


@dataclass(frozen=True)
class Chain:
    name: str
    depth: int  # spec loop depth of its stages
    ops: tuple[OpNode, ...]
    out: str  # the materialised tensor it writes
    points: tuple[str, ...]  # point axes of `out` (its axes but the last)
    pix: tuple[str, ...]  # chain-internal tensors: one vector per point
    reads: tuple[str, ...]  # materialised tensors it reads (arena buffers)
    consts: tuple[str, ...]  # flash tensors it reads (packed by the rules)
    group: str = "before"  # at its level: before the inner loop, or after it (it depends on it)

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(s for op in self.ops for s in op.stages)


# ---------------------------------------------------------------------------------------- buffers

@dataclass(frozen=True)
class BufferInfo:
    """An arena buffer. `axes` in memory order (the last contiguous); the first axis is folded to
    `extents[0]` when that is below its size (coordinate % extent: a ring, or a tile); segments are
    the combinations of the first `seg_depth` axes (the planner's unit of lifetime)."""

    name: str
    tensor: str
    dtype: str
    axes: tuple[str, ...]
    sizes: tuple[int, ...]
    extents: tuple[int, ...]
    seg_depth: int
    role: str  # input | output | scratch
    what: str = ""

    @property
    def elem_bytes(self) -> int:
        return {"int8": 1, "uint8": 1, "int16": 2, "int32": 4, "fp32": 4}[self.dtype]

    @property
    def n_segs(self) -> int:
        n = 1
        for e in self.extents[:self.seg_depth]:
            n *= e
        return n

    @property
    def seg_bytes(self) -> int:
        n = self.elem_bytes
        for e in self.extents[self.seg_depth:]:
            n *= e
        return n

    @property
    def size(self) -> int:
        return self.n_segs * self.seg_bytes

    @property
    def folded(self) -> bool:
        return self.extents[0] < self.sizes[0]

    def strides(self) -> tuple[int, ...]:
        """Element strides per memory axis."""
        out, s = [], 1
        for e in reversed(self.extents):
            out.append(s)
            s *= e
        return tuple(reversed(out))


# ---------------------------------------------------------------------------------------- schedule

@dataclass(frozen=True)
class Fill:
    """Rows of `chain` from max(done + 1, lo) to hi, one at a time (`row` holds it), each after `inner`
    (the fills of its own inputs for that row); then done = max(done, hi)."""

    chain: str
    done: str
    row: str
    lo: Expr
    hi: Expr
    rest: tuple[tuple[str, Expr, Expr], ...]  # the other point axes (whole)
    inner: tuple[Fill, ...] = ()


@dataclass(frozen=True)
class Run:
    chain: str
    region: tuple[tuple[str, Expr, Expr], ...]  # per point axis of the chain: inclusive range
    fills: tuple[Fill, ...] = ()  # demanded chains pulled before it


@dataclass(frozen=True)
class LoopNode:
    var: str  # block index
    axis: str
    tile: int
    count: int
    size: int
    body: tuple = ()

    def lo(self) -> Expr:
        return Expr.var(self.var) * self.tile

    def hi(self) -> Expr:
        return emin(Expr.var(self.var) * self.tile + (self.tile - 1), self.size - 1)


@dataclass(frozen=True)
class McuKernel:
    name: str
    target: str
    tensors: dict = field(default_factory=dict)  # name -> TensorInfo
    chains: tuple[Chain, ...] = ()
    layouts: dict = field(default_factory=dict)  # materialised tensor -> memory order of its axes
    buffers: tuple[BufferInfo, ...] = ()
    body: tuple = ()  # LoopNode | Run
    done_vars: tuple[str, ...] = ()
    sizes: dict = field(default_factory=dict)
    halo: str = "cache"  # cache (rings carry rows between blocks) | recompute

    def chain(self, name: str) -> Chain:
        return next(c for c in self.chains if c.name == name)

    def buffer(self, name: str) -> BufferInfo:
        return next(b for b in self.buffers if b.name == name)

    def buffer_of(self, tensor: str) -> BufferInfo | None:
        t = self.tensors[tensor]
        target = t.alias or tensor
        return next((b for b in self.buffers if b.tensor == target), None)


# ---------------------------------------------------------------------------------------- dumps

def dump_chains(k: McuKernel) -> str:
    lines = [f"mcu kernel {k.name} ({k.target})"]
    for c in k.chains:
        lines.append(f"  chain {c.name} at depth {c.depth} -> {c.out} over points [{', '.join(c.points)}]")
        for op in c.ops:
            attrs = " ".join(f"{a}={v}" for a, v in op.attrs if v not in (None, (), ""))
            ins = ", ".join(f"{r}={t}" for r, t in op.ins)
            lines.append(f"    {op.rule}({ins}) -> {op.out}  [{', '.join(op.stages)}]" + (f" {attrs}" if attrs else ""))
        if c.pix:
            lines.append(f"    vectors: {', '.join(c.pix)}")
    return "\n".join(lines) + "\n"


def dump_layouts(k: McuKernel) -> str:
    lines = [dump_chains(k).rstrip("\n"), "  layouts:"]
    for t, order in sorted(k.layouts.items()):
        lines.append(f"    {t}[{', '.join(order)}]")
    return "\n".join(lines) + "\n"


def dump_schedule(k: McuKernel) -> str:
    lines = [f"schedule {k.name}"]

    def region(r) -> str:
        return ", ".join(f"{a}: {lo}..{hi}" for a, lo, hi in r)

    def fill(f, indent):
        lines.append(f"{indent}fill {f.chain} rows {f.row} = max({f.done} + 1, {f.lo})..{f.hi}:")
        for g in f.inner:
            fill(g, indent + "  ")
        lines.append(f"{indent}  {f.chain}[{f.row}" + (f", {region(f.rest)}" if f.rest else "") + "]")

    def walk(nodes, indent):
        for n in nodes:
            if isinstance(n, LoopNode):
                lines.append(f"{indent}for {n.var} in 0..{n.count - 1} ({n.axis} by {n.tile}):")
                walk(n.body, indent + "  ")
            else:
                for f in n.fills:
                    fill(f, indent)
                lines.append(f"{indent}{n.chain}[{region(n.region)}]")

    walk(k.body, "  ")
    return "\n".join(lines) + "\n"


def dump_buffers(k: McuKernel) -> str:
    lines = [dump_schedule(k).rstrip("\n"), "  buffers:"]
    for b in k.buffers:
        ext = ", ".join(f"{a}:{e}" + (f"/{n}" if e < n else "") for a, e, n in zip(b.axes, b.extents, b.sizes))
        lines.append(f"    {b.name} [{ext}] {b.dtype} {b.n_segs}x{b.seg_bytes} B {b.role}" +
                     (f" ({b.what})" if b.what else ""))
    return "\n".join(lines) + "\n"
