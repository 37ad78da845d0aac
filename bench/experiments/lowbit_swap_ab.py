"""Experiment behind bench/results/lowbit-swap-ab-*.json: does putting the dequantised weight tile in
tl.dot's first operand (Y^T = W^T X^T; Hopper's wgmma takes its first operand from registers, its second
only from shared memory) close the gap to cuBLAS at M >= 128? Patches the generated source of the
w8/w4 specs and times both orders beside cuBLAS bf16, each checked against the oracle.
`TRITON_INTERPRET=1 python bench/experiments/lowbit_swap_ab.py` checks the patched source on the CPU.
`--variant ws` instead runs the K loop warp-specialised (bench/results/lowbit-warp-specialize-*.json).
Answer on an H100: neither helps (see the JSON)."""

import functools
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import lowbit  # noqa: E402
import spec_bench as sb  # noqa: E402

import tilesched.backends.cuda.kernel as K  # noqa: E402
from tilesched import load_program  # noqa: E402

orig = K.compiled.__wrapped__
def swapped(program):
    k, src = orig(program)
    a = src.replace("v_acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)\n    tiles_K",
                    "v_accT = tl.full((BLOCK_N, BLOCK_M), 0.0, tl.float32)\n    tiles_K", 1)
    a = a.replace("v_acc = tl.dot(v_x, v_wd, v_acc)", "v_accT = tl.dot(tl.trans(v_wd), tl.trans(v_x), v_accT)")
    a = a.replace("v_acc = v_acc + tl.reduce(v_x.to(tl.float32)[:, :, None] * v_wd.to(tl.float32)[None, :, :], 1, _add)",
                  "v_accT = v_accT + tl.trans(tl.reduce(v_x.to(tl.float32)[:, :, None] * v_wd.to(tl.float32)[None, :, :], 1, _add))")
    a = a.replace("    if SPLIT_K > 1:  # partial sums meet", "    v_acc = tl.trans(v_accT)\n    if SPLIT_K > 1:  # partial sums meet", 1)
    assert a.count("v_accT") >= 4, a.count("v_accT")
    return k, a


def warp_specialized(program):
    """The K loop under Triton's warp specialisation (producer warps load, consumers dequantise and MMA)."""
    k, src = orig(program)
    a = src.replace("for it_K in tl.range(lo_K, hi_K):", "for it_K in tl.range(lo_K, hi_K, warp_specialize=True):")
    assert a != src
    return k, a


VARIANT = sys.argv[sys.argv.index("--variant") + 1] if "--variant" in sys.argv else "swap"
PATCH = {"v0": orig, "swap": swapped, "ws": warp_specialized}

def cfg(bm, bn, bk, w, s):
    return lowbit.cfg(bm, bn, bk, w, s)

CANDS = [cfg(128, 128, 64, 4, 4), cfg(128, 128, 64, 8, 3), cfg(128, 256, 64, 8, 3), cfg(128, 128, 128, 8, 3),
         cfg(64, 128, 64, 4, 4), cfg(128, 64, 128, 4, 3), cfg(256, 128, 64, 8, 3)]
out = []
if os.environ.get("TRITON_INTERPRET"):  # CPU sanity check of the patched source
    from tests.cuda_util import run_against_oracle
    for bits in (8, 4):
        from tilesched.backends.cuda.io import retyped
        prog = retyped(load_program(sb.CONFIGS / f"{lowbit.BITS_SPECS[bits]}.yaml"), "bf16", "fp16")
        for variant in ("v0", VARIANT):
            K.compiled = functools.lru_cache(maxsize=256)(PATCH[variant])
            for p in (cfg(16, 32, 128, 4, 2), cfg(1, 32, 128, 4, 2)):
                v = run_against_oracle(K.Kernel(prog), {"M": 20, "N": 40, "K": 256}, p, seed=1)
                print(bits, variant, p["BLOCK_M"], v.ok, v.why)
    sys.exit(0)
for bits in (8, 4):
    spec = lowbit.BITS_SPECS[bits]
    prog = load_program(sb.CONFIGS / f"{spec}.yaml")
    for m, n, k in ((1024, 4096, 4096), (128, 4096, 4096), (1024, 28672, 8192)):
        sizes = {"M": m, "N": n, "K": k}
        sets, cub = lowbit.sets_and_cublas(bits, m, n, k)
        for variant in ("v0", VARIANT):
            K.compiled = functools.lru_cache(maxsize=256)(PATCH[variant])
            kern = K.Kernel(prog)
            for p in CANDS:
                b = sb.legal(prog, sizes, p)
                if b is None:
                    continue
                try:
                    ms = sb.time_kernel(kern, b, sets, 20)
                except Exception as e:
                    print(spec, m, n, k, variant, p, "ERR", str(e).splitlines()[-1][:200] if str(e) else type(e).__name__, flush=True)
                    continue
                mc = min(m, 256)
                err, why = sb.oracle_error(kern, sb.legal(prog, {**sizes, "M": mc}, p), {**sets[0], "X": sets[0]["X"][:mc].contiguous()})
                row = dict(spec=spec, M=m, N=n, K=k, variant=variant, params=p, ms=ms, cublas_ms=cub, ratio=cub / ms, err=err, why=why)
                out.append(row)
                print(f"{spec} M={m} N={n} K={k} {variant:5s} {p['BLOCK_M']}x{p['BLOCK_N']}x{p['BLOCK_K']} w{p['NUM_WARPS']} s{p['NUM_STAGES']}: {ms:.4f} ms  cuBLAS {cub:.4f}  x{cub/ms:.2f}  err {err:.1e} {why}", flush=True)
        json.dump(out, open(os.path.join(os.environ.get("OUT", "/tmp"), f"{VARIANT}-exp.json"), "w"), indent=1)
