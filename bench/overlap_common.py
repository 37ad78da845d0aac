"""What the two overlap benches share: the kernel configs tried, plan and launch-config
construction, the expected outputs (the semantics oracle, float64 on the GPU), the relative
error, and one CUDA-event timing of back-to-back calls."""

from __future__ import annotations

from pathlib import Path

import torch

from tilesched import load_program
from tilesched.backends.cuda.overlap import launch as L
from tilesched.schedules.overlap import build_plan, plan_binding
from tilesched.semantics import execute
from tilesched.semantics.arrays import TorchOps
from tilesched.semantics.spmd import execute_ranks

ROOT = Path(__file__).resolve().parent.parent
SPECS = {"all_gather": "ag_gemm", "reduce_scatter": "gemm_rs"}  # configs/ the overlap ops implement

CONFIGS = [  # (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, epilogue_subtile): the best three of a
    # one-GPU sweep of the consumer alone at M=8192/16384 (bench/results/overlap-loopback-*.json)
    (128, 256, 64, 8, 3, True),
    (256, 128, 64, 8, 3, True),
    (128, 256, 64, 8, 4, True),
    (128, 128, 64, 4, 4, True),
]


def plan_for(collective, rank, world, rows, cols, depth, chunks, cfg):
    bm, bn, bk = cfg[:3]
    return build_plan(collective, rank, world, engine="copy_engine" if collective == "all_gather" else "sm",
                      rows=rows, cols=cols, depth=depth, chunks_per_rank=chunks, block_m=bm, block_n=bn, block_k=bk)


def lcfg(cfg):
    return L.LaunchConfig(num_warps=cfg[3], num_stages=cfg[4], epilogue_subtile=cfg[5])


def oracle_binding(plan):
    """configs/ag_gemm.yaml or gemm_rs.yaml bound at the plan's geometry (M, N, K, chunks, blocks)."""
    return plan_binding(load_program(ROOT / "configs" / f"{SPECS[plan.collective]}.yaml"), plan)


def expected(plan, inputs_per_rank) -> list:
    """Every rank's C from the semantics oracle run SPMD, float64 on the inputs' GPU.
    `inputs_per_rank[r]`: {"A": rank r's A (its shard for all_gather, its [M, K_local] for
    reduce_scatter), "B": its weight}; C comes back as the rank holds it (reduce_scatter: its rows)."""
    device = inputs_per_rank[0]["A"].device
    held = execute_ranks(oracle_binding(plan), plan.world, inputs_per_rank, xp=TorchOps(device))
    return [h["C"].data for h in held]


def expected_alone(plan, a_full, b):
    """C of the consumer alone (every chunk present): the oracle's global view, A whole."""
    return execute(oracle_binding(plan), {"A": a_full, "B": b}, xp=TorchOps(a_full.device))["C"].data


def rel_err(out, ref) -> float:
    """||out - ref|| / ||ref|| in float64; NaN when an output element was never written."""
    if torch.isnan(out).any():
        return float("nan")
    return float((out.double() - ref).norm() / ref.norm())


def mean_ms(fn, iters=20) -> float:
    """Mean time of `iters` back-to-back calls of fn (CUDA events around the whole run)."""
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(iters):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / iters
