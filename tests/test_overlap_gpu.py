"""The overlap ops with their real kernels, streams and signals on one GPU: every rank in
one process (`LoopbackNode`), against the semantics oracle run SPMD (configs/ag_gemm.yaml,
gemm_rs.yaml bound at the plans' geometry; float64 on the GPU) on fresh random inputs,
outputs poisoned before each call. Skipped without a GPU (CI has none: run on the device)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from tests.conftest import ROOT  # noqa: E402
from tilesched import load_program  # noqa: E402
from tilesched.backends.cuda.io import to_device  # noqa: E402
from tilesched.backends.cuda.overlap import launch as L  # noqa: E402
from tilesched.backends.cuda.overlap.loopback import LoopbackNode  # noqa: E402
from tilesched.runtime.watchdog import SignalTimeout  # noqa: E402
from tilesched.schedules.overlap import build_plan, plan_binding  # noqa: E402
from tilesched.semantics import compare, random_inputs_ranks  # noqa: E402
from tilesched.semantics.arrays import TorchOps  # noqa: E402
from tilesched.semantics.spmd import execute_ranks  # noqa: E402

CFG = L.LaunchConfig(num_warps=4, num_stages=3, epilogue_subtile=True)
BLOCKS = dict(block_m=128, block_n=128, block_k=64)


def plans(collective, world, rows, cols, depth, chunks):
    engine = "copy_engine" if collective == "all_gather" else "sm"
    return [build_plan(collective, r, world, engine=engine, rows=rows, cols=cols, depth=depth, chunks_per_rank=chunks,
                       **BLOCKS) for r in range(world)]


def bf16(*shape, scale=1.0):
    return (torch.randn(*shape, device="cuda") * scale).to(torch.bfloat16)


SPEC = {"all_gather": "ag_gemm", "reduce_scatter": "gemm_rs"}


def check_calls(collective, world, rows, cols, depth, chunks, calls=3):
    """`calls` consecutive calls (both buffer parities, epochs past 2), each on fresh inputs
    (A: a shard per rank for all_gather, each rank's [M, K_local] for reduce_scatter; B: each
    rank's own) into NaN-poisoned outputs, every rank's C against the oracle's."""
    ps = plans(collective, world, rows, cols, depth, chunks)
    node = LoopbackNode(ps, CFG)
    b = plan_binding(load_program(ROOT / "configs" / f"{SPEC[collective]}.yaml"), ps[0])
    c_rows = rows if collective == "all_gather" else rows // world  # what a rank holds of C
    rng = np.random.default_rng()
    for _ in range(calls):
        ins = [{n: to_device(b.program.tensor(n), v, "cuda") for n, v in i.items()}
               for i in random_inputs_ranks(b, world, rng)]
        outs = [torch.full((c_rows, cols), float("nan"), device="cuda", dtype=torch.bfloat16) for _ in range(world)]
        node.call([(i["A"], i["B"], o) for i, o in zip(ins, outs)])
        node.check()
        want = execute_ranks(b, world, ins, xp=TorchOps(torch.device("cuda")))
        for r in range(world):
            v = compare(b.program, "C", outs[r].double().cpu().numpy(), want[r]["C"].data.cpu().numpy())
            assert v.ok, f"rank {r}: {v.why}"


@pytest.mark.parametrize("world,rows,cols,depth,chunks", [(2, 512, 1000, 520, 2), (3, 768, 384, 256, 1),
                                                           (4, 1024, 256, 128, 2)])
def test_all_gather_gemm(world, rows, cols, depth, chunks):
    check_calls("all_gather", world, rows, cols, depth, chunks)


@pytest.mark.parametrize("world,rows,cols,depth,chunks", [(2, 512, 1000, 520, 2), (3, 768, 384, 256, 1),
                                                           (4, 1024, 256, 128, 2)])
def test_gemm_reduce_scatter(world, rows, cols, depth, chunks):
    check_calls("reduce_scatter", world, rows, cols, depth, chunks)


def test_a_rank_that_never_calls_times_out_by_name():
    """Rank 1 never runs: rank 0's own chunks wait for its partial tiles, time out, and the
    error names rank 0 and its first own chunk instead of hanging."""
    node = LoopbackNode(plans("reduce_scatter", 2, 512, 256, 128, 2), CFG, max_spin=1000)
    a, b = bf16(512, 128), bf16(128, 256)
    out = torch.full((256, 256), float("nan"), device="cuda", dtype=torch.bfloat16)
    node.ops[0](a, b, out)
    with pytest.raises(SignalTimeout, match=r"rank 0: timed out waiting for chunk [01]"):
        node.ops[0].check()
