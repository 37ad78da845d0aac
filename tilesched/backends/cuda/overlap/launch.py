"""Launch the rendered overlap kernels with the plan's geometry: TMA descriptors over the
torch tensors, one persistent program per SM (no allocation, no synchronisation)."""

from __future__ import annotations

from dataclasses import dataclass

from tilesched.schedules.overlap import OverlapPlan

STATUS_WORDS = 4  # [chunk + 1 of the first wait that timed out (0: none), rank, value seen, target]


@dataclass(frozen=True)
class LaunchConfig:
    group_m: int = 8
    num_warps: int = 8
    num_stages: int = 3
    epilogue_subtile: bool = True
    num_sms: int | None = None  # persistent programs (None: the device's SM count)


DEFAULT = LaunchConfig()


def tiles(plan: OverlapPlan) -> tuple[int, int]:
    return plan.chunk_rows // plan.block_m, -(-plan.cols // plan.block_n)


def _descriptor(t, block):
    from triton.tools.tensor_descriptor import TensorDescriptor

    if t.stride(-1) != 1:
        raise ValueError(f"TMA needs unit stride in the last dimension, got strides {tuple(t.stride())}")
    return TensorDescriptor.from_tensor(t, list(block))


def num_programs(plan: OverlapPlan, cfg: LaunchConfig, device) -> int:
    sms = cfg.num_sms
    if sms is None:
        import torch

        sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    tm, tn = tiles(plan)
    return min(sms, len(plan.order) * tm * tn)


def _common(plan: OverlapPlan, cfg: LaunchConfig, grid: int) -> dict:
    return dict(BLOCK_M=plan.block_m, BLOCK_N=plan.block_n, BLOCK_K=plan.block_k, GROUP_M=cfg.group_m,
                NUM_SMS=grid, EPILOGUE_SUBTILE=cfg.epilogue_subtile, num_warps=cfg.num_warps,
                num_stages=cfg.num_stages)


def _c_block(plan: OverlapPlan, cfg: LaunchConfig) -> tuple[int, int]:
    return plan.block_m, plan.block_n // 2 if cfg.epilogue_subtile else plan.block_n


def ag_gemm_args(plan: OverlapPlan, a_local, a_full, b, c, flags, order, status, epoch: int, max_spin: int,
                 cfg: LaunchConfig = DEFAULT):
    """(grid, positional args, keyword args) of `ag_gemm_kernel` (see `ag_gemm`)."""
    tm, tn = tiles(plan)
    grid = num_programs(plan, cfg, c.device)
    pos = (_descriptor(a_local, (plan.block_m, plan.block_k)), _descriptor(a_full, (plan.block_m, plan.block_k)),
           _descriptor(b, (plan.block_k, plan.block_n)), _descriptor(c, _c_block(plan, cfg)),
           flags, order, status, epoch, plan.rank, max_spin, plan.cols, plan.depth, plan.chunk_rows,
           plan.chunks_per_rank, len(plan.order) * tm * tn)
    return (grid,), pos, _common(plan, cfg, grid)


def ag_gemm(mod, *args, **kwargs):
    """C = all_gather(A) @ B in the plan's chunk order: own chunks from `a_local` (this
    rank's shard), each remote chunk from `a_full` once flags[chunk] >= epoch. Arguments:
    (plan, a_local, a_full, b, c, flags, order, status, epoch, max_spin, cfg)."""
    grid, pos, kw = ag_gemm_args(*args, **kwargs)
    mod.ag_gemm_kernel[grid](*pos, **kw)


def gemm_rs_args(plan: OverlapPlan, a, b, out, order, recv, sig, recvs, sigs, status, epoch: int, max_spin: int,
                 cfg: LaunchConfig = DEFAULT):
    """(grid, positional args, keyword args) of `gemm_rs_kernel` (see `gemm_rs`)."""
    tm, tn = tiles(plan)
    grid = num_programs(plan, cfg, out.device)
    peers = [x for pair in zip(recvs, sigs) for x in pair]
    pos = (_descriptor(a, (plan.block_m, plan.block_k)), _descriptor(b, (plan.block_k, plan.block_n)),
           _descriptor(out, _c_block(plan, cfg)), order, recv, sig, status, *peers,
           epoch, plan.rank, max_spin, plan.cols, plan.depth, plan.chunk_rows, plan.chunks_per_rank,
           len(plan.order) * tm * tn)
    return (grid,), pos, dict(WORLD=plan.world, **_common(plan, cfg, grid))


def gemm_rs(mod, *args, **kwargs):
    """out = this rank's rows of sum over ranks of A_r @ B_r: peer chunks' partial tiles go
    to recvs[owner][rank] and count on sigs[owner][rank * chunks + local]; own chunks wait
    for the peers' counts to reach epoch * tiles_per_chunk in `sig` and add `recv`'s slots.
    Arguments: (plan, a, b, out, order, recv, sig, recvs, sigs, status, epoch, max_spin, cfg)."""
    grid, pos, kw = gemm_rs_args(*args, **kwargs)
    mod.gemm_rs_kernel[grid](*pos, **kw)
