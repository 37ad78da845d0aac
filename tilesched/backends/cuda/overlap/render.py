"""Render the overlap kernels from a plan (Jinja2) and load them as Python modules.

The templates only render what the plan decided: the world size (one receive-buffer
argument per rank); the chunk geometry and tile sizes are kernel arguments."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import jinja2

from tilesched.fsutil import write_atomic
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


def cache_dir() -> Path:
    return Path(os.environ.get("TILESCHED_CACHE", Path.home() / ".cache" / "tilesched")) / "overlap"


def load(source: str):
    """Import rendered source from a file named by its hash (Triton needs real source files)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    # @triton.jit binds to the interpreter or the GPU when the module is executed: one module
    # per mode, so interpreter tests and GPU runs in one process do not share kernels
    mode = "_interp" if os.environ.get("TRITON_INTERPRET") == "1" else ""
    name = f"tilesched_overlap_{digest}{mode}"
    if name in sys.modules:
        return sys.modules[name]
    path = cache_dir() / f"tilesched_overlap_{digest}.py"
    write_atomic(path, source)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules[name] = mod
    return mod
