"""One end-to-end Cortex-M run of a bound spec: lower it (or refuse it at a stage), draw fresh random
inputs, take the expected output from the semantics oracle, plan memory, render, cross-compile, run under
QEMU and compare bit for bit. Shared by the CLI runner, `measure` (the tuner) and bench/."""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tilesched.backends.cortexm import build
from tilesched.backends.cortexm.c_rules import Packer, macs
from tilesched.backends.cortexm.render import data_header, render_kernel
from tilesched.ir.bind import Binding
from tilesched.passes.mcu import constants, dry_run, lower_structure
from tilesched.schedules.limits import check_arena
from tilesched.schedules.memory import MemoryPlan, plan_memory
from tilesched.semantics import input_names, random_inputs, run_spec


@dataclass
class Workload:
    inputs: dict[str, np.ndarray]  # every input of the spec, as the oracle drew it
    input: str  # the network input (in the arena)
    output: str
    x: np.ndarray
    expected: np.ndarray  # the oracle's output


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
            "counter": build.COUNTER, "macs": kernel_macs(self.plan),
        }


def make_workload(b: Binding, seed: int | None) -> Workload:
    """Fresh random inputs for the spec and the oracle's output for them (refusing, at its stage, a spec
    the backend cannot generate)."""
    program = b.program
    lower_structure(program)
    inputs = random_inputs(b, np.random.default_rng(seed))
    outputs = run_spec(b, inputs)
    (out_name,) = outputs
    consts = constants(program)
    (in_name,) = [n for n in input_names(program) if n not in consts]
    return Workload(inputs, in_name, out_name, np.asarray(inputs[in_name]), np.asarray(outputs[out_name]))


def sources(b: Binding, wl: Workload, plan: MemoryPlan, expected: bool = False) -> tuple[str, str]:
    """(kernel.c, ts_data.h) of the planned kernel with the workload's constants and input."""
    pk = Packer(b, wl.inputs)
    kernel = render_kernel(b, plan, pk)
    arrays = dict(pk.arrays)
    arrays["int8_t ts_input"] = wl.x
    if expected:
        arrays["int8_t ts_expected"] = wl.expected
    return kernel, data_header(arrays)


def kernel_macs(plan: MemoryPlan) -> int:
    """Multiply-accumulates the generated C executes (halo rows recomputed included)."""
    k = plan.program.shape
    b = plan_binding(plan)
    chains = {c.name: c for c in k.chains}
    total = 0
    for st in dry_run(k):
        c = chains[st.chain]
        points = 1
        for _, lo, hi in st.region:
            points *= hi - lo + 1
        total += points * sum(macs(b, op) for op in c.ops)
    return total


def once_macs(plan: MemoryPlan) -> int:
    """Multiply-accumulates with every chain point computed exactly once: `kernel_macs` minus this is
    the work of recomputed halo rows."""
    k = plan.program.shape
    b = plan_binding(plan)
    total = 0
    for c in k.chains:
        points = 1
        for a in c.points:
            points *= b.sizes[a]
        total += points * sum(macs(b, op) for op in c.ops)
    return total


def plan_binding(plan: MemoryPlan) -> Binding:
    return plan.binding


def run_binding(b: Binding, seed: int | None = None, workdir: Path | None = None,
                check_sram: bool = False) -> Report:
    """Raises SpecError (a spec the backend cannot generate; with `check_sram`, an arena over
    `limits.sram_bytes`) or build.BuildError; a wrong result is a Report."""
    wl = make_workload(b, seed)
    plan = plan_memory(b)
    if check_sram:
        check_arena(b, plan.peak_bytes)
    kernel, data = sources(b, wl, plan)
    res = build.build_and_run(kernel, data, b.program.target, workdir)
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
