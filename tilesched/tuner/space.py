"""The tuning space of one spec at one shape: its legal parameter points.

Legality is decided before anything is compiled: a point must satisfy the spec's
constraints (which may name hardware limits such as `smem_bytes` or `sram_bytes`), the
tile rules that `bind` enforces and the limit bounds of `schedules.limits`. The tuner rejects illegal suggestions without
evaluating them (see campaign.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property

from tilesched.errors import SpecError
from tilesched.ir.bind import Binding, bind
from tilesched.ir.nodes import Program
from tilesched.ir.space import iter_points
from tilesched.schedules.limits import limit_problem


def point_key(params: Mapping[str, object]) -> str:
    """A canonical text key of a parameter point (for caches and duplicate checks)."""
    return ",".join(f"{k}={params[k]!r}" for k in sorted(params))


class Space:
    """The legal points of `program` with its symbolic axes bound by `sizes` (hints otherwise)
    and some parameters optionally pinned by `pinned`."""

    def __init__(self, program: Program, sizes: Mapping[str, int] | None = None,
                 pinned: Mapping[str, object] | None = None, domains: Mapping[str, object] | None = None):
        self.program = program
        self.pinned = dict(pinned or {})
        # optional narrower domains (e.g. the values a measured grid covers)
        domains = dict(domains or {})
        self.params = tuple(
            p.model_copy(update={"values": tuple(v for v in p.values if v in domains[p.name])})
            if p.name in domains else p for p in program.params)
        # bind once at the defaults (plus pins) to resolve every axis size and check the pins
        values = {**dict(sizes or {}), **self.pinned}
        try:
            base = bind(program, values)
            refused = None
        except SpecError as exc:  # the defaults may not fit these sizes (a row tile of 16 at M = 1)
            base, refused = bind(program, values, schedule=False), exc
        self.sizes = dict(base.sizes)
        self._symbolic = {a.name: self.sizes[a.name] for a in program.axes if a.symbolic}
        if refused is not None and not self.legal_points:
            raise refused  # no point fits either: the defaults' reason is the one to show

    @property
    def free(self):
        return [p for p in self.params if p.name not in self.pinned]

    def check(self, params: Mapping[str, object]) -> str | None:
        """None when the point is legal, else why not (one line)."""
        try:
            b = bind(self.program, {**self._symbolic, **self.pinned, **dict(params)})
        except SpecError as exc:
            return str(exc).strip().splitlines()[-1]
        over = limit_problem(b)  # a point over smem_bytes / sram_bytes is never compiled
        return str(over).strip().splitlines()[-1] if over is not None else None

    def bind(self, params: Mapping[str, object]) -> Binding:
        return bind(self.program, {**self._symbolic, **self.pinned, **dict(params)})

    @cached_property
    def legal_points(self) -> list[dict[str, object]]:
        """Every legal point, in domain order (constraints pruned by backtracking, then the
        tile rules of `bind`)."""
        fixed = {**self.program.limit_env(), **self.sizes, **self.pinned}
        return [p for p in iter_points(self.params, self.program.constraints, fixed)
                if self.check(p) is None]
