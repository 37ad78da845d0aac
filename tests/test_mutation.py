"""The differential machinery catches a wrong backend: with one stage's rendering dropped or
altered (the kernel plan, the rendered C, the packed data, the template match), the same helpers
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


def _drop_last_unary(ep):
    """The epilogue without its last unary op (binary ones keep their operands: the launcher would
    refuse an unexpected tensor, a failure of another kind)."""
    i = max((i for i, op in enumerate(ep) if op.operand is None), default=None)
    return ep if i is None else ep[:i] + ep[i + 1:]


def _swap(ep, old: str, new: str):
    return tuple(op.model_copy(update={"fn": new}) if op.fn == old else op for op in ep)


PLAN_MUTATIONS = {
    "drops_the_last_unary_op": _drop_last_unary,
    "renders_relu6_as_relu": lambda ep: _swap(ep, "relu6", "relu"),
    "renders_bias_as_mul": lambda ep: _swap(ep, "bias", "mul"),
}


def _mutate_plan(monkeypatch, mutation) -> None:
    """GemmKernel builds its module from a kernel plan whose epilogue is mutated."""
    from tilesched.backends.cuda import launch

    real = launch.kernel_plan

    def plan(program):
        kp = real(program)
        return kp.model_copy(update={"epilogue": mutation(kp.epilogue)})

    monkeypatch.setattr(launch, "kernel_plan", plan)


@pytest.fixture
def _interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@needs_triton
@pytest.mark.usefixtures("_interpret")
@pytest.mark.parametrize("mutation", sorted(PLAN_MUTATIONS))
def test_cuda_mutant_fails_the_oracle_check(mutation, monkeypatch):
    assert run_gemm_case(GEMM).verdict.ok
    _mutate_plan(monkeypatch, PLAN_MUTATIONS[mutation])
    run = run_gemm_case(GEMM)
    assert not run.verdict.ok, f"the {mutation} mutant passed the oracle check:\n{run.message(GEMM)}"


@needs_triton
@pytest.mark.usefixtures("_interpret")
def test_cuda_random_search_finds_a_mutant(monkeypatch):
    _mutate_plan(monkeypatch, PLAN_MUTATIONS["drops_the_last_unary_op"])

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
    from tilesched.backends.cortexm import params

    real = params._conv_arrays
    monkeypatch.setattr(params, "_conv_arrays", lambda p, c, tag, **kw: real(p, replace(c, bias=None) if tag == "2"
                                                                             else c, tag, **kw))


def _unclamped_expand(monkeypatch):
    from tilesched.backends.cortexm import codegen

    real = codegen.render_kernel

    def render(*args, **kw):
        text = real(*args, **kw)
        assert "H_MIN, H_MAX" in text
        return text.replace("H_MIN, H_MAX", "-128, 127")

    monkeypatch.setattr(codegen, "render_kernel", render)


def _depthwise_without_activation(monkeypatch):
    from tilesched.backends.cortexm import session

    real = session.match
    monkeypatch.setattr(session, "match", lambda prog: (lambda m: replace(m, depthwise=replace(m.depthwise, act="none"))
                                                        )(real(prog)))


MCU_MUTATIONS = {
    "packer_drops_the_project_bias": _drop_project_bias,
    "c_drops_the_expand_clamp": _unclamped_expand,
    "match_drops_the_depthwise_activation": _depthwise_without_activation,
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
