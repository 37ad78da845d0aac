#!/usr/bin/env python3
"""Weight-only low-bit GEMMs from specs (configs/w{2,3,4,8}a16_gemm.yaml) against their baselines.

  python bench/lowbit.py check --out DIR    the low-bit specs vs the semantics oracle (GPU, ragged
                                            shapes, default and a few other parameters)
  python bench/lowbit.py bench --out DIR    per shape (M = 1, 16, 128, 1024 at K = N = 4096 and
                                            8192 and N = 28672, K = 8192):
                                            a small candidate search, the winner checked against the
                                            oracle, then timed beside bf16 cuBLAS on the same shape,
                                            torch's int4 kernel (aten._weight_int4pack_mm, 4 bits)
                                            and the packed weights' speed of light (their bytes at
                                            the device copy bandwidth of the same run)
  python bench/lowbit.py check --register-operand [--act fp16] --out DIR
                                            the register-operand schedule's listed points vs the
                                            oracle (GPU), bf16 or fp16 activations; with bf16, then
                                            split-K decode points at N = 28672 called 30 times each
  python bench/lowbit.py bench --ms 1 --tag lowbit-decode --out DIR
                                            one column again (here M = 1) into DIR/lowbit-decode-*.json,
                                            whose rows bench/collect_ops.py puts in place of lowbit's

Writes DIR/lowbit-<device>.json in the rows format of bench/ops.py ("ratio" = baseline_ms /
ours_ms; for the speed-of-light row it is the fraction of it reached) with the cost model's
prediction per candidate and its Spearman, and the winners to DIR/lowbit-lock-<device>.json.
Targets (issue 16): M = 1 >= 0.85 of the packed-weight speed of light; M = 16 >= 2.5x bf16 cuBLAS
(4 bits); M >= 1024 >= 0.9x bf16 cuBLAS. Inputs are random words (every bit pattern is a valid
packed weight), bf16 scales in [0.01, 0.02). Needs a CUDA GPU; --quick for M = 1 and 16 at 4096².
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
from tilesched.ir.dtypes import BITS  # noqa: E402

BITS_SPECS = {2: "w2a16_gemm", 3: "w3a16_gemm", 4: "w4a16_gemm", 8: "w8a16_gemm"}
NK = [(4096, 4096), (8192, 8192), (28672, 8192)]  # the targets: K = N, and Llama-3-70B's up/gate
MS = [1, 16, 128, 1024]
GROUP = 128
CHECK = {name: {"M": 37, "N": 300, "K": 520} for name in BITS_SPECS.values()}
# the register-operand schedule: ragged and even shapes, row tiles of 1 and 16 (mma.sync's 8 and 16
# columns), K tiles of 32 to 128, 4 and 8 warps, split shares (one of them empty at 3 x 4 tiles),
# the next words in registers (2 stages) or through a cp.async ring (the spec's default 4, 3, 5)
REGISTER_OPERAND_POINTS = [
    ({"M": 37, "N": 300, "K": 520}, {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64, "NUM_WARPS": 4, "SPLIT_K": 1,
                                     "NUM_STAGES": 2}),  # two stages: the next words in registers
    ({"M": 37, "N": 300, "K": 520}, {"BLOCK_M": 16, "BLOCK_N": 128, "BLOCK_K": 128, "NUM_WARPS": 8, "SPLIT_K": 2}),
    ({"M": 5, "N": 200, "K": 1040}, {"BLOCK_M": 1, "BLOCK_N": 64, "BLOCK_K": 64, "NUM_WARPS": 4, "SPLIT_K": 4,
                                     "NUM_STAGES": 2}),
    ({"M": 1, "N": 4096, "K": 4096}, {"BLOCK_M": 1, "BLOCK_N": 128, "BLOCK_K": 128, "NUM_WARPS": 4, "SPLIT_K": 8}),
    ({"M": 16, "N": 4096, "K": 4096}, {"BLOCK_M": 16, "BLOCK_N": 256, "BLOCK_K": 128, "NUM_WARPS": 8, "SPLIT_K": 4,
                                       "NUM_STAGES": 2}),
    ({"M": 20, "N": 96, "K": 384}, {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "NUM_WARPS": 4, "SPLIT_K": 4}),
    ({"M": 3, "N": 4104, "K": 8192}, {"BLOCK_M": 1, "BLOCK_N": 256, "BLOCK_K": 64, "NUM_WARPS": 8, "SPLIT_K": 1}),
    ({"M": 37, "N": 300, "K": 520}, {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64, "NUM_WARPS": 4, "SPLIT_K": 2,
                                     "NUM_STAGES": 3}),  # a cp.async ring: ragged, a share of one tile
    ({"M": 16, "N": 28672, "K": 8192}, {"BLOCK_M": 16, "BLOCK_N": 256, "BLOCK_K": 128, "NUM_WARPS": 8, "SPLIT_K": 2,
                                        "NUM_STAGES": 4}),
    ({"M": 1, "N": 4096, "K": 4096}, {"BLOCK_M": 1, "BLOCK_N": 128, "BLOCK_K": 128, "NUM_WARPS": 4, "SPLIT_K": 8,
                                      "NUM_STAGES": 5}),  # more stages than the share's 4 tiles
]
# its wgmma kernel (row tiles of 32 to 256): ragged rows, columns and K (TMA zero-fills, masked stores),
# one or two consumer warpgroups, two to four stages, a reduction of one tile, the M = 1024
WGMMA_POINTS = [
    ({"M": 37, "N": 300, "K": 520}, {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 128, "NUM_WARPS": 4, "NUM_STAGES": 3}),
    ({"M": 300, "N": 200, "K": 1040}, {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128, "NUM_WARPS": 8,
                                       "NUM_STAGES": 2}),
    ({"M": 33, "N": 4100, "K": 128}, {"BLOCK_M": 32, "BLOCK_N": 128, "BLOCK_K": 128, "NUM_WARPS": 8, "NUM_STAGES": 4}),
    ({"M": 1024, "N": 4096, "K": 4096}, {"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 128, "NUM_WARPS": 8,
                                         "NUM_STAGES": 2}),
    ({"M": 520, "N": 1000, "K": 4104}, {"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 128, "NUM_WARPS": 8,
                                        "NUM_STAGES": 3}),
    # wide tiles over two reduction tiles (fewer than the words' ring of lowbit_words_ahead.patch ran ahead),
    # and split-K shares of 5 and 4 tiles at 128 rows
    ({"M": 300, "N": 200, "K": 200}, {"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 128, "NUM_WARPS": 8,
                                      "NUM_STAGES": 2}),
    ({"M": 130, "N": 256, "K": 1040}, {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128, "NUM_WARPS": 8,
                                       "NUM_STAGES": 3, "SPLIT_K": 2}),
]
# the wgmma kernel at decode row tiles (the option's value "wgmma"): wgmma's n of 8 for row tiles of 1
# to 8, split-K shares meeting through a counter per thread (an empty share at 5 tiles in 4 shares), ragged sizes
DECODE_WGMMA_POINTS = [
    ({"M": 3, "N": 300, "K": 520}, {"BLOCK_M": 1, "BLOCK_N": 64, "BLOCK_K": 128, "NUM_WARPS": 4, "NUM_STAGES": 4,
                                    "SPLIT_K": 4}),
    ({"M": 20, "N": 200, "K": 1040}, {"BLOCK_M": 16, "BLOCK_N": 128, "BLOCK_K": 128, "NUM_WARPS": 8, "NUM_STAGES": 3,
                                      "SPLIT_K": 2}),
    ({"M": 1, "N": 4096, "K": 4096}, {"BLOCK_M": 1, "BLOCK_N": 64, "BLOCK_K": 128, "NUM_WARPS": 4, "NUM_STAGES": 8,
                                      "SPLIT_K": 8}),
    ({"M": 16, "N": 8192, "K": 8192}, {"BLOCK_M": 16, "BLOCK_N": 128, "BLOCK_K": 128, "NUM_WARPS": 8,
                                       "NUM_STAGES": 6, "SPLIT_K": 4}),
    ({"M": 9, "N": 4100, "K": 1024}, {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "NUM_WARPS": 4, "NUM_STAGES": 2,
                                      "SPLIT_K": 1}),
]
DECODE_WGMMA_POINTS = [(sizes, {**params, "REGISTER_OPERAND": "wgmma"}) for sizes, params in DECODE_WGMMA_POINTS]
REGISTER_OPERAND_POINTS = [(sizes, {**params, "REGISTER_OPERAND": True, "SPLIT_K": params.get("SPLIT_K", 1)})
                           for sizes, params in REGISTER_OPERAND_POINTS + WGMMA_POINTS] + DECODE_WGMMA_POINTS
REGISTER_OPERAND_CHECK = {"w4a16_gemm": REGISTER_OPERAND_POINTS + [  # 4 bits also take K tiles of 32 (64: wgmma)
    ({"M": 5, "N": 200, "K": 1040},
     {"BLOCK_M": 1, "BLOCK_N": 64, "BLOCK_K": 32, "NUM_WARPS": 4, "SPLIT_K": 4, "REGISTER_OPERAND": True}),
    ({"M": 100, "N": 260, "K": 392},
     {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "NUM_WARPS": 8, "NUM_STAGES": 4, "SPLIT_K": 1,
      "REGISTER_OPERAND": True})],
                          "w2a16_gemm": REGISTER_OPERAND_POINTS,
                          # whole bytes: the wgmma kernel only; rows of 16-byte multiples (TMA)
                          "w8a16_gemm": [(sizes, {**params, "SPLIT_K": 1, "REGISTER_OPERAND": True}) for sizes, params in [
                              ({"M": 37, "N": 304, "K": 520}, {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64,
                                                               "NUM_WARPS": 4, "NUM_STAGES": 3}),
                              ({"M": 300, "N": 208, "K": 1040}, {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128,
                                                                 "NUM_WARPS": 8, "NUM_STAGES": 2}),
                              ({"M": 33, "N": 4112, "K": 128}, {"BLOCK_M": 32, "BLOCK_N": 128, "BLOCK_K": 128,
                                                                "NUM_WARPS": 8, "NUM_STAGES": 4}),
                              ({"M": 1024, "N": 4096, "K": 4096}, {"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 128,
                                                                   "NUM_WARPS": 8, "NUM_STAGES": 2}),
                              ({"M": 520, "N": 1008, "K": 4104}, {"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64,
                                                                  "NUM_WARPS": 8, "NUM_STAGES": 4}),
                              ({"M": 300, "N": 208, "K": 200}, {"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 128,
                                                                "NUM_WARPS": 8, "NUM_STAGES": 2})]] + [
                              ({"M": 130, "N": 256, "K": 1040}, {**WGMMA_POINTS[-1][1], "REGISTER_OPERAND": True})] + [
                              (sizes, params) for sizes, params in DECODE_WGMMA_POINTS if sizes["N"] % 16 == 0] + [
                              ({"M": 3, "N": 304, "K": 520}, DECODE_WGMMA_POINTS[0][1])],
                          # ten to a word: the wgmma kernel only, K tiles of 64 and 128 in steps of five (decode
                          # tiles run whole steps, TMA's zeros past K; wider ones skip the tiles outside their share)
                          "w3a16_gemm": [(sizes, {"SPLIT_K": 1, **params, "REGISTER_OPERAND": True})
                                         for sizes, params in WGMMA_POINTS[:4] + [
                              ({"M": 300, "N": 200, "K": 1040}, {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64,
                                                                 "NUM_WARPS": 8, "NUM_STAGES": 3}),
                              ({"M": 520, "N": 1000, "K": 4104}, {"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64,
                                                                  "NUM_WARPS": 8, "NUM_STAGES": 3}),
                              # wide tiles' shares skip the tiles outside them (the second starts at tile 9: step 4)
                              ({"M": 100, "N": 264, "K": 2080}, {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 128,
                                                                 "NUM_WARPS": 8, "NUM_STAGES": 3, "SPLIT_K": 2}),
                              # and at 128 rows, 3 stages
                              ({"M": 130, "N": 264, "K": 2080}, {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128,
                                                                 "NUM_WARPS": 8, "NUM_STAGES": 3, "SPLIT_K": 2})]] + [
                              (sizes, params) for sizes, params in DECODE_WGMMA_POINTS if sizes["N"] % 4 == 0] + [
                              ({"M": 3, "N": 300, "K": 520}, {**DECODE_WGMMA_POINTS[0][1], "BLOCK_K": 64}),
                              ({"M": 20, "N": 200, "K": 1040}, {**DECODE_WGMMA_POINTS[1][1], "BLOCK_K": 64})]}


# split-K shares on a grid larger than the GPU holds at once, called again and again: a register cap of 64
# on the decode tiles returned wrong values in 12-33 % of such calls and passed every one-shot check
# (bench/experiments/wgmma_decode_register_cap.py); (bits, sizes, params) each called REPEAT_CALLS times
REPEAT_POINTS = [(4, {"M": 16, "N": 28672, "K": 8192}, {"BLOCK_M": 16, "BLOCK_N": 64, "SPLIT_K": 2}),
                 (3, {"M": 16, "N": 28672, "K": 8192}, {"BLOCK_M": 16, "BLOCK_N": 64, "SPLIT_K": 2}),
                 (3, {"M": 1, "N": 28672, "K": 8192}, {"BLOCK_M": 1, "BLOCK_N": 64, "SPLIT_K": 4}),
                 # 4 stages: a register cap of 80 returned two wrong columns in 21 of 60 calls here
                 (4, {"M": 1, "N": 28672, "K": 8192}, {"BLOCK_M": 1, "BLOCK_N": 64, "SPLIT_K": 4, "NUM_STAGES": 4}),
                 (3, {"M": 1, "N": 28672, "K": 8192}, {"BLOCK_M": 1, "BLOCK_N": 64, "SPLIT_K": 4, "NUM_STAGES": 4}),
                 (4, {"M": 1, "N": 28672, "K": 8192}, {"BLOCK_M": 1, "BLOCK_N": 64, "SPLIT_K": 4}),
                 (8, {"M": 16, "N": 28672, "K": 8192}, {"BLOCK_M": 16, "BLOCK_N": 64, "SPLIT_K": 2}),
                 # two consumers (8 warps), capped at 80 registers a thread: two CTAs of 12 warps an SM
                 (4, {"M": 16, "N": 28672, "K": 8192}, {"BLOCK_M": 16, "BLOCK_N": 128, "SPLIT_K": 2, "NUM_WARPS": 8,
                                                        "NUM_STAGES": 4}),
                 (4, {"M": 1, "N": 28672, "K": 8192}, {"BLOCK_M": 1, "BLOCK_N": 128, "SPLIT_K": 4, "NUM_WARPS": 8,
                                                       "NUM_STAGES": 4}),
                 (3, {"M": 16, "N": 28672, "K": 8192}, {"BLOCK_M": 16, "BLOCK_N": 128, "SPLIT_K": 4, "NUM_WARPS": 8,
                                                        "NUM_STAGES": 4}),
                 (2, {"M": 16, "N": 28672, "K": 8192}, {"BLOCK_M": 16, "BLOCK_N": 128, "SPLIT_K": 2, "NUM_WARPS": 8,
                                                        "NUM_STAGES": 4}),
                 (8, {"M": 1, "N": 28672, "K": 8192}, {"BLOCK_M": 1, "BLOCK_N": 128, "SPLIT_K": 4, "NUM_WARPS": 8,
                                                       "NUM_STAGES": 4})]
REPEAT_CALLS = 30


def differing_calls(kernel, reference, point, ins: dict, calls: int) -> list[tuple[list[int], list[int]]]:
    """Call `point` `calls` times on `ins` (NaN-poisoned Y each time) beside one call of `reference`
    (the same kernel, another binding); per call that differs anywhere by more than 2 % of the
    reference's largest magnitude (NaN counts), the output rows and columns where it does."""
    import torch

    from tilesched.backends.cuda.io import poisoned

    dev = next(iter(ins.values())).device
    ref = poisoned(kernel.program.tensor("Y"), reference.sizes, dev)
    kernel(params=dict(reference.params), sizes=dict(reference.sizes), **ins, Y=ref)
    ref = ref.float()
    out = []
    for _ in range(calls):
        y = poisoned(kernel.program.tensor("Y"), point.sizes, dev)
        kernel(params=dict(point.params), sizes=dict(point.sizes), **ins, Y=y)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        bad = ~((y.float() - ref).abs() <= 0.02 * ref.abs().max())
        if bad.any():
            idx = bad.nonzero()
            out.append((sorted(set(idx[:, 0].tolist())), sorted(set(idx[:, 1].tolist()))))
    return out


def repeat_point(params: dict) -> dict:
    """A REPEAT_POINTS entry's point without split-K (the reference its split calls are compared with)."""
    return {**cfg(params["BLOCK_M"], params["BLOCK_N"], 128, params.get("NUM_WARPS", 4), params.get("NUM_STAGES", 2)),
            "REGISTER_OPERAND": "wgmma"}


def repeat_check(out: Path, tag: str, bits: set[int]) -> int:
    """Each REPEAT_POINTS point (the wgmma kernel's decode tiles, K tiles of 128, 4 warps and 2 stages unless it says)
    called REPEAT_CALLS times on one input set, NaN-poisoned outputs each time, every result compared
    with the same point without split-K, itself checked against the oracle first. Writes
    DIR/<tag>-repeat-check-<device>.json; 1 if any call differed."""
    import torch

    from tilesched.backends.cuda.kernel import Kernel

    rows, failed = [], 0
    for b, sizes, params in REPEAT_POINTS:
        if b not in bits:
            continue
        program = load_program(sb.CONFIGS / f"{BITS_SPECS[b]}.yaml")
        kernel = Kernel(program)
        point = repeat_point(params)
        one, split = sb.legal(program, sizes, point), sb.legal(program, sizes, {**point, "SPLIT_K": params["SPLIT_K"]})
        ins = make_inputs(b, sizes["M"], sizes["N"], sizes["K"], "cuda")
        err, why = sb.oracle_error(kernel, one, ins)
        bad = len(differing_calls(kernel, one, split, ins, REPEAT_CALLS))
        ok = not why and bad == 0
        failed += not ok
        rows.append({"spec": BITS_SPECS[b], "sizes": sizes, "params": dict(split.params), "calls": REPEAT_CALLS,
                     "differing_calls": bad, "reference_rel_error": err, "reference_check": why or "ok", "ok": ok})
        print(f"{'ok  ' if ok else 'FAIL'} {BITS_SPECS[b]:12s} {sizes} split {params['SPLIT_K']}: {bad} of "
              f"{REPEAT_CALLS} calls differ from SPLIT_K = 1 ({why or 'checked'})", flush=True)
    name = torch.cuda.get_device_name()
    sb.write_json(out / f"{tag}-repeat-check-{sb.slug(name)}.json",
                  {"device": name, "versions": sb.versions(), "date": sb.now(), "rows": rows, "failed": failed})
    return 1 if failed else 0


def cfg(bm, bn, bk, w, s, split=1, group=8) -> dict:
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group, "NUM_WARPS": w, "NUM_STAGES": s,
            "SPLIT_K": split, "MATERIALIZE": False}


def register_operand(bm: int, bn: int, w: int, split: int, bk: int = 128, stages: int = 2) -> dict:
    """A point of the register-operand schedule (Gluon: mma.sync up to 16 rows, wgmma past them)."""
    return {**cfg(bm, bn, bk, w, stages, split), "REGISTER_OPERAND": True}


def register_operand_bindings(program, sizes: dict, points, stages):
    """(params, binding) of each legal register-operand point (BLOCK_N, NUM_WARPS, SPLIT_K) at each
    stage count, the row tile by M (mma.sync's 8 or 16 columns)."""
    for bn, w, split in points:
        for st in stages:
            params = register_operand(1 if sizes["M"] <= 8 else 16, bn, w, split, stages=st)
            b = sb.legal(program, sizes, params)
            if b is not None:
                yield params, b


def decode_wgmma(bm: int) -> list[dict]:
    """Points of the wgmma kernel at a decode row tile: one or two consumers, deep rings, 1 to 8 shares."""
    return [{**register_operand(bm, bn, w, s, stages=st), "REGISTER_OPERAND": "wgmma"}
            for bn, w in ((64, 4), (128, 8)) for s in (1, 2, 4, 8) for st in (2, 4)]


def candidates(m: int, bits: int = 0) -> list[dict]:
    """A small, shape-class-aware list (the full space is for the tuner); the 4- and 2-bit specs'
    lists add register-operand points (mma.sync at M <= 16, wgmma above), the 8- and 3-bit ones wgmma
    points (3 bits with K tiles of 64 too: its steps of five tiles waste fewer of them past K); at M <= 16
    all but 3 bits add the wgmma kernel at the decode row tile (3 bits at K tiles of 64 and 128)."""
    ro = []
    if m <= 16 and bits in (2, 4):  # NUM_STAGES 2: the next words in registers; 3, 4: a cp.async ring
        ro = [register_operand(1 if m <= 8 else 16, bn, w, s, stages=st)
              for bn, w, s in ((128, 4, 8), (128, 8, 8), (64, 4, 8), (128, 4, 4), (128, 8, 4), (256, 8, 2),
                               (128, 4, 2), (256, 8, 4), (256, 4, 8), (256, 4, 4)) for st in (2, 3, 4)]
    if m <= 16 and bits in (2, 4, 8):
        ro += decode_wgmma(1 if m <= 8 else 16)
    if m <= 16 and bits == 3:
        ro += [{**p, "BLOCK_K": bk} for p in decode_wgmma(1 if m <= 8 else 16) for bk in (64, 128)]
    if m <= 8:  # row tiles of 1: CUDA-core products, the group's scale and zero point factored out
        return [cfg(1, 64, 128, 4, 4), cfg(1, 64, 128, 4, 4, 4), cfg(1, 128, 128, 4, 4, 2), cfg(1, 32, 128, 4, 4, 4),
                cfg(1, 64, 64, 4, 4, 2), cfg(1, 128, 64, 4, 4, 8), cfg(1, 256, 64, 8, 3), cfg(16, 64, 128, 4, 4, 4),
                cfg(1, 128, 64, 4, 4, 4), cfg(1, 64, 64, 4, 5, 4), cfg(1, 128, 128, 4, 4, 4), cfg(1, 256, 128, 8, 4, 4),
                cfg(1, 256, 64, 4, 4, 4)] + ro
    if m <= 64:
        return [cfg(16, 64, 128, 4, 4), cfg(16, 128, 128, 4, 4), cfg(16, 64, 128, 4, 4, 2), cfg(16, 128, 64, 4, 4, 4),
                cfg(16, 256, 64, 8, 3), cfg(16, 32, 128, 4, 4, 4), cfg(32, 64, 128, 4, 3)] + ro
    # a row tile of 256 dequantises each weight tile once for twice the MMAs of 128
    base = [cfg(128, 128, 64, 8, 3), cfg(128, 128, 128, 8, 3), cfg(64, 128, 64, 4, 4), cfg(128, 256, 64, 8, 3),
            cfg(128, 64, 128, 4, 3), cfg(128, 128, 64, 4, 4)]
    # the materialising schedule: the weights dequantised once per call, then a plain bf16 GEMM
    base += [{**cfg(128, 256, 64, 8, 3), "MATERIALIZE": True}, {**cfg(128, 128, 64, 8, 4), "MATERIALIZE": True},
             {**cfg(128, 256, 64, 8, 4), "MATERIALIZE": True}, {**cfg(128, 128, 64, 4, 4), "MATERIALIZE": True}]
    # the register-operand schedule on wgmma: two consumer warpgroups of 64 columns, K tiles of 128
    wgmma = [register_operand(bm, 128, 8, 1, stages=st) for bm in ((128, 256) if m >= 256 else (64, 128))
             for st in (2, 3)] if bits in (2, 4) else []
    if m < 256 and bits in (2, 4):  # few output tiles: split-K shares fill the GPU
        wgmma += [register_operand(bm, bn, w, s, stages=st) for bm in (64, 128) for bn, w in ((128, 8), (64, 4))
                  for s in (2, 4) for st in (2, 4)]
    if bits == 3:  # words as 4 bits', K tiles of 64 or 128 (five a step)
        wgmma = [register_operand(bm, 128, 8, 1, bk, st) for bm in ((128, 256) if m >= 256 else (64, 128))
                 for bk, st in ((128, 2), (128, 3), (64, 3), (64, 4))]
        if m < 256:
            wgmma += [register_operand(bm, bn, w, s, 128, st) for bm in (64, 128) for bn, w in ((128, 8), (64, 4))
                      for s in (2, 4) for st in (2, 4)]
    if bits == 8:  # whole bytes: twice the shared memory a K tile (three or four stages of 128 at 128 rows and fewer)
        wgmma = [register_operand(bm, 128, 8, 1, bk, st) for bm in ((128, 256) if m >= 256 else (64, 128))
                 for bk, st in ((128, 2), (128, 3), (128, 4), (64, 3), (64, 4))]
        if m < 256:
            wgmma += [register_operand(bm, bn, w, s, 64, 4) for bm in (64, 128) for bn, w in ((128, 8), (64, 4))
                      for s in (2, 4)]
    if m < 256:
        return base + wgmma
    return base + wgmma + [cfg(256, 128, 64, 8, 3), cfg(256, 128, 64, 8, 4), cfg(256, 64, 64, 8, 4),
                           cfg(256, 128, 64, 8, 5)]


def make_inputs(bits: int, m: int, n: int, k: int, device, dtype=None) -> dict:
    """Inputs as the spec stores them: X [M, K]; W [ceil(K / per), N] int32 words (uint8 [K, N] for 8
    bits); Z [K / 128, ceil(N / per)] words (uint8 [K / 128, N]); S [K / 128, N] scales."""
    import torch

    dtype = dtype or torch.bfloat16
    groups = -(-k // GROUP)
    x = torch.randn(m, k, device=device).to(dtype)
    s = (0.01 * (1.0 + torch.rand(groups, n, device=device))).to(dtype)
    if bits == 8:
        w = torch.randint(0, 256, (k, n), device=device, dtype=torch.uint8)
        z = torch.randint(0, 256, (groups, n), device=device, dtype=torch.uint8)
    else:
        per = 32 // bits
        w = torch.randint(-(1 << 31), 1 << 31, (-(-k // per), n), device=device, dtype=torch.int64).to(torch.int32)
        z = torch.randint(-(1 << 31), 1 << 31, (groups, -(-n // per)), device=device, dtype=torch.int64).to(torch.int32)
    return {"X": x, "W": w, "Z": z, "S": s}


def sets_and_cublas(bits: int, m: int, n: int, k: int, repeats: int = 20) -> tuple[list[dict], float]:
    """Input sets for one shape (enough to rotate past L2) and bf16 cuBLAS's time on the shape, this run."""
    import torch

    sets = [make_inputs(bits, m, n, k, "cuda") for _ in range(sb.n_sets(weight_bytes(bits, m, n, k)))]
    return sets, sb.time_fns(cublas_calls(sets, k, n, torch.bfloat16), repeats)


def cublas_calls(sets: list[dict], k: int, n: int, act, device="cuda") -> list:
    """X @ W for bf16/fp16 weights of the shape, with as many weight matrices as it takes to rotate
    past L2 (as many as there are X sets): one matrix would stay in L2 at 4096² (32 MB) and time
    cuBLAS on weights it never reads from HBM, while ours are rotated."""
    import torch

    ws = [torch.randn(k, n, device=device).to(act) for _ in range(sb.n_sets(k * n * 2))]
    pairs = [(ws[i % len(ws)], sets[i % len(sets)]["X"]) for i in range(max(len(ws), len(sets)))]
    return [lambda w=w, x=x: torch.matmul(x, w) for w, x in pairs]


def weight_bytes(bits: int, m: int, n: int, k: int) -> int:
    """Bytes a call must move at least: the packed weights, zero points, scales, X and Y."""
    per = 32 // bits if bits < 8 else 1
    w = (-(-k // per) * n * 4) if bits < 8 else k * n
    groups = -(-k // GROUP)
    z = (groups * -(-n // per) * 4) if bits < 8 else groups * n
    return w + z + groups * n * 2 + m * k * 2 + m * n * 2


def int4pack_baseline(m: int, n: int, k: int, device, copies: int = 1):
    """torch's int4 weight-only kernel (tinygemm) on this shape: `copies` calls, each on weights of
    its own (to rotate past L2 as ours do), or (None, why)."""
    import torch

    fns, why = [], ""
    for _ in range(copies):
        w = torch.randint(0, 16, (n, k), dtype=torch.int32, device=device)
        sz = torch.randn(k // GROUP, n, 2, device=device).to(torch.bfloat16)
        packed = None
        for form in ("uint8", "int32"):
            try:
                arg = ((w[:, ::2] << 4) | w[:, 1::2]).to(torch.uint8) if form == "uint8" else w
                packed = torch.ops.aten._convert_weight_to_int4pack(arg, 8)
                break
            except Exception as exc:  # noqa: BLE001 - the packed form changed across torch versions
                why = f"{type(exc).__name__}: {str(exc)[:200]}"
        if packed is None:
            return None, why
        fns.append(lambda x, packed=packed, sz=sz: torch.ops.aten._weight_int4pack_mm(x, packed, GROUP, sz))
    return fns, ""


def bench_one(args, report, lock, bits: int, m: int, n: int, k: int, copy_cache: dict):
    import torch

    from tilesched.backends.cuda.kernel import Kernel

    spec = BITS_SPECS[bits]
    program = load_program(sb.CONFIGS / f"{spec}.yaml")
    act = torch.float16 if args.act == "fp16" else torch.bfloat16
    if args.act == "fp16":  # the same spec with fp16 activations and scales
        from tilesched.backends.cuda.io import retyped

        program = retyped(program, "bf16", "fp16")
    kernel = Kernel(program)
    sizes = {"M": m, "N": n, "K": k}
    cands = candidates(m, bits)
    if args.act == "bf16":
        sb.warm_compile(sb.CONFIGS / f"{spec}.yaml", sizes, cands, program, args.workers)
    nbytes = weight_bytes(bits, m, n, k)
    sets = [make_inputs(bits, m, n, k, "cuda", act) for _ in range(sb.n_sets(nbytes))]
    best, table, rho = sb.search(kernel, program, sizes, cands, sets, args.repeats)
    if best is None:
        print(f"{spec} {sizes}: no candidate ran", flush=True)
        return lock
    mc = min(m, 512)  # the oracle's float64 product at up to 512 rows
    sub = {**sets[0], "X": sets[0]["X"][:mc].contiguous()}
    err, why = sb.oracle_error(kernel, sb.legal(program, {**sizes, "M": mc}, best["params"]), sub)
    fl = 2.0 * m * n * k
    if "hbm" not in copy_cache:
        copy_cache["hbm"] = sb.copy_gbs()
    sol_ms = nbytes / (copy_cache["hbm"] * 1e9) * 1e3
    cublas_name = f"{args.act} cuBLAS (torch.matmul, same shape)"
    int4_name = "torch aten._weight_int4pack_mm (group 128)"
    winner = sb.legal(program, sizes, best["params"])
    timers = {"ours": lambda: sb.time_kernel(kernel, winner, sets, args.repeats)}
    calls = cublas_calls(sets, k, n, act)
    timers[cublas_name] = lambda: sb.time_fns(calls, args.repeats)
    bad = ""
    if bits == 4 and args.act == "bf16":  # torch's int4 kernel takes bf16
        fns, bad = int4pack_baseline(m, n, k, "cuda", copies=sb.n_sets(n * k // 2))
        if fns is not None:
            pairs = [(fns[i % len(fns)], sets[i % len(sets)]["X"]) for i in range(max(len(fns), len(sets)))]
            try:
                pairs[0][0](pairs[0][1])
                timers[int4_name] = lambda: sb.time_fns([lambda f=f, x=x: f(x) for f, x in pairs], args.repeats)
            except Exception as exc:  # noqa: BLE001
                bad = f"{type(exc).__name__}: {str(exc)[:200]}"
    times = sb.interleaved(timers)  # the winner and the baselines in turns
    ms = times.pop("ours")
    common = {"op": f"w{bits}a16_gemm", "shape": sizes, "dtype": f"uint{bits} x {args.act}", "ours_ms": ms,
              "search_ms": best["ms"], "flops": fl, "bytes": nbytes, "copy_GBs": copy_cache["hbm"],
              "ours_GBs": nbytes / (ms * 1e-3) / 1e9, "rel_err": err, "check": why or "ok", "params": best["params"],
              "spearman": rho, "candidates": table}
    rows = [{**common, "baseline": "packed-weight speed of light (device copy bandwidth)", "baseline_ms": sol_ms,
             "ratio": sol_ms / ms}]
    line = (f"{spec} M={m:5d} N={n:5d} K={k:5d}  ours {ms:.4f} ms (search {best['ms']:.4f}; "
            f"{nbytes / (ms * 1e-3) / 1e9:.0f} GB/s, {sol_ms / ms:.2f} of SOL)")
    for name, base in times.items():
        rows.append({**common, "baseline": name, "baseline_ms": base, "ratio": base / ms})
        line += f"  {name.split(' (')[0]} {base:.4f} ms x{base / ms:.2f}"
    if bad:
        rows.append({**common, "baseline": int4_name, "baseline_error": bad})
        line += f"  int4pack unavailable ({bad[:60]})"
    report["rows"] += rows
    print(line + f"  err {err:.1e} rho {rho} {best['params']}", flush=True)
    if math.isfinite(err):
        lock = lock.with_entry(sb.lock_entry(program, sizes, best, report["device"], report["versions"],
                                             "bench/lowbit.py", len(table)))
    return lock


def cmd_bench(args) -> int:
    copy_cache: dict = {}
    ms = [int(m) for m in args.ms.split(",")] if args.ms else MS
    shapes = [(m, n, k) for n, k in (NK[:1] if args.quick else NK) for m in (MS[:2] if args.quick else ms)]
    cases = [lambda r, lock, b=int(b), s=s: bench_one(args, r, lock, b, *s, copy_cache)
             for b in args.bits.split(",") for s in shapes]
    tag = args.tag or ("lowbit" if args.act == "bf16" else f"lowbit-{args.act}")
    what = "weight-only low-bit GEMMs from specs vs bf16 cuBLAS, torch int4, speed of light"
    return sb.run_bench(tag, what, Path(args.out), cases)


def main(argv=None) -> int:
    p = sb.parser(__doc__)
    p.add_argument("--bits", default="4,8,2,3", help="weight widths to bench (or check), in order")
    p.add_argument("--act", choices=["bf16", "fp16"], default="bf16", help="activation (and scale) dtype")
    p.add_argument("--ms", default="", help="row counts M to bench (default 1,16,128,1024)")
    p.add_argument("--tag", default="", help="results file prefix (default lowbit; lowbit-decode for a re-run of "
                                             "M = 1 that bench/collect_ops.py lets replace those rows)")
    p.add_argument("--register-operand", action="store_true",
                   help="check: the register-operand points (Gluon) of the specs of --bits against the oracle")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.cmd == "check" and args.register_operand:
        bits = {int(b) for b in args.bits.split(",")}
        points = {name: pts for name, pts in REGISTER_OPERAND_CHECK.items() if BITS[f"uint{name[1]}"] in bits}
        tag = args.tag or "lowbit-register-operand"
        if args.act == "fp16":  # the same specs with fp16 activations and scales (pairs of 1024 + v)
            from tilesched.backends.cuda.io import retyped

            return sb.check_points(points, args.seed, Path(args.out), f"{tag}-fp16",
                                   lambda program: retyped(program, "bf16", "fp16"))
        failed = sb.check_points(points, args.seed, Path(args.out), tag)
        return max(failed, repeat_check(Path(args.out), tag, bits))
    if args.cmd == "check":
        return sb.check_specs(CHECK, args.points, args.seed, Path(args.out), "lowbit")
    return cmd_bench(args)


assert set(BITS[f"uint{b}"] for b in BITS_SPECS) == set(BITS_SPECS)

if __name__ == "__main__":
    sys.exit(main())
