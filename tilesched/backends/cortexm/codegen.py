"""Render the C program of a planned MCU workload (templates/*.j2). The scheduler decides
(tile program, arena offsets); the templates only render those decisions."""

from __future__ import annotations

from functools import cache

import jinja2

from tilesched.schedules.memory import MemoryPlan

TEMPLATES = {"ib": "ib_block.c.j2", "bert": "bert_layer.c.j2"}


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("tilesched.backends.cortexm", "templates"),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              trim_blocks=False, lstrip_blocks=False)


def render_kernel(name: str, target: str, plan: MemoryPlan) -> str:
    prog = plan.program
    io = {b.role: b.name for b in prog.buffers if b.role in ("input", "output")}
    tpl = _env().get_template(TEMPLATES[prog.kind])
    return tpl.render(name=name, target=target, sh=prog.shape, plan=plan, input_buf=io["input"],
                      output_buf=io["output"])
