"""SPMD semantics: what every rank of a world holds when each runs the program on its own tensors.

`execute` (interpreter.py) is the global view, where a comm stage moves a logical tensor
unchanged. Here each of `world` ranks executes the program in lockstep, stage by stage in
`program.order`: a stage that is not a comm stage runs on every rank with the same rules as
`execute`, on that rank's values; a comm stage combines the ranks' values as its op and the
tensors' placements say (see `eval_comm_ranks`).

Placements, per rank:
- `local`: the rank's own full-shape tensor (tiles and workspaces are local too);
- `replicated`: a full-shape tensor with the same values on every rank (inputs are checked);
- `partial`: a full-shape term; the logical tensor is the sum of every rank's term;
- `sharded(AXIS)`: rank r holds the r-th of `world` equal contiguous slices of the global
  tensor along AXIS (its size must be a multiple of `world`).

Representation of a sharded tensor: what goes in and comes out is the slice itself (what the
rank holds in memory: `local_part`); an input may also be given at the global shape, of which
only the rank's slice is read. While the program runs, a rank holds it at the global shape with
zeros outside its slice, so the stage rules see the spec's sizes; a sum or contraction over the
shard axis then yields the rank's term of a `partial` tensor (the sum over ranks is the global
result), and every stage that writes a sharded tensor has what it wrote outside the rank's slice
set back to zeros. Other reductions over a shard axis (max, softmax, ...) see those zeros: they
need a comm stage first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tilesched.ir.bind import Binding
from tilesched.ir.dtypes import FLOAT
from tilesched.ir.nodes import Program, TensorIR
from tilesched.semantics.arrays import NUMPY
from tilesched.semantics.interpreter import Run, input_names
from tilesched.semantics.ops import RULES, Ctx, _saturate, eval_memory
from tilesched.semantics.values import Value

COMM_OPS = ("all_gather", "reduce_scatter", "all_reduce", "all_to_all", "broadcast", "put", "get", "signal", "wait")

# what each collective reads and writes (the same table as validation's opchecks.check_comm)
PLACEMENTS = {
    "all_gather": ("sharded", {"replicated", "local"}),
    "reduce_scatter": ("partial", {"sharded"}),
    "all_reduce": ("partial", {"replicated", "local"}),
    "all_to_all": ("sharded", {"sharded"}),
}


def _placement(t: TensorIR) -> str:
    return f"sharded({t.shard_axis})" if t.placement == "sharded" else t.placement


def shard_index(program: Program, name: str, sizes: Mapping[str, int], rank: int, world: int) -> tuple:
    """The index of rank `rank`'s slice of sharded tensor `name` in its global shape (declared
    axis order); every axis whole for other placements."""
    t = program.tensor(name)
    if t.placement != "sharded":
        return tuple(slice(None) for _ in t.shape)
    size = sizes[t.shard_axis]
    if size % world:
        raise ValueError(f"{name} is sharded({t.shard_axis}) over {world} ranks, but {t.shard_axis}={size} is not a "
                         f"multiple of {world}")
    per = size // world
    return tuple(slice(rank * per, (rank + 1) * per) if a == t.shard_axis else slice(None) for a in t.shape)


def local_part(program: Program, name: str, data, sizes: Mapping[str, int], rank: int, world: int):
    """What rank `rank` holds of tensor `name`, given its global-shape data (numpy or torch):
    its slice when `name` is sharded, else `data` itself."""
    if program.tensor(name).placement != "sharded":
        return data
    return data[shard_index(program, name, sizes, rank, world)]


def _zeros_like(xp, is_float: bool, shape):
    return xp.zeros(shape) if is_float else np.zeros(shape, dtype=np.int64)


def _masked(xp, v: Value, index: tuple, shape) -> Value:
    """`v` (global shape, declared axis order) with zeros outside `index`."""
    data = _zeros_like(xp, v.is_float, shape)
    data[index] = v.data[index]
    return Value(data, v.axes, v.dtype, v.quant)


def _same(a, b) -> bool:
    """Equal values (NaN equal to NaN), numpy or torch."""
    eq = (a == b) | ((a != a) & (b != b))
    return bool(eq.all())


class _Ranks:
    """Every rank's `Run`, and the placement rules that hold between them."""

    def __init__(self, binding: Binding, world: int, xp):
        if world < 1:
            raise ValueError(f"world {world}: at least one rank")
        self.binding, self.world, self.xp = binding, world, xp
        self.program = binding.program
        self.sizes = dict(binding.sizes)
        self.runs = [Run(binding, xp, who=f"rank {r}: ") for r in range(world)]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.sizes[a] for a in self.program.tensor(name).shape)

    def index(self, name: str, rank: int) -> tuple:
        return shard_index(self.program, name, self.sizes, rank, self.world)

    def take(self, rank: int, name: str, raw) -> None:
        t, run = self.program.tensor(name), self.runs[rank]
        if t.placement != "sharded" or self.world == 1 or tuple(np.shape(raw)) == self.shape(name):
            run.take(name, raw)
            if t.placement == "sharded":
                run.values[name] = _masked(self.xp, run.values[name], self.index(name, rank), self.shape(name))
            return
        index = self.index(name, rank)
        local = tuple(len(range(*s.indices(n))) for s, n in zip(index, self.shape(name)))
        if tuple(np.shape(raw)) != local:
            raise ValueError(f"rank {rank}: input {name} ({_placement(t)}): shape {tuple(np.shape(raw))}, the rank's "
                             f"slice is {local} (or the global {self.shape(name)})")
        full = _zeros_like(self.xp, t.dtype in FLOAT, self.shape(name))
        full[index] = self.xp.asarray(raw) if t.dtype in FLOAT else np.asarray(
            raw if isinstance(raw, np.ndarray) else self.xp.to_numpy(raw)).astype(np.int64)
        run.take(name, full)

    def check_replicated(self, name: str) -> None:
        first = self.runs[0].values[name].data
        for r, run in enumerate(self.runs[1:], 1):
            if not _same(first, run.values[name].data):
                raise ValueError(f"input {name} is replicated, but rank {r}'s values differ from rank 0's")

    def settle(self, rank: int, written: dict[str, Value]) -> dict[str, Value]:
        """Sharded tensors a stage wrote, zero outside the rank's slice."""
        out = {}
        for name, v in written.items():
            t = self.program.tensor(name)
            out[name] = _masked(self.xp, v, self.index(name, rank), self.shape(name)) if t.placement == "sharded" \
                else v
        return out

    def held(self, rank: int) -> dict[str, Value]:
        out = {}
        for name, v in self.runs[rank].outputs().items():
            if self.program.tensor(name).placement == "sharded":
                v = Value(v.data[self.index(name, rank)], v.axes, v.dtype, v.quant)
            out[name] = v
        return out


def _logical(ranks: _Ranks, ctxs: list[Ctx], moved: list[Value], src: TensorIR) -> object | None:
    """The logical value of the comm stage's source, as the destination's data (None: `local`,
    which has no value beyond each rank's own)."""
    xp, dst = ranks.xp, ctxs[0].out
    if src.placement == "sharded":
        axis = src.shard_axis
        per = ranks.sizes[axis] // ranks.world
        whole = _zeros_like(xp, moved[0].is_float, ranks.shape(dst.name))
        for r, v in enumerate(moved):  # the destination's axis order: find the shard axis there
            index = tuple(slice(r * per, (r + 1) * per) if a == axis else slice(None) for a in dst.shape)
            whole[index] = v.data[index]
        return whole
    if src.placement == "partial":
        if not moved[0].is_float and moved[0].quant is not None:
            raise ctxs[0].error("reads", f"{src.name} is partial and quantised: a sum of quantised terms is not "
                                         "defined (dequantise, or keep the partial sums in int32)")
        total = moved[0].data
        for v in moved[1:]:
            total = total + v.data
        return total if moved[0].is_float else _saturate(total, dst.dtype)
    if src.placement == "replicated":
        return moved[0].data
    return None


def eval_comm_ranks(ranks: _Ranks, ctxs: list[Ctx]) -> list[dict[str, Value]]:
    """One comm stage on every rank. The source's logical value (sharded: every rank's slice in
    place; partial: the sum of the terms; replicated: the common value) goes to the destination
    in its placement (replicated/local: the whole on every rank; sharded: each rank its slice;
    partial: the whole on rank 0 and zeros elsewhere):
    - all_gather (sharded -> replicated/local), reduce_scatter (partial -> sharded), all_reduce
      (partial -> replicated/local), all_to_all (sharded(X) -> sharded(Y)): as named, and the
      placements must be those;
    - put / get name no peer: the ranks' puts (pushes) or gets (pulls) together leave the
      destination holding the source's logical value in the destination's placement (a sharded
      source put into a replicated buffer is an all-gather made of puts); from a `local` source
      (a tile) each rank moves its own value;
    - broadcast: every rank receives rank 0's value of the source (a sharded destination keeps
      its slice of it);
    - signal / wait order stages and write nothing.
    The global view (`execute`) agrees on the logical values: the collectives and put/get are
    identities there, and so is broadcast of a replicated source."""
    stage, program = ctxs[0].stage, ranks.program
    if stage.op in ("signal", "wait") or not stage.writes:
        return [{} for _ in ctxs]
    src, dst = program.tensor(stage.reads[0]), ctxs[0].out
    want = PLACEMENTS.get(stage.op)
    if want and src.placement != want[0]:
        raise ctxs[0].error("reads", f"{stage.op} reads a {want[0]} tensor; {src.name} is {_placement(src)}")
    if want and dst.placement not in want[1]:
        raise ctxs[0].error("writes", f"{stage.op} writes a {' or '.join(sorted(want[1]))} tensor; {dst.name} is "
                                      f"{_placement(dst)}")
    moved = [eval_memory(c)[dst.name] for c in ctxs]  # each rank's source, checked, as the destination
    if stage.op == "broadcast":
        whole = moved[0].data
    else:
        whole = _logical(ranks, ctxs, moved, src)
    out = []
    for r, v in enumerate(moved):
        data = v.data if whole is None else whole
        if whole is not None and dst.placement == "partial" and r > 0 and stage.op != "broadcast":
            data = _zeros_like(ranks.xp, v.is_float, ranks.shape(dst.name))
        out.append({dst.name: Value(data, dst.shape, dst.dtype, v.quant)})  # settle() slices sharded ones
    return out


def execute_ranks(binding: Binding, world: int, inputs_per_rank: Sequence[Mapping[str, object]],
                  xp=NUMPY) -> list[dict[str, Value]]:
    """Per rank, every global tensor the spec writes, as that rank holds it: sharded tensors as
    the rank's slice, others at their global shape. `inputs_per_rank[r]` holds rank r's inputs
    (numpy or torch arrays in declared axis order): sharded ones as the rank's slice (or at the
    global shape, of which only the slice is read); replicated ones equal on every rank."""
    if len(inputs_per_rank) != world:
        raise ValueError(f"{len(inputs_per_rank)} sets of inputs for a world of {world} ranks")
    ranks = _Ranks(binding, world, xp)
    program = binding.program
    needed = input_names(program)
    for r, inputs in enumerate(inputs_per_rank):
        missing = [n for n in needed if n not in inputs]
        if missing:
            raise KeyError(f"rank {r}: missing input {missing[0]!r}")
        for name in needed:
            ranks.take(r, name, inputs[name])
    for name in needed:
        if program.tensor(name).placement == "replicated":
            ranks.check_replicated(name)
    for name in program.order:
        stage = program.stage(name)
        ctxs = [run.prepare(stage) for run in ranks.runs]
        if stage.op in COMM_OPS:
            written = eval_comm_ranks(ranks, ctxs)
        else:
            written = [RULES[stage.op](c) for c in ctxs]
        for r, (run, w) in enumerate(zip(ranks.runs, written)):
            run.values.update(ranks.settle(r, w))
    return [ranks.held(r) for r in range(world)]


def run_spec_ranks(binding: Binding, world: int, inputs_per_rank: Sequence[Mapping[str, object]],
                   xp=NUMPY) -> list[dict[str, np.ndarray]]:
    """`execute_ranks`, with plain numpy arrays (float64 / int64) per output and rank."""
    return [{n: xp.to_numpy(v.data) if v.is_float else v.data for n, v in held.items()}
            for held in execute_ranks(binding, world, inputs_per_rank, xp)]


def random_inputs_ranks(binding: Binding, world: int, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """Fresh random inputs for every rank (see `check.random_inputs` for the amplitudes):
    sharded inputs drawn once at the global shape, each rank given its slice; replicated
    inputs drawn once, the same on every rank; local and partial inputs drawn per rank."""
    from tilesched.semantics.check import random_inputs

    program = binding.program
    first = random_inputs(binding, rng)
    shared = {n: v for n, v in first.items() if program.tensor(n).placement in ("sharded", "replicated")}
    out = []
    for r in range(world):
        drawn = first if r == 0 else random_inputs(binding, rng, given=shared)
        out.append({n: np.ascontiguousarray(local_part(program, n, v, binding.sizes, r, world))
                    for n, v in drawn.items()})
    return out
