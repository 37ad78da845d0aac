"""One table from a spec's target to its backend: what it can generate, how `run` executes it.

Backends are imported on demand (the CUDA one needs torch and triton only when it runs)."""

from __future__ import annotations

import importlib

from tilesched.errors import SpecError
from tilesched.ir.nodes import Program

# target -> (capability module, runner module); each capability module has generation_problem(program)
BACKENDS = {
    "cuda": ("tilesched.backends.cuda.capability", "tilesched.backends.cuda.runner"),
    "cortex-m4": ("tilesched.passes.mcu", "tilesched.backends.cortexm.runner"),
    "cortex-m7": ("tilesched.passes.mcu", "tilesched.backends.cortexm.runner"),
}


def generation_problem(program: Program) -> SpecError | None:
    """Why `program`'s target cannot generate it yet (a SpecError placed at the stage), or None."""
    return importlib.import_module(BACKENDS[program.target][0]).generation_problem(program)


def check_generatable(program: Program) -> None:
    problem = generation_problem(program)
    if problem is not None:
        raise problem


def runner(target: str):
    return importlib.import_module(BACKENDS[target][1])
