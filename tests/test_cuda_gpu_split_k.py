"""Split-K on a GPU (skipped without one): the shares of a tile meet through arrival counters that
the last share resets, so many calls in a row, calls of other shapes in between, calls on two
streams and calls inside a CUDA graph must all keep matching the semantics oracle. The interpreter
runs programs one after another and cannot show a race; these run on the device."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from tests.conftest import ROOT  # noqa: E402
from tests.cuda_util import oracle_inputs  # noqa: E402
from tilesched import load_program  # noqa: E402
from tilesched.backends.cuda.io import check_outputs, poisoned  # noqa: E402
from tilesched.backends.cuda.kernel import Kernel  # noqa: E402

LOWBIT = {"BLOCK_M": 1, "BLOCK_N": 32, "BLOCK_K": 64, "GROUP_M": 1, "NUM_WARPS": 4, "NUM_STAGES": 3}
DEVICE = "cuda"
GEMM = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 1, "NUM_WARPS": 4, "NUM_STAGES": 3,
        "PERSISTENT": False, "EPILOGUE_SUBTILE": False}
CASES = [("w4a16_gemm", {"M": 3, "N": 200, "K": 1040}, LOWBIT), ("w4a16_gemm", {"M": 20, "N": 96, "K": 520},
                                                                  {**LOWBIT, "BLOCK_M": 16}),
         ("gemm_bf16_hopper", {"M": 40, "N": 72, "K": 520}, GEMM)]


def _point(name, sizes, params, split, seed):
    kernel = Kernel(load_program(ROOT / "configs" / f"{name}.yaml"))
    b, _, tensors, want = oracle_inputs(kernel.program, sizes, seed, {**params, "SPLIT_K": split})
    ins = {n: t.to(DEVICE) for n, t in tensors.items()}
    return kernel, b, ins, want


def _check(kernel, b, ins, want):
    out = {n: poisoned(kernel.program.tensor(n), b.sizes, DEVICE) for n in kernel.outputs}
    kernel(params=dict(b.params), sizes=dict(b.sizes), **ins, **out)
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return _first_wrong(b, out, want)


def _first_wrong(b, out, want):
    """The first output that disagrees with the oracle, or None."""
    return next((v for v in check_outputs(b, {n: t.cpu() for n, t in out.items()}, want) if not v.ok), None)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("split", [2, 4, 8])
def test_repeated_calls_and_shapes_in_between(case, split):
    name, sizes, params = CASES[case]
    first = _point(name, sizes, params, split, seed=split)
    other = _point(name, {**sizes, "N": sizes["N"] + 40}, params, split, seed=split + 1)
    for _ in range(5):
        for point in (first, other):
            bad = _check(*point)
            assert bad is None, bad.why


def test_two_streams_at_once():
    name, sizes, params = CASES[0]
    points = [_point(name, sizes, params, 4, seed=s) for s in (1, 2)]
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    outs = []
    for _ in range(20):  # launched back to back on both streams, checked after
        for (kernel, b, ins, _), s in zip(points, streams):
            out = {n: poisoned(kernel.program.tensor(n), b.sizes, DEVICE) for n in kernel.outputs}
            with torch.cuda.stream(s):
                kernel(params=dict(b.params), sizes=dict(b.sizes), **ins, **out)
            outs.append((b, out, points[streams.index(s)][3]))
    torch.cuda.synchronize()
    for b, out, want in outs:
        bad = _first_wrong(b, out, want)
        assert bad is None, bad.why


def test_replayed_in_a_cuda_graph():
    kernel, b, ins, want = _point(*CASES[0], 4, seed=5)
    out = {n: poisoned(kernel.program.tensor(n), b.sizes, DEVICE) for n in kernel.outputs}
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        kernel(params=dict(b.params), sizes=dict(b.sizes), **ins, **out)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        kernel(params=dict(b.params), sizes=dict(b.sizes), **ins, **out)
    for _ in range(10):
        for t in out.values():
            t.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        bad = _first_wrong(b, out, want)
        assert bad is None, bad.why
