"""The GPU benchmarks of issue 16 (bench/attention.py, bench/lowbit.py, bench/fp8.py) import, their
candidate lists are legal at every bench shape, and their CPU-side glue works: inputs built as the
specs store them run through the generated kernels (Triton interpreter) and the oracle check, and
agree with the baselines' own reference computations where those run on a CPU."""

from __future__ import annotations

import importlib
import math
import sys

import pytest

from tests.conftest import ROOT
from tilesched import bind, load_program

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
sys.path.insert(0, str(ROOT / "bench"))

attention = importlib.import_module("attention")
lowbit = importlib.import_module("lowbit")
fp8 = importlib.import_module("fp8")
sb = importlib.import_module("spec_bench")

CONFIGS = ROOT / "configs"


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def test_candidates_are_legal_at_every_bench_shape():
    for spec in attention.SPECS.values():
        prog = load_program(CONFIGS / f"{spec}.yaml")
        for b, h, s, d in attention.SHAPES:
            sizes = {"B": b, "H": h, "SQ": s, "SK": s, "D": d}
            assert all(sb.legal(prog, sizes, p) for p in attention.candidates(d)), (spec, sizes)
    gqa = load_program(CONFIGS / f"{attention.GQA_SPEC}.yaml")
    for b, h, s, d, g in attention.GQA_SHAPES:
        assert all(sb.legal(gqa, {"B": b, "H": h, "SQ": s, "SK": s, "D": d, "G": g}, p)
                   for p in attention.candidates(d))
    for spec in lowbit.BITS_SPECS.values():
        prog = load_program(CONFIGS / f"{spec}.yaml")
        for n, k in lowbit.NK:
            for m in lowbit.MS:
                legal = [p for p in lowbit.candidates(m) if sb.legal(prog, {"M": m, "N": n, "K": k}, p)]
                assert len(legal) >= len(lowbit.candidates(m)) - 2 and legal, (spec, m, n, k)
    prog = load_program(CONFIGS / "fp8_gemm.yaml")
    for m, n, k in fp8.SHAPES:
        assert all(sb.legal(prog, {"M": m, "N": n, "K": k}, p) for p in fp8.candidates(m)), (m, n, k)
    for name, sizes in {**attention.CHECK, **lowbit.CHECK, **fp8.CHECK}.items():
        bind(load_program(CONFIGS / f"{name}.yaml"), sizes)  # the check shapes bind


def test_spearman():
    assert sb.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert sb.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert sb.spearman([1, 2], [1, 2]) is None and sb.spearman([1, 1, 1], [1, 2, 3]) is None


def test_attention_glue_on_the_cpu():
    from tilesched.backends.cuda.io import retyped
    from tilesched.backends.cuda.kernel import Kernel

    for causal, g in ((False, 1), (True, 1), (True, 2)):
        spec = attention.GQA_SPEC if g > 1 else attention.SPECS[causal]
        prog = retyped(load_program(CONFIGS / f"{spec}.yaml"), "bf16", "fp32")
        kernel = Kernel(prog)
        ins = attention.make_inputs(1, 4, 40, 16, "cpu", torch.float32, g=g)
        sizes = {"B": 1, "H": 4, "SQ": 40, "SK": 40, "D": 16, **({"G": g} if g > 1 else {})}
        params = {"BLOCK_M": 16, "BLOCK_N": 16, "NUM_WARPS": 4, "NUM_STAGES": 2}
        err, why = attention.check_slice(kernel, prog, sizes, params, ins)
        assert math.isfinite(err) and err < 1e-5, why
        ours = kernel(params=params, **ins)
        want = attention.sdpa(None, causal, g)(ins["Q"], ins["K"], ins["V"])
        assert torch.allclose(ours, want, atol=1e-5)
    assert attention.flops(1, 1, 128, 128, 64, True) == 2 * 128 * 128 * 64


@pytest.mark.parametrize("bits", sorted(lowbit.BITS_SPECS))
def test_lowbit_glue_on_the_cpu(bits):
    from tilesched.backends.cuda.io import retyped
    from tilesched.backends.cuda.kernel import Kernel

    prog = retyped(load_program(CONFIGS / f"{lowbit.BITS_SPECS[bits]}.yaml"), "bf16", "fp32")
    kernel = Kernel(prog)
    ins = lowbit.make_inputs(bits, 3, 40, 260, "cpu", torch.float32)
    b = sb.legal(prog, {"M": 3, "N": 40, "K": 260}, lowbit.cfg(1, 32, 64, 4, 2, 2))
    err, why = sb.oracle_error(kernel, b, ins)
    assert math.isfinite(err) and err < 1e-5, why
    per = 32 // bits if bits < 8 else 1
    stored = sum(t.numel() * t.element_size() for t in ins.values()) + 3 * 40 * 4  # + Y (fp32 here)
    assert lowbit.weight_bytes(bits, 3, 40, 260) <= stored and per >= 1


def test_fp8_glue_on_the_cpu():
    from tilesched.backends.cuda.kernel import Kernel

    prog = load_program(CONFIGS / "fp8_gemm.yaml")
    kernel = Kernel(prog)
    ins = fp8.make_inputs(40, 48, 64, "cpu")
    assert ins["B"].stride(0) == 1 and ins["A"].dtype == torch.float8_e4m3fn
    params = fp8.cfg(64, 64, 64, 4, 2, False, True)
    err, why = sb.oracle_error(kernel, sb.legal(prog, {"M": 40, "N": 48, "K": 64}, params), ins)
    assert math.isfinite(err), why
    ours = kernel(params=params, **ins)
    ref = (ins["A"].float() @ ins["B"].float()) * ins["sa"][:, None] * ins["sb"][None, :]
    assert torch.allclose(ours.float(), ref, rtol=2e-2, atol=2e-2)
    try:
        base = fp8.scaled_mm(ins)
    except (RuntimeError, NotImplementedError):  # no fp8 matmul on this CPU build
        return
    assert torch.allclose(base.float(), ref, rtol=2e-2, atol=5e-2)
