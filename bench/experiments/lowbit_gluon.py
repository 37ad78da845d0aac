"""Experiment behind bench/results/lowbit-gluon-*.json: can a kernel written with explicit layouts
(Triton's Gluon dialect) reach the low-bit decode targets that the generated Triton kernels miss?

The kernel (4-bit weights, group 128, M <= 16) computes Y^T = W^T X^T with Ampere-style mma.sync,
the dequantised weights in the *first* operand, which mma.sync takes from registers, so they never
pass through shared memory:
  - a thread loads exactly the int32 words whose 8 nibbles its mma operand fragment holds: the
    operand layout with k_width 8 gives each thread 8 consecutive reduction indices, and the word
    layout is that layout with K divided by 8 (built from its linear bases below);
  - two nibbles become two bf16 values with one shift and one AND/OR: (word >> 4j) & 0x000F000F
    | 0x43004300 holds 128 + q_j and 128 + q_(j+4) as a bf16 pair; the order of K inside a word is
    free because X's tile is permuted the same way (a register permutation before the convert);
  - scale and zero point are factored out of the tile's sum: x . (s (q - z)) = s (x . (128 + q)
    - (128 + z) sum(x)), so the MMA sees the raw 128 + q and the tile's result is fixed once per
    column and row;
  - split-K shares meet in an fp32 workspace, the last to arrive finishes the tile (as the
    generated kernels do).

`python bench/experiments/lowbit_gluon.py sass` compiles it for sm_90 on a machine without a GPU
and counts the instructions of its loop; on a GPU, `python bench/experiments/lowbit_gluon.py
--out DIR` checks it against the semantics oracle and times it beside bf16 cuBLAS and the
generated kernel's lock-file point."""

from __future__ import annotations

import functools
import itertools
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from triton.experimental import gluon  # noqa: E402
from triton.experimental.gluon import language as ttgl  # noqa: E402
from triton.experimental.gluon.language.nvidia.ampere import async_copy, mma_v2  # noqa: E402

from tilesched.backends.cuda.gluon_layouts import pairs_layout  # noqa: E402  (as the generated kernels use it)

GROUP = 128
DEPTHS = [int(v) for v in os.environ.get("DEPTHS", "1,2").split(",")]  # words prefetched this many tiles ahead
RINGS = [int(v) for v in os.environ.get("RINGS", "").split(",") if v]  # cp.async ring depths to try (RINGS=3,4)
WINNERS = [(128, 4, 8), (128, 8, 8), (64, 4, 8), (128, 4, 4), (128, 8, 4), (64, 4, 4), (256, 8, 2), (128, 8, 1),
           (128, 4, 2), (256, 8, 4)]
_barrier = getattr(ttgl, "barrier", None) or ttgl.thread_barrier  # renamed after Triton 3.6
_async_load = getattr(async_copy, "async_load", None) or async_copy.async_copy_global_to_shared  # likewise


@gluon.jit
def _load(ptrs, mask, EVEN: ttgl.constexpr):
    if EVEN:
        return ttgl.load(ptrs)
    else:
        return ttgl.load(ptrs, mask=mask, other=0)


@gluon.jit
def w4_mma_kernel(x_ptr, w_ptr, z_ptr, s_ptr, y_ptr, ws_ptr, cnt_ptr, M, N, K, sxm, sym,
                  BN: ttgl.constexpr, BK: ttgl.constexpr, MP: ttgl.constexpr, SPLIT: ttgl.constexpr,
                  PAIRS: ttgl.constexpr, EVEN_N: ttgl.constexpr,
                  DEPTH: ttgl.constexpr, XSMEM: ttgl.constexpr, MAXT: ttgl.constexpr, RING: ttgl.constexpr):
    NW: ttgl.constexpr = ttgl.num_warps()
    mma: ttgl.constexpr = ttgl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[NW, 1], instr_shape=[16, 8])
    opa: ttgl.constexpr = ttgl.DotOperandLayout(0, mma, k_width=8)
    opb: ttgl.constexpr = ttgl.DotOperandLayout(1, mma, k_width=8)
    WORDS: ttgl.constexpr = ttgl.SliceLayout(2, PAIRS)
    xl: ttgl.constexpr = ttgl.BlockedLayout([1, 8], [2, 16], [NW, 1], [1, 0])
    pid_n = ttgl.program_id(0)
    share = ttgl.program_id(1)
    n0 = pid_n * BN
    tiles = K // BK
    per = (tiles + SPLIT - 1) // SPLIT
    lo = share * per
    hi = ttgl.minimum(lo + per, tiles)

    rn_w = n0 + ttgl.arange(0, BN, layout=ttgl.SliceLayout(1, WORDS))
    rkw = ttgl.arange(0, BK // 8, layout=ttgl.SliceLayout(0, WORDS))
    w_ptrs = w_ptr + rkw[None, :].to(ttgl.int64) * N + rn_w[:, None]
    w_mask = rn_w[:, None] < N
    sh = ttgl.arange(0, 4, layout=ttgl.SliceLayout(0, ttgl.SliceLayout(1, PAIRS))) * 4
    shifts = ttgl.expand_dims(ttgl.expand_dims(sh, 0), 1)
    xm = ttgl.arange(0, MP, layout=ttgl.SliceLayout(1, xl))
    xk = ttgl.arange(0, BK, layout=ttgl.SliceLayout(0, xl))
    x_ptrs = x_ptr + xm[:, None] * sxm + xk[None, :]
    x_mask = xm[:, None] < M
    rn = n0 + ttgl.arange(0, BN, layout=ttgl.SliceLayout(1, mma))
    rm = ttgl.arange(0, MP, layout=ttgl.SliceLayout(0, mma))
    n_ok = rn < N
    zeros = ttgl.zeros([BN, MP], ttgl.float32, mma)
    acc = zeros
    if XSMEM:  # the share's X tiles, permuted, and their row sums staged once for all warps
        xs_layout: ttgl.constexpr = ttgl.SwizzledSharedLayout(vec=8, per_phase=1, max_phase=8, order=[0, 1])
        x_smem = ttgl.allocate_shared_memory(ttgl.bfloat16, [MAXT, BK, MP], xs_layout)
        sx_smem = ttgl.allocate_shared_memory(ttgl.float32, [MAXT, MP],
                                              ttgl.SwizzledSharedLayout(1, 1, 1, order=[0]))
        for it in range(lo, hi):
            xt = ttgl.load(x_ptrs + it * BK, mask=x_mask, other=0.0)
            sx_smem.index(it - lo).store(ttgl.sum(xt.to(ttgl.float32), axis=1))
            xp = ttgl.reshape(ttgl.permute(ttgl.reshape(xt, [MP, BK // 8, 2, 4]), (0, 1, 3, 2)), [MP, BK])
            x_smem.index(it - lo).store(ttgl.permute(xp, (1, 0)))
        _barrier()

    # the words of the next DEPTH tiles are in flight while this one is used (past the share's end
    # the last tile is loaded again rather than masked: no predicates, no zero fill)
    # RING > 0: the words go through a ring of RING tiles in shared memory by cp.async (no registers
    # held for the tiles in flight), read back in the operand's word layout
    if RING > 0:
        cp_l: ttgl.constexpr = ttgl.BlockedLayout([4, 1], [8, 4], [NW, 1], [0, 1])
        ring_l: ttgl.constexpr = ttgl.SwizzledSharedLayout(vec=8, per_phase=1, max_phase=4, order=[0, 1])
        ring = ttgl.allocate_shared_memory(ttgl.int32, [RING, BN, BK // 8], ring_l)
        cn = n0 + ttgl.arange(0, BN, layout=ttgl.SliceLayout(1, cp_l))
        ck = ttgl.arange(0, BK // 8, layout=ttgl.SliceLayout(0, cp_l))
        cp_ptrs = w_ptr + ck[None, :].to(ttgl.int64) * N + cn[:, None]
        for st in ttgl.static_range(RING - 1):
            _async_load(ring.index(st), cp_ptrs + (ttgl.minimum(lo + st, hi - 1) * (BK // 8)).to(ttgl.int64) * N)
            async_copy.commit_group()
        words = ttgl.zeros([BN, BK // 8], ttgl.int32, WORDS)
        ahead = words
    else:
        words = _load(w_ptrs + (lo * (BK // 8)).to(ttgl.int64) * N, w_mask, EVEN_N)
        ahead = _load(w_ptrs + (ttgl.minimum(lo + 1, hi - 1) * (BK // 8)).to(ttgl.int64) * N, w_mask, EVEN_N)
    for it in range(lo, hi):
        if RING > 0:
            async_copy.wait_group(RING - 2)
            _barrier()
            words = ring.index((it - lo) % RING).load(WORDS)
            _async_load(ring.index((it - lo + RING - 1) % RING),
                        cp_ptrs + (ttgl.minimum(it + RING - 1, hi - 1) * (BK // 8)).to(ttgl.int64) * N)
            async_copy.commit_group()
            nxt = words
        else:
            nxt = _load(w_ptrs + (ttgl.minimum(it + DEPTH, hi - 1) * (BK // 8)).to(ttgl.int64) * N, w_mask, EVEN_N)
        k0 = it * BK
        if XSMEM:
            xb = x_smem.index(it - lo).load(opb)
            sx = sx_smem.index(it - lo).load(ttgl.SliceLayout(0, mma))
        else:
            xt = ttgl.load(x_ptrs + k0, mask=x_mask, other=0.0)
            sx = ttgl.convert_layout(ttgl.sum(xt.to(ttgl.float32), axis=1), ttgl.SliceLayout(0, mma))
            # K inside a word: nibble j holds k = 8w + j; the pair register (j, j + 4) takes mma
            # indices 8w + 2j, 8w + 2j + 1, so X's tile is permuted from [w, half, j] to [w, j, half]
            xp = ttgl.reshape(ttgl.permute(ttgl.reshape(xt, [MP, BK // 8, 2, 4]), (0, 1, 3, 2)), [MP, BK])
            xb = ttgl.convert_layout(ttgl.permute(xp, (1, 0)), opb)
        h = ((ttgl.expand_dims(words, 2) >> shifts) & 0x000F000F) | 0x43004300
        q_lo, q_hi = ttgl.inline_asm_elementwise("mov.b32 {$0, $1}, $2;", "=h,=h,r", [h],
                                                 dtype=(ttgl.bfloat16, ttgl.bfloat16), is_pure=True, pack=1)
        a = ttgl.convert_layout(ttgl.reshape(ttgl.join(q_lo, q_hi), [BN, BK]), opa, assert_trivial=True)
        t = mma_v2(a, xb, zeros)
        g = k0 // 128
        s = _load(s_ptr + g * N + rn, n_ok, EVEN_N).to(ttgl.float32)
        zw = _load(z_ptr + g * ((N + 7) // 8) + rn // 8, n_ok, EVEN_N)
        z = ((zw >> ((rn % 8) * 4)) & 0xF).to(ttgl.float32)
        acc += s[:, None] * (t - (z + 128.0)[:, None] * sx[None, :])
        if RING > 0:
            pass
        elif DEPTH == 1:
            words = nxt
        else:
            words = ahead
            ahead = nxt

    y_ptrs = y_ptr + rm[None, :] * sym + rn[:, None]
    y_mask = (rm[None, :] < M) & n_ok[:, None]
    if SPLIT > 1:
        ws = ws_ptr + rm[None, :] * N + rn[:, None]
        ttgl.store(ws + share.to(ttgl.int64) * M * N, acc, mask=y_mask)
        _barrier()
        arrived = ttgl.atomic_add(cnt_ptr + pid_n, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT - 1:
            acc = ttgl.load(ws, mask=y_mask, other=0.0, cache_modifier=".cg")
            for other in ttgl.static_range(1, SPLIT):
                acc += ttgl.load(ws + other * M * N, mask=y_mask, other=0.0, cache_modifier=".cg")
            ttgl.atomic_xchg(cnt_ptr + pid_n, 0, sem="relaxed", scope="gpu")
            ttgl.store(y_ptrs, acc.to(ttgl.bfloat16), mask=y_mask)
    else:
        ttgl.store(y_ptrs, acc.to(ttgl.bfloat16), mask=y_mask)


def max_tiles(k: int, split: int) -> int:
    """K tiles in one split share, rounded up to a power of two (a shared-memory extent)."""
    t = -(-(k // GROUP) // split)
    return 1 << (t - 1).bit_length()


def x_smem_bytes(k: int, split: int, mp: int) -> int:
    return max_tiles(k, split) * GROUP * mp * 2 + max_tiles(k, split) * mp * 4


def launch(x, w, z, s, y, ws, cnt, bn: int, split: int, warps: int = 4, depth: int = 1, xsmem: bool = False,
           ring: int = 0):
    m, k = x.shape
    n = y.shape[1]
    assert k % GROUP == 0 and m <= 16
    pairs = pairs_layout(bn, GROUP, warps)
    w4_mma_kernel[(-(-n // bn), split)](x, w, z, s, y, ws, cnt, m, n, k, x.stride(0), y.stride(0),
                                       BN=bn, BK=GROUP, MP=8 if m <= 8 else 16, SPLIT=split, PAIRS=pairs,
                                       EVEN_N=n % bn == 0, DEPTH=depth,
                                       XSMEM=xsmem, MAXT=max_tiles(k, split), RING=ring, num_warps=warps)


def sass(bn: int = 128, mp: int = 16, warps: int = 4, split: int = 4, depth: int = 1, xsmem: int = 0,
         ring: int = 0) -> str:
    """Compile for sm_90 without a GPU; return the SASS (needs nvdisasm from Triton's bundle)."""
    import subprocess
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    pairs = pairs_layout(bn, GROUP, warps)
    names = ["x_ptr", "w_ptr", "z_ptr", "s_ptr", "y_ptr", "ws_ptr", "cnt_ptr", "M", "N", "K", "sxm", "sym"]
    types = ["*bf16", "*i32", "*i32", "*bf16", "*bf16", "*fp32", "*i32", "i32", "i32", "i32", "i32", "i32"]
    consts = {"BN": bn, "BK": GROUP, "MP": mp, "SPLIT": split, "PAIRS": pairs, "EVEN_N": True, "DEPTH": depth,
              "XSMEM": bool(xsmem), "MAXT": max_tiles(8192, split), "RING": ring}
    sig = dict(zip(names, types)) | {c: "constexpr" for c in consts}
    aligned = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n != "M"}  # as launches specialise
    src = GluonASTSource(w4_mma_kernel, signature=sig, constexprs=consts, attrs=aligned)
    built = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(built.asm["cubin"])
        f.flush()
        out = subprocess.run([str(nvdisasm), "-c", f.name], capture_output=True, text=True, check=True).stdout
    return out + f"\n// registers {built.metadata.num_regs if hasattr(built.metadata, 'num_regs') else '?'}"


def generated_params(m: int, n: int, k: int) -> dict | None:
    """The generated kernel's point for this shape in the last ops rows (its lock-file winner)."""
    for path in sorted((ROOT / "bench" / "results").glob("ops-nvidia-h100*.json")):
        for row in json.loads(path.read_text())["rows"]:
            if row["op"] == "w4a16_gemm" and row["shape"] == {"M": m, "N": n, "K": k} and "params" in row:
                return row["params"]
    return None


def main() -> int:
    """On a GPU: per shape (M = 1 and 16 at the issue's N, K), every candidate (BN, split, warps)
    timed beside bf16 cuBLAS, torch's int4 kernel and the generated kernel at its lock point, all in
    this run; each candidate's output checked against the semantics oracle first."""
    import lowbit
    import spec_bench as sb
    import torch

    from tilesched import load_program
    from tilesched.backends.cuda.io import check_outputs, poisoned
    from tilesched.backends.cuda.kernel import Kernel
    from tilesched.semantics import run_spec
    from tilesched.semantics.arrays import TorchOps

    program = load_program(sb.CONFIGS / "w4a16_gemm.yaml")
    generated = Kernel(program)
    report = sb.report_header(torch.cuda.get_device_name(), "4-bit weight GEMM, hand-written Gluon kernel "
                              "(mma.sync, dequantised weights as the register operand) vs bf16 cuBLAS, "
                              "torch int4 and the generated kernel")
    report["commit"] = os.popen(f"git -C {ROOT} rev-parse --short HEAD 2>/dev/null").read().strip()
    report["copy_GBs"] = copy = sb.copy_gbs()
    ms_list = [int(v) for v in os.environ.get("MS", "1,16").split(",")]
    tag = "lowbit-gluon-ring" if RINGS else "lowbit-gluon"
    out = Path(os.environ.get("OUT", "/tmp")) / f"{tag}-{sb.slug(torch.cuda.get_device_name())}.json"
    for n, k in lowbit.NK:
        for m in ms_list:
            sizes = {"M": m, "N": n, "K": k}
            sets, cub = lowbit.sets_and_cublas(4, m, n, k)
            b = sb.legal(program, sizes, lowbit.cfg(1 if m < 16 else 16, 64, 128, 4, 4))
            ins = sets[0]
            want = run_spec(b, {t: (v.double() if v.is_floating_point() else v) for t, v in ins.items()},
                            xp=TorchOps(ins["X"].device))
            rows = []
            mp = 8 if m <= 8 else 16
            if RINGS:  # the cp.async ring beside register prefetching, at the points that won before
                grid = [(bn, w, sp, 1, False, r) for bn, w, sp in WINNERS for r in [0] + RINGS]
            else:
                grid = [(*c, 0) for c in itertools.product((64, 128, 256), (4, 8), (1, 2, 4, 8), DEPTHS, (False, True))]
            for bn, warps, split, depth, xsmem, ring in grid:
                if bn < 16 * warps or (bn == 256 and warps == 4) or k // GROUP < split:
                    continue
                if xsmem and x_smem_bytes(k, split, mp) > 100 << 10:
                    continue
                ws = torch.empty(split, m, n, device="cuda", dtype=torch.float32)
                cnt = torch.zeros(-(-n // bn), device="cuda", dtype=torch.int32)
                outs = {"Y": poisoned(program.tensor("Y"), b.sizes, torch.device("cuda"))}
                try:
                    launch(ins["X"], ins["W"], ins["Z"], ins["S"], outs["Y"], ws, cnt, bn, split, warps, depth,
                           xsmem, ring)
                    torch.cuda.synchronize()
                except Exception as exc:  # noqa: BLE001 - a candidate that does not build is a row
                    rows.append({"bn": bn, "warps": warps, "split": split, "depth": depth, "xsmem": xsmem, "ring": ring, "error": str(exc)[-300:]})
                    print(f"bn={bn} w={warps} split={split} depth={depth}: {str(exc)[-200:]}", flush=True)
                    continue
                bad = next((v for v in check_outputs(b, outs, want) if not v.ok), None)
                err = max(v.rel_error for v in check_outputs(b, outs, want)) if bad is None else None
                fns = [functools.partial(launch, t["X"], t["W"], t["Z"], t["S"], outs["Y"], ws, cnt, bn,
                                         split, warps, depth, xsmem, ring) for t in sets]
                ms = sb.time_fns(fns, 20)
                rows.append({"bn": bn, "warps": warps, "split": split, "depth": depth, "xsmem": xsmem, "ring": ring, "ms": ms, "rel_err": err,
                             "check": bad.why if bad else "ok"})
                print(f"M={m} N={n} K={k} bn={bn} w={warps} split={split} depth={depth} xsmem={xsmem:d} ring={ring}: {ms * 1e3:.1f} us "
                      f"x{cub / ms:.2f} cuBLAS {'ok' if bad is None else bad.why}", flush=True)
            good = [r for r in rows if r.get("check") == "ok"]
            best = min(good, key=lambda r: r["ms"]) if good else None
            gen_p = generated_params(m, n, k)
            gen_ms = sb.time_kernel(generated, sb.legal(program, sizes, gen_p), sets, 20) if gen_p else None
            fns, why = lowbit.int4pack_baseline(m, n, k, "cuda")
            i4 = sb.time_fns([functools.partial(fns[0], t["X"]) for t in sets[:2]], 20) if fns else None
            sol = lowbit.weight_bytes(4, m, n, k) / (copy * 1e9) * 1e3
            row = {"shape": sizes, "best": best, "cublas_ms": cub, "int4pack_ms": i4, "int4pack_error": why,
                   "generated_ms": gen_ms, "generated_params": gen_p, "sol_ms": sol, "candidates": rows}
            if best:
                row |= {"x_cublas": cub / best["ms"], "of_sol": sol / best["ms"],
                        "x_generated": gen_ms / best["ms"] if gen_ms else None,
                        "x_int4pack": i4 / best["ms"] if i4 else None}
                print(f"== M={m} N={n} K={k}: best {best['ms'] * 1e3:.1f} us x{cub / best['ms']:.2f} cuBLAS, "
                      f"{sol / best['ms']:.2f} of SOL, generated {gen_ms and gen_ms * 1e3:.1f} us, "
                      f"int4pack {i4 and i4 * 1e3:.1f} us", flush=True)
            report["rows"].append(row)
            sb.write_json(out, report)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["sass"]:
        text = sass(*[int(a) for a in sys.argv[2:]])
        Path(os.environ.get("SASS_OUT", "/tmp/w4_gluon.sass")).write_text(text)
        print(len([ln for ln in text.splitlines() if ln.strip().startswith("/*")]), "instructions")
        sys.exit(0)
    sys.exit(main())
