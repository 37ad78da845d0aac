"""What the experiments that time a patched generated kernel share: a patch is a module-level function
`patch(variant, source) -> source` (variant "v0" leaves the source as generated); `use` makes the
launcher render through it, `warm` compiles every (variant, spec, sizes, params) in parallel worker
processes (each applies the patch itself), `time_variants` searches each variant's candidates on
one shape and checks the winner against the semantics oracle, `run_cases` does all of it for a list
of low-bit shapes and writes the JSON."""

from __future__ import annotations

import functools
import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import lowbit  # noqa: E402
import spec_bench as sb  # noqa: E402

import tilesched.backends.cuda.kernel as K  # noqa: E402
from tilesched import load_program  # noqa: E402

ORIG = K.compiled.__wrapped__


def _render(patch, variant: str, program):
    k, src = ORIG(program)
    return k, src if variant == "v0" else patch(variant, src)


def use(patch, variant: str) -> None:
    K.compiled = functools.lru_cache(maxsize=256)(functools.partial(_render, patch, variant))


def _warm(job):
    patch, variant, spec, sizes, params = job
    use(patch, variant)
    from tilesched.backends.cuda import compile_pool

    return compile_pool._warm((str(sb.CONFIGS / f"{spec}.yaml"), sizes, params))[1]


def warm(patch, jobs: list[tuple[str, str, dict, dict]], workers: int = 14) -> None:
    """Compile (variant, spec, sizes, params) jobs before timing (Triton caches the binaries)."""
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        errs = [e for e in pool.map(_warm, [(patch, *j) for j in jobs], chunksize=1) if e]
    print(f"compiled {len(jobs)} ({len(errs)} failed) {errs[:3]}", flush=True)


def time_variants(patch, program, variants, sizes: dict, candidates: list[dict], sets: list[dict], cublas_ms: float,
                  extra: dict) -> list[dict]:
    """One row per variant: its fastest candidate, checked against the oracle, beside cuBLAS."""
    rows = []
    for variant in variants:
        use(patch, variant)
        kern = K.Kernel(program)
        best, table, _ = sb.search(kern, program, sizes, candidates, sets, 20)
        if best is None:
            print(f"{program.name} {sizes} {variant}: nothing ran", flush=True)
            continue
        err, why = sb.oracle_error(kern, sb.legal(program, sizes, best["params"]), sets[0])
        rows.append({**extra, "shape": sizes, "variant": variant, "ms": best["ms"], "params": best["params"],
                     "cublas_ms": cublas_ms, "ratio_vs_cublas": cublas_ms / best["ms"], "rel_err": err,
                     "check": why or "ok", "candidates": table})
        print(f"{program.name} {sizes} {variant:8s} {best['ms']:.4f} ms  cuBLAS {cublas_ms:.4f} "
              f"x{cublas_ms / best['ms']:.2f}  err {err:.1e} {why} {best['params']}", flush=True)
    return rows


def run_cases(patch, cases, variants_of, candidates, out_name: str, what: str) -> int:
    """Each (bits, M, N, K) case's variants (`variants_of(bits, m)`) timed beside bf16 cuBLAS, the rows
    (with the packed bytes and GB/s) and this run's copy bandwidth written to OUT/`out_name`."""
    import os

    import torch

    warm(patch, [(v, lowbit.BITS_SPECS[b], {"M": m, "N": n, "K": k}, p) for b, m, n, k in cases
                 for v in variants_of(b, m) for p in candidates(m)])
    report = sb.report_header(torch.cuda.get_device_name(), what)
    for bits, m, n, k in cases:
        sizes = {"M": m, "N": n, "K": k}
        nbytes = lowbit.weight_bytes(bits, m, n, k)
        sets, cub = lowbit.sets_and_cublas(bits, m, n, k)
        prog = load_program(sb.CONFIGS / f"{lowbit.BITS_SPECS[bits]}.yaml")
        rows = time_variants(patch, prog, variants_of(bits, m), sizes, candidates(m), sets, cub,
                             {"bits": bits, "bytes": nbytes})
        report["rows"] += [{**r, "GBs": nbytes / r["ms"] / 1e6} for r in rows]
    report["copy_GBs"] = sb.copy_gbs()
    sb.write_json(Path(os.environ.get("OUT", "/tmp")) / out_name, report)
    return 0
