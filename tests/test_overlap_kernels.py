"""The generated overlap kernels: golden sources, and the kernels under TRITON_INTERPRET=1
on the CPU with signals pre-set (float32: bf16 dot is not meaningful in the interpreter)."""

import os

import numpy as np
import pytest

from tests.conftest import ROOT
from tilesched import bind, load_program
from tilesched.backends.cuda.overlap.render import render
from tilesched.runtime.watchdog import SignalTimeout, check_status
from tilesched.schedules.overlap import build_plan, derive_overlap

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


def _ag(interp, depth=40, cols=72):
    torch, L, load = interp
    p = build_plan("all_gather", 1, 2, engine="copy_engine", rows=128, cols=cols, depth=depth, chunks_per_rank=2,
                   block_m=16, block_n=32, block_k=16)
    mod = load(render(p, "ag_gemm"))
    g = np.random.default_rng()
    a, b = g.standard_normal((p.rows, depth)), g.standard_normal((depth, cols))
    out = torch.full((p.rows, cols), float("nan"))
    return torch, L, mod, p, a, b, out


def test_ag_consumer_kernel_with_flags_set(interp):
    torch, L, mod, p, a, b, out = _ag(interp)  # K=40, N=72: ragged K and N tiles
    flags = torch.full((p.n_signals,), 5, dtype=torch.int32)
    status = torch.zeros(L.STATUS_WORDS, dtype=torch.int32)
    L.ag_gemm(mod, p, torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32), out, flags,
              torch.tensor(p.order, dtype=torch.int32), status, 5, 1000, L.LaunchConfig(group_m=2))
    check_status(status)
    ref = a @ b
    assert not torch.isnan(out).any()
    assert np.abs(out.double().numpy() - ref).max() / np.abs(ref).max() < 1e-5


def test_ag_watchdog_names_rank_and_chunk(interp):
    torch, L, mod, p, a, b, out = _ag(interp)
    flags = torch.full((p.n_signals,), 5, dtype=torch.int32)
    flags[3] = 4  # chunk 3's copy never signalled for epoch 5
    status = torch.zeros(L.STATUS_WORDS, dtype=torch.int32)
    L.ag_gemm(mod, p, torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32), out, flags,
              torch.tensor(p.order, dtype=torch.int32), status, 5, 20, L.LaunchConfig(group_m=2))
    with pytest.raises(SignalTimeout, match=r"rank 1: timed out waiting for chunk 3.*reads 4, needed >= 5"):
        check_status(status)


def test_rs_kernels_two_ranks_in_one_process(interp):
    torch, L, load = interp
    world, rows, cols, depth = 2, 128, 40, 24
    ps = [build_plan("reduce_scatter", r, world, engine="sm", rows=rows, cols=cols, depth=depth, chunks_per_rank=2,
                     block_m=16, block_n=32, block_k=16) for r in range(world)]
    mod = load(render(ps[0], "gemm_rs"))
    g = np.random.default_rng()
    a = [g.standard_normal((rows, depth)) for _ in range(world)]
    b = [g.standard_normal((depth, cols)) for _ in range(world)]
    per = rows // world
    recv = [torch.full((world, per, cols), float("nan")) for _ in range(world)]
    sig = [torch.zeros(ps[0].n_signals, dtype=torch.int32) for _ in range(world)]
    for p in ps:  # each rank's GEMM pushes its partial tiles into the owners' slots
        L.gemm_rs(mod, p, torch.tensor(a[p.rank], dtype=torch.float32), torch.tensor(b[p.rank], dtype=torch.float32),
                  torch.tensor(p.order, dtype=torch.int32), recv, sig, L.LaunchConfig(group_m=2))
    assert all(int(s.min()) == ps[0].tiles_per_chunk for s in sig)
    cfg = L.LaunchConfig(reduce_block_r=16, reduce_block_n=32)
    for p in ps:
        out = torch.full((per, cols), float("nan"))
        status = torch.zeros(L.STATUS_WORDS, dtype=torch.int32)
        L.rs_reduce(mod, p, recv[p.rank], sig[p.rank], out, status, p.tiles_per_chunk, 1000, cfg)
        check_status(status)
        ref = sum(a[q] @ b[q] for q in range(world))[p.rank * per:(p.rank + 1) * per]
        assert np.abs(out.double().numpy() - ref).max() / np.abs(ref).max() < 1e-5
    # a second epoch that only rank 0 produced: rank 1's reduce of its chunk 2 must time out
    sig[1][0] += ps[0].tiles_per_chunk
    status = torch.zeros(L.STATUS_WORDS, dtype=torch.int32)
    L.rs_reduce(mod, ps[1], recv[1], sig[1], out, status, 2 * ps[1].tiles_per_chunk, 20, cfg)
    with pytest.raises(SignalTimeout, match=r"rank 1: timed out waiting for chunk [23]"):
        check_status(status)
