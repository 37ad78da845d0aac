"""Experiment: a 4-bit GEMM as eight dots per K tile, one per nibble position, instead of one dot on an
unpacked tile. Nibble j of the tile's words holds K rows 8r + j, so sum_k x[k] w[k] = sum_j x[:, j::8] @
w_j: each w_j is an elementwise function ((word >> 4j) & 15, then (- z) * s) of the loaded word tile,
with no reshape between the load and the dot. The generated kernel spreads the words along K with a
reshape; an sm_90 compile of it at M = 16 shows about two instructions per weight moving the
dequantised tile through shared memory (PRMT and STS), while an 8-bit tile (elementwise dequant
only) reaches 0.90 of the speed of light at M = 16. Hand-written here (not generated), timed beside
the generated kernel at its lock configuration and cuBLAS bf16, both checked against the semantics
oracle. Writes OUT/lowbit-nibble-dots-exp.json. `TRITON_INTERPRET=1 python
bench/experiments/lowbit_nibble_dots.py` checks it on the CPU."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import triton
import triton.language as tl

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import spec_bench as sb  # noqa: E402
from lowbit_gemv import oracle_error  # noqa: E402

from tilesched import load_program  # noqa: E402


@triton.jit
def nibble_dots(x_ptr, w_ptr, z_ptr, s_ptr, y_ptr, M, N, K, s_x, s_w, s_z, s_s, s_y, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, SPLIT: tl.constexpr):
    # one K tile = one group of 128 rows = 16 words per column
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(2)
    o_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.arange(0, 16)
    groups = K // 128
    per = (groups + SPLIT - 1) // SPLIT
    lo = tl.program_id(1) * per
    hi = tl.minimum(lo + per, groups)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for g in tl.range(lo, hi):
        words = tl.load(w_ptr + (g * 16 + rows)[:, None] * s_w + o_n[None, :], mask=(o_n < N)[None, :], other=0)
        zw = tl.load(z_ptr + g * s_z + o_n // 8, mask=o_n < N, other=0)
        z = ((zw >> ((o_n % 8) * 4)) & 15).to(tl.float32)
        s = tl.load(s_ptr + g * s_s + o_n, mask=o_n < N, other=0.0).to(tl.float32)
        for j in tl.static_range(8):
            xj = tl.load(x_ptr + o_m[:, None] * s_x + (g * 128 + rows * 8 + j)[None, :], mask=(o_m < M)[:, None],
                         other=0.0)
            wj = ((((words >> (4 * j)) & 15).to(tl.float32) - z[None, :]) * s[None, :]).to(xj.dtype)
            acc = tl.dot(xj, wj, acc)
    keep = (o_m < M)[:, None] & (o_n < N)[None, :]
    if SPLIT == 1:
        tl.store(y_ptr + o_m[:, None] * s_y + o_n[None, :], acc.to(y_ptr.dtype.element_ty), mask=keep)
    else:
        tl.atomic_add(y_ptr + o_m[:, None] * s_y + o_n[None, :], acc, mask=keep)


def run(ins: dict, y, bm: int, bn: int, warps: int, stages: int, split: int):
    m, k = ins["X"].shape
    n = ins["W"].shape[1]
    out = y if split == 1 else y.float().zero_()
    grid = (triton.cdiv(n, bn), split, triton.cdiv(m, bm))
    nibble_dots[grid](ins["X"], ins["W"], ins["Z"], ins["S"], out, m, n, k, ins["X"].stride(0), ins["W"].stride(0),
                      ins["Z"].stride(0), ins["S"].stride(0), out.stride(0), BLOCK_M=bm, BLOCK_N=bn, SPLIT=split,
                      num_warps=warps, num_stages=stages)
    if split > 1:
        y.copy_(out)
    return y


CONFIGS = {16: [(16, 128, 4, 4, 4), (16, 64, 4, 4, 4), (16, 128, 4, 3, 2), (16, 256, 8, 3, 2), (16, 128, 4, 4, 1),
                (16, 64, 4, 4, 2)],
           128: [(128, 128, 8, 3, 1), (64, 128, 4, 3, 1), (128, 64, 4, 3, 1), (128, 256, 8, 3, 1)]}


def main() -> int:
    import torch

    if os.environ.get("TRITON_INTERPRET"):
        ins = lowbit.make_inputs(4, 20, 96, 512, "cpu", torch.float32)
        for bm, bn, w, st, split in ((16, 32, 4, 2, 1), (16, 64, 4, 2, 2)):
            err = oracle_error(ins, run(ins, torch.full((20, 96), float("nan")), bm, bn, w, st, split))
            print(bm, bn, split, f"rel err {err:.1e}")
            if not err < 1e-5:
                return 1
        return 0
    from tilesched.backends.cuda.kernel import Kernel

    report = sb.report_header(torch.cuda.get_device_name(), __doc__.split("\n")[0])
    prog = load_program(sb.CONFIGS / "w4a16_gemm.yaml")
    gen = Kernel(prog)
    for m, n, k in ((16, 28672, 8192), (16, 8192, 8192), (128, 28672, 8192), (128, 8192, 8192)):
        sizes = {"M": m, "N": n, "K": k}
        sets, cub = lowbit.sets_and_cublas(4, m, n, k)
        lock = [lowbit.cfg(16, 128, 64, 4, 4, 4), lowbit.cfg(16, 128, 128, 4, 4, 4)] if m == 16 else \
            [lowbit.cfg(128, 64, 128, 4, 3), lowbit.cfg(128, 128, 64, 4, 4)]
        best, table, _ = sb.search(gen, prog, sizes, lock, sets, 20)
        rows = [{"kernel": "generated", "ms": best["ms"], "params": best["params"]}]
        for bm, bn, w, st, split in CONFIGS[m]:
            ys = [torch.empty(m, n, device="cuda", dtype=torch.bfloat16) for _ in sets]
            try:
                ms = sb.time_fns([lambda t=t, y=y, c=(bm, bn, w, st, split): run(t, y, *c) for t, y in zip(sets, ys)], 20)
            except Exception as exc:  # noqa: BLE001 - a config that does not compile is reported
                rows.append({"kernel": "nibble_dots", "config": [bm, bn, w, st, split], "error": str(exc)[:200]})
                continue
            err = oracle_error({**sets[0], "X": sets[0]["X"][:min(m, 64)]}, run({**sets[0], "X": sets[0]["X"][:min(m, 64)]},
                               torch.empty(min(m, 64), n, device="cuda", dtype=torch.bfloat16), bm, bn, w, st, split))
            rows.append({"kernel": "nibble_dots", "ms": ms, "config": [bm, bn, w, st, split], "rel_err": err})
        for r in rows:
            r.update(shape=sizes, cublas_ms=cub)
            if "ms" in r:
                r["ratio_vs_cublas"] = cub / r["ms"]
            print(f"M={m} N={n} K={k} {r['kernel']:11s} {r.get('ms', 0) * 1e3:7.1f} us  "
                  f"x{cub / r['ms'] if 'ms' in r else 0:.2f} cuBLAS  "
                  f"{ {key: r[key] for key in ('params', 'config', 'rel_err', 'error') if key in r} }", flush=True)
        report["rows"] += rows
    sb.write_json(Path(os.environ.get("OUT", "/tmp")) / "lowbit-nibble-dots-exp.json", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
