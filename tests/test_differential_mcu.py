"""Differential tests of the Cortex-M backend: random inverted-bottleneck specs (tests/differential.py
`ib_cases`: sizes, strides, padding, kernels, fns, quantisation, weight layouts, ROWS tiles, M4/M7)
matched, packed, cross-compiled and run under QEMU, bit for bit against the semantics oracle.
A failure shrinks to a small spec, printed as YAML."""

from __future__ import annotations

import tempfile

import pytest
from hypothesis import given

from tests.differential import diff_settings, ib_cases, run_ib_case
from tilesched.backends.cortexm import build

pytestmark = pytest.mark.skipif(build.toolchain_problem() is not None, reason=str(build.toolchain_problem()))


@diff_settings(max_examples=20)
@given(ib_cases())
def test_random_inverted_bottlenecks_are_bit_exact(case):
    with tempfile.TemporaryDirectory() as tmp:
        run = run_ib_case(case, workdir=tmp)
    assert run.report.ok, run.message(case)
