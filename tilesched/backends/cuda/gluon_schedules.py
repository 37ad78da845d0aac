"""The optional schedules rendered in Gluon, one row each: what marks them, what selects them at a
launch, what they render and how the generated `launch` reaches them.

The Triton kernel is always rendered; a schedule's Gluon kernel rides along in the same module
where the kernel IR has the schedule's shape, and a launch whose constant `constant` is set runs
it instead (the first such row, in this order)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tilesched.backends.cuda import gluon_attention, gluon_emit, gluon_wgmma
from tilesched.passes.kernel import KernelIR
from tilesched.passes.register_operand import mma_sync_why_not
from tilesched.passes.register_operand import why_not as ro_why_not
from tilesched.passes.warp_specialize import why_not as ws_why_not


@dataclass(frozen=True)
class GluonSchedule:
    constant: str  # the launch constant that selects it (a compile-time argument of the Triton kernel too)
    name: str  # in messages: "the <name> schedule"
    option: str  # the spec option whose pass marks the kernel IR (tilesched/passes/<option>.py)
    why_not: Callable[[KernelIR], tuple[str, str] | None]
    prefix: str  # host functions `<prefix>launch_args` / `<prefix>launch`, JIT function `<kernel>_<prefix>kernel`
    imports: str
    helpers: tuple[str, ...]
    kernel: Callable[[KernelIR, list[str]], list[str]]
    host: Callable[[KernelIR], list[str]]
    hopper_only: bool  # wgmma and TMA: compute capability 9.x
    also: str | None = None  # a second option the schedule needs (the kernel IR's field of that name)

    def selectable(self, k: KernelIR) -> bool:
        """The kernel IR's options can select this schedule (its constant is a launch constant)."""
        return getattr(k, self.option) is not None and (self.also is None or getattr(k, self.also) is not None)

    def renders(self, k: KernelIR) -> bool:
        """The kernel IR takes this schedule at some point."""
        return self.selectable(k) and self.why_not(k) is None


SCHEDULES = (
    GluonSchedule("REGISTER_OPERAND_WGMMA", "register-operand (wgmma)", "register_operand", ro_why_not, "wgmma_",
                  gluon_wgmma.IMPORTS, (gluon_emit.LOAD_HELPERS, gluon_attention.HELPERS, gluon_wgmma.HELPERS),
                  gluon_wgmma.render_kernel, gluon_wgmma.render_host, True),
    GluonSchedule("REGISTER_OPERAND", "register-operand", "register_operand", mma_sync_why_not, "gluon_",
                  gluon_emit.IMPORTS, (gluon_emit.LOAD_HELPERS, gluon_emit.HELPERS),
                  gluon_emit.render_gluon, gluon_emit.render_gluon_host, False),
    # (before the next row: a point that sets this constant sets WARP_SPECIALIZE too)
    GluonSchedule("PERSISTENT_WARP_SPECIALIZE", "persistent warp-specialised", "warp_specialize", ws_why_not,
                  "persistent_", gluon_attention.IMPORTS, (gluon_attention.HELPERS,),
                  gluon_attention.render_persistent_kernel, gluon_attention.render_persistent_host, True, "persistent"),
    GluonSchedule("WARP_SPECIALIZE", "warp-specialised", "warp_specialize", ws_why_not, "specialized_",
                  gluon_attention.IMPORTS, (gluon_attention.HELPERS,), gluon_attention.render_kernel,
                  gluon_attention.render_host, True),
)
BY_CONSTANT = {s.constant: s for s in SCHEDULES}


def constants(k: KernelIR) -> list[str]:
    """The launch constants of the schedules the kernel IR's options can select."""
    return [s.constant for s in SCHEDULES if s.selectable(k)]


def rendered(k: KernelIR) -> list[GluonSchedule]:
    return [s for s in SCHEDULES if s.renders(k)]


def selected(constexprs: dict) -> GluonSchedule | None:
    """The schedule a launch with these constants runs (None: the Triton kernel)."""
    return next((s for s in SCHEDULES if constexprs.get(s.constant)), None)
