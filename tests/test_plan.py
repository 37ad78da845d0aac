"""Derived schedules: tile grids and per-stage costs against hand counts."""

from tests.conftest import ROOT
from tilesched import bind, load_program
from tilesched.schedules.plan import derive_schedule


def test_gemm_costs_match_hand_counts():
    prog = load_program(ROOT / "configs" / "gemm_bf16.yaml")
    M, N, K, BM, BN, BK = 1000, 768, 512, 64, 128, 32
    s = derive_schedule(bind(prog, {"M": M, "N": N, "K": K, "BLOCK_M": BM, "BLOCK_N": BN, "BLOCK_K": BK}))
    grid = {g.axis: g for g in s.grid}
    assert grid["M"].tiles == 16 and grid["M"].ragged
    assert grid["N"].tiles == 6 and not grid["N"].ragged
    assert s.programs == 16 * 6
    st = {x.name: x.cost for x in s.stages}
    assert st["mma"].flops == 2 * M * N * K
    assert st["load_a"].bytes_read == M * K * 2 * (N // BN)  # A re-read once per column of tiles
    assert st["load_b"].bytes_read == K * N * 2 * 16  # B once per row of tiles
    assert st["store_c"].bytes_written == M * N * 2
    assert st["mma"].runs == 16 * 6 * (K // BK)


def test_comm_bytes_follow_world_size():
    prog = load_program(ROOT / "configs" / "ag_gemm.yaml")
    s = derive_schedule(bind(prog, {"M": 4096, "K": 1024}))
    gather = next(x for x in s.stages if x.name == "gather_a")
    assert gather.cost.comm_bytes == 4096 * 1024 * 2 / 2  # world 2: receive the other half


def test_mcu_block_plan_counts_macs():
    prog = load_program(ROOT / "configs" / "mcu_inverted_bottleneck.yaml")
    s = derive_schedule(bind(prog))
    macs = {x.name: x.cost.macs for x in s.stages}
    assert macs["expand"] == 80 * 80 * 96 * 16
    assert macs["depthwise"] == 80 * 80 * 96 * 9
    assert macs["project"] == 80 * 80 * 24 * 96
