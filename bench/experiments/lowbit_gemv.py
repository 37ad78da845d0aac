"""Experiment: a hand-written 4-bit GEMV (M = 1) whose products run as sequential multiply-adds per
thread. The generated factored decode kernel reduces each K tile with a tree (an sm_90 compile shows
one multiply, one multiply-add and one add per two weights); here every thread owns whole columns,
walks a group's 16 words and 8 nibbles in a static loop with the activation as a scalar, and
keeps two partial sums, so each weight costs a shift, a mask, a conversion and one multiply-add.
Scale and zero point are applied once per group and column (the factor pass's algebra). Timed at
N = 28672 and 8192, K = 8192 beside the generated kernel at its lock configuration and cuBLAS bf16,
both checked against the semantics oracle. Writes OUT/lowbit-gemv-exp.json. Not a tilesched kernel:
it measures whether the generated code shape is the limit. `TRITON_INTERPRET=1 python
bench/experiments/lowbit_gemv.py` checks it on the CPU."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import triton
import triton.language as tl

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import lowbit  # noqa: E402
import spec_bench as sb  # noqa: E402

from tilesched import load_program  # noqa: E402


@triton.jit
def gemv_w4(x_ptr, w_ptr, z_ptr, s_ptr, y_ptr, N, K, s_w, s_z, s_s, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr):
    pid_n = tl.program_id(0)
    o_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    keep = o_n < N
    groups = K // 128
    per = groups // SPLIT
    g0 = tl.program_id(1) * per
    acc = tl.zeros((BLOCK_N,), tl.float32)
    for g in tl.range(g0, g0 + per):
        part0 = tl.zeros((BLOCK_N,), tl.float32)
        part1 = tl.zeros((BLOCK_N,), tl.float32)
        for r in tl.static_range(16):
            word = tl.load(w_ptr + (g * 16 + r) * s_w + o_n, mask=keep, other=0)
            for j in tl.static_range(0, 8, 2):
                x0 = tl.load(x_ptr + g * 128 + r * 8 + j).to(tl.float32)
                x1 = tl.load(x_ptr + g * 128 + r * 8 + j + 1).to(tl.float32)
                part0 += x0 * ((word >> (4 * j)) & 15).to(tl.float32)
                part1 += x1 * ((word >> (4 * j + 4)) & 15).to(tl.float32)
        xs = tl.sum(tl.load(x_ptr + g * 128 + tl.arange(0, 128)).to(tl.float32), 0)
        zw = tl.load(z_ptr + g * s_z + o_n // 8, mask=keep, other=0)
        z = ((zw >> ((o_n % 8) * 4)) & 15).to(tl.float32)
        s = tl.load(s_ptr + g * s_s + o_n, mask=keep, other=0.0).to(tl.float32)
        acc += s * (part0 + part1 - z * xs)
    if SPLIT == 1:
        tl.store(y_ptr + o_n, acc.to(y_ptr.dtype.element_ty), mask=keep)
    else:
        tl.atomic_add(y_ptr + o_n, acc, mask=keep)


def run(ins: dict, y, block_n: int, warps: int, split: int):
    n = ins["W"].shape[1]
    k = ins["X"].shape[1]
    out = y if split == 1 else y.float().zero_()
    gemv_w4[(triton.cdiv(n, block_n), split)](ins["X"], ins["W"], ins["Z"], ins["S"], out, n, k, ins["W"].stride(0),
                                               ins["Z"].stride(0), ins["S"].stride(0), BLOCK_N=block_n, SPLIT=split,
                                               num_warps=warps, num_stages=3)
    if split > 1:
        y.copy_(out)
    return y


CONFIGS = [(128, 4, 1), (64, 2, 1), (256, 8, 1), (128, 4, 2), (256, 4, 1), (512, 4, 1)]


def oracle_error(ins: dict, y) -> float:
    from tilesched.ir.bind import bind
    from tilesched.semantics import run_spec

    prog = load_program(sb.CONFIGS / "w4a16_gemm.yaml")
    b = bind(prog, {"M": ins["X"].shape[0], "N": ins["W"].shape[1], "K": ins["X"].shape[1], "BLOCK_M": 1})
    cpu = {n: (t.cpu().double().numpy() if t.is_floating_point() else t.cpu().numpy()) for n, t in ins.items()}
    want = run_spec(b, cpu)["Y"]
    got = y.double().cpu().numpy()
    import numpy as np

    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def main() -> int:
    import torch

    if os.environ.get("TRITON_INTERPRET"):
        ins = lowbit.make_inputs(4, 1, 96, 512, "cpu", torch.float32)
        for bn, w, split in ((32, 1, 1), (64, 2, 2)):
            err = oracle_error(ins, run(ins, torch.full((1, 96), float("nan")), bn, w, split))
            print(bn, split, f"rel err {err:.1e}")
            if not err < 1e-5:
                return 1
        return 0
    from tilesched.backends.cuda.kernel import Kernel

    report = sb.report_header(torch.cuda.get_device_name(), __doc__.split("\n")[0])
    prog = load_program(sb.CONFIGS / "w4a16_gemm.yaml")
    gen = Kernel(prog)
    for n, k in ((28672, 8192), (8192, 8192)):
        sizes = {"M": 1, "N": n, "K": k}
        sets, cub = lowbit.sets_and_cublas(4, 1, n, k)
        best, table, _ = sb.search(gen, prog, sizes, [lowbit.cfg(1, 128, 128, 4, 4, 4), lowbit.cfg(1, 128, 64, 4, 4, 8)],
                                   sets, 20)
        rows = [{"kernel": "generated", "ms": best["ms"], "params": best["params"]}]
        for bn, w, split in CONFIGS:
            if split == 1 and n // bn < 132:
                continue
            ys = [torch.empty(1, n, device="cuda", dtype=torch.bfloat16) for _ in sets]
            ms = sb.time_fns([lambda t=t, y=y, c=(bn, w, split): run(t, y, *c) for t, y in zip(sets, ys)], 20)
            err = oracle_error(sets[0], run(sets[0], ys[0], bn, w, split))
            rows.append({"kernel": "gemv", "ms": ms, "block_n": bn, "warps": w, "split": split, "rel_err": err})
        for r in rows:
            r.update(shape=sizes, cublas_ms=cub, ratio_vs_cublas=cub / r["ms"])
            print(f"N={n} K={k} {r['kernel']:9s} {r['ms'] * 1e3:7.1f} us  x{cub / r['ms']:.2f} cuBLAS  "
                  f"{ {key: r[key] for key in ('params', 'block_n', 'warps', 'split', 'rel_err') if key in r} }", flush=True)
        report["rows"] += rows
    report["copy_GBs"] = sb.copy_gbs()
    sb.write_json(Path(os.environ.get("OUT", "/tmp")) / "lowbit-gemv-exp.json", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
