"""Differential tests of the CUDA backend: random valid GEMM specs (tests/differential.py
`gemm_cases`) rendered, run in the Triton interpreter on the oracle's random inputs with
NaN-poisoned outputs, and compared with the semantics oracle. A failure shrinks to a small spec,
printed as YAML. Regressions: the cases this test found."""

from __future__ import annotations

import pytest
from hypothesis import given

from tests.differential import (
    GEMM_FAMILIES,
    Epilogue,
    Extra,
    Fn,
    GemmCase,
    diff_settings,
    gemm_cases,
    run_gemm_case,
)

pytest.importorskip("torch")
pytest.importorskip("triton")

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # sigmoid(-100)


@pytest.fixture(scope="module", autouse=True)
def _interpret():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        yield


@pytest.mark.parametrize("family", GEMM_FAMILIES)
def test_random_gemm_specs_match_the_oracle(family):
    @diff_settings(max_examples=12)
    @given(gemm_cases(family))
    def check(case):
        run = run_gemm_case(case)
        assert run.verdict.ok, run.message(case)

    check()


BIAS_GELU = (Epilogue((Fn("bias", Extra(("n",))), Fn("gelu"))),)
REGRESSIONS = {
    # a batched GEMM whose A (or B) is shared by every batch: the kernel stepped it by its row stride
    "batched_shared_a": GemmCase(m=37, n=50, k=70, batch=3, a_batched=False, tiles=(16, 32, 32)),
    "batched_shared_b": GemmCase(m=37, n=50, k=70, batch=3, b_batched=False, tiles=(16, 32, 32),
                                 epilogue=(Epilogue((Fn("add", Extra(("b", "m", "n"))),)),)),
    # a col_major output was written as if row_major (pointer stores, TMA stores, split-K's epilogue)
    "col_major_c": GemmCase(m=37, n=50, k=70, layouts=("row_major", "row_major", "col_major"),
                            tiles=(16, 32, 32), subtile=True),
    "col_major_c_tma": GemmCase(m=40, n=56, k=72, layouts=("col_major", "row_major", "col_major"),
                                tiles=(16, 32, 32), tma=True, subtile=True, epilogue=BIAS_GELU),
    "col_major_c_split_k": GemmCase(m=40, n=56, k=72, layouts=("row_major", "col_major", "col_major"),
                                    tiles=(16, 32, 16), tma=True, split_k=2, epilogue=BIAS_GELU),
    # split-K's epilogue (then a finishing kernel) named its epilogue operands wrongly (NameError at launch)
    "split_k_epilogue_operands": GemmCase(m=40, n=56, k=72, tiles=(32, 32, 16), tma=True, split_k=4,
                                          tile_params=True, epilogue=(Epilogue((Fn("mul", Extra(("m", "n"))),
                                                                                Fn("relu6"),
                                                                                Fn("add", Extra(("m",))))),),
                                          scale=8.0),
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_found_disagreements_stay_fixed(name):
    case = REGRESSIONS[name]
    run = run_gemm_case(case)
    assert run.verdict.ok, run.message(case)


def test_tma_blocks_narrower_than_16_bytes_are_refused():
    """A col_major A through TMA with BLOCK_M * element size < 16 bytes: a clear error, not
    Triton's descriptor assertion at launch."""
    from tilesched.backends.cuda.kernel import LaunchError

    case = GemmCase(m=40, n=32, k=32, layouts=("col_major", "row_major", "row_major"), tiles=(4, 16, 16), tma=True)
    with pytest.raises(LaunchError, match="TMA load of A needs blocks of at least 16 bytes along M"):
        run_gemm_case(case)


def test_axes_too_small_for_a_dot_block_are_refused():
    """N or K of at most 8 admits no tile of >= 16 (a tile may not exceed the axis' next power of
    two, and tl.dot needs 16): such GEMMs are refused, never run with wrong blocks. The random
    specs draw N and K >= 9 for this reason."""
    from tilesched.errors import SpecError

    with pytest.raises(SpecError, match="tile size 16 exceeds the size 5 of axis N"):
        run_gemm_case(GemmCase(m=5, n=5, k=40, tiles=(8, 16, 16)))
    with pytest.raises(SpecError, match="tile size 16 exceeds the size 6 of axis K"):
        run_gemm_case(GemmCase(m=5, n=40, k=6, tiles=(8, 16, 16), tile_params=True, symbolic=True))
