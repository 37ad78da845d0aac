"""Compile many kernel configurations in parallel worker processes on the GPU machine.

Triton compiles one kernel at a time per process; the tuner and the benchmarks need dozens.
Workers run the ordinary JIT path (`warmup`) on uninitialised tensors of the real shapes, so
the on-disk Triton cache then holds exactly what the measuring process will ask for."""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def empty_inputs(kernel, sizes: dict[str, int], device) -> dict:
    """Uninitialised tensors of the spec's shapes and layouts for every input of `kernel`."""
    import torch

    from tilesched.backends.cuda.io import storage_torch_dtype
    from tilesched.ir.storage import size_env, storage_shape

    out = {}
    for name in kernel.inputs:
        t = kernel.program.tensor(name)
        shape = storage_shape(t, sizes, size_env(kernel.program, sizes))
        dt = storage_torch_dtype(t)
        if t.layout == "col_major" and len(shape) >= 2:
            out[name] = torch.empty(shape[:-2] + (shape[-1], shape[-2]), dtype=dt, device=device).mT
        else:
            out[name] = torch.empty(shape, dtype=dt, device=device)
    return out


def _warm(job: tuple[str, dict, dict]) -> tuple[str, str | None]:
    spec_path, sizes, params = job
    try:
        import torch

        from tilesched import load_program
        from tilesched.backends.cuda.kernel import Kernel

        kernel = Kernel(load_program(spec_path))
        plan, full = kernel.prepare(empty_inputs(kernel, sizes, torch.device("cuda")), params=params, sizes=sizes)
        fn, pos, kw = kernel.jit_call(plan, full)
        fn.warmup(*pos, grid=plan.launch.grid, **kw)
        return spec_path, None
    except Exception as exc:  # noqa: BLE001 - reported per job
        return spec_path, f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"[:300]


def warm_compile(jobs: list[tuple[str | Path, dict, dict]], workers: int = 12) -> list[str | None]:
    """Compile every (spec path, sizes, params) job; returns an error string or None per job."""
    jobs = [(str(p), dict(s), dict(q)) for p, s, q in jobs]
    if not jobs:
        return []
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs))), mp_context=ctx) as pool:
        return [err for _, err in pool.map(_warm, jobs, chunksize=1)]
