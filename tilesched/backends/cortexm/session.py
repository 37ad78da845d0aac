"""One end-to-end Cortex-M run of a bound spec: match it to a template (or refuse it), draw fresh
random inputs, take the expected output from the semantics oracle, plan memory, render,
cross-compile, run under QEMU and compare bit for bit. Shared by the CLI
runner, `measure` (the tuner) and bench/mcu_peak.py."""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tilesched.backends.cortexm import build, codegen, params
from tilesched.backends.cortexm.match import IBMatch, match
from tilesched.ir.bind import Binding
from tilesched.schedules.limits import check_arena
from tilesched.schedules.memory import MemoryPlan, plan_memory
from tilesched.semantics import random_inputs, run_spec


@dataclass(frozen=True)
class Report:
    plan: MemoryPlan
    run: build.RunResult
    expected: np.ndarray
    mismatches: int

    @property
    def ok(self) -> bool:
        return self.mismatches == 0

    def as_dict(self) -> dict:
        return {
            "ok": self.ok, "mismatches": self.mismatches, "outputs": int(self.expected.size),
            "arena_peak_bytes": self.plan.peak_bytes, "naive_peak_bytes": self.plan.naive_bytes,
            "static_ram_bytes": self.run.static_ram_bytes, "peak_stack_bytes": self.run.stack_bytes,
            "flash_text_bytes": self.run.text_bytes, "instructions": self.run.instructions,
            "counter": build.COUNTER,
        }


def make_workload(b: Binding, seed: int | None) -> params.Workload:
    """Fresh random inputs for the spec, the oracle's output for them, and the C data packing both."""
    m = match(b.program)  # refuses, naming the stage, what the templates cannot render
    inputs = random_inputs(b, np.random.default_rng(seed))
    outputs = run_spec(b, inputs)
    (out_name,) = outputs
    pack = params.ib_workload if isinstance(m, IBMatch) else params.bert_workload
    return pack(b, m, inputs, outputs[out_name])


def run_binding(b: Binding, seed: int | None = None, workdir: Path | None = None,
                check_sram: bool = False) -> Report:
    """Raises SpecError (a spec the templates cannot render; with `check_sram`, an arena over
    `limits.sram_bytes`) or build.BuildError; a wrong result is a Report."""
    wl = make_workload(b, seed)
    plan = plan_memory(b)
    if check_sram:
        check_arena(b, plan.peak_bytes)
    kernel = codegen.render_kernel(b.program.name, b.program.target, plan)
    res = build.build_and_run(kernel, params.data_header(wl), b.program.target, workdir)
    exp = wl.expected.reshape(-1)
    got = res.output
    mism = int(exp.size) if got.size != exp.size else int(np.count_nonzero(got != exp))
    return Report(plan=plan, run=res, expected=exp, mismatches=mism)


@functools.cache
def versions() -> dict[str, str]:
    out = {"cmsisdsp": build.CMSISDSP_VERSION}
    for tool, key in (("arm-none-eabi-gcc", "arm-none-eabi-gcc"), ("qemu-system-arm", "qemu-system-arm")):
        try:
            first = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
            out[key] = first.strip()
        except (OSError, IndexError):
            out[key] = "missing"
    return out


def device(target: str) -> str:
    t = build.TARGETS[target]
    return f"qemu-system-arm {t['machine']} ({t['cpu']})"
