#!/usr/bin/env python3
"""Generated Triton GEMMs against cuBLAS on one GPU, measured side by side in the same run.

  python bench/gemm.py check  --out DIR   every generated CUDA kernel vs the float64 reference
  python bench/gemm.py bench  --out DIR   bf16 square + LLM shapes (per-shape config search) and
                                           fused bias+GELU vs cuBLAS + torch epilogue
Writes DIR/gemm-<device>.json and DIR/gemm-lock-<device>.json (the tuned configs, a lock file the
launchers read). Needs a CUDA GPU."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tilesched import load_program  # noqa: E402
from tilesched.errors import SpecError  # noqa: E402
from tilesched.ir.bind import bind  # noqa: E402
from tilesched.ir.hashing import content_hash  # noqa: E402
from tilesched.ir.space import iter_points  # noqa: E402
from tilesched.passes.gpu import lower_kernel  # noqa: E402
from tilesched.tuner.lockfile import LockEntry, LockFile, bucket_of  # noqa: E402

CONFIGS = ROOT / "configs"
GEMM_SPEC = CONFIGS / "gemm_bf16_hopper.yaml"
FUSED_SPEC = CONFIGS / "gemm_bias_gelu_hopper.yaml"
SQUARE = [4096, 8192]
LLM_M = {4096: [1, 16, 128, 1024, 4096, 16384], 8192: [1, 16, 128, 1024, 4096],
         14336: [1, 16, 128, 1024, 4096], 28672: [1, 16, 128, 1024]}
FUSED_SHAPES = [(4096, 4096, 4096), (2048, 14336, 4096), (16384, 4096, 4096), (128, 8192, 8192)]


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def cfg(bm, bn, bk, w, s, persistent=True, subtile=True, group=8, split=None) -> dict:
    out = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group, "NUM_WARPS": w, "NUM_STAGES": s,
           "PERSISTENT": persistent, "EPILOGUE_SUBTILE": subtile}
    if split is not None:  # only specs with a SPLIT_K parameter
        out["SPLIT_K"] = split
    return out


def candidates(m: int) -> list[dict]:
    """A small, shape-class-aware search list (the full space is for the tuner)."""
    if m <= 8:
        bm = 1 << max(m - 1, 0).bit_length()
        return ([cfg(bm, 16, 256, 4, s, False, False) for s in (3, 5)]
                + [cfg(bm, bn, bk, 4 if bn < 128 else 8, 4, False, False, split=sk)
                   for bn in (32, 64, 128) for bk in (128, 256) for sk in (1, 4, 8)])
    if m <= 64:
        bm = max(16, 1 << (m - 1).bit_length())
        return [cfg(bm, bn, bk, 4, 4, False, False, split=sk)
                for bn in (32, 64, 128) for bk in (128, 256) for sk in (1, 2, 4)]
    if m <= 256:
        out = [cfg(64, 64, 128, 4, 4, False, False), cfg(64, 64, 256, 4, 3, False, False),
               cfg(64, 128, 64, 4, 4, False, False), cfg(64, 128, 128, 4, 3, False, False),
               cfg(128, 64, 128, 4, 4, False, False), cfg(128, 128, 64, 4, 4, False, False),
               cfg(128, 128, 64, 8, 4, True, True), cfg(64, 256, 64, 4, 4, False, False),
               cfg(128, 256, 64, 8, 3, True, True), cfg(64, 64, 128, 4, 6, False, False),
               cfg(64, 128, 128, 4, 4, False, False, split=2), cfg(64, 64, 128, 4, 4, False, False, split=2),
               cfg(128, 128, 64, 4, 4, False, False, split=4)]
        return out
    return [cfg(128, 256, 64, 8, 3), cfg(128, 256, 64, 8, 4), cfg(128, 256, 64, 8, 3, True, False),
            cfg(128, 256, 64, 8, 3, False, True), cfg(128, 256, 64, 8, 4, False, False),
            cfg(256, 128, 64, 8, 3), cfg(256, 128, 64, 8, 4, True, False),
            cfg(128, 128, 64, 4, 4, True, False), cfg(128, 128, 64, 8, 5), cfg(128, 128, 128, 8, 3),
            cfg(128, 256, 64, 8, 3, group=16), cfg(128, 256, 128, 8, 2)]


def from_lock(lock, program, sizes: dict, m: int, extra: int) -> list[dict]:
    """The lock file's entry for this shape's bucket first, then `extra` of the search list (a
    re-run of configs tuned before, without the whole search)."""
    entry = lock.select(program, sizes) if lock is not None else None
    out = [dict(entry.params)] if entry is not None else []
    for c in candidates(m):
        if len(out) > extra:
            break
        if c not in out:
            out.append(c)
    return out


def legal(program, sizes: dict, params: dict):
    try:
        return bind(program, {**sizes, **params})
    except SpecError:
        return None


def versions() -> dict:
    from tilesched.backends.cuda.measure import versions as v

    return v()


def write_json(path: Path, data) -> None:
    from tilesched.fsutil import write_atomic

    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def dedupe_jobs(jobs):
    """One compile job per kernel specialization (params, M == 1, even tiles)."""
    seen, out = set(), []
    for spec, sizes, params in jobs:
        m, n, k = sizes["M"], sizes["N"], sizes["K"]
        key = (str(spec), tuple(sorted(params.items())), m == 1,
               m % params["BLOCK_M"] == 0, n % params["BLOCK_N"] == 0, k % params["BLOCK_K"] == 0)
        if key not in seen:
            seen.add(key)
            out.append((spec, sizes, params))
    return out


# ---------------------------------------------------------------------------------------------
def cmd_check(args) -> int:
    """Every CUDA spec without comm stages, on ragged shapes, defaults + random legal points."""
    import torch

    from tilesched.backends.cuda.compile_pool import warm_compile
    from tilesched.backends.cuda.measure import measure

    rng = random.Random(args.seed)
    rows, jobs, todo = [], [], []
    for path in sorted(CONFIGS.glob("*.yaml")):
        prog = load_program(path)
        if prog.target != "cuda":
            continue
        if {a.name for a in prog.axes} != {"M", "N", "K"} | ({"BATCH"} if "BATCH" in {a.name for a in prog.axes}
                                                                else set()):
            continue  # the other examples: bench/ops.py check
        try:
            kp = lower_kernel(prog)
        except SpecError as exc:
            rows.append({"spec": prog.name, "skipped": str(exc).splitlines()[-1]})
            continue
        shape_list = ([{"M": 300, "N": 456, "K": 328}, {"M": 1000, "N": 1024, "K": 1032}] if any(a.tma for a in kp.accesses)
                      else [{"M": 37, "N": 50, "K": 70}, {"M": 1000, "N": 1000, "K": 1000}])
        if kp.points:
            shape_list = [dict(s, BATCH=3) for s in shape_list]
        if prog.name == "gemm_bf16_hopper":
            shape_list += [{"M": 1, "N": 4096, "K": 4096}, {"M": 16, "N": 1000, "K": 4096}]
        for sizes in shape_list:
            fixed = dict(prog.limit_env())
            fixed.update(sizes)
            pts = list(iter_points(prog.params, prog.constraints, fixed))
            rng.shuffle(pts)
            from tilesched.backends.cuda.defaults import heuristic_params

            picks = [heuristic_params(prog, sizes)]
            picks += [p for p in pts if legal(prog, sizes, p)][: args.points] if len(pts) < 5000 else \
                [p for p in pts[:500] if legal(prog, sizes, p)][: args.points]
            for params in picks:
                todo.append((path, prog, sizes, params))
                jobs.append((path, sizes, params))
    t0 = time.time()
    errs = warm_compile(jobs, workers=args.workers)
    print(f"compiled {len(jobs)} kernels in {time.time() - t0:.1f} s", flush=True)
    failed = 0
    for (_, prog, sizes, params), err in zip(todo, errs):
        b = bind(prog, {**sizes, **params})
        m = measure(b, timed=False, seed=rng.randrange(1 << 30))
        row = {"spec": prog.name, "sizes": sizes, "params": params, "ok": m.ok, "reason": m.reason,
               "detail": m.detail[:300], "rel_error": m.max_rel_error, "compile_note": err}
        rows.append(row)
        failed += not m.ok
        print(f"{'ok  ' if m.ok else 'FAIL'} {prog.name:24s} {sizes} {params} err={m.max_rel_error} "
              f"{m.reason or ''} {m.detail[:160] if not m.ok else ''}", flush=True)
    dev = torch.cuda.get_device_name()
    write_json(Path(args.out) / f"gemm-check-{slug(dev)}.json",
               {"device": dev, "versions": versions(), "date": datetime.datetime.now(datetime.UTC).isoformat(),
                "rows": rows, "failed": failed})
    print(f"check: {len([r for r in rows if 'ok' in r])} points, {failed} failed")
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------
def bench_shapes(quick: bool, only_m: set[int] | None = None) -> list[tuple[str, int, int, int]]:
    out = [("square", s, s, s) for s in SQUARE]
    for kn, ms in LLM_M.items():
        for m in ms:
            out.append(("llm", m, kn, kn))
    if quick:
        out = out[:3]
    return [s for s in out if only_m is None or s[1] in only_m]


def n_sets(per_set_bytes: int) -> int:
    """Input sets to rotate so that consecutive launches read from HBM, not L2."""
    return max(1, min(8, math.ceil((256 << 20) / max(per_set_bytes, 1))))


def search_shape(program, path, sizes, cands, repeats):
    """Time every candidate (no check), then check the fastest; returns (best, table)."""
    from tilesched.backends.cuda.measure import measure

    table = []
    for params in cands:
        b = legal(program, sizes, params)
        if b is None:
            continue
        m = measure(b, repeats=repeats, check=False, seed=1)
        table.append({"params": params, "time_ms": m.time_ms, "reason": m.reason, "detail": m.detail[:200]})
    ranked = sorted((r for r in table if r["time_ms"] is not None), key=lambda r: r["time_ms"])
    for r in ranked:
        b = bind(program, {**sizes, **r["params"]})
        m = measure(b, repeats=3 * repeats, check=True, seed=7)
        if m.ok:
            eager = measure(b, repeats=3 * repeats, check=False, seed=8, mode="eager")
            return {"params": r["params"], "time_ms": m.time_ms, "rel_error": m.max_rel_error,
                    "eager_ms": eager.time_ms}, table
        r["reason"], r["detail"] = m.reason, m.detail[:200]
    return None, table


def cmd_bench(args) -> int:
    import torch
    import torch.nn.functional as F

    from tilesched.backends.cuda.compile_pool import warm_compile
    from tilesched.backends.cuda.measure import time_callable

    dev = torch.cuda.get_device_name()
    out_dir = Path(args.out)
    result_path = out_dir / f"{args.tag}-{slug(dev)}.json"
    lock_path = out_dir / f"{args.tag}-lock-{slug(dev)}.json"
    vers = versions()
    program = load_program(GEMM_SPEC)
    fused = load_program(FUSED_SPEC)
    only_m = {int(m) for m in args.ms.split(",")} if args.ms else None
    shapes = bench_shapes(args.quick, only_m)
    fused_shapes = [s for s in FUSED_SHAPES[: (1 if args.quick else None)] if only_m is None or s[0] in only_m]
    seed_lock = LockFile.read(args.from_lock) if args.from_lock else None

    def cands(prog, sizes, m):
        return from_lock(seed_lock, prog, sizes, m, args.extra) if seed_lock is not None else candidates(m)

    jobs = []
    for _, m, n, k in shapes:
        sizes = {"M": m, "N": n, "K": k}
        jobs += [(GEMM_SPEC, sizes, p) for p in cands(program, sizes, m) if legal(program, sizes, p)]
    for m, n, k in fused_shapes:
        sizes = {"M": m, "N": n, "K": k}
        jobs += [(FUSED_SPEC, sizes, p) for p in cands(fused, sizes, m) if legal(fused, sizes, p)]
    jobs = dedupe_jobs(jobs)
    t0 = time.time()
    errs = warm_compile(jobs, workers=args.workers)
    print(f"compiled {len(jobs)} kernels in {time.time() - t0:.1f} s "
          f"({sum(e is not None for e in errs)} failed)", flush=True)

    lock = LockFile.read(lock_path)
    report = {"device": dev, "versions": vers, "date": datetime.datetime.now(datetime.UTC).isoformat(),
              "spec": program.name, "baseline": "torch.matmul (cuBLAS), same inputs, same run",
              "timing": ("time_ms/cublas_ms: CUDA-graph replays of many launches (device time, no host launch "
                         "overhead); eager_ms/cublas_eager_ms: CUDA events around single launches (includes "
                         "launch overhead where it exceeds the kernel). Medians; input sets rotated past L2."),
              "shapes": [], "fused": []}
    bf16 = torch.bfloat16
    # bring the clocks up before the first timed shape (the first shape of run 2 read 10% slow)
    x = torch.randn(8192, 8192, dtype=bf16, device="cuda")
    t_end = time.time() + 2.0
    while time.time() < t_end:
        torch.matmul(x, x)
        torch.cuda.synchronize()
    del x
    for kind, m, n, k in shapes:
        sizes = {"M": m, "N": n, "K": k}
        best, table = search_shape(program, GEMM_SPEC, sizes, cands(program, sizes, m), args.repeats)
        sets = [(torch.randn(m, k, dtype=bf16, device="cuda"), torch.randn(k, n, dtype=bf16, device="cuda"))
                for _ in range(n_sets(2 * (m * k + k * n + m * n)))]
        fns = [lambda a=a, b=b: torch.matmul(a, b) for a, b in sets]
        cublas = time_callable(fns, repeats=3 * args.repeats)
        cublas_eager = time_callable(fns, repeats=3 * args.repeats, mode="eager")
        del sets, fns
        flops = 2.0 * m * n * k
        row = {"kind": kind, "M": m, "N": n, "K": k, "cublas_ms": cublas, "cublas_tflops": flops / cublas / 1e9,
               "cublas_eager_ms": cublas_eager, "candidates": table}
        if best:
            row.update(params=best["params"], time_ms=best["time_ms"], rel_error=best["rel_error"],
                       tflops=flops / best["time_ms"] / 1e9, ratio=cublas / best["time_ms"],
                       eager_ms=best["eager_ms"], ratio_eager=cublas_eager / best["eager_ms"])
            lock = lock.with_entry(LockEntry(
                spec=program.name, spec_hash=content_hash(program), target="cuda", bucket=bucket_of(program, sizes),
                params=best["params"], objective="measure", value=best["time_ms"], device=dev, versions=vers,
                study="bench/gemm.py", trials=len(table)))
        report["shapes"].append(row)
        print(f"{kind:6s} M={m:6d} N={n:6d} K={k:6d}  ours {row.get('time_ms', float('nan')):8.4f} ms  "
              f"cuBLAS {cublas:8.4f} ms  ratio {row.get('ratio', float('nan')):.3f}  "
              f"(eager {row.get('ratio_eager', float('nan')):.3f})  {row.get('params')}", flush=True)
        for key in ("ratio", "ratio_eager"):
            ratios = [r[key] for r in report["shapes"] if r.get(key)]
            report[f"geomean_{key}"] = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None
        write_json(result_path, report)
        lock.write(lock_path)

    for m, n, k in fused_shapes:
        sizes = {"M": m, "N": n, "K": k}
        best, table = search_shape(fused, FUSED_SPEC, sizes, cands(fused, sizes, m), args.repeats)
        sets = [(torch.randn(m, k, dtype=bf16, device="cuda"), torch.randn(n, k, dtype=bf16, device="cuda"),
                 torch.randn(n, dtype=bf16, device="cuda")) for _ in range(n_sets(2 * (m * k + k * n + 2 * m * n)))]
        separate = time_callable([lambda a=a, w=w, b=b: F.gelu(torch.matmul(a, w.T) + b) for a, w, b in sets],
                                 repeats=3 * args.repeats)
        addmm = time_callable([lambda a=a, w=w, b=b: F.gelu(torch.addmm(b, a, w.T)) for a, w, b in sets],
                              repeats=3 * args.repeats)
        del sets
        row = {"M": m, "N": n, "K": k, "epilogue": "bias + gelu (erf)", "cublas_separate_ms": separate,
               "cublas_addmm_gelu_ms": addmm, "candidates": table}
        if best:
            row.update(params=best["params"], time_ms=best["time_ms"], rel_error=best["rel_error"],
                       speedup_vs_separate=separate / best["time_ms"], speedup_vs_addmm=addmm / best["time_ms"])
            lock = lock.with_entry(LockEntry(
                spec=fused.name, spec_hash=content_hash(fused), target="cuda", bucket=bucket_of(fused, sizes),
                params=best["params"], objective="measure", value=best["time_ms"], device=dev, versions=vers,
                study="bench/gemm.py", trials=len(table)))
        report["fused"].append(row)
        print(f"fused  M={m:6d} N={n:6d} K={k:6d}  ours {row.get('time_ms', float('nan')):8.4f} ms  "
              f"matmul+add+gelu {separate:8.4f} ms  addmm+gelu {addmm:8.4f} ms  "
              f"x{row.get('speedup_vs_separate', float('nan')):.3f} / x{row.get('speedup_vs_addmm', float('nan')):.3f}",
              flush=True)
        write_json(result_path, report)
        lock.write(lock_path)
    print(f"geomean ratio (cuBLAS time / ours) over {len(report['shapes'])} shapes: graph "
          f"{report.get('geomean_ratio')}, eager {report.get('geomean_ratio_eager')}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["check", "bench", "list"])
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--quick", action="store_true", help="three shapes only (smoke run)")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--points", type=int, default=3, help="random legal points per spec and shape (check)")
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--from-lock", type=Path, help="bench: the lock file's config per shape plus --extra of the list")
    p.add_argument("--extra", type=int, default=2, help="search-list configs tried beside the lock's (--from-lock)")
    p.add_argument("--ms", default="", help="bench: only the shapes with these M (comma-separated)")
    p.add_argument("--tag", default="gemm", help="bench: results file prefix (gemm-decode for a re-run of M = 1)")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.cmd == "list":
        program = load_program(GEMM_SPEC)
        for kind, m, n, k in bench_shapes(args.quick):
            sizes = {"M": m, "N": n, "K": k}
            n_legal = sum(legal(program, sizes, c) is not None for c in candidates(m))
            print(f"{kind:6s} M={m} N={n} K={k}: {n_legal} legal candidates")
        return 0
    return cmd_check(args) if args.cmd == "check" else cmd_bench(args)


if __name__ == "__main__":
    sys.exit(main())
