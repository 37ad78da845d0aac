"""Execute a bound spec on whole tensors: the one reference every generated kernel is checked
against. Stages run once each, in dependency order, independent of tiles, loop order and tile
order (lower.py refuses specs where the tiling would change a result)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tilesched.ir.bind import Binding
from tilesched.ir.dtypes import FLOAT
from tilesched.ir.nodes import Program
from tilesched.ir.storage import expand_groups, from_storage, is_stored_differently, storage_shape
from tilesched.semantics.arrays import NUMPY
from tilesched.semantics.ops import RULES, Ctx
from tilesched.semantics.values import Value, declared_quant


def input_names(program: Program) -> list[str]:
    """Global tensors whose values come from outside: read before (or by) their first writer."""
    written: set[str] = set()
    needed: list[str] = []
    for name in program.order:
        stage = program.stage(name)
        for t in stage.reads:
            t = program.tensor(t).alias or t  # an alias reads its tensor's values
            if program.tensor(t).scope == "global" and t not in written and t not in needed:
                needed.append(t)
        written.update(stage.writes)
    return needed


def output_names(program: Program) -> list[str]:
    """Global tensors some stage writes (what a kernel must produce)."""
    written = {t for s in program.stages for t in s.writes}
    return [t.name for t in program.tensors if t.scope == "global" and t.name in written]


class Run:
    """The tensors of one execution (the global view, or one rank of an SPMD run) as its
    stages run: `prepare` gives a stage its reads (inputs, aliases, zero-filled tiles)."""

    def __init__(self, binding: Binding, xp=NUMPY, draw=None, who: str = ""):
        self.program = binding.program
        self.sizes = dict(binding.sizes)
        self.env = binding.env()
        self.xp = xp
        self.draw = draw
        self.who = who  # "rank 1: " in SPMD runs, for messages
        self.values: dict[str, Value] = {}
        self.needed = set(input_names(self.program))

    def take(self, name: str, raw) -> None:
        """Input `name` from `raw` (any array: numpy, torch, nested lists), as a caller stores it
        (tilesched.ir.storage: grouped, packed into int32 words, fp4 codes)."""
        t = self.program.tensor(name)
        if is_stored_differently(t):
            self._take_stored(t, raw)
            return
        if t.dtype in FLOAT:
            data = self.xp.asarray(raw)
        else:
            data = np.asarray(raw if isinstance(raw, np.ndarray) else self.xp.to_numpy(raw)).astype(np.int64)
        shape = tuple(self.sizes[a] for a in t.shape)
        if tuple(data.shape) != shape:
            raise ValueError(f"{self.who}input {name}: shape {tuple(data.shape)}, the spec says {shape}")
        self.values[name] = Value(data, t.shape, t.dtype, declared_quant(t, self.sizes))

    def _take_stored(self, t, raw) -> None:
        want = storage_shape(t, self.sizes, self.env)
        stored = raw if isinstance(raw, np.ndarray) else self.xp.to_numpy(raw)
        stored = np.asarray(stored)
        if tuple(stored.shape) != want:
            raise ValueError(f"{self.who}input {t.name}: stored shape {tuple(stored.shape)}, the spec stores {want}")
        values = from_storage(t, stored, self.sizes, self.env)
        integer = t.dtype not in FLOAT
        if not integer:
            values = self.xp.asarray(values)
        data = expand_groups(self.xp, values, t, self.sizes, self.env, integer)
        self.values[t.name] = Value(data, t.shape, t.dtype, declared_quant(t, self.sizes))

    def _missing(self, name: str, stage) -> None:
        if self.draw is None:
            raise KeyError(f"{self.who}missing input {name!r}")
        self.take(name, self.draw(name, stage, self.values))

    def prepare(self, stage) -> Ctx:
        """The stage's context, every tensor it reads present."""
        program, values = self.program, self.values
        ctx = Ctx(stage=stage, program=program, sizes=self.sizes, env=self.env, xp=self.xp, values=values)
        for t in stage.reads:
            if t in values:
                continue
            target = program.tensor(t).alias
            if target is not None:  # the same values under this tensor's axis names
                if target not in values:
                    self._missing(target, stage)
                tv, ta = values[target], program.tensor(t)
                values[t] = Value(tv.data, ta.shape, ta.dtype, declared_quant(ta, self.sizes))
            elif t in self.needed:
                self._missing(t, stage)
            else:  # a tile (or workspace) read before any write holds zeros
                values[t] = ctx.zeros(program.tensor(t))
        return ctx

    def outputs(self) -> dict[str, Value]:
        return {n: self.values[n] for n in output_names(self.program) if n in self.values}


def execute(binding: Binding, inputs: Mapping[str, object], xp=NUMPY, draw=None) -> dict[str, Value]:
    """Every global tensor the spec writes, as Values (data in the tensor's declared axis order:
    float64 arrays of `xp`, or exact int64 numpy arrays). `draw(name, stage, values)`, when
    given, supplies an input that `inputs` lacks at the moment a stage first reads it.

    This is the global view: every tensor is its logical whole (a sharded tensor all its
    shards, a partial one the sum of its terms), so comm stages move values unchanged. For
    what each rank of a world holds, see `spmd.execute_ranks`."""
    run = Run(binding, xp, draw)
    for name in run.needed & set(inputs):
        run.take(name, inputs[name])
    for name in binding.program.order:
        stage = binding.program.stage(name)
        ctx = run.prepare(stage)
        run.values.update(RULES[stage.op](ctx))
    return run.outputs()


def run_spec(binding: Binding, inputs: Mapping[str, object], xp=NUMPY) -> dict[str, np.ndarray]:
    """`execute`, with plain numpy arrays (float64 / int64) per output."""
    return {n: xp.to_numpy(v.data) if v.is_float else v.data for n, v in execute(binding, inputs, xp).items()}
