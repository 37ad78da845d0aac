"""Generated kernels executed by the Triton interpreter on CPU tensors, on ragged shapes, against
the spec's semantics (tilesched.semantics, float64), with NaN-poisoned outputs. bf16 specs run as fp16 and fp32 (the
interpreter's bf16 dot is not trustworthy)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from tests.cuda_util import cuda_gemm_specs, oracle_inputs, run_against_oracle  # noqa: E402
from tilesched import load_program  # noqa: E402
from tilesched.backends.cuda.io import check_outputs, poisoned, retyped  # noqa: E402
from tilesched.backends.cuda.kernel import Kernel, LaunchError  # noqa: E402

SPECS = {p.stem: p for p in cuda_gemm_specs()}
# ragged everywhere; TMA specs need 16-byte rows, so N and K stay multiples of 8 there
RAGGED = {"M": 37, "N": 50, "K": 70, "BATCH": 3, "NB": 2, "H": 5, "W": 7, "C": 40, "CO": 48,
          "B": 2, "SQ": 37, "SK": 53, "D": 24, "HKV": 2, "G": 3}  # attention: batch, heads, queries, keys, head dim
RAGGED_TMA = {"M": 40, "N": 56, "K": 80}  # 40 rows: column-major A needs 16-byte rows too; fp8 rows of K too


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _cases():
    for name, path in SPECS.items():
        prog = load_program(path)
        dtypes = ["fp16", "fp32"] if any(t.dtype == "bf16" for t in prog.tensors) else [None]
        for dt in dtypes:
            yield pytest.param(name, dt, id=f"{name}-{dt or 'native'}")


def _program(name, dt):
    prog = load_program(SPECS[name])
    return retyped(prog, "bf16", dt) if dt else prog


def _run(gemm, sizes, params=None, seed=0):
    v = run_against_oracle(gemm, sizes, params, seed)
    return v.ok, v.rel_error, v.max_error, v.why


@pytest.mark.parametrize("name,dt", list(_cases()))
def test_ragged_shape_matches_reference(name, dt):
    gemm = Kernel(_program(name, dt))
    sizes = dict(RAGGED_TMA if any(a.tma for a in gemm.ir.accesses) else RAGGED)
    ok, rel, mx, why = _run(gemm, sizes, seed=hash(name) % 1000)
    assert ok, f"{name} ({dt}): {why}"


@pytest.mark.parametrize("params", [
    {"PERSISTENT": True, "EPILOGUE_SUBTILE": True, "BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4},
    {"PERSISTENT": False, "EPILOGUE_SUBTILE": False, "BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 1},
    {"PERSISTENT": False, "EPILOGUE_SUBTILE": True, "BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 128, "GROUP_M": 8},
], ids=["persistent-subtile", "plain", "subtile"])
def test_hopper_switches(params):
    gemm = Kernel(_program("gemm_bias_gelu_hopper", "fp16"))
    ok, _, _, why = _run(gemm, dict(RAGGED_TMA), params={"NUM_WARPS": 4, "NUM_STAGES": 3, **params}, seed=5)
    assert ok, why


def test_small_m_uses_the_cuda_core_path():
    """BLOCK_M below 16 (decode shapes) cannot use tl.dot; the rendered fallback must be exact."""
    gemm = Kernel(_program("gemm_bf16_hopper", "fp32"))
    for m, bm in ((1, 1), (3, 4), (5, 8)):
        params = {"BLOCK_M": bm, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 1, "NUM_WARPS": 4, "NUM_STAGES": 3,
                  "PERSISTENT": True, "EPILOGUE_SUBTILE": False}
        ok, _, _, why = _run(gemm, {"M": m, "N": 40, "K": 48}, params=params, seed=m)
        assert ok, f"M={m}: {why}"


@pytest.mark.parametrize("m,bm,split", [(1, 1, 4), (40, 16, 2), (40, 32, 8)])
def test_split_k(m, bm, split):
    """K spread over programs: partial sums in per-share workspace slices; the last share of each tile adds
    them and runs the epilogue (one launch)."""
    gemm = Kernel(_program("gemm_bf16_hopper", "fp32"))
    params = {"BLOCK_M": bm, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 1, "NUM_WARPS": 4,
              "NUM_STAGES": 3, "PERSISTENT": False, "EPILOGUE_SUBTILE": False, "SPLIT_K": split}
    ok, _, _, why = _run(gemm, {"M": m, "N": 56, "K": 264}, params=params, seed=split)
    assert ok, why


def test_default_parameters_fit_small_shapes():
    gemm = Kernel(_program("gemm_silu_residual", None))
    b, source = gemm.binding_for({"M": 20, "N": 24, "K": 40})
    assert source == "default"
    assert b.params["BLOCK_M"] == 32 and b.params["BLOCK_N"] == 32 and b.params["BLOCK_K"] == 64
    ok, _, _, why = _run(gemm, {"M": 20, "N": 24, "K": 40}, seed=9)
    assert ok, why


def test_wrong_result_is_detected():
    """The check is not vacuous: a corrupted output fails it, an unwritten element fails it."""
    gemm = Kernel(_program("gemm_bias_gelu", None))
    b, _, ins, want = oracle_inputs(gemm.program, dict(RAGGED), seed=1)
    out = poisoned(gemm.program.tensor("C"), b.sizes, "cpu")
    gemm(out=out, **ins)
    assert check_outputs(b, {"C": out}, want)[0].ok
    bad = out.clone()
    bad[3, 7] += 1.0
    assert not check_outputs(b, {"C": bad}, want)[0].ok
    bad = out.clone()
    bad[-1, -1] = float("nan")
    assert not check_outputs(b, {"C": bad}, want)[0].ok


def test_launcher_errors_name_the_problem():
    gemm = Kernel(_program("gemm_bias_gelu", None))
    _, _, ins, _ = oracle_inputs(gemm.program, dict(RAGGED), seed=2)
    with pytest.raises(LaunchError, match="dtype"):
        gemm(**{**ins, "A": ins["A"].float()})
    with pytest.raises(LaunchError, match="bias says N=49"):
        gemm(**{**ins, "bias": ins["bias"][:-1]})
    with pytest.raises(LaunchError, match="layout col_major"):
        gemm(**{**ins, "B": ins["B"].contiguous()})
    with pytest.raises(LaunchError, match="says K=70, A says 69"):
        gemm(**{**ins, "A": ins["A"][:, :-1]})
    with pytest.raises(LaunchError, match="missing input bias"):
        gemm(A=ins["A"], B=ins["B"])
    tma = Kernel(_program("gemm_bf16_hopper", "fp16"))
    _, _, t, _ = oracle_inputs(tma.program, {"M": 8, "N": 20, "K": 36}, seed=3)
    with pytest.raises(LaunchError, match="16-byte"):
        tma(**t)


def test_lock_file_entry_is_used(tmp_path):
    from tilesched.ir.hashing import content_hash
    from tilesched.tuner.lockfile import LockEntry, LockFile, bucket_of

    prog = _program("gemm_bf16", "fp16")
    sizes = {"M": 37, "N": 100, "K": 70}
    params = {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32, "GROUP_M": 4, "NUM_WARPS": 4, "NUM_STAGES": 2}
    lock = LockFile().with_entry(LockEntry(spec=prog.name, spec_hash=content_hash(prog), target="cuda",
                                           bucket=bucket_of(prog, sizes), params=params, objective="measure"))
    gemm = Kernel(prog, lock=lock)
    b, source = gemm.binding_for(sizes)
    assert source == "lock" and b.params == params
    ok, _, _, why = _run(gemm, sizes, seed=4)
    assert ok, why
    # an entry that is illegal for this shape falls back to the default
    b, source = gemm.binding_for({"M": 37, "N": 50, "K": 70})
    assert source == "default" and b.params["BLOCK_N"] == 64


def test_lock_file_from_the_gpu_benchmark_is_usable():
    """The tuned configs bench/gemm.py found on the GPU select for their shapes and bind legally."""
    from tests.conftest import ROOT
    from tilesched.tuner.lockfile import LockFile

    locks = sorted((ROOT / "bench" / "results").glob("gemm-lock-*.json"))
    assert locks, "bench/results/gemm-lock-<device>.json is missing"
    lock = LockFile.read(locks[0])
    gemm = Kernel(load_program(SPECS["gemm_bf16_hopper"]), lock=lock)
    for sizes in ({"M": 4096, "N": 4096, "K": 4096}, {"M": 1, "N": 8192, "K": 8192}, {"M": 3000, "N": 5000, "K": 4096}):
        b, source = gemm.binding_for(sizes)
        assert source == "lock", sizes
    b, _ = gemm.binding_for({"M": 1, "N": 8192, "K": 8192})
    assert b.params["BLOCK_M"] == 1  # the decode entry, not a 128-row tile


@pytest.mark.parametrize("name,dt", [("gemm_bias_gelu", None), ("gemm_bias_gelu_hopper", "fp16"),
                                     ("gated_mlp", "fp32")])
def test_repeated_calls_take_the_fast_path_with_each_calls_tensors(name, dt):
    """The second call with the same shapes reuses the checked launch (the per-shape cache), and
    its result is this call's: fresh data, a fresh output, the oracle's answer."""
    kernel = Kernel(_program(name, dt))
    sizes = dict(RAGGED_TMA if any(a.tma for a in kernel.ir.accesses) else RAGGED)
    for seed in (11, 12):
        b, _, ins, want = oracle_inputs(kernel.program, sizes, seed=seed)
        outs = {n: poisoned(kernel.program.tensor(n), b.sizes, "cpu") for n in kernel.outputs}
        kernel(**ins, **outs)
        assert all(v.ok for v in check_outputs(b, outs, want)), seed
    assert len(kernel._fast) == 1  # one key, reused
