"""A schedule a spec asks for by option (`true`, or a bool parameter): the pass marks the kernel
with the option's value where the kernel has the schedule's shape. A spec that always asks is
refused at the stage that breaks the shape; with a parameter, the launcher refuses the points
that set it (same message)."""

from __future__ import annotations

from collections.abc import Callable

from tilesched.errors import spec_error
from tilesched.ir.nodes import Program
from tilesched.passes.kernel import KernelIR

WhyNot = Callable[[KernelIR], "tuple[str, str] | None"]


def mark(program: Program, k: KernelIR, option: str, why_not: WhyNot) -> KernelIR:
    """The kernel with field `option` set to the spec's option (unchanged where the spec does not ask)."""
    ref = program.option_map.get(option)
    if ref in (None, False):
        return k
    missing = why_not(k) if ref is True else None
    if missing is not None:
        stage, what = missing
        located = ("stages", program.stage(stage).index) if stage else ("options", option)
        raise spec_error(located, f"cuda's {option} schedule needs {what} (stage {stage!r})")
    return k.model_copy(update={option: ref})
