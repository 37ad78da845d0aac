"""Experiment: unpack packed weights in word-minor order. A sum over K does not depend on the order of
K inside a tile, so the tile's K offsets can be permuted (row r <-> k = per·(r mod words) + r div words)
for every load at once; the shifted words [per, words, N] then merge their two leading axes into the
tile's rows, instead of [words, per, N] with the shift axis in the middle. Times both orders at decode
sizes (M 1 and 16) beside cuBLAS bf16, each checked against the oracle. Writes OUT/lowbit-kperm-exp.json.
`TRITON_INTERPRET=1 python bench/experiments/lowbit_kperm.py` checks the patched source on the CPU."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import lowbit  # noqa: E402
import spec_bench as sb  # noqa: E402

import tilesched.backends.cuda.kernel as K  # noqa: E402
from tilesched import load_program  # noqa: E402

ORIG = K.compiled.__wrapped__


def word_minor(program):
    k, src = ORIG(program)
    m = re.search(r"tl\.reshape\(\(\(v_w\[:, None, :\] >> \(tl\.arange\(0, (\d+)\) \* (\d+)\)\[None, :, None\]\)", src)
    per = int(m.group(1))
    out = src.replace(m.group(0), f"tl.reshape(((v_w[None, :, :] >> (tl.arange(0, {per}) * {m.group(2)})[:, None, None])")
    words = f"(BLOCK_K // {per})"
    out = out.replace("o_K = it_K * BLOCK_K + tl.arange(0, BLOCK_K)\n",
                      f"o_K = it_K * BLOCK_K + (tl.arange(0, BLOCK_K) % {words}) * {per} + tl.arange(0, BLOCK_K) // {words}\n", 1)
    assert out.count("(BLOCK_K //") >= 2
    return k, out


def use(variant: str) -> None:
    K.compiled = functools.lru_cache(maxsize=256)({"v0": ORIG, "kperm": word_minor}[variant])


def main() -> int:
    if os.environ.get("TRITON_INTERPRET"):
        from tests.cuda_util import run_against_oracle
        from tilesched.backends.cuda.io import retyped

        use("kperm")
        for bits in (4, 2):
            prog = retyped(load_program(sb.CONFIGS / f"{lowbit.BITS_SPECS[bits]}.yaml"), "bf16", "fp16")
            for p in (lowbit.cfg(16, 32, 128, 4, 2), lowbit.cfg(1, 32, 128, 4, 2, 2), lowbit.cfg(16, 32, 64, 4, 2)):
                v = run_against_oracle(K.Kernel(prog), {"M": 20, "N": 40, "K": 520}, p, seed=1)
                print(bits, p["BLOCK_M"], p["BLOCK_K"], v.ok, v.why)
        return 0

    rows = []
    for bits in (4, 2):
        prog = load_program(sb.CONFIGS / f"{lowbit.BITS_SPECS[bits]}.yaml")
        for m, n, k in ((1, 4096, 4096), (1, 8192, 8192), (1, 28672, 8192), (16, 8192, 8192)):
            sizes = {"M": m, "N": n, "K": k}
            nbytes = lowbit.weight_bytes(bits, m, n, k)
            sets, cub = lowbit.sets_and_cublas(bits, m, n, k)
            for variant in ("v0", "kperm"):
                use(variant)
                kern = K.Kernel(prog)
                best, table, _ = sb.search(kern, prog, sizes, lowbit.candidates(m), sets, 20)
                b = sb.legal(prog, sizes, best["params"])
                err, why = sb.oracle_error(kern, b, sets[0])
                rows.append({"bits": bits, "shape": sizes, "variant": variant, "ms": best["ms"], "params": best["params"],
                             "cublas_ms": cub, "ratio": cub / best["ms"], "bytes": nbytes, "rel_err": err, "check": why or "ok",
                             "candidates": table})
                print(f"w{bits} M={m} N={n} K={k} {variant:6s} {best['ms']:.4f} ms  cuBLAS {cub:.4f} x{cub / best['ms']:.2f}"
                      f"  {nbytes / best['ms'] / 1e6:.0f} GB/s  err {err:.1e} {why} {best['params']}", flush=True)
        Path(os.environ.get("OUT", "/tmp"), "lowbit-kperm-exp.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
