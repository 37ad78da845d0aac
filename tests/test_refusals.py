"""Nothing is dropped: random valid specs around what a backend claims (tests/differential.py
`cuda_refusals`, `mcu_refusals`; the oracle gives each a meaning) are either refused through the
backend's own entry point with a SpecError that says `cannot generate` and names the offending
stage, or generated and equal to the oracle. The CUDA lowering generates several of these
(prologues, two dots, constants, the new fns, loaded epilogue operands): those are run in the
Triton interpreter; the others must be refused."""

from __future__ import annotations

import pytest
from hypothesis import given

from tests.differential import (
    CUDA_REFUSALS,
    MCU_REFUSALS,
    cuda_refusals,
    diff_settings,
    expect_refusal,
    generated_or_refused,
    mcu_refusals,
    spec_yaml,
)
from tilesched.ir.bind import bind


def _check(refusal, exc) -> None:
    msg = str(exc)
    assert "cannot generate" in msg and f"stages[{refusal.stage}]" in msg, (
        f"{refusal.what}: the refusal must name stages[{refusal.stage}]: {msg}\nspec:\n{spec_yaml(refusal.data)}")


# what the lowering refuses today (the rest of CUDA_REFUSALS it generates, checked against the oracle)
CUDA_STILL_REFUSED = {"layernorm", "softmax", "reduce", "global_elementwise", "writes_operand"}


@pytest.mark.parametrize("what", CUDA_REFUSALS)
def test_cuda_generates_correctly_or_refuses_by_stage(what, monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from tests.cuda_util import run_against_oracle
    from tilesched.backends.cuda.kernel import Kernel

    def run(prog):
        b = bind(prog, {})
        return run_against_oracle(Kernel(prog), dict(b.sizes), dict(b.params) or None, seed=1)

    @diff_settings(max_examples=5)
    @given(cuda_refusals(what))
    def check(refusal):
        exc = generated_or_refused(refusal, Kernel, run)
        if what in CUDA_STILL_REFUSED:
            assert exc is not None, f"{what}: expected a refusal\nspec:\n{spec_yaml(refusal.data)}"
        if exc is not None:
            _check(refusal, exc)

    check()


# what the Cortex-M lowering refuses today (the rest of MCU_REFUSALS it generates, checked under QEMU)
MCU_STILL_REFUSED = {"residual", "second_output", "reduce", "softmax_axis", "float_stage"}


@pytest.mark.parametrize("what", MCU_REFUSALS)
def test_cortexm_generates_correctly_or_refuses_by_stage(what):
    from tilesched.backends.cortexm import build, session
    from tilesched.semantics import Verdict

    if what in MCU_STILL_REFUSED:
        @diff_settings(max_examples=5)
        @given(mcu_refusals(what))
        def refused(refusal):
            _check(refusal, expect_refusal(refusal, lambda prog: session.make_workload(bind(prog, {}), 0)))

        refused()
        return
    if build.toolchain_problem() is not None:
        pytest.skip(build.toolchain_problem())

    def run(prog):
        rep = session.run_binding(bind(prog, {}), seed=1)
        return Verdict(rep.ok, rep.mismatches / max(rep.expected.size, 1), 0.0,
                       "" if rep.ok else f"{rep.mismatches} of {rep.expected.size} outputs differ")

    @diff_settings(max_examples=5)
    @given(mcu_refusals(what))
    def check(refusal):
        exc = generated_or_refused(refusal, lambda prog: session.make_workload(bind(prog, {}), 0), run)
        assert exc is None, f"{what}: refused: {exc}\nspec:\n{spec_yaml(refusal.data)}"

    check()
