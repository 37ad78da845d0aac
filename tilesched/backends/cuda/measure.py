"""Measure one bound point on the GPU: correctness on fresh random inputs first, then the median
time of one launch. Every failure is a Measurement(ok=False, reason=...), never an exception."""

from __future__ import annotations

import contextlib
import math
import traceback

from tilesched.backends.base import Measurement
from tilesched.errors import SpecError
from tilesched.ir.bind import Binding

L2_FLUSH_BYTES = 256 << 20  # rotate enough input sets that one set is never served from L2


def versions() -> dict[str, str]:
    import torch
    import triton

    return {"torch": torch.__version__, "triton": triton.__version__,
            "cuda": str(torch.version.cuda), "python": __import__("platform").python_version()}


def classify(exc: BaseException) -> str:
    """Map a Triton/torch exception to a Measurement failure reason."""
    name = type(exc).__name__
    text = str(exc)
    if name == "OutOfResources" or "out of resource" in text.lower() or "OutOfResources" in text:
        return "out_of_resources"
    if "Compil" in name or "compil" in text[:200].lower() or name in ("PTXASError", "MLIRError"):
        return "compile_error"
    return "runtime_error"


def _short(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:500]


def measure(binding: Binding, *, repeats: int = 100, lock=None, seed: int | None = None,
            check: bool = True, timed: bool = True, warmup_ms: float = 10.0,
            mode: str = "graph") -> Measurement:
    """Check, then time `binding` on the current CUDA device.

    `repeats`: timed launches (median reported). `lock`: an optional context manager (e.g. a
    threading.Lock) held while the GPU is used, so concurrent trials do not time each other; a
    LockFile (anything without __enter__) is ignored: the binding already fixes every parameter.
    `check=False` skips the correctness run; `timed=False` only checks (time_ms stays None).
    `mode`: "graph" (device time, launches replayed from a CUDA graph) or "eager" (see `_time`)."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a CUDA-extra dependency
        return Measurement(ok=False, reason="runtime_error", detail=f"torch is not installed: {exc}")
    if not torch.cuda.is_available():
        return Measurement(ok=False, reason="runtime_error", detail="no CUDA GPU on this machine")
    import numpy as np

    from tilesched.backends.cuda.io import check_outputs, poisoned, to_device
    from tilesched.backends.cuda.kernel import Kernel
    from tilesched.semantics import random_inputs, run_spec
    from tilesched.semantics.arrays import TorchOps

    device = torch.device("cuda")
    dev_name = torch.cuda.get_device_name(device)
    vers = versions()

    def fail(reason: str, detail: str, err: float | None = None) -> Measurement:
        return Measurement(ok=False, reason=reason, detail=detail, device=dev_name, versions=vers,
                           max_rel_error=err)

    try:
        kernel = Kernel(binding.program)
    except SpecError as exc:
        return fail("compile_error", str(exc))
    except Exception as exc:  # noqa: BLE001 - a broken template/module is a failed point
        return fail("compile_error", _short(exc))
    program = binding.program
    sizes = dict(binding.sizes)
    rng = np.random.default_rng(seed)
    guard = lock if hasattr(lock, "__enter__") else contextlib.nullcontext()
    with guard:
        try:
            inputs = random_inputs(binding, rng)
            ins = {n: to_device(program.tensor(n), v, device) for n, v in inputs.items()}
            if check:
                outs = {n: poisoned(program.tensor(n), sizes, device) for n in kernel.outputs}
                kernel(params=dict(binding.params), sizes=sizes, **ins, **outs)
                torch.cuda.synchronize()
                # the oracle in float64 on this GPU: the same definition, without minutes of CPU time
                want = run_spec(binding, {n: t.double() for n, t in ins.items()}, xp=TorchOps(device))
                verdicts = check_outputs(binding, outs, want)
                rel = max(v.rel_error for v in verdicts)
                bad = next((v for v in verdicts if not v.ok), None)
                if bad is not None:
                    return fail("wrong_result", bad.why, rel)
            else:
                rel = None
            if not timed:
                return Measurement(ok=True, max_rel_error=rel, device=dev_name, versions=vers)
            # rotate input sets so the timed launches read from HBM, not L2
            per_set = sum(t.numel() * t.element_size() for t in ins.values())
            n_sets = max(1, min(16, math.ceil(L2_FLUSH_BYTES / max(per_set, 1))))
            sets = [ins] + [{n: torch.rand_like(t, dtype=torch.float32).to(t.dtype) * 2 - 1 if t.is_floating_point()
                             else t.clone() for n, t in ins.items()} for _ in range(n_sets - 1)]
            # every launch goes through the launcher a user calls (its per-shape fast path), with
            # the outputs allocated once per input set
            params = dict(binding.params)
            launches = [(kernel.prepare(s, params=params, sizes=sizes)[1],) for s in sets]

            def launch(full):
                kernel(params=params, sizes=sizes, **full)

            for args in launches[: min(len(launches), 3)]:
                launch(*args)
            torch.cuda.synchronize()
            times = _time(launch, launches, repeats, warmup_ms, mode)
        except Exception as exc:  # noqa: BLE001 - failures are values
            return fail(classify(exc), _short(exc) + "\n" + traceback.format_exc(limit=2)[-800:])
    return Measurement(ok=True, time_ms=times, max_rel_error=rel, device=dev_name, versions=vers)


def _time(launch, launches, repeats: int, warmup_ms: float, mode: str = "graph") -> float:
    """Median time of one launch, cycling through the input sets.

    mode "graph": launches captured in a CUDA graph, each replay timed with events and divided
    by its launch count: device time without the host's launch overhead (Triton's Python launcher
    costs tens of microseconds, more than a decode-shape GEMM runs). mode "eager": CUDA events
    around each launch, host overhead included when it exceeds the kernel time."""
    import torch

    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    launch(*launches[0])
    end.record()
    torch.cuda.synchronize()
    est = max(start.elapsed_time(end), 1e-3)
    for i in range(max(1, min(1000, int(warmup_ms / est)))):
        launch(*launches[i % len(launches)])
    torch.cuda.synchronize()
    if mode == "graph":
        per_graph = max(len(launches), min(64, int(2.0 / est)))  # about 2 ms of work per replay
        per_graph = -(-per_graph // len(launches)) * len(launches)
        try:
            g = torch.cuda.CUDAGraph()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for i in range(len(launches)):  # warm on the capture stream too
                    launch(*launches[i])
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            with torch.cuda.graph(g):
                for i in range(per_graph):
                    launch(*launches[i % len(launches)])
            g.replay()
            torch.cuda.synchronize()
            replays = max(5, min(repeats, 50))
            evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                   for _ in range(replays)]
            for s, e in evs:
                s.record()
                g.replay()
                e.record()
            torch.cuda.synchronize()
            ts = sorted(s.elapsed_time(e) / per_graph for s, e in evs)
            return ts[len(ts) // 2]
        except Exception:  # noqa: BLE001 - fall back to per-launch events
            torch.cuda.synchronize()
    evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for i, (s, e) in enumerate(evs):
        s.record()
        launch(*launches[i % len(launches)])
        e.record()
    torch.cuda.synchronize()
    ts = sorted(s.elapsed_time(e) for s, e in evs)
    return ts[len(ts) // 2]


def time_callable(fn_sets, repeats: int = 100, warmup_ms: float = 10.0, mode: str = "graph") -> float:
    """Median time of callables (one per input set, e.g. a cuBLAS baseline) timed like `measure`."""
    return _time(lambda f: f(), [(f,) for f in fn_sets], repeats, warmup_ms, mode)
