"""The overlap ops with their real kernels, streams and signals on one GPU: every rank in
one process (`LoopbackNode`), against float64 references on fresh random inputs, outputs
poisoned before each call. Skipped without a GPU (CI has none: run on the device)."""

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from tilesched.backends.cuda.overlap import launch as L  # noqa: E402
from tilesched.backends.cuda.overlap.loopback import LoopbackNode  # noqa: E402
from tilesched.runtime.watchdog import SignalTimeout  # noqa: E402
from tilesched.schedules.overlap import build_plan  # noqa: E402

CFG = L.LaunchConfig(num_warps=4, num_stages=3, epilogue_subtile=True)
BLOCKS = dict(block_m=128, block_n=128, block_k=64)


def plans(collective, world, rows, cols, depth, chunks):
    engine = "copy_engine" if collective == "all_gather" else "sm"
    return [build_plan(collective, r, world, engine=engine, rows=rows, cols=cols, depth=depth, chunks_per_rank=chunks,
                       **BLOCKS) for r in range(world)]


def rel_err(out, ref):
    assert not torch.isnan(out).any(), "an output element was never written"
    return float((out.double() - ref).norm() / ref.norm())


def bf16(*shape, scale=1.0):
    return (torch.randn(*shape, device="cuda") * scale).to(torch.bfloat16)


@pytest.mark.parametrize("world,rows,cols,depth,chunks", [(2, 512, 1000, 520, 2), (3, 768, 384, 256, 1),
                                                           (4, 1024, 256, 128, 2)])
def test_all_gather_gemm(world, rows, cols, depth, chunks):
    node = LoopbackNode(plans("all_gather", world, rows, cols, depth, chunks), CFG)
    per = rows // world
    for _ in range(3):  # consecutive calls: both buffer parities, epochs past 2
        shards = [bf16(per, depth) for _ in range(world)]
        bs = [bf16(depth, cols, scale=depth ** -0.5) for _ in range(world)]
        outs = [torch.full((rows, cols), float("nan"), device="cuda", dtype=torch.bfloat16) for _ in range(world)]
        node.call(list(zip(shards, bs, outs)))
        node.check()
        full = torch.cat(shards).double()
        for r in range(world):
            assert rel_err(outs[r], full @ bs[r].double()) < 1e-2, f"rank {r}"


@pytest.mark.parametrize("world,rows,cols,depth,chunks", [(2, 512, 1000, 520, 2), (3, 768, 384, 256, 1),
                                                           (4, 1024, 256, 128, 2)])
def test_gemm_reduce_scatter(world, rows, cols, depth, chunks):
    node = LoopbackNode(plans("reduce_scatter", world, rows, cols, depth, chunks), CFG)
    per = rows // world
    for _ in range(3):
        a = [bf16(rows, depth) for _ in range(world)]
        b = [bf16(depth, cols, scale=depth ** -0.5) for _ in range(world)]
        outs = [torch.full((per, cols), float("nan"), device="cuda", dtype=torch.bfloat16) for _ in range(world)]
        node.call(list(zip(a, b, outs)))
        node.check()
        full = sum(x.double() @ y.double() for x, y in zip(a, b))
        for r in range(world):
            assert rel_err(outs[r], full[r * per:(r + 1) * per]) < 1e-2, f"rank {r}"


def test_a_rank_that_never_calls_times_out_by_name():
    """Rank 1 never runs: rank 0's own chunks wait for its partial tiles, time out, and the
    error names rank 0 and its first own chunk instead of hanging."""
    node = LoopbackNode(plans("reduce_scatter", 2, 512, 256, 128, 2), CFG, max_spin=1000)
    a, b = bf16(512, 128), bf16(128, 256)
    out = torch.full((256, 256), float("nan"), device="cuda", dtype=torch.bfloat16)
    node.ops[0](a, b, out)
    with pytest.raises(SignalTimeout, match=r"rank 0: timed out waiting for chunk [01]"):
        node.ops[0].check()
