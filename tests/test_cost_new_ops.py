"""The cost model on attention, low-bit and fp8 GEMMs: tiles a mask leaves out are not counted,
grouped scales count their stored bytes, split-K spreads a decode GEMM's reduction, fp8 dots run at
the fp8 peak."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT
from tilesched import bind, load_program, lower
from tilesched.schedules.costs import stage_cost, traffic
from tilesched.spec import load_spec_text
from tilesched.tuner.costmodel import _dtype_peak, kept_tile_fraction, predict

CONFIGS = ROOT / "configs"


def test_masked_tiles_are_skipped_in_the_model():
    causal = load_program(CONFIGS / "flash_attention_causal.yaml")
    full = load_program(CONFIGS / "flash_attention.yaml")
    sizes = {"B": 1, "H": 8, "SQ": 4096, "SK": 4096, "D": 128, "BLOCK_M": 128, "BLOCK_N": 64}
    kept = kept_tile_fraction(bind(causal, sizes))
    tiles_q, tiles_k = 4096 // 128, 4096 // 64
    assert kept == pytest.approx(sum(min(tiles_k, 2 * (i + 1)) for i in range(tiles_q)) / (tiles_q * tiles_k))
    assert kept_tile_fraction(bind(full, sizes)) == 1.0
    t_causal, t_full = predict(bind(causal, sizes)).latency, predict(bind(full, sizes)).latency
    assert 0.4 < t_causal / t_full < 0.65


def test_grouped_scales_count_their_stored_bytes():
    prog = load_program(CONFIGS / "w4a16_gemm.yaml")
    b = bind(prog, {"M": 16, "N": 4096, "K": 4096})
    deq = prog.stage("dequant")
    load_w = prog.stage("load_w")
    per_pass = stage_cost(b, load_w).bytes_read / b.n_tiles("M")  # W: K * N / 2 bytes per row block
    assert per_pass == pytest.approx(4096 * 4096 / 2)
    assert traffic(b, deq, "S") == pytest.approx(4096 // 128 * 4096 * 2)  # bf16, one per group of 128
    assert traffic(b, deq, "Z") == pytest.approx(4096 // 128 * 4096 / 2)  # uint4


def test_split_k_helps_decode_in_the_model():
    prog = load_program(CONFIGS / "w4a16_gemm.yaml")
    base = {"M": 1, "N": 4096, "K": 4096, "BLOCK_M": 1, "BLOCK_N": 64, "BLOCK_K": 128}
    one = predict(bind(prog, {**base, "SPLIT_K": 1})).latency
    four = predict(bind(prog, {**base, "SPLIT_K": 4})).latency
    assert four < one


def test_fp8_dots_run_at_the_fp8_peak():
    assert _dtype_peak(bind(load_program(CONFIGS / "fp8_gemm.yaml"), {})) == 1979e12


def test_the_materialised_schedule_is_its_two_kernels():
    prog = load_program(CONFIGS / "w4a16_gemm.yaml")
    point = {"M": 1024, "N": 8192, "K": 8192, "BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "NUM_WARPS": 8,
             "NUM_STAGES": 3}
    fused = predict(bind(prog, {**point, "MATERIALIZE": False}))
    mat = predict(bind(prog, {**point, "MATERIALIZE": True}))
    assert mat.latency == pytest.approx(mat.detail["producer_ms"] + mat.detail["consumer_ms"])
    assert mat.latency != fused.latency and mat.detail["producer_ms"] > 0
    # the producer moves the packed weights in and the bf16 workspace out: at least its bytes at HBM speed
    assert mat.detail["producer_ms"] > 8192 * 8192 * 2 / 4.0e12 * 1e3


def test_a_dequantised_operand_costs_cuda_core_work_per_row_tile():
    """The fused low-bit GEMM dequantises its weight tile once per row tile, on CUDA cores, and its
    wgmma waits for the tile in shared memory: at M = 1024 the model, like the H100, ranks the
    materialised schedule first (bench/results/lowbit-*.json: 64.3 vs 92.8 us at 4096^2)."""
    prog = load_program(CONFIGS / "w4a16_gemm.yaml")
    point = {"M": 1024, "N": 4096, "K": 4096, "BLOCK_N": 128, "BLOCK_K": 64, "NUM_WARPS": 8, "NUM_STAGES": 3}
    fused = predict(bind(prog, {**point, "BLOCK_M": 128, "MATERIALIZE": False})).latency
    mat = predict(bind(prog, {**point, "BLOCK_M": 128, "BLOCK_N": 256, "MATERIALIZE": True})).latency
    assert mat < fused
    gemm = load_program(CONFIGS / "gemm_gelu_prologue.yaml")  # relu(A) @ B: the computed operand is A
    from tilesched.tuner.costmodel import _computed_dot_operand

    assert _computed_dot_operand(bind(prog, point)) and not _computed_dot_operand(bind(gemm, {}))


def test_a_factored_dequantisation_costs_only_its_unpacking():
    """At a row tile below 16 the factor pass takes the group's scale and zero point out of the sum
    (tilesched/passes/factor.py): the model counts the unpacking and conversion per weight only, and
    only where the rendered kernel takes that branch (the group a multiple of the K tile)."""
    from tilesched.passes.factor import factored_at
    from tilesched.tuner.costmodel import _loop_elementwise_ops

    prog = load_program(CONFIGS / "w4a16_gemm.yaml")
    point = {"M": 1, "N": 8192, "K": 8192, "BLOCK_N": 128, "BLOCK_K": 128, "SPLIT_K": 4}
    decode = bind(prog, {**point, "BLOCK_M": 1})
    assert factored_at(decode) == (("wd", "mma"),) and not factored_at(bind(prog, {**point, "M": 16, "BLOCK_M": 16}))
    assert _loop_elementwise_ops(decode) == 8192 * 8192 * 3  # the conversion and a packed input's two
    text = (CONFIGS / "w4a16_gemm.yaml").read_text().replace("group: {K: 128}", "group: {K: 64}")
    small_groups = bind(lower(*load_spec_text(text)), {**point, "BLOCK_M": 1})
    assert not factored_at(small_groups) and _loop_elementwise_ops(small_groups) > 3 * 8192 * 8192


def test_the_register_operand_schedule_costs_one_instruction_per_weight():
    """mma.sync with the words in its register operand: a shift and a LOP3 per two weights, only X's
    tile in shared memory (more programs per SM), predicted faster than the Triton kernel at decode
    shapes, as measured (bench/results/lowbit-register-operand-*.json)."""
    from tilesched.tuner.costmodel import _loop_elementwise_ops, _occupancy

    prog = load_program(CONFIGS / "w4a16_gemm.yaml")
    for m, bm in ((1, 1), (16, 16)):
        point = {"M": m, "N": 28672, "K": 8192, "BLOCK_M": bm, "BLOCK_N": 128, "BLOCK_K": 128, "SPLIT_K": 4}
        triton, ro = (bind(prog, {**point, "REGISTER_OPERAND": v}) for v in (False, True))
        assert _loop_elementwise_ops(ro) == pytest.approx(8192 * 28672)
        assert _loop_elementwise_ops(triton) > _loop_elementwise_ops(ro)
        assert predict(ro).latency < predict(triton).latency
        x_tile = 2 * max(bm, 8) * 128
        two = bind(prog, {**point, "REGISTER_OPERAND": True, "NUM_STAGES": 2})  # the next words in registers
        assert _occupancy(two)[2]["smem_bytes"] == x_tile < _occupancy(triton)[2]["smem_bytes"]
        ring = 4 * 128 * 128 // 2  # the default 4 stages: a ring of packed 4-bit words
        assert _occupancy(ro)[2]["smem_bytes"] == x_tile + ring


def test_the_register_operand_wgmma_kernel_is_predicted_faster_at_prefill_shapes():
    """Past 16 rows the schedule runs on wgmma with the weights in its register operand: no trip of a
    dequantised tile through shared memory, the dequantisation overlapping the other warpgroup's MMAs.
    At M = 1024 it is predicted faster than the fused Triton kernel and the materialising schedule, as
    measured (bench/results/lowbit-register-operand-wgmma-*.json: x0.93-0.96 cuBLAS against x0.67-0.77)."""
    from tilesched.tuner.costmodel import _occupancy

    prog = load_program(CONFIGS / "w4a16_gemm.yaml")
    for n, k in ((4096, 4096), (28672, 8192)):
        size = {"M": 1024, "N": n, "K": k}
        wgmma = bind(prog, {**size, "BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 128, "NUM_WARPS": 8, "NUM_STAGES": 3,
                            "SPLIT_K": 1, "REGISTER_OPERAND": True})
        fused = bind(prog, {**size, "BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "NUM_WARPS": 8, "NUM_STAGES": 3})
        materialised = bind(prog, {**size, "BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "NUM_WARPS": 8,
                                   "NUM_STAGES": 3, "MATERIALIZE": True})
        assert predict(wgmma).latency < min(predict(fused).latency, predict(materialised).latency), size
        ctas, warps, occ = _occupancy(wgmma)
        assert (ctas, warps) == (1, 9) and occ["smem_bytes"] == 3 * 128 * (2 * 256 + 128 // 2)
    prog8 = load_program(CONFIGS / "w8a16_gemm.yaml")  # bytes: a bigger ring, fp32 dequantisation
    size = {"M": 1024, "N": 8192, "K": 8192}
    wgmma = bind(prog8, {**size, "BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 128, "NUM_WARPS": 8, "NUM_STAGES": 2,
                         "SPLIT_K": 1, "REGISTER_OPERAND": True})
    fused = bind(prog8, {**size, "BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "NUM_WARPS": 8, "NUM_STAGES": 3})
    assert predict(wgmma).latency < predict(fused).latency
    assert _occupancy(wgmma)[2]["smem_bytes"] == 2 * 128 * (2 * 256 + 128)


def test_the_warp_specialised_schedule_overlaps_the_softmax_with_the_mmas():
    """Its consumers run a key tile's softmax while the other MMAs are in flight: the step is the
    longer of the two, not their sum, so at the same tiles it is predicted faster than the Triton
    kernel, as measured (bench/results/attention-nvidia-h100-80gb-hbm3.json); its shared memory is
    the query tile and the ring of K and V tiles, its warps the two consumer warpgroups."""
    from tilesched.tuner.costmodel import _occupancy

    prog = load_program(CONFIGS / "flash_attention.yaml")
    for d in (64, 128):
        point = {"B": 4, "H": 32, "SQ": 4096, "SK": 4096, "D": d, "BLOCK_M": 128, "BLOCK_N": 128, "NUM_WARPS": 4,
                 "NUM_STAGES": 3}
        triton, ws = (bind(prog, {**point, "WARP_SPECIALIZE": v}) for v in (False, True))
        assert predict(ws).latency < predict(triton).latency
        ctas, warps, occ = _occupancy(ws)
        assert (ctas, warps) == (1, 8) and occ["smem_bytes"] == 2 * d * (128 + 2 * 3 * 128)


def test_a_persistent_grid_pays_one_fill_and_drain():
    """On a persistent grid one CTA an SM walks its tiles, loading the next while it finishes one:
    predicted faster than one CTA a tile, most where tiles are short (S = 1024: 8 key tiles a CTA),
    as measured (bench/results/attention-nvidia-h100-80gb-hbm3.json); causal tiles, claimed from a
    counter, also lose the last wave's quantisation."""
    for spec in ("flash_attention", "flash_attention_causal"):
        prog = load_program(CONFIGS / f"{spec}.yaml")
        gain = {}
        for s in (1024, 16384):
            point = {"B": 8, "H": 16, "SQ": s, "SK": s, "D": 128, "BLOCK_M": 128, "BLOCK_N": 128, "NUM_WARPS": 4,
                     "NUM_STAGES": 3, "WARP_SPECIALIZE": True}
            one, walk = (predict(bind(prog, {**point, "PERSISTENT": v})).latency for v in (False, True))
            gain[s] = one / walk
        assert gain[1024] > gain[16384] > 1.0, (spec, gain)


def test_the_model_claims_tiles_where_heavy_first_orders_them():
    """A persistent point's tiles spread without whole waves only where the kernel claims them from a
    counter: where heavy_first orders them (the last query tile keeps more key tiles than the first:
    causal, a sliding window whose first rows see fewer keys), not without a mask nor under a
    block-local one (every tile keeps as many), which walk a stride; the kernel IR says the same."""
    from tilesched.passes.gpu import lower_kernel
    from tilesched.tuner.costmodel import _claims_tiles

    text = (CONFIGS / "flash_attention_causal.yaml").read_text()
    point = {"B": 4, "H": 32, "SQ": 4096, "SK": 4096, "D": 128, "BLOCK_M": 128, "BLOCK_N": 128, "NUM_WARPS": 4,
             "NUM_STAGES": 3, "WARP_SPECIALIZE": True, "PERSISTENT": True}
    for mask, claims in (("SQ >= SK", True), ("SQ >= SK and SQ - SK < 512", True), ("SQ // 16 == SK // 16", False),
                         (None, False)):
        edited = text.replace('mask: "SQ >= SK", ', "" if mask is None else f"mask: {mask!r}, ")
        prog = lower(*load_spec_text(edited))
        assert _claims_tiles(bind(prog, point)) == claims == lower_kernel(prog).claim_tiles, mask
