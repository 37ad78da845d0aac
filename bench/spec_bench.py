"""Helpers shared by the benchmarks of specs against library baselines (bench/attention.py,
bench/lowbit.py, bench/fp8.py): a small candidate search per shape with the cost model's
prediction beside every measured point (its Spearman rank correlation over the shape's grid, out
of sample: the model's constants were never fitted to these grids), the oracle check of the
winner (semantics in float64 on the device), lock-file entries for the winners, and the rows of
bench/results/ops-<device>.json (see bench/ops.py).

Everything here that does not time runs on any device, so tests exercise it on the CPU under
the Triton interpreter (tests/test_bench_scripts.py)."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tilesched.errors import SpecError  # noqa: E402
from tilesched.ir.bind import bind  # noqa: E402

CONFIGS = ROOT / "configs"
L2_FLUSH_BYTES = 256 << 20


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def versions() -> dict:
    from tilesched.backends.cuda.measure import versions as v

    return v()


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def write_json(path: Path, data) -> None:
    from tilesched.fsutil import write_atomic

    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def legal(program, sizes: dict, params: dict):
    """The binding of `params` at `sizes`, or None where the point is illegal."""
    try:
        return bind(program, {**sizes, **params})
    except SpecError:
        return None


def n_sets(bytes_per_set: int) -> int:
    """Input sets to rotate so that the timed launches read from HBM, not L2."""
    return max(1, min(16, math.ceil(L2_FLUSH_BYTES / max(bytes_per_set, 1))))


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None with fewer than 3 points."""
    import numpy as np

    if len(xs) < 3:
        return None

    def ranks(v):
        v = np.asarray(v, dtype=float)
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for x in np.unique(v):  # ties share their mean rank
            r[v == x] = r[v == x].mean()
        return r

    rx, ry = ranks(xs), ranks(ys)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def predicted_ms(b) -> float | None:
    from tilesched.tuner.costmodel import predict

    try:
        return float(predict(b).latency)
    except Exception:  # noqa: BLE001 - a point the model cannot price is left out of the correlation
        return None


def time_kernel(kernel, b, tensor_sets: list[dict], repeats: int) -> float:
    """Median device time (CUDA-graph replays) of the kernel over rotated input sets."""
    import torch

    from tilesched.backends.cuda.measure import _time

    launches = []
    for s in tensor_sets:
        plan, full = kernel.prepare(s, params=dict(b.params), sizes=dict(b.sizes))
        launches.append((plan.launch, full, plan.sizes, plan.consts))
    launch = kernel.module.launch
    if kernel.materializes(b):  # two kernels: through the launcher

        def launch(cfg, full, sizes, consts):
            kernel(params=dict(b.params), sizes=dict(b.sizes), **full)
    for args in launches[:2]:
        launch(*args)
    torch.cuda.synchronize()
    return _time(launch, launches, repeats, 10.0, "graph")


ROUNDS = 3


def interleaved(timers: dict) -> dict[str, float]:
    """Median over ROUNDS of each timer (a callable returning ms), the timers taking turns within a
    round: under sustained tensor-core load the clocks fall (one kernel measured 1.64 then 1.83 ms in
    one process), so a baseline timed once after a whole candidate search would run on a hotter GPU
    than the search's first points."""
    import statistics

    got: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(ROUNDS):
        for name, timer in timers.items():
            got[name].append(timer())
    return {name: statistics.median(v) for name, v in got.items()}


def time_fns(fns: list, repeats: int) -> float:
    from tilesched.backends.cuda.measure import time_callable

    return time_callable(fns, repeats=repeats)


def oracle_error(kernel, b, ins: dict) -> tuple[float, str]:
    """(rel. error, why) of the kernel's outputs against the semantics oracle on these inputs (float64
    torch on the inputs' device, NaN-poisoned outputs); inf with the reason when it is wrong."""
    import torch

    from tilesched.backends.cuda.io import check_outputs, poisoned
    from tilesched.semantics import run_spec
    from tilesched.semantics.arrays import NUMPY, TorchOps

    device = next(iter(ins.values())).device
    outs = {n: poisoned(kernel.program.tensor(n), b.sizes, device) for n in kernel.outputs}
    kernel(params=dict(b.params), sizes=dict(b.sizes), **ins, **outs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    xp = TorchOps(device) if device.type == "cuda" else NUMPY
    oracle_ins = {n: (t if not t.is_floating_point() else t.double()) for n, t in ins.items()}
    if device.type != "cuda":
        oracle_ins = {n: t.numpy() if not t.is_floating_point() else t.double().numpy() for n, t in ins.items()}
    want = run_spec(b, oracle_ins, xp=xp)
    verdicts = check_outputs(b, outs, want)
    bad = next((v for v in verdicts if not v.ok), None)
    if bad is not None:
        return math.inf, bad.why
    return max(v.rel_error for v in verdicts), ""


def search(kernel, program, sizes: dict, candidates: list[dict], tensor_sets: list[dict], repeats: int,
           log=print) -> tuple[dict | None, list[dict], float | None]:
    """Time every legal candidate: (best row, table of rows {params, ms, model_ms}, Spearman of the
    model's predictions against the measured times over the table)."""
    table = []
    for params in candidates:
        b = legal(program, sizes, params)
        if b is None:
            continue
        row = {"params": params, "model_ms": predicted_ms(b)}
        try:
            row["ms"] = time_kernel(kernel, b, tensor_sets, repeats)
        except Exception as exc:  # noqa: BLE001 - a failing candidate is reported and skipped
            row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"[:200]
            log(f"  {program.name} {sizes} {params}: {row['error']}")
        table.append(row)
    timed = [r for r in table if "ms" in r]
    best = min(timed, key=lambda r: r["ms"], default=None)
    pairs = [(r["model_ms"], r["ms"]) for r in timed if r["model_ms"] is not None]
    rho = spearman([p for p, _ in pairs], [m for _, m in pairs])
    return best, table, rho


def lock_entry(program, sizes: dict, best: dict, device: str, vers: dict, study: str, trials: int):
    from tilesched.ir.hashing import content_hash
    from tilesched.tuner.lockfile import LockEntry, bucket_of

    return LockEntry(spec=program.name, spec_hash=content_hash(program), target="cuda",
                     bucket=bucket_of(program, sizes), params=best["params"], objective="measure",
                     value=best["ms"], device=device, versions=vers, study=study, trials=trials)


def copy_gbs(elements: int = 256 << 20) -> float:
    """Device-to-device copy bandwidth (bytes read + written) of `elements` bf16 values, same run; the
    default, 512 MB each way, is far past L2: the HBM's practical bandwidth."""
    import torch

    x = torch.empty(elements, dtype=torch.bfloat16, device="cuda").normal_()
    y = torch.empty_like(x)
    ms = time_fns([lambda: y.copy_(x)], repeats=20)
    return 2 * x.numel() * 2 / (ms * 1e-3) / 1e9


def warm_up_clocks(seconds: float = 2.0) -> None:
    import time

    import torch

    x = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    end = time.time() + seconds
    while time.time() < end:
        torch.matmul(x, x)
        torch.cuda.synchronize()


def warm_compile(spec_path: Path, sizes: dict, candidates: list[dict], program, workers: int) -> None:
    """Compile every legal candidate in parallel before timing (Triton caches the binaries)."""
    from tilesched.backends.cuda.compile_pool import warm_compile as warm

    jobs = [(spec_path, sizes, p) for p in candidates if legal(program, sizes, p) is not None]
    if jobs:
        errs = warm(jobs, workers=workers)
        bad = sum(e is not None for e in errs)
        if bad:
            print(f"  compile: {bad} of {len(jobs)} candidates failed", flush=True)


def report_header(device: str, what: str) -> dict:
    return {"device": device, "versions": versions(), "date": now(), "what": what,
            "timing": "medians of CUDA-graph replays, input sets rotated past L2; baselines in the same run",
            "model": "model_ms: tilesched.tuner.costmodel.predict (H100 constants, not fitted to these grids); "
                     "spearman: its rank correlation with the measured times over each shape's candidates",
            "rows": []}


def check_specs(specs: dict[str, dict], points: int, seed: int, out: Path, tag: str) -> int:
    """Every spec of `specs` (name -> ragged sizes) against the oracle on the GPU (float64 there) at
    its default parameters and `points` other legal points; writes DIR/<tag>-check-<device>.json."""
    import random

    from tilesched import load_program
    from tilesched.backends.cuda.defaults import select_binding
    from tilesched.ir.space import iter_points

    rng = random.Random(seed)
    cases = []
    for name, sizes in specs.items():
        prog = load_program(CONFIGS / f"{name}.yaml")
        b0, _ = select_binding(prog, sizes)
        fixed = {**prog.limit_env(), **b0.sizes}
        pts = [p for p in iter_points(prog.params, prog.constraints, fixed) if legal(prog, sizes, p)]
        rng.shuffle(pts)
        cases += [(name, prog, sizes, params) for params in [dict(b0.params)] + pts[:points]]
    return _run_checks(cases, rng, out, tag)


def check_points(points: dict[str, list[tuple[dict, dict]]], seed: int, out: Path, tag: str,
                 variant=lambda program: program) -> int:
    """Listed (sizes, params) points per spec (`variant` of each, e.g. retyped) against the oracle on
    the GPU (the other parameters at their defaults); writes DIR/<tag>-check-<device>.json."""
    import random

    from tilesched import load_program

    cases = []
    for name, listed in points.items():
        prog = variant(load_program(CONFIGS / f"{name}.yaml"))
        defaults = {p.name: p.default for p in prog.params}
        cases += [(name, prog, sizes, {**defaults, **params}) for sizes, params in listed]
    return _run_checks(cases, random.Random(seed), out, tag)


def _run_checks(cases: list[tuple[str, object, dict, dict]], rng, out: Path, tag: str) -> int:
    """Each (spec name, program, sizes, params) through `measure` (fresh random inputs, poisoned
    outputs, the oracle); one row each, the JSON written at the end; exit 1 if any failed."""
    import torch

    from tilesched.backends.cuda.measure import measure

    rows, failed = [], 0
    for name, prog, sizes, params in cases:
        m = measure(bind(prog, {**sizes, **params}), timed=False, seed=rng.randrange(1 << 30))
        rows.append({"spec": name, "sizes": sizes, "params": params, "ok": m.ok, "reason": m.reason,
                     "detail": m.detail[:300], "rel_error": m.max_rel_error})
        failed += not m.ok
        print(f"{'ok  ' if m.ok else 'FAIL'} {name:24s} {sizes} {params} err={m.max_rel_error} "
              f"{m.reason or ''} {m.detail[:200] if not m.ok else ''}", flush=True)
    dev = torch.cuda.get_device_name()
    write_json(out / f"{tag}-check-{slug(dev)}.json",
               {"device": dev, "versions": versions(), "date": now(), "rows": rows, "failed": failed})
    print(f"check: {len(rows)} points, {failed} failed")
    return 1 if failed else 0


def parser(doc: str) -> argparse.ArgumentParser:
    """The command line every spec bench shares (a bench adds its own options to it)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["check", "bench"])
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--points", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=8)
    return p


def run_bench(tag: str, what: str, out: Path, cases: Iterable[Callable]) -> int:
    """Time `cases` (each `case(report, lock) -> lock` adds its rows and lock entries) into
    OUT/<tag>-<device>.json and OUT/<tag>-lock-<device>.json, both written after every case so a run
    cut short keeps what it measured."""
    import torch

    from tilesched.tuner.lockfile import LockFile

    dev = torch.cuda.get_device_name()
    result, lock_path = out / f"{tag}-{slug(dev)}.json", out / f"{tag}-lock-{slug(dev)}.json"
    report = report_header(dev, what)
    lock = LockFile.read(lock_path)
    warm_up_clocks()
    t0 = time.time()
    for case in cases:
        lock = case(report, lock)
        write_json(result, report)
        lock.write(lock_path)
    print(f"bench done in {time.time() - t0:.0f} s -> {result}")
    return 0
