"""Render the overlap kernels from a plan (Jinja2) and load them as Python modules.

The templates only render what the plan decided: the world size (one receive-buffer
argument per rank); the chunk geometry and tile sizes are kernel arguments."""

from __future__ import annotations

from pathlib import Path

import jinja2

from tilesched.backends.cuda.render import load_source
from tilesched.schedules.overlap import OverlapPlan

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE_OF = {"all_gather": "ag_gemm.py.j2", "reduce_scatter": "gemm_rs.py.j2"}

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)), trim_blocks=True, lstrip_blocks=True,
    keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
)


def render(plan: OverlapPlan, program: str) -> str:
    """Kernel source for `plan` (identical for every rank of one world: the rank and the
    chunk order are kernel arguments)."""
    tpl = _env.get_template(TEMPLATE_OF[plan.collective])
    return tpl.render(
        program=program, collective=plan.collective, world=plan.world, engine=plan.engine,
        chunks_per_rank=plan.chunks_per_rank,
    )


# the GEMM backend's loader: a content-addressed file (Triton reads kernel source through
# `inspect`), one module per interpreter mode
load = load_source
