"""The differential machinery catches a wrong backend: with one stage's rendering dropped or
altered (the kernel IR, the rendered C, the packed data, the template match), the same helpers
the differential tests use (tests/differential.py) report a disagreement with the oracle, and
without the mutation they agree. The random searches themselves find the mutants too."""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import replace

import pytest
from hypothesis import Phase, given, settings

from tests.differential import (
    DIFF_SETTINGS,
    Epilogue,
    Extra,
    Fn,
    GemmCase,
    IBCase,
    gemm_cases,
    ib_cases,
    run_gemm_case,
    run_ib_case,
)
from tilesched.backends.cortexm import build

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None or importlib.util.find_spec("torch")
                                  is None, reason="torch and triton run the CUDA kernels in the interpreter")
needs_toolchain = pytest.mark.skipif(build.toolchain_problem() is not None, reason=str(build.toolchain_problem()))

# the random searches, without shrinking: the first disagreement is enough here
FIND = settings(max_examples=12, phases=[Phase.explicit, Phase.generate],
                **{k: v for k, v in DIFF_SETTINGS.items() if k != "print_blob"})


# ------------------------------------------------------------------------------------------ CUDA

# values past relu6's clamp (A scaled by 8), a bias, a relu6 last
GEMM = GemmCase(m=37, n=50, k=40, tiles=(16, 32, 32), scale=8.0,
                epilogue=(Epilogue((Fn("bias", Extra(("n",))), Fn("relu6"))),))


def _fns(k, change):
    """The kernel IR with the fn list of its epilogue's elementwise instructions changed."""
    post = tuple(i.model_copy(update={"fn": change(i.fn)}) if i.op == "elementwise" else i for i in k.post)
    return k.model_copy(update={"post": post})


def _drop_last_unary(fn):
    """The fn list without its last unary fn (binary ones keep their operands: the launcher would
    refuse an unexpected tensor, a failure of another kind)."""
    i = max((i for i, (f, c) in enumerate(fn) if f not in ("bias", "add", "mul", "sub", "div", "max", "min")
             and c is None), default=None)
    return fn if i is None else fn[:i] + fn[i + 1:]


def _swap(fn, old: str, new: str):
    return tuple((new if f == old else f, c) for f, c in fn)


KERNEL_MUTATIONS = {
    "drops_the_last_unary_op": lambda k: _fns(k, _drop_last_unary),
    "renders_relu6_as_relu": lambda k: _fns(k, lambda fn: _swap(fn, "relu6", "relu")),
    "renders_bias_as_mul": lambda k: _fns(k, lambda fn: _swap(fn, "bias", "mul")),
}


def _mutate_plan(monkeypatch, mutation) -> None:
    """The Kernel launcher builds its module from a kernel IR whose epilogue is mutated."""
    from tilesched.backends.cuda import kernel
    from tilesched.backends.cuda.triton_emit import render
    from tilesched.passes.gpu import lower_kernel

    def compiled(program):
        k = mutation(lower_kernel(program))
        return k, render(k)

    monkeypatch.setattr(kernel, "compiled", compiled)


@pytest.fixture
def _interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@needs_triton
@pytest.mark.usefixtures("_interpret")
@pytest.mark.parametrize("mutation", sorted(KERNEL_MUTATIONS))
def test_cuda_mutant_fails_the_oracle_check(mutation, monkeypatch):
    assert run_gemm_case(GEMM).verdict.ok
    _mutate_plan(monkeypatch, KERNEL_MUTATIONS[mutation])
    run = run_gemm_case(GEMM)
    assert not run.verdict.ok, f"the {mutation} mutant passed the oracle check:\n{run.message(GEMM)}"


@needs_triton
@pytest.mark.usefixtures("_interpret")
def test_cuda_random_search_finds_a_mutant(monkeypatch):
    _mutate_plan(monkeypatch, KERNEL_MUTATIONS["drops_the_last_unary_op"])

    @FIND
    @given(gemm_cases("pointer"))
    def check(case):
        run = run_gemm_case(case)
        assert run.verdict.ok, run.message(case)

    with pytest.raises(AssertionError, match="spec:"):
        check()


# ------------------------------------------------------------------------------------- Cortex-M

# zero points of 0 after the expand and depthwise relu6: their clamps cut off real values
IB = IBCase(h=7, w=6, c=8, e=16, co=8, stride=1, pad=1, acts=("relu6", "relu", "none"),
            act_scales=(0.04, 0.03, 0.05, 0.06), zero_points=(-5, 0, 0, 3), weight_scales=(0.01, 0.02, 0.01),
            rows=2, seed=1)


def _drop_project_bias(monkeypatch):
    """The fc rule packs the project convolution without its bias."""
    from tilesched.backends.cortexm import c_rules

    real = c_rules.RULES["fc"]

    def fc(ctx, pk, op):
        if "project" in op.stages:
            op = replace(op, ins=tuple(i for i in op.ins if i[0] != "bias"))
        return real(ctx, pk, op)

    monkeypatch.setitem(c_rules.RULES, "fc", fc)


def _unclamped_activations(monkeypatch):
    """The rules render relu/relu6 without their clamps."""
    from tilesched.backends.cortexm import c_rules

    real = c_rules.unary_table

    def table(names, qin, qout):
        lo, hi, t = real(names, qin, qout)
        return (-128, 127, t) if t is None else (lo, hi, t)

    monkeypatch.setattr(c_rules, "unary_table", table)


def _depthwise_without_activation(monkeypatch):
    """The rules read the depthwise stage's fns as empty."""
    from tilesched.backends.cortexm import c_rules

    real = c_rules.fn_items
    monkeypatch.setattr(c_rules, "fn_items", lambda st: [] if st.name == "depthwise" else real(st))


def _ring_one_row_short(monkeypatch):
    """The buffers pass folds the ring of expanded rows one row shorter than the rows live at once."""
    from tilesched.passes import mcu

    real = mcu._fold
    monkeypatch.setattr(mcu, "_fold", lambda axis, n, acc: max(1, real(axis, n, acc) - 1) if real(axis, n, acc) < n
                        else n)


MCU_MUTATIONS = {
    "packer_drops_the_project_bias": _drop_project_bias,
    "c_drops_the_activation_clamps": _unclamped_activations,
    "rule_drops_the_depthwise_activation": _depthwise_without_activation,
    "pass_folds_the_ring_too_short": _ring_one_row_short,
}


@needs_toolchain
@pytest.mark.parametrize("mutation", sorted(MCU_MUTATIONS))
def test_cortexm_mutant_fails_the_oracle_check(mutation, monkeypatch, tmp_path):
    assert run_ib_case(IB, workdir=tmp_path / "real").report.ok
    MCU_MUTATIONS[mutation](monkeypatch)
    run = run_ib_case(IB, workdir=tmp_path / "mutant")
    assert run.report.mismatches > 0, f"the {mutation} mutant was bit-exact:\n{run.message(IB)}"


@needs_toolchain
def test_cortexm_random_search_finds_a_mutant(monkeypatch):
    _drop_project_bias(monkeypatch)

    @FIND
    @given(ib_cases())
    def check(case):
        with tempfile.TemporaryDirectory() as tmp:
            run = run_ib_case(case, workdir=tmp)
        assert run.report.ok, run.message(case)

    with pytest.raises(AssertionError, match="outputs differ from the oracle"):
        check()
