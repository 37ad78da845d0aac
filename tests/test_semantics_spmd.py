"""SPMD semantics of the oracle (tilesched.semantics.spmd): every rank runs the program on its own
tensors and comm stages combine them; each expected value is computed here from the inputs."""

import numpy as np
import pytest

from tests.conftest import ROOT
from tilesched import SpecBuilder, SpecError, bind, load_program, lower
from tilesched.semantics import execute, random_inputs_ranks, run_spec, run_spec_ranks
from tilesched.semantics.spmd import execute_ranks

M, N, K = 768, 128, 64  # M: a multiple of 1..4 ranks, and of the specs' world_size * CHUNKS * BLOCK_M


def overlap_binding(spec):
    return bind(load_program(ROOT / "configs" / f"{spec}.yaml"), {"M": M, "N": N, "K": K, "CHUNKS": 1,
                                                                   "BLOCK_N": 128})


def rows(r, world):
    per = M // world
    return slice(r * per, (r + 1) * per)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_all_gather_gemm(world):
    b = overlap_binding("ag_gemm")
    ins = random_inputs_ranks(b, world, np.random.default_rng(world))
    assert all(i["A"].shape == (M // world, K) and i["B"].shape == (K, N) for i in ins)
    a = np.concatenate([i["A"] for i in ins])  # the global A: the shards in rank order
    got = run_spec_ranks(b, world, ins)
    for r in range(world):
        np.testing.assert_allclose(got[r]["A_full"], a)
        np.testing.assert_allclose(got[r]["C"], a @ ins[r]["B"], rtol=1e-12, atol=1e-12)
        # the global view (A whole, this rank's B) agrees
        np.testing.assert_allclose(run_spec(b, {"A": a, "B": ins[r]["B"]})["C"], got[r]["C"], rtol=1e-12)
    if world > 1:  # B is local: every rank its own
        assert not np.array_equal(ins[0]["B"], ins[1]["B"])


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_gemm_reduce_scatter(world):
    b = overlap_binding("gemm_rs")
    ins = random_inputs_ranks(b, world, np.random.default_rng(10 + world))
    assert all(i["A"].shape == (M, K) and i["B"].shape == (K, N) for i in ins)
    total = sum(i["A"] @ i["B"] for i in ins)
    got = run_spec_ranks(b, world, ins)
    for r in range(world):
        assert got[r]["C"].shape == (M // world, N)  # what rank r holds: its rows
        np.testing.assert_allclose(got[r]["C"], total[rows(r, world)], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got[r]["C_partial"], ins[r]["A"] @ ins[r]["B"], rtol=1e-12, atol=1e-12)
    # the global view sees one rank's term: its C_partial is that rank's, and the terms add up to C
    views = [run_spec(b, i) for i in ins]
    for r in range(world):
        np.testing.assert_allclose(views[r]["C_partial"], got[r]["C_partial"], rtol=1e-12)
    np.testing.assert_allclose(sum(v["C"] for v in views), np.concatenate([g["C"] for g in got]), rtol=1e-9,
                               atol=1e-12)
    if world == 1:
        np.testing.assert_allclose(views[0]["C"], got[0]["C"], rtol=1e-12)


def test_sharded_inputs_at_the_global_shape_read_only_the_slice():
    b = overlap_binding("ag_gemm")
    world = 2
    ins = random_inputs_ranks(b, world, np.random.default_rng(0))
    whole = []
    for r, i in enumerate(ins):
        a = np.full((M, K), np.nan)
        a[rows(r, world)] = i["A"]
        whole.append({"A": a, "B": i["B"]})
    want, got = run_spec_ranks(b, world, ins), run_spec_ranks(b, world, whole)
    for r in range(world):
        np.testing.assert_array_equal(got[r]["C"], want[r]["C"])


def test_random_inputs_ranks_share_sharded_draws():
    b = overlap_binding("ag_gemm")
    ins = random_inputs_ranks(b, 4, np.random.default_rng(3))
    a = np.concatenate([i["A"] for i in ins])
    assert a.shape == (M, K) and len({x.tobytes() for x in ins[0]["A"]}) == M // 4
    assert len({i["B"].tobytes() for i in ins}) == 4  # local: one draw per rank


def _comm_spec(op, src_placement, dst_placement):
    b = SpecBuilder("comm", target="cuda").axis("M", 8).axis("N", 4)
    b.tensor("X", ["M", "N"], "fp32", placement=src_placement).tensor("Y", ["M", "N"], "fp32", placement=dst_placement)
    b.stage("move", "comm", op, reads=["X"], writes=["Y"])
    return bind(lower(b.build()))


def _draw(world, rng, shape=(8, 4)):
    return [{"X": rng.standard_normal(shape)} for _ in range(world)]


def test_all_reduce_broadcast_and_partial_destinations():
    rng = np.random.default_rng(1)
    ins = _draw(3, rng)
    total = sum(i["X"] for i in ins)
    for out in run_spec_ranks(_comm_spec("all_reduce", "partial", "replicated"), 3, ins):
        np.testing.assert_allclose(out["Y"], total, rtol=1e-12)
    for dst in ("replicated", "partial"):
        for out in run_spec_ranks(_comm_spec("broadcast", "partial", dst), 3, ins):
            np.testing.assert_array_equal(out["Y"], ins[0]["X"])  # rank 0's value, on every rank
    got = run_spec_ranks(_comm_spec("put", "partial", "partial"), 3, ins)  # the sum on rank 0, zeros elsewhere
    np.testing.assert_allclose(got[0]["Y"], total, rtol=1e-12)
    assert not got[1]["Y"].any() and not got[2]["Y"].any()


def test_all_to_all_reshards():
    b = SpecBuilder("a2a", target="cuda").axis("M", 8).axis("N", 4)
    b.tensor("X", ["M", "N"], "fp32", placement="sharded(M)").tensor("Y", ["M", "N"], "fp32", placement="sharded(N)")
    b.stage("move", "comm", "all_to_all", reads=["X"], writes=["Y"])
    binding = bind(lower(b.build()))
    x = np.random.default_rng(2).standard_normal((8, 4))
    got = run_spec_ranks(binding, 2, [{"X": x[:4]}, {"X": x[4:]}])
    np.testing.assert_array_equal(got[0]["Y"], x[:, :2])
    np.testing.assert_array_equal(got[1]["Y"], x[:, 2:])


def test_put_and_get_carry_the_logical_value():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 4))
    shards = [{"X": x[:4]}, {"X": x[4:]}]
    for out in run_spec_ranks(_comm_spec("put", "sharded(M)", "replicated"), 2, shards):  # an all-gather
        np.testing.assert_array_equal(out["Y"], x)
    ins = _draw(2, rng)
    got = run_spec_ranks(_comm_spec("get", "partial", "sharded(M)"), 2, ins)  # a reduce-scatter
    np.testing.assert_allclose(np.concatenate([g["Y"] for g in got]), ins[0]["X"] + ins[1]["X"], rtol=1e-12)


def test_a_contraction_over_a_sharded_axis_is_a_partial_term():
    """Zeros outside a rank's slice: A and B sharded along K give each rank its term of A @ B."""
    b = SpecBuilder("kshard", target="cuda").axis("M", 4).axis("N", 6).axis("K", 8)
    b.tensor("A", ["M", "K"], "fp32", placement="sharded(K)").tensor("B", ["K", "N"], "fp32", placement="sharded(K)")
    b.tensor("P", ["M", "N"], "fp32", placement="partial").tensor("C", ["M", "N"], "fp32", placement="replicated")
    b.stage("mma", "compute", "dot", reads=["A", "B"], writes=["P"])
    b.stage("sum", "comm", "all_reduce", reads=["P"], writes=["C"])
    binding = bind(lower(b.build()))
    rng = np.random.default_rng(5)
    a, w = rng.standard_normal((4, 8)), rng.standard_normal((8, 6))
    got = run_spec_ranks(binding, 2, [{"A": a[:, :4], "B": w[:4]}, {"A": a[:, 4:], "B": w[4:]}])
    np.testing.assert_allclose(got[0]["P"], a[:, :4] @ w[:4], rtol=1e-12)
    for g in got:
        np.testing.assert_allclose(g["C"], a @ w, rtol=1e-12)
    np.testing.assert_allclose(execute(binding, {"A": a, "B": w})["C"].data, a @ w, rtol=1e-12)  # global view


def test_signal_and_wait_write_nothing():
    b = SpecBuilder("sig", target="cuda").axis("M", 8).axis("N", 4)
    b.tensor("X", ["M", "N"], "fp32", placement="replicated").tensor("Y", ["M", "N"], "fp32")
    b.stage("ready", "comm", "signal", reads=["X"])
    b.stage("go", "comm", "wait", reads=["X"], after=["ready"])
    b.stage("use", "compute", "elementwise", reads=["X"], writes=["Y"], fn=["relu"], after=["go"])
    x = np.random.default_rng(6).standard_normal((8, 4))
    for out in run_spec_ranks(bind(lower(b.build())), 2, [{"X": x}, {"X": x}]):
        assert set(out) == {"Y"}
        np.testing.assert_array_equal(out["Y"], np.maximum(x, 0))


def test_reduce_scatter_of_a_tensor_that_is_not_partial_is_refused():
    """Validation refuses it (a spec cannot say it); a program built around validation gets the
    same error from the oracle instead of a silent identity."""
    b = overlap_binding("gemm_rs")
    prog = b.program
    wrong = prog.model_copy(update={"tensors": tuple(t.model_copy(update={"placement": "replicated"})
                                                     if t.name == "C_partial" else t for t in prog.tensors)})
    ins = random_inputs_ranks(b, 2, np.random.default_rng(0))
    with pytest.raises(SpecError, match=r"stage 'reduce_scatter_c': reduce_scatter reads a partial tensor; "
                                        r"C_partial is replicated"):
        execute_ranks(b.model_copy(update={"program": wrong}), 2, ins)
    with pytest.raises(SpecError, match="reduce_scatter reads a partial tensor"):
        _comm_spec("reduce_scatter", "replicated", "sharded(M)")


def test_bad_inputs_are_named():
    b = overlap_binding("ag_gemm")
    ins = random_inputs_ranks(b, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"rank 1: input A \(sharded\(M\)\): shape \(10, 64\), the rank's slice is "
                                         r"\(384, 64\)"):
        run_spec_ranks(b, 2, [ins[0], {**ins[1], "A": ins[1]["A"][:10]}])
    with pytest.raises(KeyError, match="rank 0: missing input 'B'"):
        run_spec_ranks(b, 2, [{"A": ins[0]["A"]}, ins[1]])
    with pytest.raises(ValueError, match="3 sets of inputs for a world of 2"):
        run_spec_ranks(b, 2, ins + ins[:1])
    with pytest.raises(ValueError, match=r"A is sharded\(M\) over 5 ranks, but M=768 is not a multiple of 5"):
        run_spec_ranks(b, 5, [ins[0]] * 5)
    x = np.ones((8, 4))
    with pytest.raises(ValueError, match="X is replicated, but rank 1's values differ"):
        run_spec_ranks(_comm_spec("broadcast", "replicated", "replicated"), 2, [{"X": x}, {"X": 2 * x}])


def test_torch_arrays_give_the_same_values():
    """The GPU checks run the oracle in torch float64 on the device (here: the CPU)."""
    torch = pytest.importorskip("torch")
    from tilesched.semantics.arrays import TorchOps

    for spec in ("ag_gemm", "gemm_rs"):
        b = overlap_binding(spec)
        ins = random_inputs_ranks(b, 3, np.random.default_rng(7))
        tins = [{n: torch.from_numpy(v).to(torch.bfloat16) for n, v in i.items()} for i in ins]
        want = run_spec_ranks(b, 3, [{n: t.double().numpy() for n, t in i.items()} for i in tins])
        got = execute_ranks(b, 3, tins, xp=TorchOps(torch.device("cpu")))
        for r in range(3):
            assert isinstance(got[r]["C"].data, torch.Tensor) and got[r]["C"].data.dtype == torch.float64
            np.testing.assert_allclose(got[r]["C"].data.numpy(), want[r]["C"], rtol=1e-12, atol=1e-12)
