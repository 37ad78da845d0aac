"""`measure(binding)` for the tuner: instructions executed under QEMU and SRAM in use.
Failures are values (Measurement.ok = False), never exceptions."""

from __future__ import annotations

from tilesched.backends.base import Measurement
from tilesched.backends.cortexm import build, session
from tilesched.errors import SpecError
from tilesched.ir.bind import Binding
from tilesched.schedules.memory import plan_memory

_REASONS = {"toolchain": "compile_error", "cmsis": "compile_error", "compile": "compile_error",
            "timeout": "timeout", "run": "runtime_error"}


def measure(binding: Binding, seed: int | None = 0) -> Measurement:
    """`cycles` holds the executed-instruction count (`counter` says so); `peak_sram_bytes` is
    static RAM (.data + .bss, arena included) plus the painted-stack peak."""
    target = binding.program.target
    common = {"device": session.device(target) if target in build.TARGETS else target}
    try:
        plan = plan_memory(binding)
        limit = binding.program.limits.sram_bytes
        if limit is not None and plan.peak_bytes > limit:
            return Measurement(ok=False, reason="out_of_resources", peak_sram_bytes=plan.peak_bytes,
                               detail=f"arena {plan.peak_bytes} B > sram_bytes {limit}", **common)
        rep = session.run_binding(binding, seed=seed)
    except SpecError as exc:
        return Measurement(ok=False, reason="compile_error", detail=str(exc), **common)
    except build.BuildError as exc:
        return Measurement(ok=False, reason=_REASONS.get(exc.stage, "runtime_error"), detail=str(exc)[-2000:],
                           **common)
    sram = rep.run.static_ram_bytes + rep.run.stack_bytes
    if not rep.ok:
        return Measurement(ok=False, reason="wrong_result", detail=f"{rep.mismatches} outputs differ",
                           peak_sram_bytes=sram, **common)
    return Measurement(ok=True, cycles=rep.run.instructions, counter=build.COUNTER, peak_sram_bytes=sram,
                       max_rel_error=0.0, detail=f"arena {rep.plan.peak_bytes} B", versions=session.versions(),
                       **common)
