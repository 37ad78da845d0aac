"""Execute a bound spec on whole tensors: the one reference every generated kernel is checked
against. Stages run once each, in dependency order, independent of tiles, loop order and tile
order (lower.py refuses specs where the tiling would change a result)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tilesched.ir.bind import Binding
from tilesched.ir.dtypes import FLOAT
from tilesched.ir.nodes import Program
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


def execute(binding: Binding, inputs: Mapping[str, object], xp=NUMPY, draw=None) -> dict[str, Value]:
    """Every global tensor the spec writes, as Values (data in the tensor's declared axis order:
    float64 arrays of `xp`, or exact int64 numpy arrays). `draw(name, stage, values)`, when
    given, supplies an input that `inputs` lacks at the moment a stage first reads it."""
    program = binding.program
    sizes = dict(binding.sizes)
    values: dict[str, Value] = {}
    needed = set(input_names(program))

    def take(name: str, raw) -> None:
        t = program.tensor(name)
        if t.dtype in FLOAT:
            data = xp.asarray(raw)
        else:
            data = np.asarray(raw if isinstance(raw, np.ndarray) else xp.to_numpy(raw)).astype(np.int64)
        shape = tuple(sizes[a] for a in t.shape)
        if tuple(data.shape) != shape:
            raise ValueError(f"input {name}: shape {tuple(data.shape)}, the spec says {shape}")
        values[name] = Value(data, t.shape, t.dtype, declared_quant(t, sizes))

    for name in needed & set(inputs):
        take(name, inputs[name])
    env = binding.env()
    for name in program.order:
        stage = program.stage(name)
        ctx = Ctx(stage=stage, program=program, sizes=sizes, env=env, xp=xp, values=values)
        for t in stage.reads:
            if t in values:
                continue
            target = program.tensor(t).alias
            if target is not None:  # the same values under this tensor's axis names
                if target not in values:
                    if draw is None:
                        raise KeyError(f"missing input {target!r}")
                    take(target, draw(target, stage, values))
                tv, ta = values[target], program.tensor(t)
                values[t] = Value(tv.data, ta.shape, ta.dtype, declared_quant(ta, sizes))
                continue
            if t in needed:
                if draw is None:
                    raise KeyError(f"missing input {t!r}")
                take(t, draw(t, stage, values))
            else:  # a tile (or workspace) read before any write holds zeros
                values[t] = ctx.zeros(program.tensor(t))
        values.update(RULES[stage.op](ctx))
    return {n: values[n] for n in output_names(program) if n in values}


def run_spec(binding: Binding, inputs: Mapping[str, object], xp=NUMPY) -> dict[str, np.ndarray]:
    """`execute`, with plain numpy arrays (float64 / int64) per output."""
    return {n: xp.to_numpy(v.data) if v.is_float else v.data for n, v in execute(binding, inputs, xp).items()}
