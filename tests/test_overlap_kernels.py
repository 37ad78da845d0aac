"""The generated overlap kernels: golden sources, and the kernels under TRITON_INTERPRET=1
on the CPU with signals pre-set (float32: bf16 dot is not meaningful in the interpreter),
checked against the semantics oracle run SPMD (configs/ag_gemm.yaml, gemm_rs.yaml bound at
the kernels' geometry)."""

import os

import numpy as np
import pytest

from tests.conftest import ROOT
from tilesched import bind, load_program
from tilesched.backends.cuda.io import retyped
from tilesched.backends.cuda.overlap.render import render
from tilesched.runtime.watchdog import SignalTimeout, check_status
from tilesched.schedules.overlap import build_plan, derive_overlap, plan_binding
from tilesched.semantics import compare, random_inputs_ranks, run_spec_ranks

GOLDEN = ROOT / "tests" / "golden" / "cuda_overlap"


@pytest.mark.parametrize("spec,world", [("ag_gemm", 2), ("gemm_rs", 2), ("gemm_rs", 4)])
def test_golden(spec, world, update_golden):
    b = bind(load_program(ROOT / "configs" / f"{spec}.yaml"), {"M": 8192})
    src = render(derive_overlap(b, 0, world), spec)
    assert src == render(derive_overlap(b, world - 1, world), spec)  # one source for every rank
    path = GOLDEN / f"{spec}_w{world}.py"
    if update_golden:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(src)
    assert path.read_text() == src, f"{path} is stale: run pytest --update-golden"
    compile(src, str(path), "exec")


@pytest.fixture
def interp(monkeypatch, tmp_path):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("TILESCHED_CACHE", str(tmp_path))
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from tilesched.backends.cuda.overlap import launch
    from tilesched.backends.cuda.overlap.render import load

    assert os.environ["TRITON_INTERPRET"] == "1"
    return torch, launch, load


CFG = dict(group_m=2, num_warps=4, num_stages=2)


def oracle(spec, plan):
    """The spec bound at the plan's geometry, fp32 as the kernels run here; fresh random inputs
    per rank (rounded to fp32, so the oracle reads exactly the kernel's values); the oracle's
    outputs per rank."""
    b = plan_binding(retyped(load_program(ROOT / "configs" / f"{spec}.yaml"), "bf16", "fp32"), plan)
    ins = [{n: v.astype(np.float32).astype(np.float64) for n, v in i.items()}
           for i in random_inputs_ranks(b, plan.world, np.random.default_rng())]
    return b, ins, run_spec_ranks(b, plan.world, ins)


def check(b, got, want, what=""):
    """fp32's tolerance (which allows tf32 dots), and the interpreter's IEEE fp32 dot well inside it."""
    v = compare(b.program, "C", got.double().numpy(), want)
    assert v.ok, f"{what}{v.why}"
    assert v.max_error < 1e-5, f"{what}max error {v.max_error:.2e}"


def _ag(interp, depth=40, cols=72, rank=1, world=2):
    torch, L, load = interp
    p = build_plan("all_gather", rank, world, engine="copy_engine", rows=world * 64, cols=cols, depth=depth,
                   chunks_per_rank=2, block_m=16, block_n=32, block_k=16)
    mod = load(render(p, "ag_gemm"))
    b, ins, want = oracle("ag_gemm", p)
    per = p.rows // world
    a_full = torch.full((p.rows, depth), float("nan"))  # own rows never come from the gathered buffer
    remote = [c for c in p.chunks if c.owner != rank]
    for c in remote:  # what the peers pushed: rows of their shards
        lo = c.row_start - c.owner * per
        a_full[c.row_start:c.row_stop] = torch.tensor(ins[c.owner]["A"][lo:lo + c.row_stop - c.row_start],
                                                      dtype=torch.float32)
    a_local = torch.tensor(ins[rank]["A"], dtype=torch.float32)
    w = torch.tensor(ins[rank]["B"], dtype=torch.float32)
    out = torch.full((p.rows, cols), float("nan"))
    return torch, L, mod, p, b, w, a_local, a_full, out, want[rank]["C"]


@pytest.mark.parametrize("subtile,sms", [(True, 3), (False, 64)])
def test_ag_consumer_kernel_with_flags_set(interp, subtile, sms):
    torch, L, mod, p, b, w, a_local, a_full, out, want = _ag(interp)  # K=40, N=72: ragged K and N tiles
    flags = torch.full((p.n_signals,), 5, dtype=torch.int32)
    status = torch.zeros(L.STATUS_WORDS, dtype=torch.int32)
    L.ag_gemm(mod, p, a_local, a_full, w, out, flags, torch.tensor(p.order, dtype=torch.int32), status, 5, 1000,
              L.LaunchConfig(epilogue_subtile=subtile, num_sms=sms, **CFG))
    check_status(status)
    check(b, out, want)


def test_ag_watchdog_names_rank_and_chunk(interp):
    torch, L, mod, p, b, w, a_local, a_full, out, want = _ag(interp)
    flags = torch.full((p.n_signals,), 5, dtype=torch.int32)
    flags[1] = 4  # chunk 1 (rank 0's) was never pushed for epoch 5
    flags[2] = 0  # own chunks need no flag
    status = torch.zeros(L.STATUS_WORDS, dtype=torch.int32)
    L.ag_gemm(mod, p, a_local, a_full, w, out, flags, torch.tensor(p.order, dtype=torch.int32), status, 5, 20,
              L.LaunchConfig(num_sms=3, **CFG))
    with pytest.raises(SignalTimeout, match=r"rank 1: timed out waiting for chunk 1.*reads 4, needed >= 5"):
        check_status(status)


def test_rs_kernel_ranks_in_one_process(interp):
    """Both ranks' GEMMs in one process, with the peer's partial tiles in place first (the
    order the plan makes likely on the GPU): each own tile adds the peer's slot."""
    torch, L, load = interp
    world, rows, cols, depth = 2, 128, 40, 24  # N=40: a ragged column tile
    ps = [build_plan("reduce_scatter", r, world, engine="sm", rows=rows, cols=cols, depth=depth, chunks_per_rank=2,
                     block_m=16, block_n=32, block_k=16) for r in range(world)]
    mod = load(render(ps[0], "gemm_rs"))
    binding, ins, want = oracle("gemm_rs", ps[0])
    a = [i["A"] for i in ins]  # each rank's A[M, K_local] and B[K_local, N]
    b = [i["B"] for i in ins]
    per = rows // world
    recv = [torch.full((world, per, cols), float("nan")) for _ in range(world)]
    sig = [torch.zeros(ps[0].n_signals, dtype=torch.int32) for _ in range(world)]
    outs = [torch.full((per, cols), float("nan")) for _ in range(world)]
    status = [torch.zeros(L.STATUS_WORDS, dtype=torch.int32) for _ in range(world)]
    order = [torch.tensor(p.order, dtype=torch.int32) for p in ps]

    def run(p, epoch, max_spin=100_000):
        L.gemm_rs(mod, p, torch.tensor(a[p.rank], dtype=torch.float32), torch.tensor(b[p.rank], dtype=torch.float32),
                  outs[p.rank], order[p.rank], recv[p.rank][:, :, :], sig[p.rank], recv, sig, status[p.rank], epoch,
                  max_spin, L.LaunchConfig(num_sms=3, **CFG))

    # rank 1 runs first: its own chunks time out (rank 0 has sent nothing), its pushes land
    run(ps[1], 1, max_spin=20)
    with pytest.raises(SignalTimeout, match=r"rank 1: timed out waiting for chunk [23]"):
        check_status(status[1])
    assert [int(x) for x in sig[0]] == [0, 0, ps[0].tiles_per_chunk, ps[0].tiles_per_chunk]
    run(ps[0], 1)  # rank 0 finds rank 1's partials, and pushes its own to rank 1
    check_status(status[0])
    status[1].zero_()
    run(ps[1], 1)
    check_status(status[1])
    for p in ps:
        check(binding, outs[p.rank], want[p.rank]["C"], f"rank {p.rank}: ")


@pytest.mark.parametrize("collective,world", [("all_gather", 2), ("reduce_scatter", 2), ("reduce_scatter", 4)])
def test_kernels_compile_for_hopper(monkeypatch, tmp_path, collective, world):
    """The bench configuration builds for sm_90 on this GPU-less machine, with TMA loads and
    wgmma (the persistent TMA GEMM of the CUDA backend, not a pointer-based fallback)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("TILESCHED_CACHE", str(tmp_path))
    torch = pytest.importorskip("torch")
    from tilesched.backends.cuda.aot import compile_call_for_hopper
    from tilesched.backends.cuda.overlap import launch as L
    from tilesched.backends.cuda.overlap.render import load

    rows, cols, depth = 8192, 4096, 8192
    p = build_plan(collective, 0, world, engine="copy_engine" if collective == "all_gather" else "sm", rows=rows,
                   cols=cols, depth=depth, chunks_per_rank=2, block_m=128, block_n=256, block_k=64)
    mod = load(render(p, "ovl"))
    cfg = L.LaunchConfig(num_sms=132)
    bf, i32 = torch.bfloat16, torch.int32
    status, order = torch.zeros(L.STATUS_WORDS, dtype=i32), torch.zeros(len(p.order), dtype=i32)
    if collective == "all_gather":
        a_full = torch.empty(rows, depth, dtype=bf)
        _, pos, kw = L.ag_gemm_args(p, a_full[: rows // world], a_full, torch.empty(depth, cols, dtype=bf),
                                    torch.empty(rows, cols, dtype=bf), torch.zeros(p.n_signals, dtype=i32), order,
                                    status, 1, 100, cfg)
        fn = mod.ag_gemm_kernel
    else:
        recv = torch.empty(world, rows // world, cols, dtype=bf)
        sig = torch.zeros(p.n_signals, dtype=i32)
        _, pos, kw = L.gemm_rs_args(p, torch.empty(rows, depth, dtype=bf), torch.empty(depth, cols, dtype=bf),
                                    torch.empty(rows // world, cols, dtype=bf), order, recv, sig,
                                    [recv] * world, [sig] * world, status, 1, 100, cfg)
        fn = mod.gemm_rs_kernel
    built = compile_call_for_hopper(fn, pos, kw)
    assert built.wgmma and built.tma
    assert built.shared_bytes <= 232448
