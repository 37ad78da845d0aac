#!/usr/bin/env python3
"""Attention forward from specs (configs/flash_attention*.yaml) against torch SDPA, in one run.

  python bench/attention.py check --out DIR    the attention specs vs the semantics oracle (GPU,
                                               ragged shapes, default and a few other parameters)
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

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import spec_bench as sb  # noqa: E402

from tilesched import load_program  # noqa: E402

SPECS = {False: "flash_attention", True: "flash_attention_causal"}
GQA_SPEC = "flash_attention_gqa"
# (B, H, S, D): 16k tokens per batch, as FlashAttention's benchmarks; D = 64 with twice the heads
SHAPES = [(8, 16, 2048, 128), (4, 16, 4096, 128), (2, 16, 8192, 128), (1, 16, 16384, 128),
          (8, 32, 2048, 64), (2, 32, 8192, 64)]
GQA_SHAPES = [(4, 32, 4096, 128, 4)]  # (B, H, S, D, G): 8 key/value heads
CHECK = {"flash_attention": {"B": 2, "H": 3, "SQ": 300, "SK": 333, "D": 128},
         "flash_attention_causal": {"B": 2, "H": 3, "SQ": 333, "SK": 333, "D": 64},
         "flash_attention_gqa": {"B": 1, "H": 8, "SQ": 257, "SK": 257, "D": 128, "G": 4}}


def candidates(d: int) -> list[dict]:
    """A small list per head dimension (the full space is for the tuner)."""
    def c(bm, bn, w, s):
        return {"BLOCK_M": bm, "BLOCK_N": bn, "NUM_WARPS": w, "NUM_STAGES": s}

    if d <= 64:
        return [c(128, 64, 4, 3), c(128, 128, 4, 3), c(128, 64, 8, 3), c(128, 128, 8, 2), c(64, 64, 4, 4),
                c(64, 128, 4, 3), c(128, 32, 4, 4), c(128, 64, 4, 4)]
    return [c(128, 64, 8, 3), c(128, 64, 8, 2), c(128, 128, 8, 2), c(128, 32, 8, 3), c(128, 64, 4, 3),
            c(64, 64, 4, 3), c(64, 128, 4, 2), c(128, 64, 8, 4)]


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
    cands = candidates(d)
    sb.warm_compile(sb.CONFIGS / f"{spec}.yaml", sizes, cands, program, args.workers)
    per_set = 2 * (b_ * h * s * d * 2 + 2 * b_ * (h // g) * s * d)
    sets = [make_inputs(b_, h, s, d, "cuda", g=g) for _ in range(sb.n_sets(per_set))]
    best, table, rho = sb.search(kernel, program, sizes, cands, sets, args.repeats)
    if best is None:
        print(f"{spec} {sizes}: no candidate ran", flush=True)
        return lock
    err, why = check_slice(kernel, program, sizes, best["params"], sets[0])
    fl = flops(b_, h, s, s, d, causal)
    ms = best["ms"]
    line = f"{spec:24s} B={b_} H={h} S={s} D={d}{f' G={g}' if g > 1 else ''}  ours {ms:.4f} ms " \
           f"({fl / ms / 1e9:.0f} TFLOP/s) err {err:.1e} rho {rho}"
    for name, backend in (("torch SDPA (flash)", SDPBackend.FLASH_ATTENTION),
                          ("torch SDPA (cuDNN)", SDPBackend.CUDNN_ATTENTION)):
        fn = sdpa(backend, causal, g)
        try:
            base = sb.time_fns([lambda t=t, fn=fn: fn(t["Q"], t["K"], t["V"]) for t in sets], args.repeats)
        except Exception as exc:  # noqa: BLE001 - a backend this build or shape lacks is reported
            report["rows"].append({"op": "attention", "shape": sizes, "causal": causal, "dtype": "bf16",
                                   "baseline": name, "baseline_error": f"{type(exc).__name__}: {exc}"[:300]})
            line += f"  {name}: unavailable ({type(exc).__name__})"
            continue
        report["rows"].append({
            "op": "attention" if g == 1 else "attention_gqa", "shape": sizes, "causal": causal, "dtype": "bf16",
            "ours_ms": ms, "baseline": name, "baseline_ms": base, "ratio": base / ms, "flops": fl,
            "ours_TFLOPs": fl / ms / 1e9, "baseline_TFLOPs": fl / base / 1e9, "rel_err": err, "check": why or "ok",
            "params": best["params"], "spearman": rho, "candidates": table})
        line += f"  {name} {base:.4f} ms x{base / ms:.2f}"
    print(line, flush=True)
    if math.isfinite(err):
        lock = lock.with_entry(sb.lock_entry(program, sizes, best, report["device"], report["versions"],
                                             "bench/attention.py", len(table)))
    return lock


def cmd_bench(args) -> int:
    import torch

    from tilesched.tuner.lockfile import LockFile

    dev = torch.cuda.get_device_name()
    out = Path(args.out)
    result, lock_path = out / f"attention-{sb.slug(dev)}.json", out / f"attention-lock-{sb.slug(dev)}.json"
    report = sb.report_header(dev, "attention forward from specs vs torch SDPA (flash, cuDNN)")
    lock = LockFile.read(lock_path)
    sb.warm_up_clocks()
    t0 = time.time()
    shapes = SHAPES[1:2] + SHAPES[4:5] if args.quick else SHAPES
    for shape in shapes:
        for causal in (False, True):
            lock = bench_one(args, report, lock, SPECS[causal], shape, causal)
            sb.write_json(result, report)
            lock.write(lock_path)
    if not args.quick:
        for b_, h, s, d, g in GQA_SHAPES:
            lock = bench_one(args, report, lock, GQA_SPEC, (b_, h, s, d), True, g)
            sb.write_json(result, report)
            lock.write(lock_path)
    print(f"bench done in {time.time() - t0:.0f} s -> {result}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["check", "bench"])
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--points", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=8)
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.cmd == "check":
        return sb.check_specs(CHECK, args.points, args.seed, Path(args.out), "attention")
    return cmd_bench(args)


if __name__ == "__main__":
    sys.exit(main())
