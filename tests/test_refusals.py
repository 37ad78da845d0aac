"""Refusals are real: random valid specs just outside what a backend claims (tests/differential.py
`cuda_refusals`, `mcu_refusals`) are refused through the backend's own entry point with a
SpecError that says `cannot generate` and names the offending stage, and the oracle gives each
of them a meaning (they are valid specs, not broken ones)."""

from __future__ import annotations

import pytest
from hypothesis import given

from tests.differential import (
    CUDA_REFUSALS,
    MCU_REFUSALS,
    cuda_refusals,
    diff_settings,
    expect_refusal,
    mcu_refusals,
    spec_yaml,
)
from tilesched.ir.bind import bind


def _check(refusal, exc) -> None:
    msg = str(exc)
    assert "cannot generate" in msg and f"stages[{refusal.stage}]" in msg, (
        f"{refusal.what}: the refusal must name stages[{refusal.stage}]: {msg}\nspec:\n{spec_yaml(refusal.data)}")


@pytest.mark.parametrize("what", CUDA_REFUSALS)
def test_cuda_refuses_what_it_cannot_generate(what):
    from tilesched.backends.cuda.launch import GemmKernel

    @diff_settings(max_examples=5)
    @given(cuda_refusals(what))
    def check(refusal):
        _check(refusal, expect_refusal(refusal, GemmKernel))

    check()


@pytest.mark.parametrize("what", MCU_REFUSALS)
def test_cortexm_refuses_what_it_cannot_generate(what):
    from tilesched.backends.cortexm import session

    @diff_settings(max_examples=5)
    @given(mcu_refusals(what))
    def check(refusal):
        _check(refusal, expect_refusal(refusal, lambda prog: session.make_workload(bind(prog, {}), 0)))

    check()
