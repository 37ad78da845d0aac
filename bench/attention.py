#!/usr/bin/env python3
"""Attention forward from specs (configs/flash_attention*.yaml) against torch SDPA, in one run.

  python bench/attention.py check --out DIR    the attention specs vs the semantics oracle (GPU,
                                               ragged shapes, default and a few other parameters)
  python bench/attention.py check --warp-specialize --out DIR
                                               the warp-specialised schedule's points likewise
  python bench/attention.py check --persistent --out DIR
                                               those on a persistent grid likewise
  python bench/attention.py bench --out DIR    per shape (bf16, D = 64 and 128, causal and not, a
                                               GQA shape): a small candidate search, the winner
                                               checked against the oracle, then timed beside torch
                                               SDPA with the flash backend and the cuDNN backend

Writes DIR/attention-<device>.json in the rows format of bench/ops.py ({"op", "shape", "dtype",
"ours_ms", "baseline", "baseline_ms", "ratio" (baseline_ms / ours_ms), "flops", "rel_err",
"params"}, plus "spearman" and the candidate table with the cost model's prediction per point)
and the winners to DIR/attention-lock-<device>.json. FLOPs: 4·B·H·SQ·SK·D, halved when causal.
Targets (issue 16): ≥ 1.3x SDPA flash and ≥ 0.9x cuDNN. Needs a CUDA GPU; --quick for two shapes.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import spec_bench as sb  # noqa: E402

from tilesched import load_program  # noqa: E402

SPECS = {False: "flash_attention", True: "flash_attention_causal"}
GQA_SPEC = "flash_attention_gqa"
# (B, H, S, D): the targets, S in {1024, 4096, 16384} with B·H >= 64, D = 128 and 64
SHAPES = [(8, 16, 1024, 128), (4, 32, 4096, 128), (4, 16, 16384, 128),
          (8, 16, 1024, 64), (4, 32, 4096, 64), (4, 16, 16384, 64)]
GQA_SHAPES = [(4, 32, 4096, 128, 4)]  # (B, H, S, D, G): 8 key/value heads
CHECK = {"flash_attention": {"B": 2, "H": 3, "SQ": 300, "SK": 333, "D": 128},
         "flash_attention_causal": {"B": 2, "H": 3, "SQ": 333, "SK": 333, "D": 64},
         "flash_attention_gqa": {"B": 1, "H": 8, "SQ": 257, "SK": 257, "D": 128, "G": 4}}


def candidates(d: int, specialized: bool = True, persistent: bool = False) -> list[dict]:
    """A small list per head dimension (the full space is for the tuner): Triton's schedule, then
    the warp-specialised one (`specialized`), then that one on a persistent grid (`persistent`)."""
    def c(bm, bn, w, s, ws=False):
        return {"BLOCK_M": bm, "BLOCK_N": bn, "NUM_WARPS": w, "NUM_STAGES": s, "WARP_SPECIALIZE": ws}

    if d <= 64:
        pts = [c(128, 64, 4, 3), c(128, 128, 4, 3), c(128, 64, 8, 3), c(128, 128, 8, 2), c(64, 64, 4, 4),
               c(64, 128, 4, 3), c(128, 32, 4, 4), c(128, 64, 4, 4)]
        ws = [c(128, 128, 4, 3, True), c(128, 128, 4, 4, True), c(128, 64, 4, 4, True)]
    else:
        pts = [c(128, 64, 8, 3), c(128, 64, 8, 2), c(128, 128, 8, 2), c(128, 32, 8, 3), c(128, 64, 4, 3),
               c(64, 64, 4, 3), c(64, 128, 4, 2), c(128, 64, 8, 4)]
        ws = [c(128, 128, 4, 3, True), c(128, 128, 4, 2, True), c(128, 64, 4, 4, True)]
    return pts + (ws if specialized else []) + ([{**p, "PERSISTENT": True} for p in ws] if persistent else [])


# the warp-specialised schedule's points against the oracle: ragged query and key counts, both key
# tiles, 2 to 4 stages, causal and GQA (bench/attention.py check --warp-specialize)
def _ws(bn, st):
    return {"BLOCK_M": 128, "BLOCK_N": bn, "NUM_WARPS": 4, "NUM_STAGES": st, "WARP_SPECIALIZE": True}


# the persistent grid's points: more tiles than SMs (CTAs walk several, the ring's phases run on
# across tiles), one with fewer; causal and GQA claim their tiles from a counter
# (bench/attention.py check --persistent)
PERSISTENT_CHECK = {
    "flash_attention": [({"B": 4, "H": 12, "SQ": 700, "SK": 333, "D": 128}, _ws(128, 2)),
                        ({"B": 3, "H": 20, "SQ": 300, "SK": 1000, "D": 64}, _ws(64, 4)),
                        ({"B": 2, "H": 3, "SQ": 300, "SK": 333, "D": 128}, _ws(128, 3))],
    "flash_attention_causal": [({"B": 2, "H": 40, "SQ": 517, "SK": 517, "D": 128}, _ws(128, 3)),
                               ({"B": 2, "H": 40, "SQ": 333, "SK": 333, "D": 64}, _ws(64, 4))],
    "flash_attention_gqa": [({"B": 2, "H": 32, "SQ": 257, "SK": 257, "D": 64, "G": 4}, _ws(64, 4))],
}


WS_CHECK = {
    "flash_attention": [({"B": 2, "H": 3, "SQ": 300, "SK": 333, "D": 128}, _ws(128, 3)),
                        ({"B": 2, "H": 3, "SQ": 300, "SK": 333, "D": 128}, _ws(64, 4)),
                        ({"B": 1, "H": 2, "SQ": 129, "SK": 200, "D": 64}, _ws(128, 2)),
                        ({"B": 1, "H": 2, "SQ": 512, "SK": 1024, "D": 64}, _ws(64, 3))],
    "flash_attention_causal": [({"B": 2, "H": 3, "SQ": 333, "SK": 333, "D": 64}, _ws(128, 4)),
                               ({"B": 1, "H": 2, "SQ": 517, "SK": 517, "D": 128}, _ws(128, 3)),
                               ({"B": 1, "H": 2, "SQ": 517, "SK": 517, "D": 128}, _ws(64, 2))],
    "flash_attention_gqa": [({"B": 1, "H": 8, "SQ": 257, "SK": 257, "D": 128, "G": 4}, _ws(128, 3)),
                            ({"B": 2, "H": 4, "SQ": 384, "SK": 384, "D": 64, "G": 2}, _ws(64, 4))],
}


def repeat_claims(calls: int = 20) -> int:
    """Causal points on the persistent grid claim tiles from a counter the last CTA resets: called
    again and again (eagerly, then in one CUDA graph), each call's output is the first call's, bit for
    bit, and the counter is zero after them. Exit status 1 where not."""
    import torch

    from tilesched.backends.cuda import workspace
    from tilesched.backends.cuda.kernel import Kernel

    failed = 0
    for name, listed in PERSISTENT_CHECK.items():
        if name == "flash_attention":  # a fixed stride: no counter
            continue
        kernel = Kernel(load_program(sb.CONFIGS / f"{name}.yaml"))
        for sizes, params in listed:
            g = sizes.get("G", 1)
            ins = make_inputs(sizes["B"], sizes["H"], sizes["SQ"], sizes["D"], "cuda", g=g)
            params = {**params, "PERSISTENT": True}
            first = kernel(**ins, params=params)
            outs = [kernel(**ins, params=params) for _ in range(calls)]
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                captured = kernel(**ins, params=params)
            for _ in range(calls):
                graph.replay()
                outs.append(captured.clone())
            torch.cuda.synchronize()
            differ = sum(not torch.equal(o, first) for o in outs)
            left = max(int(c[0]) for c in workspace._COUNTERS.values())  # every stream's: eager and captured
            ok = differ == 0 and left == 0
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} repeat {name} {sizes}: {differ} of {len(outs)} calls differ, "
                  f"counter {left}", flush=True)
    return 1 if failed else 0


def flops(b: int, h: int, sq: int, sk: int, d: int, causal: bool) -> float:
    return 4.0 * b * h * sq * sk * d * (0.5 if causal else 1.0)


def make_inputs(b: int, h: int, s: int, d: int, device, dtype=None, g: int = 1) -> dict:
    """Q [B, H, S, D] and K, V [B, H / G, S, D] (G query heads per key/value head)."""
    import torch

    dtype = dtype or torch.bfloat16
    return {"Q": torch.randn(b, h, s, d, device=device).to(dtype),
            "K": torch.randn(b, h // g, s, d, device=device).to(dtype),
            "V": torch.randn(b, h // g, s, d, device=device).to(dtype)}


def sdpa(backend, causal: bool, g: int = 1):
    """torch SDPA restricted to one backend (None: torch's choice)."""
    import torch.nn.functional as F

    def run(q, k, v):
        kw = {"enable_gqa": True} if g > 1 else {}
        if backend is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, **kw)
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, **kw)

    return run


def check_slice(kernel, program, sizes: dict, params: dict, ins: dict) -> tuple[float, str]:
    """The winner against the oracle on batch 0 and up to two heads (a float64 score matrix per head
    is S² · 8 bytes: the whole batch would not fit)."""
    g = sizes.get("G", 1)
    h = min(sizes["H"], 2 * g)
    sub = {"Q": ins["Q"][:1, :h].contiguous(), "K": ins["K"][:1, :h // g].contiguous(),
           "V": ins["V"][:1, :h // g].contiguous()}
    b = sb.legal(program, {**sizes, "B": 1, "H": h}, params)
    return sb.oracle_error(kernel, b, sub)


def bench_one(args, report, lock, spec: str, shape: tuple, causal: bool, g: int = 1):
    from torch.nn.attention import SDPBackend

    from tilesched.backends.cuda.kernel import Kernel

    b_, h, s, d = shape
    program = load_program(sb.CONFIGS / f"{spec}.yaml")
    kernel = Kernel(program)
    sizes = {"B": b_, "H": h, "SQ": s, "SK": s, "D": d, **({"G": g} if "G" in {a.name for a in program.axes} else {})}
    cands = candidates(d, persistent="PERSISTENT" in {p.name for p in program.params})
    sb.warm_compile(sb.CONFIGS / f"{spec}.yaml", sizes, cands, program, args.workers)
    per_set = 2 * (b_ * h * s * d * 2 + 2 * b_ * (h // g) * s * d)
    sets = [make_inputs(b_, h, s, d, "cuda", g=g) for _ in range(sb.n_sets(per_set))]
    best, table, rho = sb.search(kernel, program, sizes, cands, sets, args.repeats)
    if best is None:
        print(f"{spec} {sizes}: no candidate ran", flush=True)
        return lock
    err, why = check_slice(kernel, program, sizes, best["params"], sets[0])
    fl = flops(b_, h, s, s, d, causal)
    line = f"{spec:24s} B={b_} H={h} S={s} D={d}{f' G={g}' if g > 1 else ''}"
    winner = sb.legal(program, sizes, best["params"])
    timers = {"ours": lambda: sb.time_kernel(kernel, winner, sets, args.repeats)}
    for name, backend in (("torch SDPA (flash)", SDPBackend.FLASH_ATTENTION),
                          ("torch SDPA (cuDNN)", SDPBackend.CUDNN_ATTENTION)):
        fn = sdpa(backend, causal, g)
        try:
            fn(sets[0]["Q"], sets[0]["K"], sets[0]["V"])
        except Exception as exc:  # noqa: BLE001 - a backend this build or shape lacks is reported
            report["rows"].append({"op": "attention", "shape": sizes, "causal": causal, "dtype": "bf16",
                                   "baseline": name, "baseline_error": f"{type(exc).__name__}: {exc}"[:300]})
            line += f"  {name}: unavailable ({type(exc).__name__})"
            continue
        timers[name] = lambda fn=fn: sb.time_fns([lambda t=t: fn(t["Q"], t["K"], t["V"]) for t in sets], args.repeats)
    times = sb.interleaved(timers)  # the winner and the baselines in turns (spec_bench.interleaved)
    ms = times.pop("ours")
    line += f"  ours {ms:.4f} ms ({fl / ms / 1e9:.0f} TFLOP/s; search {best['ms']:.4f}) err {err:.1e} rho {rho}"
    for name, base in times.items():
        report["rows"].append({
            "op": "attention" if g == 1 else "attention_gqa", "shape": sizes, "causal": causal, "dtype": "bf16",
            "ours_ms": ms, "search_ms": best["ms"], "baseline": name, "baseline_ms": base, "ratio": base / ms, "flops": fl,
            "ours_TFLOPs": fl / ms / 1e9, "baseline_TFLOPs": fl / base / 1e9, "rel_err": err, "check": why or "ok",
            "params": best["params"], "spearman": rho, "candidates": table})
        line += f"  {name} {base:.4f} ms x{base / ms:.2f}"
    print(line, flush=True)
    if math.isfinite(err):
        lock = lock.with_entry(sb.lock_entry(program, sizes, best, report["device"], report["versions"],
                                             "bench/attention.py", len(table)))
    return lock


def cmd_bench(args) -> int:
    shapes = SHAPES[1:2] + SHAPES[4:5] if args.quick else SHAPES
    masks = {"both": (False, True), "no": (False,), "yes": (True,)}[args.causal]
    cases = [lambda r, lock, s=s, c=c: bench_one(args, r, lock, SPECS[c], s, c) for s in shapes for c in masks]
    if not args.quick and True in masks:
        cases += [lambda r, lock, g=g: bench_one(args, r, lock, GQA_SPEC, g[:4], True, g[4]) for g in GQA_SHAPES]
    return sb.run_bench(args.tag, "attention forward from specs vs torch SDPA (flash, cuDNN)", Path(args.out), cases)


def main(argv=None) -> int:
    p = sb.parser(__doc__)
    p.add_argument("--warp-specialize", action="store_true",
                   help="check: the warp-specialised schedule's points (Gluon) against the oracle")
    p.add_argument("--persistent", action="store_true",
                   help="check: the warp-specialised schedule's points on a persistent grid against the oracle")
    p.add_argument("--causal", choices=["both", "no", "yes"], default="both",
                   help="bench: the rows with and without the causal mask (yes: the GQA row too)")
    p.add_argument("--tag", default="attention", help="bench: results to DIR/<tag>-<device>.json")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.cmd == "check" and args.persistent:
        points = {name: [(sizes, {**params, "PERSISTENT": True}) for sizes, params in listed]
                  for name, listed in PERSISTENT_CHECK.items()}
        failed = sb.check_points(points, args.seed, Path(args.out), "attention-persistent-grid")
        return failed or repeat_claims()
    if args.cmd == "check" and args.warp_specialize:
        return sb.check_points(WS_CHECK, args.seed, Path(args.out), "attention-warp-specialized")
    if args.cmd == "check":
        return sb.check_specs(CHECK, args.points, args.seed, Path(args.out), "attention")
    return cmd_bench(args)


if __name__ == "__main__":
    sys.exit(main())
