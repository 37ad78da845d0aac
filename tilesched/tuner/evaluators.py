"""Evaluators: what a trial runs on one legal point, chosen by target and objective.

Every evaluator maps a `Binding` to a `Measurement` (failures are values). `measure`
imports the backend lazily so the tuner works without a GPU or toolchain when the
`model` objective is used, and tests inject their own evaluator instead.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable

from tilesched import __version__
from tilesched.backends.base import Measurement
from tilesched.ir.bind import Binding
from tilesched.tuner.costmodel import predict

Evaluator = Callable[[Binding], Measurement]

MEASURE_MODULES = {
    "cuda": "tilesched.backends.cuda.measure",
    "cortex-m4": "tilesched.backends.cortexm.measure",
    "cortex-m7": "tilesched.backends.cortexm.measure",
}
OBJECTIVES = ("measure", "model")
DEVICE_LOCK = threading.Lock()


def is_mcu(target: str) -> bool:
    return target.startswith("cortex-m")


def model_evaluator(b: Binding) -> Measurement:
    p = predict(b)
    versions = {"tilesched": __version__, "costmodel": "1"}
    if p.unit == "ms":
        return Measurement(ok=True, time_ms=p.latency, device="cost-model (H100 SXM constants)", versions=versions)
    return Measurement(ok=True, cycles=int(round(p.latency)), counter="cost-model-cycles",
                       peak_sram_bytes=p.peak_sram_bytes, device=f"cost-model ({b.program.target})",
                       detail=f"peak SRAM from {p.sram_source}", versions=versions)


def get_evaluator(target: str, objective: str, timeout_s: float | None = None) -> Evaluator:
    """The evaluator for `objective` on `target` (imports the backend only when measuring)."""
    if objective == "model":
        return model_evaluator
    if objective != "measure":
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if target not in MEASURE_MODULES:
        raise ValueError(f"no measuring backend for target {target!r}")
    measure = importlib.import_module(MEASURE_MODULES[target]).measure
    params = inspect.signature(measure).parameters
    kwargs: dict = {}
    if timeout_s is not None and "timeout_s" in params:
        kwargs["timeout_s"] = timeout_s
    if "lock" in params:
        # a trial abandoned after its timeout may still hold the device: the next one waits
        kwargs["lock"] = DEVICE_LOCK
    return (lambda b: measure(b, **kwargs)) if kwargs else measure


def objective_values(target: str, m: Measurement, b: Binding) -> tuple[float, ...]:
    """The study's objective values of a successful measurement: GPU (time_ms,), MCU
    (cycles, peak SRAM bytes). An MCU measurement without a peak SRAM figure takes the
    planner's (or the model's) figure for the same point."""
    if not is_mcu(target):
        if m.time_ms is None:
            raise ValueError("measurement has no time_ms")
        return (float(m.time_ms),)
    if m.cycles is None:
        raise ValueError("measurement has no cycles")
    peak = m.peak_sram_bytes
    if peak is None:
        from tilesched.tuner.costmodel import peak_sram

        peak = peak_sram(b)[0]
    return (float(m.cycles), float(peak))
