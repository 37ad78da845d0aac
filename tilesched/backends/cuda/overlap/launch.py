"""Launch the rendered overlap kernels with the plan's geometry (torch tensors in, no
allocation, no synchronisation)."""

from __future__ import annotations

from dataclasses import dataclass

from tilesched.schedules.overlap import OverlapPlan

STATUS_WORDS = 4  # [chunk + 1 of the first wait that timed out (0: none), rank, value seen, target]


@dataclass(frozen=True)
class LaunchConfig:
    group_m: int = 8
    num_warps: int = 8
    num_stages: int = 3
    reduce_block_r: int = 32
    reduce_block_n: int = 256


DEFAULT = LaunchConfig()


def tiles(plan: OverlapPlan) -> tuple[int, int]:
    return plan.chunk_rows // plan.block_m, -(-plan.cols // plan.block_n)


def ag_gemm(mod, plan: OverlapPlan, a_full, b, c, flags, order, status, epoch: int, max_spin: int,
            cfg: LaunchConfig = DEFAULT):
    """C = A_full @ B, chunk by chunk in `order`, each chunk after flags[chunk] >= epoch."""
    tm, tn = tiles(plan)
    grid = (len(plan.order) * tm * tn,)
    mod.ag_gemm_kernel[grid](
        a_full, b, c, flags, order, status, epoch, plan.rank, max_spin, plan.cols, plan.depth, plan.chunk_rows,
        a_full.stride(0), a_full.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
        BLOCK_M=plan.block_m, BLOCK_N=plan.block_n, BLOCK_K=plan.block_k, GROUP_M=cfg.group_m,
        TILES_N=tn, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )


def gemm_rs(mod, plan: OverlapPlan, a, b, order, recvs, sigs, cfg: LaunchConfig = DEFAULT):
    """Partial C = A @ B in `order`; tile rows of chunk c go to recvs[owner(c)][rank] and
    count on sigs[owner(c)][rank * chunks + local(c)]."""
    tm, tn = tiles(plan)
    grid = (len(plan.order) * tm * tn,)
    peers = [x for pair in zip(recvs, sigs) for x in pair]
    mod.gemm_rs_kernel[grid](
        a, b, order, *peers, plan.rank, plan.cols, plan.depth, plan.chunk_rows, plan.chunks_per_rank,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1),
        BLOCK_M=plan.block_m, BLOCK_N=plan.block_n, BLOCK_K=plan.block_k, GROUP_M=cfg.group_m,
        TILES_N=tn,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )


def rs_reduce(mod, plan: OverlapPlan, recv, sig, out, status, target: int, max_spin: int,
              cfg: LaunchConfig = DEFAULT):
    """out = sum over sources of recv[src], each chunk after all its sources' counts reach target."""
    rows = plan.chunk_rows * plan.chunks_per_rank
    br = min(cfg.reduce_block_r, plan.chunk_rows)
    grid = (rows // br, -(-plan.cols // cfg.reduce_block_n))
    mod.rs_reduce_kernel[grid](
        recv, sig, out, status, target, plan.rank, max_spin, plan.cols, plan.chunk_rows, plan.chunks_per_rank,
        BLOCK_R=br, BLOCK_N=cfg.reduce_block_n, WORLD=plan.world, num_warps=4,
    )


def wait(mod, flag, target: int, status, rank: int, chunk: int, max_spin: int):
    mod.wait_kernel[(1,)](flag, target, status, rank, chunk, max_spin, num_warps=1)
