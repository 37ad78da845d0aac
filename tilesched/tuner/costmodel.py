"""Analytical cost model: predicts latency (and, for MCUs, peak SRAM) of one bound point.

It only has to rank points well (it warm-starts the search and is the `model` objective);
the constants are public H100 SXM / Cortex-M figures, not fitted.

GPU: a roofline per tile with pipelining. Each program (spatial tile) walks the
reduction loop in steps; a step's compute time (MMA at a tile-shape-dependent
efficiency) and its load time (L2 -> SM) overlap when `num_stages` >= 2, and the
memory latency is exposed unless enough stages are in flight. Programs run in waves of
`SMS * ctas_per_sm` (occupancy from shared memory and registers): the last, partial wave
costs a full wave (wave quantisation). DRAM traffic per wave counts distinct tiles of
each input the wave's programs touch, so the tile order (grouped / row major) changes the
L2 reuse. Comm stages run as a chunked timeline overlapped with compute.

MCU: cycles = MACs at a per-op rate + bytes moved + per-tile loop overhead, with the
halo recompute of producers feeding a convolution row block. Peak SRAM comes from
`tilesched.schedules.memory.plan_memory` when that module exists, else from a live-tensor
estimate here (`estimate_peak_sram`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from math import prod

import numpy as np

from tilesched.ir.bind import Binding
from tilesched.ir.dtypes import BITS, SUB_BYTE, nbytes
from tilesched.passes.factor import factored_at
from tilesched.passes.register_operand import BYTE_WEIGHTS, DECODE_REGISTERS, TEN_WEIGHTS, WGMMA_MIN_N
from tilesched.schedules.costs import _conv_halo, aligned_axes, stage_cost
from tilesched.schedules.limits import smem_estimate
from tilesched.schedules.plan import derive_schedule

# H100 SXM5 (public figures)
SMS = 132
PEAK_FLOPS = {"bf16": 989e12, "fp16": 989e12, "fp8": 1979e12, "fp32": 67e12, "int8": 1979e12,
              "fp8e4m3": 1979e12, "fp8e5m2": 1979e12}
EXP_PER_SM_S = 16 * 1.83e9  # MUFU ex2 per SM per second (16 per clock): the softmax's exponentials
ALU_PER_SM_S = 128 * 1.83e9  # CUDA-core integer/fp32 instructions per SM per second (128 lanes per clock)
# CUDA-core instructions per element of an elementwise stage inside the reduction loop, besides one
# per fn: the conversions in and out, and the shift and mask of each packed input
ALU_PER_ELEMENT, ALU_PER_PACKED_INPUT = 2, 2
# MMA throughput left when a dot operand is computed in registers inside the reduction loop (it goes
# to shared memory between the pipelined loads and the MMAs): low-bit GEMMs of every width, 8 bits
# included, measured at 0.44-0.49 of cuBLAS at M >= 1024 on an H100 (bench/results/lowbit-*.json)
REGISTER_OPERAND_EFFICIENCY = 0.5
HBM_BW = 3.35e12  # B/s
L2_BW = 10e12  # B/s, L2 -> SMs, all SMs together
NVLINK_BW = 450e9  # B/s per direction per GPU
MEM_LATENCY_S = 0.8e-6  # a global load's round trip, roughly
WGMMA_MAX_N = 256  # Hopper's wgmma: 64 rows by up to 256 columns a warpgroup
# the wgmma kernel's decode tiles: the least time a consumer takes per K tile (from one measured point: 4
# bits, M = 1, 8192², 64 columns on 4 warps, split 4, two CTAs an SM: 21 us for 32 tiles a CTA slot;
# bench/results/lowbit-decode-cap-*.json)
WGMMA_DECODE_STEP_S = 0.6e-6
# the warp-specialised attention kernel: the least time a consumer takes per key tile, one round trip (the
# ring slot's wait, the scores MMA and its wait, the softmax's row reductions, the context MMA's wait, the
# slot's release); key tiles of 64 at D = 64, S = 1024 measured 0.83 us a step against 1.45 us at 128
# (0.1028 against 0.0897 ms, 124 and 62 steps a CTA: bench/results/attention-*.json), not half; chosen
# after replaying the attention grids: 0.4 to 1.0 us read 0.56-0.60 and 0.59-0.68 there against 0.56 /
# 0.59 without it, in sample
WS_STEP_S = 0.6e-6
SPILL_EFFICIENCY = 0.2  # MMA throughput left when the accumulator spills (revised after the H100 grid)
# the register-operand mma.sync kernel (launched at most 128 registers a thread): registers a thread
# needs besides its accumulator, the MMA's tile sum and its words (addresses, X's tile and sums, the
# coefficients, a tile's pairs in flight), and its slowdown per register past the cap, as a fraction of
# the cap: the 70 from the sm_90 compiles of 7 points (LDL / STL in the loop past 128: 128 columns on 4
# warps at 2 stages and 16 rows, 256 on 4 warps), the slowdown from their measured grid (N = 28672,
# M = 16: 1.2x at 6 registers past, 1.8-2.6x at 38; bench/results/lowbit-register-operand-vector-words-*.json)
MMA_SYNC_BASE_REGISTERS, MMA_SYNC_REGISTER_CAP, MMA_SYNC_SPILL_SLOWDOWN = 70, 128, 4.5
LAUNCH_S = 3e-6
REGS_PER_SM = 65536
SMEM_PER_SM = 232448
MAX_WARPS_PER_SM = 64

# Cortex-M (cycles)
MCU_CYCLES_PER_MAC = {"conv2d": 0.6, "dot": 0.6, "depthwise_conv2d": 1.4}  # int8 SIMD (SMLAD) kernels
MCU_CYCLES_PER_ELEMENT = {"requantize": 3.0, "softmax": 20.0, "elementwise": 2.0, "reduce": 1.5,
                          "layernorm": 12.0}
MCU_CYCLES_PER_BYTE = 0.5  # copies and im2col-style moves
MCU_TILE_OVERHEAD = 400  # loop, call and requant setup per stage run


@dataclass(frozen=True)
class Prediction:
    latency: float  # GPU: milliseconds; MCU: cycles
    unit: str
    peak_sram_bytes: int | None = None
    sram_source: str | None = None  # "plan_memory" or "estimate"
    detail: dict | None = None


def predict(b: Binding) -> Prediction:
    if b.program.target == "cuda":
        if b.option("materialize", False):
            return _predict_materialized(b)
        return predict_gpu(b)
    return predict_mcu(b)


def _predict_materialized(b: Binding) -> Prediction:
    """The materialising schedule (tilesched/passes/materialize.py): its producer kernel, then its
    consumer kernel, each predicted at the same parameters."""
    from tilesched.passes.materialize import bind_parts, split

    producer, consumer = (predict_gpu(part) for part in bind_parts(split(b.program), b))
    return Prediction(latency=producer.latency + consumer.latency, unit="ms",
                      detail={"producer_ms": producer.latency, "consumer_ms": consumer.latency})


# --------------------------------------------------------------------------- GPU

def _dtype_peak(b: Binding) -> float:
    # operand dtypes (not the accumulator the dot also reads)
    dts = [b.program.tensor(t).dtype for s in b.program.stages if s.op == "dot" for t in s.reads
           if t not in s.writes]
    return min((PEAK_FLOPS.get(d, PEAK_FLOPS["fp32"]) for d in dts), default=PEAK_FLOPS["bf16"])


def _tile_bytes(b: Binding, tensor: str) -> int:
    t = b.program.tensor(tensor)
    return nbytes(t.dtype, prod(b.tile(a) for a in t.shape))


def _spatial(b: Binding) -> list[str]:
    return [lp.axis for lp in b.program.loops if lp.kind == "spatial"]


def _reduction(b: Binding) -> str | None:
    return next((lp.axis for lp in b.program.loops if lp.kind == "reduction"), None)


def _register_operand(b: Binding) -> bool:
    """The point runs the register-operand schedule (tilesched/passes/register_operand.py): mma.sync
    with the dequantised weights in registers, the words of the next stages - 1 tiles in flight
    (registers at 2 stages, else a ring in shared memory), the activations' tile in shared memory."""
    return b.program.target == "cuda" and bool(b.option("register_operand", False))


def _register_operand_wgmma(b: Binding) -> bool:
    """The point runs the register-operand schedule's wgmma kernel (row tiles past mma.sync's 16): a
    TMA loader warp, a consumer warpgroup per 64 weight columns dequantising into wgmma's register
    operand while the other's MMA runs; X's tiles and the packed words in a ring in shared memory.
    Decode row tiles on it (the option's value "wgmma", `_wgmma_decode`) are priced as the mma.sync kernel's
    loop with the wgmma kernel's occupancy and a least time per K tile (replayed on their first measured
    grid this model ranked worse, 0.48 against the mma.sync pricing's 0.66:
    bench/results/lowbit-register-operand-split-*.json)."""
    sp = _spatial(b)
    return _register_operand(b) and len(sp) >= 2 and b.tile(sp[-2]) > 16


def _register_operand_mma_sync(b: Binding) -> bool:
    """The point runs the register-operand schedule's mma.sync kernel (row tiles up to 16, the option
    true: the value "wgmma" puts them on the wgmma kernel's decode tiles)."""
    return _register_operand(b) and not _register_operand_wgmma(b) and b.option("register_operand") != "wgmma"


def _wgmma_decode(b: Binding) -> bool:
    """The point runs the wgmma kernel's decode row tiles (the option's value "wgmma", 16 rows or fewer)."""
    return _register_operand(b) and not _register_operand_wgmma(b) and b.option("register_operand") == "wgmma"


def _warp_specialized(b: Binding) -> bool:
    """The point runs the warp-specialised schedule (tilesched/passes/warp_specialize.py): a loader
    warp and two consumer warpgroups of 64 query rows, each key tile's softmax overlapping the MMAs."""
    return b.program.target == "cuda" and bool(b.option("warp_specialize", False))


def _occupancy(b: Binding) -> tuple[int, int, dict]:
    """CTAs per SM from shared memory and registers; also smem bytes and registers per thread."""
    stages = int(b.option("num_stages", 2) or 2)
    warps = int(b.option("num_warps", 4) or 4)
    smem = smem_estimate(b)
    if _register_operand(b):  # X's tile (mma.sync's 8 or 16 columns) converted through shared memory,
        sp, red = _spatial(b), _reduction(b)  # and with more than 2 stages a ring of the packed words
        smem = 2 * max(b.tile(sp[-2]), 8) * b.tile(red)
        packed = next((t for t in b.program.tensors if t.pack == red and t.scope != "tile"), None)
        if stages > 2 and packed is not None:
            smem += stages * b.tile(sp[-1]) * b.tile(red) * BITS[packed.dtype] // 8
    acc = [t for s in b.program.stages if s.op == "dot" for t in s.writes]
    acc_elems = sum(prod(b.tile(a) for a in b.program.tensor(t).shape) for t in acc) or 1
    regs = min(255, acc_elems // (warps * 32) + 40)
    demand = 0
    red = _reduction(b)
    packed = next((t for t in b.program.tensors if t.pack == red and t.scope != "tile"), None)
    if _register_operand_mma_sync(b) and packed is not None:  # accumulator and tile sum (mma.sync's n
        sp = _spatial(b)  # columns), the words (twice at 2 stages: the next tile's in registers), the rest
        threads = warps * 32
        words = b.tile(sp[-1]) * b.tile(red) * BITS[packed.dtype] // 32 / threads
        demand = 2 * b.tile(sp[-1]) * max(b.tile(sp[-2]), 8) / threads + words * (2 if stages == 2 else 1)
        demand = round(demand) + MMA_SYNC_BASE_REGISTERS
        regs = min(MMA_SYNC_REGISTER_CAP, demand)
    if _register_operand_wgmma(b):  # the ring of X's tiles and words; consumers at 232 registers, the loader warp
        smem, (warps, regs) = _wgmma_ring_bytes(b, stages), (warps + 1, 232)
    if _wgmma_decode(b):  # a consumer warpgroup per 64 columns and the loader's warpgroup, capped so that two CTAs
        # share an SM (DECODE_REGISTERS)
        smem, (warps, regs) = _wgmma_ring_bytes(b, stages), (warps + 4, DECODE_REGISTERS.get(warps // 4, DECODE_REGISTERS[1]))
    if _warp_specialized(b):  # the query tile and a ring of K and V tiles; 8 consumer warps at 240 registers
        head = next(a for a in b.program.tensor(acc[-1]).shape if a not in _spatial(b))
        smem = 2 * b.sizes[head] * (b.tile(_spatial(b)[-1]) + 2 * stages * b.tile(_reduction(b)))
        warps, regs = 8, 240
    smem_cap = b.program.limits.smem_bytes or SMEM_PER_SM
    by_smem = max(1, smem_cap // max(smem, 1))
    by_regs = max(1, REGS_PER_SM // (regs * warps * 32))
    by_warps = max(1, MAX_WARPS_PER_SM // warps)
    ctas = max(1, min(by_smem, by_regs, by_warps, 32))
    return ctas, warps, {"smem_bytes": smem, "regs_per_thread": regs, "stages": stages,
                         "spilled": max(0, demand - MMA_SYNC_REGISTER_CAP) / MMA_SYNC_REGISTER_CAP}


def _wgmma_ring_bytes(b: Binding, stages: int) -> int:
    """The register-operand wgmma kernel's ring: a stage holds X's tile (wgmma's n rows, at least 8) and the
    tile's words of packed values or bytes (3 bits: a tile's words as 4 bits')."""
    sp, red = _spatial(b), _reduction(b)
    weights = next(t for t in b.program.tensors if t.scope != "tile" and not t.group and red in t.shape
                   and (t.pack == red or t.dtype in BYTE_WEIGHTS))
    bits = 4 if weights.dtype in TEN_WEIGHTS else BITS[weights.dtype]
    return stages * b.tile(red) * (2 * max(b.tile(sp[-2]), WGMMA_MIN_N) + b.tile(sp[-1]) * bits // 8)


def _mma_efficiency(b: Binding, warps: int, regs: int) -> float:
    """Fraction of peak MMA throughput a tile shape reaches: small tiles re-read their
    operands from shared memory too often, few warps cannot hide issue latency, and a
    register-heavy accumulator spills."""
    sp = _spatial(b)
    tm = b.tile(sp[-2]) if len(sp) >= 2 else 64
    tn = b.tile(sp[-1]) if sp else 64
    dots = [s for s in b.program.stages if s.op == "dot"]
    if dots:  # the MMA tile is the last dot's output block (attention: [SQ, D], D not looped)
        rows_cols = b.program.tensor(dots[-1].writes[0]).shape[-2:]
        if len(rows_cols) == 2:
            tm, tn = b.tile(rows_cols[0]), b.tile(rows_cols[1])
    red = _reduction(b)
    tk = b.tile(red) if red else 64
    intensity = tm * tn / (tm + tn)  # FLOP per smem byte, up to constants
    eff = min(1.0, intensity / 85.0) ** 0.5
    # a K step's fixed cost (its barrier waits and issue) against its MMA time, which for 8-bit operands
    # is half a 16-bit step's at the same BLOCK_K (twice the rate): fp8 K tiles of 64 measured 5-13 %
    # slower than 128 (bench/results/fp8-*.json), bf16's 64 as fast as 128
    eff *= min(1.0, tk * PEAK_FLOPS["bf16"] / _dtype_peak(b) / 64) ** 0.15
    if _hopper_warpgroups(b, warps):  # each warpgroup issues wgmma of 64 rows by the tile's columns: the
        # narrower its n, the more of its operands it reads from shared memory per FLOP (128 x 256 tiles on
        # 8 warps measured 10-20 % faster than 256 x 128, bench/results/fp8-*.json)
        n = min(tn, WGMMA_MAX_N)
        eff *= (n / (64 + n)) / (WGMMA_MAX_N / (64 + WGMMA_MAX_N))
    eff *= 1.0 if warps >= 8 or tm * tn <= 128 * 128 else 0.85
    if regs >= 255:  # the accumulator does not fit in registers: it spills to local memory every step
        eff *= SPILL_EFFICIENCY
    return max(eff, 0.05)


def _hopper_warpgroups(b: Binding, warps: int) -> bool:
    """The point's MMA is Triton's wgmma over the tile (a plain GEMM-like tile: 64-row warpgroups stacked
    along its rows), not one of the schedules with their own layouts (register operand, warp-specialised)."""
    return (b.program.target == "cuda" and warps >= 4 and not _register_operand(b) and not _warp_specialized(b)
            and not _computed_dot_operand(b))


def _walks_tiles(b: Binding) -> bool:
    """The Triton kernel's programs walk the tiles with the grid's stride (the `persistent` option on a
    grid without point axes; tilesched/passes/kernel.walks_tiles): Triton's pipeliner runs the loop over
    the tiles on, so a tile's epilogue and the next tile's first loads overlap."""
    if not b.option("persistent", False) or _warp_specialized(b) or _register_operand(b):
        return False
    return len(_spatial(b)) <= 2


def _program_indices(b: Binding, sp: list[str]) -> dict[str, np.ndarray]:
    """Tile index along each spatial axis for program ids 0..P-1, following the tile order."""
    n = [b.n_tiles(a) for a in sp]
    pid = np.arange(prod(n), dtype=np.int64)
    to = b.program.tile_order
    idx: dict[str, np.ndarray] = {}
    if len(sp) >= 2 and to.kind in ("grouped", "column_major"):
        outer, inner = sp[-2], sp[-1]
        n_o, n_i = n[-2], n[-1]
        per_batch = n_o * n_i
        batch, rest = pid // per_batch, pid % per_batch
        if to.kind == "grouped":
            g = max(1, int(b.value(to.group)))
            in_group = g * n_i
            first = (rest // in_group) * g
            size = np.minimum(n_o - first, g)
            idx[outer] = first + (rest % in_group) % size
            idx[inner] = (rest % in_group) // size
        else:
            idx[outer], idx[inner] = rest % n_o, rest // n_o
        for a, na in zip(reversed(sp[:-2]), reversed(n[:-2])):
            idx[a], batch = batch % na, batch // na
        return idx
    rest = pid
    for a, na in zip(reversed(sp), reversed(n)):
        idx[a], rest = rest % na, rest // na
    return idx


def _dram_bytes(b: Binding, waves_of: int) -> float:
    """DRAM bytes: per wave, each distinct tile of an input that the wave touches is read
    once (L2 serves the rest); outputs are written once."""
    sp = _spatial(b)
    if not sp:
        return sum(nbytes(t.dtype, prod(b.sizes[a] for a in t.shape)) for t in b.program.tensors
                   if t.scope != "tile")
    idx = _program_indices(b, sp)
    wave = np.arange(len(next(iter(idx.values())))) // waves_of
    aligned = aligned_axes(b.program)
    total = 0.0
    for t in b.program.tensors:
        if t.scope == "tile" or t.role == "workspace":
            continue
        full = nbytes(t.dtype, prod(b.sizes[a] for a in t.shape))
        if t.group:  # grouped scales and zero points: one stored value per group
            from tilesched.ir.storage import stored_fraction

            full *= stored_fraction(t, b.env())
        if t.role == "output":
            total += full
            continue
        own = [a for a in sp if any(aligned.get(x, x) == aligned.get(a, a) for x in t.shape)]
        if not own:
            total += full * (wave[-1] + 1)
            continue
        key = wave.copy()
        tiles = 1
        for a in own:
            key = key * b.n_tiles(a) + idx[a]
            tiles *= b.n_tiles(a)
        total += len(np.unique(key)) * full / tiles
    return total


def predict_gpu(b: Binding) -> Prediction:
    sched = derive_schedule(b)
    ctas, warps, occ = _occupancy(b)
    eff = _mma_efficiency(b, warps, occ["regs_per_thread"])
    if _computed_dot_operand(b) and not _register_operand_wgmma(b):  # (that kernel's operand stays in registers)
        eff *= REGISTER_OPERAND_EFFICIENCY
    peak = _dtype_peak(b)
    programs = max(sched.programs, 1)
    red = _reduction(b)
    steps = b.n_tiles(red) if red else 1
    split = int(b.option("split_k", 1) or 1) if red else 1
    if split > 1:  # reduction tiles spread over programs (and their sums over fp32 atomics)
        programs *= split
        steps = math.ceil(steps / split)
    slots = SMS * ctas
    waves = math.ceil(programs / slots)
    kept = kept_tile_fraction(b)  # a masked online softmax skips the tiles its mask leaves out
    steps = max(1, round(steps * kept))
    flops = sched.totals.flops * kept
    exps = _loop_exponentials(b) * kept
    alu = _loop_elementwise_ops(b) * kept
    l2_bytes = sched.totals.bytes_read + sched.totals.bytes_written
    # one program, one reduction step, sharing its SM with ctas-1 others
    per_sm_flops = peak / SMS * eff
    step_compute = flops / programs / steps / per_sm_flops * ctas
    softmax = exps / programs / steps / EXP_PER_SM_S * ctas + alu / programs / steps / ALU_PER_SM_S * ctas
    if _warp_specialized(b) or _register_operand_wgmma(b):  # one warpgroup's softmax (dequantisation) runs
        # while the tensor cores work for the other's MMAs
        step_compute = max(step_compute, softmax)
    else:  # issued beside the MMAs (exponentials, then the CUDA cores' work), not under them
        step_compute += softmax
    step_load = l2_bytes / programs / steps / (L2_BW / SMS) * ctas
    step_compute *= 1 + MMA_SYNC_SPILL_SLOWDOWN * occ["spilled"]  # locals to and from memory every step
    step = max(step_compute, step_load)
    if _wgmma_decode(b):  # a consumer's K tile is a round trip (the ring's wait, the MMA and its wait, the
        step = max(step, WGMMA_DECODE_STEP_S)  # warpgroup's barrier, the slot's release), overlapped by CTAs only
    if _warp_specialized(b):  # a key tile's round trip, overlapped by nothing but the other consumer
        step = max(step, WS_STEP_S)
    in_flight = max(occ["stages"] - 1, 1) * ctas  # loads outstanding to cover latency
    exposed = max(0.0, MEM_LATENCY_S - in_flight * step) / max(in_flight, 1)
    if _warp_specialized(b) and b.option("persistent", False):
        # one CTA an SM walks its tiles, loading the next while it finishes one: a single prologue
        # and epilogue; claimed from a counter (a skipping mask) the tiles spread without whole waves
        walk = programs / slots if _claims_tiles(b) else waves
        compute_time = MEM_LATENCY_S + walk * steps * (step + exposed) + MEM_LATENCY_S
    elif _walks_tiles(b):  # the pipeline runs on across a program's tiles: one fill, one last epilogue
        compute_time = MEM_LATENCY_S + waves * steps * (step + exposed) + MEM_LATENCY_S + _epilogue_s(b, ctas)
    else:
        # prologue, steady state, then the epilogue's stores, which nothing overlaps: the fp8 GEMM
        # measured 1.3-1.5x slower with a program a tile than walking (bench/results/fp8-*.json)
        tile_time = MEM_LATENCY_S + steps * (step + exposed) + MEM_LATENCY_S + _epilogue_s(b, ctas)
        compute_time = waves * tile_time  # every wave costs a full wave
    dram = _dram_bytes(b, slots)
    dram_time = dram / HBM_BW
    # DRAM streaming overlaps the tiles' work, but not perfectly
    compute_time = max(compute_time, dram_time) + 0.1 * min(compute_time, dram_time)
    comm_time, total = _comm_timeline(b, sched, compute_time)
    total += LAUNCH_S
    if split > 1:  # partial sums out to the workspace and back into the tile's last share
        out = math.prod(b.sizes[a] for a in _spatial(b))
        total += 2 * split * out * 4 / HBM_BW + MEM_LATENCY_S
    return Prediction(latency=total * 1e3, unit="ms", detail={
        "waves": waves, "ctas_per_sm": ctas, "mma_efficiency": round(eff, 3), "dram_bytes": dram, "kept": kept,
        "compute_ms": compute_time * 1e3, "comm_ms": comm_time * 1e3, **occ})


def _epilogue_s(b: Binding, ctas: int) -> float:
    """A program's output tile written to memory at an SM's share of the DRAM bandwidth (its CTAs
    sharing it)."""
    out = [t for t in b.program.tensors if t.role == "output"]
    tile = sum(nbytes(t.dtype, prod(b.tile(a) if b.program.loop(a) is not None else b.sizes[a] for a in t.shape))
               for t in out)
    return tile / (HBM_BW / SMS) * ctas


def _masked_softmax(b: Binding):
    """The masked softmax along the reduction loop's axis (attention's), or None."""
    red = _reduction(b)
    return next((s for s in b.program.stages if s.op == "softmax" and s.mask and s.axis == red), None)


def kept_tile_fraction(b: Binding) -> float:
    """Of the (query tile, key tile) pairs, the fraction a masked online softmax visits: a tile is
    visited when its mask holds at one of its corners (exact for masks monotone along each axis:
    causal, sliding windows), the spatial axes of the mask's tensor at their own tiles."""
    kept = _kept_tiles(b)
    return 1.0 if kept is None else float(kept[0].mean())


def _kept_tiles(b: Binding) -> tuple[np.ndarray, tuple[str, ...]] | None:
    """Which tiles of the masked softmax's tensor (its axes, each at its own tile) the mask keeps
    somewhere; None without a mask over looped axes or where the model cannot evaluate it."""
    s = _masked_softmax(b)
    if s is None:
        return None
    t = b.program.tensor(s.reads[0])
    looped = [a for a in t.shape if b.program.loop(a) is not None and b.tile(a) < b.sizes[a]]
    if not looped:
        return None
    corners = {}
    for a in t.shape:
        if a in looped:
            n, tile = b.sizes[a], b.tile(a)
            starts = np.arange(0, n, tile)
            corners[a] = (starts, np.minimum(starts + tile, n) - 1)
        else:
            corners[a] = (np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64))
    sizes = {a: len(corners[a][0]) for a in t.shape}
    hit = np.zeros(tuple(sizes[a] for a in t.shape), dtype=bool)
    env = b.env()
    for pick in range(1 << len(t.shape)):
        idx = {a: corners[a][(pick >> j) & 1] for j, a in enumerate(t.shape)}
        grid = {a: idx[a] for a in t.shape}
        try:
            hit |= np.broadcast_to(_mask_at(s.mask, t.shape, grid, b.sizes, env), hit.shape)
        except Exception:  # noqa: BLE001 - a mask the model cannot evaluate counts as dense
            return None
    return hit, tuple(t.shape)


def _claims_tiles(b: Binding) -> bool:
    """A persistent warp-specialised point claims its tiles from a counter where heavy_first orders
    them (tilesched/passes/heavy_first.py): the mask keeps more key tiles for the query axis's last
    tile than for its first (causal); otherwise (no mask, a sliding window) the tiles are walked
    with the grid's stride."""
    kept = _kept_tiles(b)
    if kept is None:
        return False
    hit, axes = kept
    red = _reduction(b)
    grid = [a for a in axes if a != red and b.tile(a) > 1]
    if len(grid) != 1 or red not in axes:
        return False
    others = tuple(j for j, a in enumerate(axes) if a != grid[0])
    per_tile = hit.sum(axis=others)  # kept tiles along the reduction, per tile of the grid's axis
    return bool(per_tile[-1] > per_tile[0])


def _mask_at(mask: str, axes, points: dict, sizes, env) -> np.ndarray:
    """The mask at given index points per axis (a sparse grid)."""
    from tilesched.ir.indexexpr import eval_mask_at

    grids = {}
    for j, a in enumerate(axes):
        shape = [1] * len(axes)
        shape[j] = len(points[a])
        grids[a] = np.asarray(points[a], dtype=np.int64).reshape(shape)
    return eval_mask_at(mask, grids, sizes, env)


def _computed_dot_operand(b: Binding) -> bool:
    """Some dot in the reduction loop takes as its second operand (the one without the result's
    rows: wgmma reads it from shared memory only) a tile an elementwise stage in the loop writes."""
    red = _reduction(b)
    computed = {t for s in b.program.stages if s.op == "elementwise" and s.at == red for t in s.writes}
    for s in b.program.stages:
        if s.op == "dot" and s.at == red:
            rows = b.program.tensor(s.writes[0]).shape[-2]
            if any(t in computed and rows not in b.program.tensor(t).shape for t in s.reads):
                return True
    return False


def _loop_elementwise_ops(b: Binding) -> float:
    """CUDA-core instructions of the elementwise stages inside the reduction loop: every tile along
    a grid axis their output lacks computes them again (a low-bit GEMM dequantises its weight tile
    once per row tile)."""
    red = _reduction(b)
    if red is None:
        return 0.0
    grid = _spatial(b)
    factored = {operand for operand, _ in factored_at(b)}
    total = 0.0
    for s in b.program.stages:
        if s.op != "elementwise" or s.at != red:
            continue
        out = b.program.tensor(s.writes[0])
        again = prod(b.n_tiles(g) for g in grid if g not in out.shape)
        packed = [t for t in s.reads if b.program.tensor(t).pack or b.program.tensor(t).dtype in SUB_BYTE]
        if _register_operand_wgmma(b) and packed:  # a pair BIAS + v from its word (priced as two instructions;
            # 3 bits, ten to a word: five, two shifts of a word pair by the lane's slot first), the chain's x2 ops
            ten = any(b.program.tensor(t).dtype in TEN_WEIGHTS for t in packed)
            per = (2.5 if ten else 1.0) + 0.5 * sum(f != "cast" for f in s.fn)
        elif _register_operand_wgmma(b):  # bytes: a load and an add make BIAS + v in fp32, the chain, a conversion
            per = 2.5 + sum(f != "cast" for f in s.fn)
        elif _register_operand(b):  # one shift and one LOP3 make two values an MMA operand pair
            per = 1.0
        elif s.writes[0] in factored:  # only the varying input's unpacking and conversion per element
            per = 1 + ALU_PER_PACKED_INPUT * (s.reads[0] in packed)
        else:
            per = ALU_PER_ELEMENT + len(s.fn) + ALU_PER_PACKED_INPUT * len(packed)
        total += prod(b.sizes[a] for a in out.shape) * again * per
    return total


def _loop_exponentials(b: Binding) -> float:
    """Exponentials of softmaxes along the reduction loop's axis (one per score)."""
    red = _reduction(b)
    total = 0.0
    for s in b.program.stages:
        if s.op == "softmax" and s.axis == red:
            total += prod(b.sizes[a] for a in b.program.tensor(s.reads[0]).shape)
    return total


def _comm_timeline(b: Binding, sched, compute_time: float) -> tuple[float, float]:
    """Chunked comm overlapped with compute: with C chunks, chunk i+1 is in flight while
    chunk i is computed on, so the time is the first chunk's transfer, then per chunk the
    slower of transfer and compute; one chunk = no overlap."""
    comm = [s for s in sched.stages if s.kind == "comm"]
    if not comm:
        return 0.0, compute_time
    comm_bytes = sum(s.cost.comm_bytes for s in comm)
    chunks = max(int(b.value(b.program.stage(comm[0].name).chunks, 1) or 1), 1)
    per_chunk_comm = comm_bytes / NVLINK_BW / chunks + 5e-6  # + a per-transfer sync cost
    per_chunk_compute = compute_time / chunks
    # splitting the GEMM into chunks also adds tail effects per chunk
    per_chunk_compute *= 1.0 + 0.02 * (chunks - 1)
    if chunks == 1:
        return per_chunk_comm, per_chunk_comm + per_chunk_compute
    total = per_chunk_comm + (chunks - 1) * max(per_chunk_comm, per_chunk_compute) + per_chunk_compute
    return per_chunk_comm * chunks, total


# --------------------------------------------------------------------------- MCU

def _recompute_factor(b: Binding, stage) -> float:
    """A stage writing a row block that a convolution reads with a halo must compute the
    halo rows too."""
    factor = 1.0
    for out in stage.writes:
        for c in b.program.stages:
            if out in c.reads and c.op in ("conv2d", "depthwise_conv2d"):
                for f in _conv_halo(b, c, out).values():
                    factor = max(factor, f)
    return factor


def predict_mcu(b: Binding) -> Prediction:
    cycles = 0.0
    detail = {}
    for s in b.program.stages:
        c = stage_cost(b, s)
        work = 0.0
        if c.macs:
            work = c.macs * MCU_CYCLES_PER_MAC.get(s.op, 1.0)
        elif s.op in MCU_CYCLES_PER_ELEMENT:
            t = b.program.tensor(s.reads[0])
            work = prod(b.sizes[a] for a in t.shape) * MCU_CYCLES_PER_ELEMENT[s.op]
        work *= _recompute_factor(b, s)
        moved = sum(nbytes(b.program.tensor(t).dtype, prod(b.sizes[a] for a in b.program.tensor(t).shape))
                    for t in s.reads + s.writes if b.program.tensor(t).scope != "tile")
        st = work + moved * MCU_CYCLES_PER_BYTE + c.runs * MCU_TILE_OVERHEAD
        detail[s.name] = st
        cycles += st
    peak, source = peak_sram(b)
    return Prediction(latency=cycles, unit="cycles", peak_sram_bytes=peak, sram_source=source, detail=detail)


def peak_sram(b: Binding) -> tuple[int, str]:
    try:
        from tilesched.schedules.memory import plan_memory  # written by the MCU backend
    except ImportError:
        return estimate_peak_sram(b), "estimate"
    try:
        return int(plan_memory(b).peak_bytes), "plan_memory"
    except Exception as exc:  # the planner does not cover this spec (it raises SpecError)
        return estimate_peak_sram(b), f"estimate (plan_memory: {type(exc).__name__})"


def _block_elems(b: Binding, tensor: str, consumer_halo: dict[str, float]) -> int:
    """Elements of one tile-scoped tensor during one loop iteration."""
    t = b.program.tensor(tensor)
    looped = {aligned_axes(b.program).get(lp.axis, lp.axis): lp.axis for lp in b.program.loops}
    aligned = aligned_axes(b.program)
    n = 1
    for a in t.shape:
        rep = aligned.get(a, a)
        if rep in looped:
            ax = looped[rep]
            rows = b.tile(ax)
            if ax in consumer_halo:  # a conv reads this tensor: the block carries its halo
                rows = min(b.sizes[a], math.ceil(rows * consumer_halo[ax]))
            n *= rows
        else:
            n *= b.sizes[a]
    return n


def estimate_peak_sram(b: Binding) -> int:
    """Fallback live-tensor estimate: SRAM-resident global tensors all the time, plus the
    tile buffers live between their writer and last reader in stage order, at their block
    size (with a convolution's halo)."""
    prog = b.program
    fixed = sum(nbytes(t.dtype, prod(b.sizes[a] for a in t.shape)) for t in prog.tensors
                if t.scope != "tile" and (t.region or "sram") == "sram")
    order = list(prog.order)
    live_ranges = {}
    for t in prog.tensors:
        if t.scope != "tile":
            continue
        writers = [order.index(s.name) for s in prog.stages if t.name in s.writes]
        readers = [order.index(s.name) for s in prog.stages if t.name in s.reads]
        if not writers:
            continue
        halo: dict[str, float] = {}
        for s in prog.stages:
            if t.name in s.reads:
                for ax, f in _conv_halo(b, s, t.name).items():
                    halo[ax] = max(halo.get(ax, 1.0), f)
        size = nbytes(t.dtype, _block_elems(b, t.name, halo))
        live_ranges[t.name] = (min(writers), max(readers + writers), size)
    peak_tiles = 0
    for i in range(len(order)):
        peak_tiles = max(peak_tiles, sum(sz for lo, hi, sz in live_ranges.values() if lo <= i <= hi))
    return int(fixed + peak_tiles)
