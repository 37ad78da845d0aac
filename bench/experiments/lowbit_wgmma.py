"""Experiment behind bench/results/lowbit-wgmma-*.json: can a fused low-bit GEMM reach 0.9x bf16
cuBLAS at M >= 1024 on Hopper when the dequantised weights are wgmma's *register* operand? (Yes:
the renderer now produces this kernel from the specs, tilesched/backends/cuda/gluon_wgmma.py; this
script keeps the variants it was measured against.)

Y^T = W^T X^T, so the weights (the 4- or 2-bit words as the spec stores them, packed along K) are
the first operand, which wgmma reads from registers, and X is the second, read from shared memory:
  - a loader warp TMA-loads X's tile [BM, BK] and (W_TMA) the two halves of the tile's words
    [BK / per, 64] into a ring of STAGES slots (`ready` barriers with the bytes expected, `empty`
    with one arrival per consumer); without W_TMA the consumers load their words from global
    memory one tile ahead;
  - two consumer warpgroups own 64 weight columns each: a thread reads the words whose values its
    operand fragment holds (k_width 2: indices 2t, 2t + 1 of every 8), shifts the pair out of its
    word and ORs it into 128's mantissa (a bf16 pair 128 + v), then subtracts 128 + z and
    multiplies by s in packed bf16 (sub.bf16x2, mul.bf16x2: exact, then one rounding, as the
    spec's bf16 weight tile holds it), and issues the wgmma with the accumulator in registers
    across the whole K loop;
  - each warpgroup waits for its own MMA before dequantising the next tile: the next tile
    dequantised while the MMA runs (wgmma wait 1) gave garbage on the device, because ptxas
    reuses the operand's registers while the MMA still reads them, and two tiles a step in
    distinct registers made ptxas serialise every MMA (C7512); so the overlap comes from the other
    warpgroup, and PINGPONG makes the two take turns on the tensor cores (mbarriers `turn`);
  - the K loop runs at least once (k_tiles = max(., 1)): with a zero-trip path ptxas serialises
    the MMAs (C7515, the path's moves define the accumulator);
  - the scale and zero point of a tile's group load one tile ahead, as plain loads.
TMA'd word tiles need 8 rows (BK >= 64 for 4 bits, 128 for 2): shorter ones, and unswizzled ones,
read back wrong on the device (launch_args refuses them).

`python bench/experiments/lowbit_wgmma.py sass BITS BM BK STAGES W_TMA PINGPONG` compiles it for
sm_90 without a GPU (`SASS_OUT`); on a GPU, `python bench/experiments/lowbit_wgmma.py` checks every
point against the semantics oracle and times it beside bf16 cuBLAS in turns (`OUT`, `MS`, `BITS`,
`POINTS`)."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from triton.experimental import gluon  # noqa: E402
from triton.experimental.gluon import language as ttgl  # noqa: E402
from triton.experimental.gluon.language.nvidia import hopper  # noqa: E402
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma  # noqa: E402

GROUP = 128
COLS = 64  # weight columns per consumer warpgroup
HALF = ttgl.constexpr(COLS)
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared  # Triton 3.6's name


@gluon.jit
def _coefficients(s_ptr, z_ptr, rows, row_ok, t, k_tiles, N, BK: ttgl.constexpr, BITS: ttgl.constexpr):
    """The scale and zero point of tile t's group for the warpgroup's columns (raw: the zero's word)."""
    PER: ttgl.constexpr = 32 // BITS
    g = ttgl.minimum(t, k_tiles - 1) * BK // 128
    s = ttgl.load(s_ptr + g * N + rows, mask=row_ok, other=0.0)
    zw = ttgl.load(z_ptr + g * ((N + PER - 1) // PER) + ttgl.where(row_ok, rows // PER, 0), mask=row_ok, other=0)
    return s, zw


@gluon.jit
def _dequantised(words, rows, s, zw, BK: ttgl.constexpr, BITS: ttgl.constexpr, PAIRS3: ttgl.constexpr,
                 a_l: ttgl.constexpr):
    """A tile's weights [64, BK] in the register operand's layout from its words [64, BK / per]."""
    PPW: ttgl.constexpr = 16 // BITS  # value pairs per word
    PER: ttgl.constexpr = 32 // BITS  # values per word
    LOW: ttgl.constexpr = (1 << BITS) - 1
    j = ttgl.arange(0, PPW, layout=ttgl.SliceLayout(0, ttgl.SliceLayout(1, PAIRS3)))
    shifts = ttgl.expand_dims(ttgl.expand_dims(j * (2 * BITS), 0), 1)
    c = (((zw >> ((rows % PER) * BITS)) & LOW) + 128).to(ttgl.float32).to(ttgl.bfloat16)
    cc = ttgl.inline_asm_elementwise("mov.b32 $0, {$1, $1};", "=r,h", [c], dtype=ttgl.int32, is_pure=True, pack=1)
    ss = ttgl.inline_asm_elementwise("mov.b32 $0, {$1, $1};", "=r,h", [s], dtype=ttgl.int32, is_pure=True, pack=1)
    cc3 = ttgl.expand_dims(ttgl.expand_dims(cc, 1), 2)
    ss3 = ttgl.expand_dims(ttgl.expand_dims(ss, 1), 2)
    v = ttgl.expand_dims(words, 2) >> shifts
    pairs = (v & LOW) | ((v << (16 - BITS)) & (LOW << 16)) | 0x43004300
    pairs, cc3 = ttgl.broadcast(pairs, cc3)
    pairs, ss3 = ttgl.broadcast(pairs, ss3)
    lo, hi = ttgl.inline_asm_elementwise(
        "{ .reg .b32 t; sub.rn.bf16x2 t, $2, $3; mul.rn.bf16x2 t, t, $4; mov.b32 {$0, $1}, t; }",
        "=h,=h,r,r,r", [pairs, cc3, ss3], dtype=(ttgl.bfloat16, ttgl.bfloat16), is_pure=True, pack=1)
    return ttgl.convert_layout(ttgl.reshape(ttgl.join(lo, hi), [HALF, BK]), a_l, assert_trivial=True)


@gluon.jit
def _words(w_ptr, rows, wc, t, k_tiles, N, WPT: ttgl.constexpr):
    """Tile t's words [64, WPT] (past the last tile the last again), straight from global memory."""
    r = ttgl.minimum(t, k_tiles - 1) * WPT + wc
    ptrs = w_ptr + ttgl.expand_dims(r.to(ttgl.int64) * N, 0) + ttgl.expand_dims(rows, 1)
    return ttgl.load(ptrs, mask=ttgl.expand_dims(rows < N, 1), other=0)


@gluon.jit
def _consumer(x_ring, w_ring, ready, empty, turn, w_ptr, s_ptr, z_ptr, y_ptr, M, N, sym, off_m, n0, wg, k_tiles,
              BM: ttgl.constexpr, BK: ttgl.constexpr, BITS: ttgl.constexpr, STAGES: ttgl.constexpr,
              PAIRS3: ttgl.constexpr, W_TMA: ttgl.constexpr, PINGPONG: ttgl.constexpr):
    WPT: ttgl.constexpr = BK * BITS // 32
    acc_l: ttgl.constexpr = ttgl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                        instr_shape=[16, BM, 16])
    a_l: ttgl.constexpr = ttgl.DotOperandLayout(operand_index=0, parent=acc_l, k_width=2)
    words_l: ttgl.constexpr = ttgl.SliceLayout(2, PAIRS3)
    rows = n0 + ttgl.arange(0, HALF, layout=ttgl.SliceLayout(1, words_l))
    wc = ttgl.arange(0, WPT, layout=ttgl.SliceLayout(0, words_l))
    row_ok = rows < N
    acc = ttgl.zeros([HALF, BM], ttgl.float32, acc_l)
    s_next, z_next = _coefficients(s_ptr, z_ptr, rows, row_ok, 0, k_tiles, N, BK, BITS)
    if not W_TMA:
        w_next = _words(w_ptr, rows, wc, 0, k_tiles, N, WPT)
    for t in range(k_tiles):
        s, zw = s_next, z_next
        # the next tile's coefficients (and words, without W_TMA) load while this tile is used
        s_next, z_next = _coefficients(s_ptr, z_ptr, rows, row_ok, t + 1, k_tiles, N, BK, BITS)
        slot = t % STAGES
        if W_TMA:  # the words came with X's tile (the loader's TMA), read back from shared memory
            mbarrier.wait(ready.index(slot), (t // STAGES) & 1)
            words = w_ring.index(slot * 2 + wg).permute((1, 0)).load(words_l)
        else:
            words = w_next
            w_next = _words(w_ptr, rows, wc, t + 1, k_tiles, N, WPT)
        a = _dequantised(words, rows, s, zw, BK, BITS, PAIRS3, a_l)
        if not W_TMA:
            mbarrier.wait(ready.index(slot), (t // STAGES) & 1)
        if PINGPONG:  # the warpgroups take turns on the tensor cores: one dequantises while the other multiplies
            mbarrier.wait(turn.index(wg), t & 1)
        tok = hopper.warpgroup_mma(a, x_ring.index(slot).permute((1, 0)), acc, use_acc=t > 0, is_async=True)
        if PINGPONG:
            mbarrier.arrive(turn.index(1 - wg), count=1)
        # this warpgroup waits for its MMA (the other warpgroup's dequantisation fills the gap): an
        # operand register rewritten while its MMA runs is undefined, and ptxas reuses them
        acc = hopper.warpgroup_mma_wait(0, deps=[tok])
        mbarrier.arrive(empty.index(slot), count=1)
    st_l: ttgl.constexpr = ttgl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
    out = ttgl.convert_layout(ttgl.permute(acc.to(ttgl.bfloat16), (1, 0)), st_l)
    om = off_m + ttgl.arange(0, BM, layout=ttgl.SliceLayout(1, st_l))
    on = n0 + ttgl.arange(0, HALF, layout=ttgl.SliceLayout(0, st_l))
    ptrs = y_ptr + ttgl.expand_dims(om.to(ttgl.int64) * sym, 1) + ttgl.expand_dims(on, 0)
    ttgl.store(ptrs, out, mask=ttgl.expand_dims(om < M, 1) & ttgl.expand_dims(on < N, 0))


@gluon.jit
def _loader(x_desc, w_desc, x_ring, w_ring, ready, empty, off_m, off_n, k_tiles, BK: ttgl.constexpr,
            WPT: ttgl.constexpr, STAGES: ttgl.constexpr, W_TMA: ttgl.constexpr):
    for t in range(k_tiles):
        slot = t % STAGES
        if t >= STAGES:
            mbarrier.wait(empty.index(slot), (t // STAGES - 1) & 1)
        if W_TMA:
            mbarrier.expect(ready.index(slot), x_desc.block_type.nbytes + 2 * w_desc.block_type.nbytes)
            _tma_load(w_desc, [t * WPT, off_n], ready.index(slot), w_ring.index(slot * 2))
            _tma_load(w_desc, [t * WPT, off_n + HALF], ready.index(slot), w_ring.index(slot * 2 + 1))
        else:
            mbarrier.expect(ready.index(slot), x_desc.block_type.nbytes)
        _tma_load(x_desc, [off_m, t * BK], ready.index(slot), x_ring.index(slot))


@gluon.jit
def lowbit_wgmma_kernel(x_desc, w_desc, w_ptr, s_ptr, z_ptr, y_ptr, M, N, K, sym, BM: ttgl.constexpr,
                        BK: ttgl.constexpr, BITS: ttgl.constexpr, STAGES: ttgl.constexpr,
                        PAIRS3: ttgl.constexpr, REGS: ttgl.constexpr, W_TMA: ttgl.constexpr,
                        PINGPONG: ttgl.constexpr):
    WPT: ttgl.constexpr = BK * BITS // 32
    pid = ttgl.program_id(0)
    tiles_m = (M + BM - 1) // BM
    pid_m = pid % tiles_m  # the row tiles of one column tile run together: its words read once from HBM
    pid_n = pid // tiles_m
    off_m = pid_m * BM
    off_n = pid_n * (2 * HALF)
    k_tiles = ttgl.maximum((K + BK - 1) // BK, 1)  # at least one: no zero-trip path (ptxas would serialize the MMAs)
    x_ring = ttgl.allocate_shared_memory(ttgl.bfloat16, [STAGES, BM, BK], x_desc.layout)
    w_ring = ttgl.allocate_shared_memory(ttgl.int32, [2 * STAGES, WPT, HALF], w_desc.layout)
    ready = ttgl.allocate_shared_memory(ttgl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = ttgl.allocate_shared_memory(ttgl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    turn = ttgl.allocate_shared_memory(ttgl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in ttgl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)
    for i in ttgl.static_range(2):
        mbarrier.init(turn.index(i), count=1)
    mbarrier.arrive(turn.index(0), count=1)  # the first warpgroup goes first
    ttgl.warp_specialize([
        (_consumer, (x_ring, w_ring, ready, empty, turn, w_ptr, s_ptr, z_ptr, y_ptr, M, N, sym, off_m, off_n, 0,
                     k_tiles, BM, BK, BITS, STAGES, PAIRS3, W_TMA, PINGPONG)),
        (_consumer, (x_ring, w_ring, ready, empty, turn, w_ptr, s_ptr, z_ptr, y_ptr, M, N, sym, off_m, off_n + HALF,
                     1, k_tiles, BM, BK, BITS, STAGES, PAIRS3, W_TMA, PINGPONG)),
        (_loader, (x_desc, w_desc, x_ring, w_ring, ready, empty, off_m, off_n, k_tiles, BK, WPT, STAGES, W_TMA)),
    ], [4, 1], [REGS, 24])


def launch_args(x, w, s, z, y, bits: int, bm: int, bk: int, stages: int, w_tma: bool = True,
                pingpong: bool = False, regs: int = 232):
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    from tilesched.backends.cuda.gluon_layouts import wgmma_pairs_layout

    m, k = x.shape
    n = y.shape[1]
    wpt = bk * bits // 32
    assert not w_tma or wpt >= 8, "TMA'd word tiles of fewer than 8 rows read back wrong (measured)"
    x_desc = TensorDescriptor.from_tensor(x, [bm, bk], ttgl.NVMMASharedLayout.get_default_for([bm, bk], ttgl.bfloat16))
    w_desc = TensorDescriptor.from_tensor(w, [wpt, COLS], ttgl.NVMMASharedLayout.get_default_for([wpt, COLS], ttgl.int32))
    grid = (-(-m // bm) * -(-n // (2 * COLS)),)
    pos = (x_desc, w_desc, w, s, z, y, m, n, k, y.stride(0))
    kw = {"BM": bm, "BK": bk, "BITS": bits, "STAGES": stages, "PAIRS3": wgmma_pairs_layout(bk, bits), "REGS": regs,
          "W_TMA": w_tma, "PINGPONG": pingpong, "num_warps": 4}
    return grid, pos, kw


def launch(x, w, s, z, y, bits, bm, bk, stages, w_tma=True, pingpong=False):
    grid, pos, kw = launch_args(x, w, s, z, y, bits, bm, bk, stages, w_tma, pingpong)
    lowbit_wgmma_kernel[grid](*pos, **kw)


def sass(bits: int = 4, bm: int = 256, bk: int = 64, stages: int = 3, w_tma: int = 1, pingpong: int = 0) -> str:
    import subprocess
    import tempfile

    import torch
    import triton

    from tilesched.backends.cuda import aot

    store = {}
    orig = triton.compile

    def capture(*a, **k):
        store["b"] = orig(*a, **k)
        return store["b"]

    triton.compile = capture
    m, n, k = 1024, 1024, 1024
    x = torch.empty(m, k, dtype=torch.bfloat16)
    w = torch.empty(k * bits // 32, n, dtype=torch.int32)
    s = torch.empty(k // GROUP, n, dtype=torch.bfloat16)
    z = torch.empty(k // GROUP, n * bits // 32, dtype=torch.int32)
    y = torch.empty(m, n, dtype=torch.bfloat16)
    _, pos, kw = launch_args(x, w, s, z, y, bits, bm, bk, stages, bool(w_tma), bool(pingpong))
    aot.compile_call_for_hopper(lowbit_wgmma_kernel, pos, kw)
    triton.compile = orig
    b = store["b"]
    bindir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(b.asm["cubin"])
        f.flush()
        out = subprocess.run([str(bindir / "nvdisasm"), "-c", f.name], capture_output=True, text=True, check=True).stdout
    Path(os.environ.get("SASS_OUT", "/tmp/lowbit_wgmma.sass") + ".ptx").write_text(b.asm["ptx"])
    return out + f"\n// shared {b.metadata.shared}"


SHAPES = [(4096, 4096), (8192, 8192), (28672, 8192)]  # (N, K), the issue's


def main() -> int:
    """On a GPU: per shape and M, every point (BMxBKxSTAGESxW_TMAxPINGPONG in `POINTS`) checked
    against the semantics oracle on two input sets (output poisoned before each) and timed beside
    bf16 cuBLAS (rotated weights) in turns."""
    import lowbit
    import spec_bench as sb
    import torch

    from tilesched import load_program
    from tilesched.backends.cuda.io import check_outputs, poisoned
    from tilesched.semantics import run_spec
    from tilesched.semantics.arrays import TorchOps

    bits_list = [int(v) for v in os.environ.get("BITS", "4,2").split(",")]
    ms = [int(v) for v in os.environ.get("MS", "1024").split(",")]
    points = [tuple(int(p) for p in v.split("x")) for v in os.environ.get(
        "POINTS", "256x64x4x1x0,256x64x4x1x1,256x128x2x1x0,256x128x2x1x1,256x128x3x1x1,256x128x2x0x1").split(",")]
    report = sb.report_header(torch.cuda.get_device_name(), "experiment: fused low-bit GEMM with the dequantised "
                              "weights as wgmma's register operand (Y^T = W^T X^T), TMA loader warp, two "
                              "consumer warpgroups, vs bf16 cuBLAS; bench/experiments/lowbit_wgmma.py")
    report["commit"] = os.popen(f"git -C {ROOT} rev-parse --short HEAD 2>/dev/null").read().strip()
    out = Path(os.environ.get("OUT", "/tmp")) / f"lowbit-wgmma-{sb.slug(torch.cuda.get_device_name())}.json"
    sb.warm_up_clocks()
    for bits in bits_list:
        program = load_program(sb.CONFIGS / f"w{bits}a16_gemm.yaml")
        for n, k in SHAPES:
            for m in ms:
                sizes = {"M": m, "N": n, "K": k}
                sets = [lowbit.make_inputs(bits, m, n, k, "cuda")
                        for _ in range(sb.n_sets(lowbit.weight_bytes(bits, m, n, k)))]
                cublas = lowbit.cublas_calls(sets, k, n, torch.bfloat16)
                b = sb.legal(program, sizes, lowbit.cfg(128, 128, 64, 8, 4))
                checked = {}
                for bm, bk, stages, w_tma, pingpong in points:
                    if w_tma and bk * bits // 32 < 8:
                        continue
                    y = poisoned(program.tensor("Y"), b.sizes, torch.device("cuda"))
                    try:
                        for i in (0, 1):  # two input sets (or one twice), the output poisoned before each
                            ins = sets[i % len(sets)]  # one set when the weights alone fill L2
                            y.copy_(poisoned(program.tensor("Y"), b.sizes, torch.device("cuda")))
                            launch(ins["X"], ins["W"], ins["S"], ins["Z"], y, bits, bm, bk, stages, bool(w_tma), bool(pingpong))
                            torch.cuda.synchronize()
                            want = run_spec(b, {t: (v.double() if v.is_floating_point() else v) for t, v in ins.items()},
                                            xp=TorchOps(y.device))
                            verdicts = check_outputs(b, {"Y": y}, want)
                            bad = next((v for v in verdicts if not v.ok), None)
                            if bad is not None:
                                break
                        err = max(v.rel_error for v in verdicts)
                    except Exception as exc:  # noqa: BLE001 - a point that does not build is a row
                        report["rows"].append({"bits": bits, "shape": sizes, "point": [bm, bk, stages, w_tma, pingpong],
                                               "error": str(exc)[-400:]})
                        print(f"w{bits} {sizes} {bm}x{bk}x{stages}x{w_tma}x{pingpong}: {str(exc)[-300:]}", flush=True)
                        continue
                    fns = [functools.partial(launch, t["X"], t["W"], t["S"], t["Z"], y, bits, bm, bk, stages, bool(w_tma), bool(pingpong))
                           for t in sets]
                    checked[(bm, bk, stages, w_tma, pingpong)] = (fns, err, bad.why if bad else "ok")
                timers = {"cublas": lambda c=cublas: sb.time_fns(c, 20)}
                timers |= {p: (lambda f=f: sb.time_fns(f, 20)) for p, (f, _, why) in checked.items() if why == "ok"}
                got = sb.interleaved(timers)
                for p, (_, err, why) in checked.items():
                    row = {"bits": bits, "shape": sizes, "point": list(p), "check": why, "rel_err": err,
                           "cublas_ms": got["cublas"]}
                    if p in got:
                        row |= {"ms": got[p], "x_cublas": got["cublas"] / got[p]}
                        print(f"w{bits} M={m} N={n} K={k} {p}: {got[p] * 1e3:.1f} us x{got['cublas'] / got[p]:.2f} "
                              f"cuBLAS ({got['cublas'] * 1e3:.1f} us) err {err:.2e}", flush=True)
                    else:
                        print(f"w{bits} M={m} N={n} K={k} {p}: {why}", flush=True)
                    report["rows"].append(row)
                sb.write_json(out, report)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["sass"]:
        text = sass(*[int(a) for a in sys.argv[2:]])
        Path(os.environ.get("SASS_OUT", "/tmp/lowbit_wgmma.sass")).write_text(text)
        print(len([ln for ln in text.splitlines() if ln.strip().startswith("/*")]), "instructions")
        sys.exit(0)
    sys.exit(main())
