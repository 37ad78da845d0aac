"""How fast can any kernel read the packed weights of a decode (M = 1) low-bit GEMM? The speed-of-light
target (issue 16) divides their bytes by the HBM copy bandwidth, which leaves out a launch's ramp and
tail; at 4096² the 4-bit weights are 8 MB, a few microseconds. This times a read-only floor beside the
generated register-operand kernel on the same rotated inputs:
  - `floor`: each program streams one K share of a column block of the words ([words, BLOCK_N] tiles,
    the loop pipelined by Triton), folds them with XOR and stores one word a column (no meet);
  - `floor-meet`: the same, its shares meeting through an fp32 workspace and an arrival counter as the
    generated split-K kernels do (the last share to arrive reads the others);
  - the generated kernel (REGISTER_OPERAND: true, mma.sync) over a grid of column blocks, warps,
    shares and stages.
Prints each shape's fastest of each against the speed of light; writes OUT/decode-floor[TAG]-<device>.json.
Environment: SHAPES (bits x N x K, comma-separated), FLOORS=0 (the generated kernel only), ROWS (M),
POINTS=wgmma (the wgmma kernel's decode tiles instead of mma.sync points), TAG (the file's suffix).
`--profile` instead launches the fastest floor and generated points of 8192² a few times each, for
`ncu --kernel-name regex:'floor|gluon'` to read.

  python bench/experiments/decode_floor.py --out DIR
"""

from __future__ import annotations

import argparse
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

FLOORS = os.environ.get("FLOORS", "1") == "1"  # 0: the generated kernel only
ROWS = int(os.environ.get("ROWS", "1"))  # M (the floors read the same words at any M)
SHAPES = [tuple(int(v) for v in s.split("x")) for s in os.environ.get(
    "SHAPES", "4x4096x4096,4x8192x8192,2x4096x4096,2x8192x8192").split(",")]  # bits x N x K


@triton.jit
def floor_kernel(w_ptr, out_ptr, ws_ptr, cnt_ptr, N, WORDS, s_w, TW: tl.constexpr, BLOCK_N: tl.constexpr,
                 SPLIT: tl.constexpr, MEET: tl.constexpr, STAGES: tl.constexpr):
    pid_n = tl.program_id(0)
    share = tl.program_id(1)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.arange(0, TW)
    tiles = tl.cdiv(WORDS, TW)
    per = tl.cdiv(tiles, SPLIT)
    lo = share * per
    hi = tl.minimum(lo + per, tiles)
    acc = tl.zeros((TW, BLOCK_N), tl.int32)
    for t in tl.range(lo, hi, num_stages=STAGES):
        ptrs = w_ptr + (t * TW + rows)[:, None].to(tl.int64) * s_w + cols[None, :]
        acc ^= tl.load(ptrs)
    folded = tl.xor_sum(acc, 0)
    if MEET:
        tl.store(ws_ptr + share * N + cols, folded.to(tl.float32))
        tl.debug_barrier()
        arrived = tl.atomic_add(cnt_ptr + pid_n, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT - 1:
            total = tl.zeros((BLOCK_N,), tl.float32)
            for other in tl.static_range(SPLIT):
                total += tl.load(ws_ptr + other * N + cols, cache_modifier=".cg")
            tl.atomic_xchg(cnt_ptr + pid_n, 0, sem="relaxed", scope="gpu")
            tl.store(out_ptr + cols, total.to(tl.int32))
    else:
        tl.store(out_ptr + share * N + cols, folded)


def floor_calls(sets, n: int, block_n: int, split: int, warps: int, stages: int, meet: bool):
    import torch

    words = sets[0]["W"].shape[0]
    out = torch.empty(split, n, dtype=torch.int32, device="cuda")
    ws = torch.empty(split, n, dtype=torch.float32, device="cuda")
    cnt = torch.zeros(n // block_n, dtype=torch.int32, device="cuda")
    grid = (n // block_n, split)

    def call(w):
        floor_kernel[grid](w, out, ws, cnt, n, words, w.stride(0), TW=16, BLOCK_N=block_n, SPLIT=split,
                           MEET=meet, STAGES=stages, num_warps=warps)
    return [lambda w=s["W"]: call(w) for s in sets]


FLOOR_POINTS = [(bn, sp, w, st) for bn, w in ((64, 4), (128, 4), (256, 4), (256, 8)) for sp in (4, 8, 16)
                for st in (2, 4)]


def ours_points(bits: int) -> list[dict]:
    if os.environ.get("POINTS") == "wgmma":  # the wgmma kernel's decode tiles (bench/lowbit.py's)
        return lowbit.decode_wgmma(1 if ROWS <= 8 else 16)
    return [lowbit.register_operand(1 if ROWS <= 8 else 16, bn, w, sp, stages=st)
            for bn, w in ((64, 4), (128, 4), (128, 8), (256, 4), (256, 8)) for sp in (2, 4, 8) for st in (2, 4)]


def main() -> int:
    import torch

    from tilesched.backends.cuda.kernel import Kernel

    p = argparse.ArgumentParser()
    p.add_argument("--out", default=".")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--profile", action="store_true")
    a = p.parse_args()
    dev = torch.cuda.get_device_name()
    if a.profile:
        return profile()
    report = sb.report_header(dev, __doc__.split("\n")[0])
    hbm = sb.copy_gbs()
    report["copy_GBs"] = hbm
    for bits, n, k in SHAPES:
        sizes = {"M": ROWS, "N": n, "K": k}
        spec = sb.CONFIGS / f"{lowbit.BITS_SPECS[bits]}.yaml"
        program = load_program(spec)
        kernel = Kernel(program)
        nbytes = lowbit.weight_bytes(bits, ROWS, n, k)
        sets = [lowbit.make_inputs(bits, ROWS, n, k, "cuda") for _ in range(sb.n_sets(nbytes))]
        sol = nbytes / (hbm * 1e9) * 1e3
        rows = []
        for meet in (False, True) if FLOORS else ():
            for bn, sp, w, st in FLOOR_POINTS:
                ms = sb.time_fns(floor_calls(sets, n, bn, sp, w, st, meet), a.repeats)
                rows.append({"kernel": "floor-meet" if meet else "floor", "block_n": bn, "split": sp, "warps": w,
                             "stages": st, "ms": ms})
        points = ours_points(bits)
        sb.warm_compile(spec, sizes, points, program, 16)
        _, table, _ = sb.search(kernel, program, sizes, points, sets, a.repeats)
        rows += [{"kernel": "generated", "params": r["params"], "ms": r["ms"]} for r in table if "ms" in r]
        for r in rows:
            r.update(shape={"bits": bits, **sizes}, sol_ms=sol, of_sol=sol / r["ms"], GBs=nbytes / (r["ms"] * 1e-3) / 1e9)
        report["rows"] += rows
        for name in ("floor", "floor-meet", "generated") if FLOORS else ("generated",):
            best = min((r for r in rows if r["kernel"] == name), key=lambda r: r["ms"])
            print(f"{bits}-bit N={n} K={k} {name:10s} {best['ms'] * 1e3:6.2f} us  {best['of_sol']:.2f} of SOL "
                  f"({sol * 1e3:.2f} us)  {best.get('params') or {x: best[x] for x in ('block_n', 'split', 'warps', 'stages')}}",
                  flush=True)
    sb.write_json(Path(a.out) / f"decode-floor{os.environ.get('TAG', '')}-{sb.slug(dev)}.json", report)
    return 0


def profile() -> int:
    import torch

    from tilesched.backends.cuda.kernel import Kernel

    n = k = 8192
    for bits in (4,):
        ins = lowbit.make_inputs(bits, 1, n, k, "cuda")
        for bn, sp, w, st, meet in [tuple(int(v) for v in s.split(":")) for s in
                                    os.environ.get("PROFILE_FLOORS", "128:8:4:4:1").split(",")]:
            for call in floor_calls([ins], n, bn, sp, w, st, bool(meet)) * 3:
                call()
        kernel = Kernel(load_program(sb.CONFIGS / f"{lowbit.BITS_SPECS[bits]}.yaml"))
        for s in os.environ.get("OURS", "128:4:8:2").split(","):
            bn, w, sp, st = (int(v) for v in s.split(":"))
            for _ in range(3):
                kernel(params=lowbit.register_operand(1, bn, w, sp, stages=st), **ins)
        torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
