"""Low-bit and fp8 GEMMs from specs: packed sub-byte weights unpacked and dequantised inside the K
loop with group-wise scales and zero points, fp8 operands on tl.dot with scales in the epilogue.
Every kernel runs in the Triton interpreter against the semantics oracle at small ragged shapes
(inputs as a caller stores them: packed int32 words, grouped scales; fp8 values on their grid)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import ROOT
from tilesched import load_program, lower
from tilesched.errors import SpecError
from tilesched.spec import load_spec_text

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from tests.cuda_util import oracle_inputs, run_against_oracle  # noqa: E402
from tilesched.backends.cuda.io import retyped  # noqa: E402
from tilesched.backends.cuda.kernel import Kernel, LaunchError, compiled  # noqa: E402

CONFIGS = ROOT / "configs"
LOWBIT = ["w2a16_gemm", "w3a16_gemm", "w4a16_gemm", "w8a16_gemm"]


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def _params(bm, bn, bk, split=1, warps=4):
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 1, "NUM_WARPS": warps, "NUM_STAGES": 2,
            "SPLIT_K": split}


POINTS = [  # decode (CUDA-core path), split-K decode, tensor-core tiles, a K tile smaller than a group
    ({"M": 1, "N": 72, "K": 300}, _params(1, 32, 128)),
    ({"M": 3, "N": 40, "K": 520}, _params(1, 32, 64, split=4)),
    ({"M": 37, "N": 50, "K": 260}, _params(16, 32, 128)),
    ({"M": 20, "N": 96, "K": 384}, _params(32, 64, 32)),
]


@pytest.mark.parametrize("name", LOWBIT)
@pytest.mark.parametrize("point", range(len(POINTS)), ids=["decode", "split-k", "mma", "small-k-tile"])
def test_low_bit_gemms_match_the_oracle(name, point):
    sizes, params = POINTS[point]
    kernel = Kernel(retyped(load_program(CONFIGS / f"{name}.yaml"), "bf16", "fp16"))
    v = run_against_oracle(kernel, sizes, params, seed=point)
    assert v.ok, f"{name} {sizes}: {v.why}"


def _variant(name: str, *swaps: tuple[str, str]):
    text = (CONFIGS / f"{name}.yaml").read_text()
    for old, new in swaps:
        assert old in text, old
        text = text.replace(old, new)
    spec, source = load_spec_text(text)
    return lower(spec, source)


@pytest.mark.parametrize("dtype", ["int4", "int2", "int8"])
def test_signed_weights(dtype):
    """Two's complement fields: the kernel sign-extends what it shifts out of a word."""
    pack = "" if dtype == "int8" else ", pack: K"
    prog = _variant("w4a16_gemm", ("W: {shape: [K, N], dtype: uint4, pack: K}", f"W: {{shape: [K, N], dtype: {dtype}{pack}}}"),
                    ("w: {shape: [K, N], dtype: uint4, scope: tile}", f"w: {{shape: [K, N], dtype: {dtype}, scope: tile}}"))
    kernel = Kernel(retyped(prog, "bf16", "fp32"))
    for sizes, params in POINTS[:1] + POINTS[2:3]:
        v = run_against_oracle(kernel, sizes, params, seed=7)
        assert v.ok, f"{dtype}: {v.why}"


def test_fp4_weights_with_group_scales():
    """fp4e2m1 codes packed eight to a word, decoded to float in the kernel, scaled per group."""
    prog = _variant("w4a16_gemm",
                    ("W: {shape: [K, N], dtype: uint4, pack: K}", "W: {shape: [K, N], dtype: fp4e2m1, pack: K}"),
                    ("  Z: {shape: [K, N], dtype: uint4, group: {K: 128}, pack: N}\n", ""),
                    ("w: {shape: [K, N], dtype: uint4, scope: tile}", "w: {shape: [K, N], dtype: fp4e2m1, scope: tile}"),
                    ("fn: [cast, sub, mul], reads: [w, Z, S]", "fn: [cast, mul], reads: [w, S]"))
    kernel = Kernel(retyped(prog, "bf16", "fp32"))
    for sizes, params in POINTS[:1] + POINTS[2:3]:
        v = run_against_oracle(kernel, sizes, params, seed=8)
        assert v.ok, v.why


def test_packed_storage_reaches_the_kernel_as_int32_words():
    prog = retyped(load_program(CONFIGS / "w4a16_gemm.yaml"), "bf16", "fp32")
    kernel = Kernel(prog)
    b, _, ins, want = oracle_inputs(prog, {"M": 5, "N": 50, "K": 300}, seed=1, params=_params(1, 32, 128))
    assert ins["W"].dtype == torch.int32 and tuple(ins["W"].shape) == (38, 50)  # ceil(300 / 8)
    assert tuple(ins["Z"].shape) == (3, 7) and tuple(ins["S"].shape) == (3, 50)  # ceil(300 / 128), ceil(50 / 8)
    y = kernel(params=_params(1, 32, 128), **ins)
    assert np.allclose(y.double().numpy(), want["Y"], rtol=1e-4, atol=1e-4)
    with pytest.raises(LaunchError, match=r"stored as \[37, 50\].*stores \[38, 50\]"):
        kernel(**{**ins, "W": ins["W"][:-1]})
    with pytest.raises(LaunchError, match="dtype"):
        kernel(**{**ins, "W": ins["W"].to(torch.uint8)})


def test_whole_word_loads_and_broadcast_group_rows():
    src = compiled(load_program(CONFIGS / "w4a16_gemm.yaml"))[1]
    assert "tl.reshape(((v_w[:, None, :] >> (tl.arange(0, 8) * 4)[None, :, None]) & ((1 << 4) - 1))" in src
    assert "if G_S_K % BLOCK_K == 0:" in src and "v_S = tl.broadcast_to(v_S[None, :], (BLOCK_K, BLOCK_N))" in src
    assert "x_wd = v_w.to(tl.float32)\n" in src and "x_wd.to(tl.bfloat16).to(tl.float32)" not in src  # exact cast
    assert "tl.reshape" not in compiled(load_program(CONFIGS / "w3a16_gemm.yaml"))[1]  # 10 per word: gathered


def _factored(kernel) -> bool:
    return any(i.op == "affine_dot" for i in kernel.ir.loop)


FACTOR_VARIANTS = {  # chains other than (w - Z) * S, each affine in w with factors constant along K per tile
    "per-channel-scale": [("S: {shape: [K, N], dtype: bf16, group: {K: 128}}", "S: {shape: [N], dtype: bf16}")],
    "divide": [("fn: [cast, sub, mul]", "fn: [cast, sub, div]")],
    "float-zero": [("Z: {shape: [K, N], dtype: uint4, group: {K: 128}, pack: N}",
                    "Z: {shape: [K, N], dtype: bf16, group: {K: 128}}"),
                   ("fn: [cast, sub, mul], reads: [w, Z, S]", "fn: [cast, mul, add], reads: [w, S, Z]")],
    "group-32": [("group: {K: 128}, pack: N", "group: {K: 32}, pack: N"), ("group: {K: 128}}", "group: {K: 32}}"),
                 ("128 % BLOCK_K == 0", "True")],
}


@pytest.mark.parametrize("variant", list(FACTOR_VARIANTS))
def test_factored_decode_matches_the_oracle(variant):
    """At a row tile below 16 the chain's scale and zero point leave the sum over K (one multiply-add
    per weight): per-group, per-channel, divided, added float zero points; with a group smaller than
    the K tile the kernel takes the unfactored chain. Row tiles of 16 (tensor cores) unchanged."""
    kernel = Kernel(retyped(_variant("w4a16_gemm", *FACTOR_VARIANTS[variant]), "bf16", "fp32"))  # fp16 overflows: w / S
    assert _factored(kernel)
    for sizes, params in POINTS[:3]:
        v = run_against_oracle(kernel, sizes, params, seed=11)
        assert v.ok, f"{variant} {sizes} {params}: {v.why}"


def test_factoring_applies_to_affine_chains_read_by_one_dot_only():
    from tilesched.passes.gpu import lower_kernel

    k = lower_kernel(load_program(CONFIGS / "w4a16_gemm.yaml"))
    (fused,) = [i for i in k.loop if i.op == "affine_dot"]
    assert fused.args == ("x", "wd", "w", "Z", "S") and fused.via == "wd" and fused.fn == (("cast", None), ("sub", None),
                                                                                         ("mul", None))
    assert not any(i.out == "wd" for i in k.loop)
    src = compiled(load_program(CONFIGS / "w4a16_gemm.yaml"))[1]
    assert "if BLOCK_M < 16 and G_Z_K % BLOCK_K == 0 and G_S_K % BLOCK_K == 0:" in src and "row_v_S = v_S" in src
    relu = lower_kernel(_variant("w4a16_gemm", ("fn: [cast, sub, mul]", "fn: [cast, sub, relu, mul]")))
    assert not any(i.op == "affine_dot" for i in relu.loop)  # not affine in w
    no_small = lower_kernel(_variant("w4a16_gemm", ("choices: [1, 16, 32, 64, 128, 256], default: 16",
                                                    "choices: [16, 32, 64, 128, 256], default: 16")))
    assert not any(i.op == "affine_dot" for i in no_small.loop)  # tensor cores only: nothing to factor
    per_k = lower_kernel(_variant("w4a16_gemm", ("S: {shape: [K, N], dtype: bf16, group: {K: 128}}",
                                                 "S: {shape: [K, N], dtype: bf16}")))
    assert not any(i.op == "affine_dot" for i in per_k.loop)  # a scale per row of K varies inside the sum


FP8_POINT = ({"M": 40, "N": 56, "K": 80}, {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 1, "NUM_WARPS": 4,
                                          "NUM_STAGES": 2, "PERSISTENT": False, "EPILOGUE_SUBTILE": True})


def test_fp8_gemm_matches_the_oracle():
    kernel = Kernel(load_program(CONFIGS / "fp8_gemm.yaml"))
    sizes, params = FP8_POINT
    v = run_against_oracle(kernel, sizes, params, seed=2)
    assert v.ok, v.why
    b, _, ins, _ = oracle_inputs(kernel.program, sizes, seed=2, params=params)
    assert ins["A"].dtype == torch.float8_e4m3fn and ins["B"].stride(0) == 1  # column-major [K, N]


@pytest.mark.parametrize("block_m, m, split", [(1, 3, 1), (16, 20, 1), (1, 3, 2), (16, 20, 4)])
def test_fp8_gemm_small_row_tiles(block_m, m, split):
    """Decode-sized M (bench/fp8.py at M = 1 and 16): a row tile of 1 multiplies on CUDA cores;
    split-K shares meet in the workspace and the last one runs the scaling epilogue."""
    kernel = Kernel(load_program(CONFIGS / "fp8_gemm.yaml"))
    params = {**FP8_POINT[1], "BLOCK_M": block_m, "PERSISTENT": False, "EPILOGUE_SUBTILE": False, "SPLIT_K": split}
    v = run_against_oracle(kernel, {"M": m, "N": 56, "K": 80 if split == 1 else 272}, params, seed=3)
    assert v.ok, v.why


@pytest.mark.parametrize("variant", ["per-tensor", "e5m2", "no-tma"])
def test_fp8_variants(variant):
    swaps = {
        "per-tensor": [("sa: {shape: [M], dtype: fp32}", "sa: {shape: [], dtype: fp32}"),
                       ("sb: {shape: [N], dtype: fp32}", "sb: {shape: [], dtype: fp32}")],
        "e5m2": [("dtype: fp8e4m3", "dtype: fp8e5m2")] * 1,
        "no-tma": [("engine: tma, reads: [A]", "reads: [A]"), ("engine: tma, reads: [B]", "reads: [B]"),
                   ("engine: tma, reads: [y]", "reads: [y]")],
    }[variant]
    text = (CONFIGS / "fp8_gemm.yaml").read_text()
    for old, new in swaps:
        text = text.replace(old, new)
    spec, source = load_spec_text(text)
    kernel = Kernel(lower(spec, source))
    sizes, params = FP8_POINT
    v = run_against_oracle(kernel, sizes, params, seed=3)
    assert v.ok, f"{variant}: {v.why}"


def test_gqa_group_follows_from_the_key_shape():
    kernel = Kernel(retyped(load_program(CONFIGS / "flash_attention_gqa.yaml"), "bf16", "fp32"))
    q = torch.randn(1, 4, 20, 16)
    kv = torch.randn(1, 2, 24, 16)
    params = {"BLOCK_M": 16, "BLOCK_N": 16, "NUM_WARPS": 4, "NUM_STAGES": 2}
    o = kernel(Q=q, K=kv, V=kv, params=params)
    want = torch.nn.functional.scaled_dot_product_attention(q, kv.repeat_interleave(2, 1), kv.repeat_interleave(2, 1),
                                                           is_causal=True)
    assert torch.allclose(o, want, atol=1e-5)
    with pytest.raises(LaunchError, match="pass G=N"):
        kernel(Q=torch.randn(1, 5, 20, 16), K=kv, V=kv, params=params)


@pytest.mark.parametrize("name", LOWBIT)
def test_materialised_schedule_matches_the_oracle(name):
    """MATERIALIZE: the dequantised weights once per call into a bf16 workspace (producer kernel),
    then the GEMM on them (consumer kernel); both kernels run, the result is the spec's."""
    kernel = Kernel(retyped(load_program(CONFIGS / f"{name}.yaml"), "bf16", "fp16"))
    producer, consumer = kernel._materialized_parts()
    for sizes, params in POINTS[2:]:
        v = run_against_oracle(kernel, sizes, {**params, "MATERIALIZE": True}, seed=5)
        assert v.ok, f"{name} {sizes}: {v.why}"
    assert producer._plans and consumer._plans  # both parts were launched


def test_materialize_splits_the_dequantisation_off():
    from tilesched.passes.materialize import split

    sp = split(load_program(CONFIGS / "w4a16_gemm.yaml"))
    assert (sp.operand, sp.workspace) == ("wd", "wd_ws")
    assert [s.name for s in sp.producer.stages] == ["load_w", "dequant", "store_wd"]
    assert [(lp.axis, lp.kind) for lp in sp.producer.loops] == [("N", "spatial"), ("K", "spatial")]
    assert [s.name for s in sp.consumer.stages] == ["load_x", "load_wd", "mma", "store"]
    assert {t.name for t in sp.consumer.tensors} == {"X", "x", "wd", "acc", "Y", "wd_ws"}
    assert "materialize" not in dict(sp.consumer.options) and sp.producer.tensor("wd_ws").role == "output"
    src = compiled(load_program(CONFIGS / "w4a16_gemm.yaml"))[1]
    assert "def produce_launch(" in src and "def consume_launch(" in src


def test_materialize_without_an_operand_to_compute_once_is_refused():
    from tilesched.errors import SpecError
    from tilesched.passes.gpu import lower_kernel

    text = (ROOT / "configs" / "gemm_bf16.yaml").read_text()
    assert "options: {" in text
    text = text.replace("options: {", "options: {materialize: true, ", 1)
    spec, source = load_spec_text(text)
    with pytest.raises(SpecError, match="options.materialize.*no dot operand to materialize"):
        lower_kernel(lower(spec, source))


def test_plan_shows_both_kernels_of_a_materialised_point(capsys):
    from tilesched.cli import main

    spec = str(CONFIGS / "w4a16_gemm.yaml")
    assert main(["plan", spec, "--set", "M=1024", "--set", "MATERIALIZE=true", "--set", "BLOCK_M=128",
                 "--set", "BLOCK_K=64"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("materialized: wd computed once per call into workspace wd_ws (K, N)")
    assert "w4a16_gemm_materialize  (target cuda)" in out and "w4a16_gemm_materialized  (target cuda)" in out
    assert "tile grid: N 4096/128 = 32 x K 4096/64 = 64  -> 2048 programs" in out


def test_plan_says_where_the_dequantisation_is_factored(capsys):
    from tilesched.cli import main

    spec = str(CONFIGS / "w4a16_gemm.yaml")
    factored = "factored: mma multiplies w as loaded and applies dequant's factors once per K tile and column"
    for sets, shown in ((["M=1", "BLOCK_M=1"], True), (["M=16"], False), (["M=1", "BLOCK_M=1", "MATERIALIZE=true"], False)):
        assert main(["plan", spec] + [a for v in sets for a in ("--set", v)]) == 0
        assert (factored in capsys.readouterr().out) == shown, sets
    ro = "register operand: mma runs on mma.sync with W's words loaded straight into its register operand"
    for sets, shown in ((["M=1", "BLOCK_M=1", "BLOCK_N=128", "REGISTER_OPERAND=true"], True), (["M=1", "BLOCK_M=1"], False)):
        assert main(["plan", spec] + [a for v in sets for a in ("--set", v)]) == 0
        out = capsys.readouterr().out
        assert (ro in out) == shown and (factored in out) == (not shown), sets
    wgmma = ["M=1024", "BLOCK_M=256", "BLOCK_N=128", "BLOCK_K=128", "NUM_WARPS=8", "NUM_STAGES=3", "REGISTER_OPERAND=true"]
    assert main(["plan", spec] + [a for v in wgmma for a in ("--set", v)]) == 0
    assert ("register operand: mma runs on wgmma; a loader warp brings X's tiles and W's words by TMA into 3 slots, a "
            "consumer warpgroup per 64 columns runs dequant") in capsys.readouterr().out
    decode = ["M=16", "BLOCK_M=16", "BLOCK_N=64", "BLOCK_K=128", "NUM_WARPS=4", "NUM_STAGES=2", "SPLIT_K=4",
              "REGISTER_OPERAND=wgmma"]
    assert main(["plan", spec] + [a for v in decode for a in ("--set", v)]) == 0
    out = capsys.readouterr().out
    assert "register operand: mma runs on wgmma" in out and "4 shares of K meet through a counter per consumer thread" in out
    assert "ten values a word" not in out
    assert main(["plan", str(CONFIGS / "w3a16_gemm.yaml")] + [a for v in wgmma for a in ("--set", v)]) == 0
    assert "first operand (ten values a word: each K tile decoded by its offset" in capsys.readouterr().out


def test_an_emitted_library_runs_the_materialised_schedule(tmp_path, monkeypatch):
    """The emitted module holds the producer and consumer kernels: a package imported from disk runs
    a materialised point and matches the oracle."""
    import importlib
    import sys

    from tilesched.cli import main

    spec = tmp_path / "w4a16_gemm.yaml"  # fp16 in place of bf16: the interpreter's bf16 dots are wrong
    spec.write_text((CONFIGS / "w4a16_gemm.yaml").read_text().replace("bf16", "fp16"))
    assert main(["emit", str(spec), "--out", str(tmp_path / "lowbit_lib")]) == 0
    monkeypatch.syspath_prepend(str(tmp_path))
    lib = importlib.import_module("lowbit_lib")
    try:
        prog = load_program(spec)
        params = {**POINTS[2][1], "MATERIALIZE": True}
        b, _, ins, want = oracle_inputs(prog, POINTS[2][0], seed=6, params=params)
        y = lib.w4a16_gemm(**ins, params=params)
        from tilesched.backends.cuda.io import check_outputs

        verdict = check_outputs(b, {"Y": y}, want)[0]
        assert verdict.ok, verdict.why
        assert sys.modules["lowbit_lib.w4a16_gemm"]._KERNEL[0]._parts is not None  # the two kernels ran
        assert "def produce_launch(" in (tmp_path / "lowbit_lib" / "_w4a16_gemm_triton.py").read_text()
    finally:
        for name in [m for m in sys.modules if m.startswith("lowbit_lib")]:
            del sys.modules[name]


RO = {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 1, "NUM_WARPS": 4, "NUM_STAGES": 2, "SPLIT_K": 1,
      "MATERIALIZE": False, "REGISTER_OPERAND": True}


def test_register_operand_points_are_refused_in_the_interpreter():
    """The register-operand schedule is a Gluon kernel: the interpreter cannot run it, and says so."""
    kernel = Kernel(load_program(CONFIGS / "w4a16_gemm.yaml"))
    ins = oracle_inputs(kernel.program, {"M": 20, "N": 64, "K": 256}, seed=0, params=RO)[2]
    with pytest.raises(LaunchError, match="Gluon kernel.*CUDA GPU"):
        kernel(params=RO, **ins)
    assert "def w4a16_gemm_gluon_kernel(" in compiled(kernel.program)[1]


def test_register_operand_needs_uint4_words_along_k():
    """Signed 4-bit weights are not the schedule's shape: a point that asks for it is refused with the
    reason, the other points run as before; a spec that always asks is refused at the dot's stage."""
    swap = (("W: {shape: [K, N], dtype: uint4, pack: K}", "W: {shape: [K, N], dtype: int4, pack: K}"),
            ("w: {shape: [K, N], dtype: uint4, scope: tile}", "w: {shape: [K, N], dtype: int4, scope: tile}"))
    prog = _variant("w4a16_gemm", *swap)
    kernel = Kernel(retyped(prog, "bf16", "fp16"))
    assert "_gluon_kernel" not in compiled(kernel.program)[1]
    ins = oracle_inputs(kernel.program, {"M": 20, "N": 64, "K": 256}, seed=0, params=RO)[2]
    with pytest.raises(LaunchError, match="register-operand schedule needs weights of uint4, uint2, uint3 packed into words"):
        kernel(params=RO, **ins)
    assert run_against_oracle(kernel, {"M": 20, "N": 64, "K": 256}, {**RO, "REGISTER_OPERAND": False}, seed=0).ok
    always = swap + (("register_operand: REGISTER_OPERAND", "register_operand: true"),)
    with pytest.raises(SpecError, match=r"stages\[3\].*register_operand schedule needs weights of uint4, uint2, uint3.*'mma'"):
        compiled(_variant("w4a16_gemm", *always))


def test_register_operand_needs_pointer_loads():
    """A TMA load is not the schedule's (its kernel loads through pointers): refused by stage."""
    prog = _variant("w4a16_gemm", ("{name: load_x, kind: memory, op: load, reads: [X], writes: [x], at: K}",
                                   "{name: load_x, kind: memory, op: load, reads: [X], writes: [x], at: K, engine: tma}"))
    kernel = Kernel(retyped(prog, "bf16", "fp16"))
    ins = oracle_inputs(kernel.program, {"M": 20, "N": 64, "K": 256}, seed=0, params=RO)[2]
    with pytest.raises(LaunchError, match=r"register-operand schedule needs pointer loads .*stage 'load_x'"):
        kernel(params=RO, **ins)


def test_register_operand_block_rules():
    """Row tiles of at most 16, 16 columns per warp, K tiles of whole 32-index steps inside a group."""
    from tilesched.passes.gpu import lower_kernel
    from tilesched.passes.register_operand import legal_blocks

    k = lower_kernel(load_program(CONFIGS / "w4a16_gemm.yaml"))
    assert k.register_operand == "REGISTER_OPERAND"
    groups = {"G_Z_K": 128, "G_S_K": 128}
    assert legal_blocks({"M": 16, "N": 128, "K": 128}, 8, groups, k) is None
    assert "BLOCK_M a power of two up to 256 (wgmma; got 48)" in legal_blocks({"M": 48, "N": 128, "K": 128}, 8, groups, k)
    assert "multiple of 16 x NUM_WARPS = 128" in legal_blocks({"M": 1, "N": 64, "K": 128}, 8, groups, k)
    assert "multiple of 16 x NUM_WARPS = 64" in legal_blocks({"M": 1, "N": 192, "K": 128}, 4, groups, k)  # 3 x 64
    assert "multiple of 32" in legal_blocks({"M": 1, "N": 64, "K": 48}, 4, groups, k)
    assert "multiple of 32" in legal_blocks({"M": 1, "N": 64, "K": 96}, 4, groups, k)
    assert "G_Z_K = 96" in legal_blocks({"M": 1, "N": 64, "K": 64}, 4, {"G_Z_K": 96}, k)


def test_register_operand_wgmma_block_rules():
    """Row tiles of 32 to 256, or any with the option's value "wgmma", take wgmma: 64 columns per
    consumer warpgroup (NUM_WARPS / 4), K tiles of at least 8 words, X and the words row-major, the
    ring in shared memory (X's tile at least wgmma's n of 8 rows)."""
    from tilesched.passes.gpu import lower_kernel
    from tilesched.passes.register_operand import legal_blocks, takes_wgmma

    groups = {"G_Z_K": 128, "G_S_K": 128}
    k4, k2 = (lower_kernel(load_program(CONFIGS / f"w{b}a16_gemm.yaml")) for b in (4, 2))
    assert legal_blocks({"M": 256, "N": 128, "K": 128}, 8, groups, k4, stages=3) is None
    assert legal_blocks({"M": 32, "N": 64, "K": 64}, 4, groups, k4, stages=2) is None
    assert legal_blocks({"M": 256, "N": 128, "K": 128}, 8, groups, k2, stages=3) is None
    assert "BLOCK_N = 64 x NUM_WARPS / 4" in legal_blocks({"M": 256, "N": 256, "K": 128}, 8, groups, k4)
    assert "BLOCK_N = 64 x NUM_WARPS / 4" in legal_blocks({"M": 256, "N": 256, "K": 128}, 16, groups, k4)
    assert "at least 8 words" in legal_blocks({"M": 128, "N": 128, "K": 64}, 8, groups, k2)  # 4 rows of words
    assert legal_blocks({"M": 128, "N": 128, "K": 128}, 8, groups, k4, split=2) is None  # shares meet per thread
    assert takes_wgmma(True, 32) and takes_wgmma("wgmma", 1) and not takes_wgmma(True, 16)
    assert legal_blocks({"M": 1, "N": 64, "K": 128}, 4, groups, k4, stages=8, split=8, wgmma=True) is None
    assert "BLOCK_N = 64 x NUM_WARPS / 4" in legal_blocks({"M": 16, "N": 128, "K": 128}, 4, groups, k4, wgmma=True)
    assert legal_blocks({"M": 16, "N": 128, "K": 128}, 4, groups, k4) is None  # the same point on mma.sync
    assert "NUM_STAGES >= 2" in legal_blocks({"M": 128, "N": 128, "K": 128}, 8, groups, k4, stages=1)
    assert "bytes <= 224256 of shared memory" in legal_blocks({"M": 256, "N": 128, "K": 128}, 8, groups, k4, stages=4)
    assert "G_S_K = 64" in legal_blocks({"M": 64, "N": 64, "K": 128}, 4, {"G_S_K": 64}, k4)
    col = lower_kernel(_variant("w4a16_gemm", ("X: {shape: [M, K], dtype: bf16}", "X: {shape: [M, K], dtype: bf16, "
                                                                                   "layout: col_major}")))
    assert "X row-major" in legal_blocks({"M": 64, "N": 64, "K": 128}, 4, groups, col)


def test_register_operand_takes_bytes_on_wgmma_only():
    """uint8 weights one to a byte: the wgmma kernel loads them in its operand's layout and runs the chain
    in fp32 (exact, one rounding); row tiles of 16 or fewer (mma.sync, packed words only) are refused, and
    the module renders no mma.sync kernel for them."""
    from tilesched.backends.cuda.gluon_wgmma import FP32_BIAS, chain_fp32, chain_steps
    from tilesched.passes.gpu import lower_kernel
    from tilesched.passes.register_operand import legal_blocks, mma_sync_why_not, the_dot, why_not

    k = lower_kernel(load_program(CONFIGS / "w8a16_gemm.yaml"))
    assert why_not(k) is None and "(mma.sync)" in mma_sync_why_not(k)[1]
    groups = {"G_Z_K": 128, "G_S_K": 128}
    assert legal_blocks({"M": 256, "N": 128, "K": 128}, 8, groups, k, stages=2) is None
    assert "or the value 'wgmma' (uint8 weights take the wgmma kernel only)" in legal_blocks(
        {"M": 16, "N": 128, "K": 128}, 8, groups, k)
    assert "from 32 to 256" in legal_blocks({"M": 256, "N": 128, "K": 16}, 8, groups, k)
    assert legal_blocks({"M": 16, "N": 128, "K": 128}, 8, groups, k, wgmma=True) is None  # the value "wgmma"
    assert "bytes <= 224256" in legal_blocks({"M": 256, "N": 128, "K": 128}, 8, groups, k, stages=3)
    steps = chain_steps(k, the_dot(k), FP32_BIAS, 1 << 22)
    assert steps == [("sub", f"({FP32_BIAS}.0 + r_Z)"), ("mul", "r_S")]
    assert chain_fp32(steps, FP32_BIAS) == (["f = f - o0", "f = f * o1"], [f"({FP32_BIAS}.0 + r_Z)", "r_S"])
    src = compiled(load_program(CONFIGS / "w8a16_gemm.yaml"))[1]
    assert "def w8a16_gemm_wgmma_kernel(" in src and "_gluon_kernel" not in src
    assert "w2 = w_ring.index(slot * CONSUMERS + wg).permute((1, 0)).load(WORDS_L)" in src
    assert "_byte_words(t['W'], 'W')" in src and "q0 + _gl_byte_columns(" in src
    kernel = Kernel(load_program(CONFIGS / "w8a16_gemm.yaml"))
    params = {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 1, "NUM_WARPS": 4, "NUM_STAGES": 2,
              "SPLIT_K": 1, "MATERIALIZE": False, "REGISTER_OPERAND": True}
    with pytest.raises(SpecError, match="constraint"):  # the spec's own constraint says so first
        oracle_inputs(kernel.program, {"M": 20, "N": 64, "K": 256}, seed=0, params=params)


@pytest.mark.parametrize("edits,scale", [
    ((), "S"),
    ((("fn: [cast, sub, mul], reads: [w, Z, S]", "fn: [cast, mul], reads: [w, S]"),
      ("  Z: {shape: [K, N], dtype: uint8, group: {K: 128}}\n", "")), "S"),  # v * s: v exact in bf16 too
    ((("S: {shape: [K, N], dtype: bf16", "S: {shape: [K, N], dtype: fp32"),), None),  # s not exact in bf16
    ((("Z: {shape: [K, N], dtype: uint8", "Z: {shape: [K, N], dtype: int16"),), None),  # v - z past 8 bits
    ((("fn: [cast, sub, mul], reads: [w, Z, S]", "fn: [cast, mul, add], reads: [w, S, Z]"),), None),
    ((("X: {shape: [M, K], dtype: bf16}", "X: {shape: [M, K], dtype: fp16}"),
      ("x: {shape: [M, K], dtype: bf16", "x: {shape: [M, K], dtype: fp16"),
      ("wd: {shape: [K, N], dtype: bf16", "wd: {shape: [K, N], dtype: fp16"),
      ("S: {shape: [K, N], dtype: bf16", "S: {shape: [K, N], dtype: fp16"),
      ("Y: {shape: [M, N], dtype: bf16}", "Y: {shape: [M, N], dtype: fp16}")), None),  # fp32 to fp16 is no slice
])
def test_byte_chains_multiply_in_bf16_pairs_where_exact(edits, scale):
    """Whole-byte weights end their chain with one bf16x2 multiply (no fp32 -> bf16 conversion) where the
    operand before it is an integer of at most 8 significant bits and the scale is stored as bf16: then
    the fp32 value's top half is exact and one bf16 rounding of the exact product is what the fp32
    product rounded to bf16 gives. Other chains keep the fp32 product and its conversion."""
    from tilesched.backends.cuda.gluon_wgmma import PAIR_SCALE, pair_scale
    from tilesched.passes.gpu import lower_kernel
    from tilesched.passes.register_operand import the_dot

    k = lower_kernel(_variant("w8a16_gemm", *edits))
    act = k.value(next(a for a in the_dot(k).args[:2] if a != the_dot(k).via)).dtype
    assert pair_scale(k, the_dot(k), act) == scale
    src = compiled(_variant("w8a16_gemm", *edits) if edits else load_program(CONFIGS / "w8a16_gemm.yaml"))[1]
    assert (PAIR_SCALE in src) == (scale is not None)
    whole = torch.arange(-255, 256, dtype=torch.float32)  # every v - z of two bytes: low halves zero
    assert ((whole.view(torch.int32) & 0xFFFF) == 0).all()


def test_register_operand_takes_3bit_words_on_wgmma_only():
    """uint3 weights, ten to a word: the wgmma kernel decodes a tile's words by its offset in steps of five
    tiles (K tiles of 64 or 128: 8 or 16 words, the words as 4-bit ones take); mma.sync refuses them, and
    the module renders no mma.sync kernel."""
    from tilesched.backends.cuda.gluon_triple import TRIPLE_PAIR
    from tilesched.passes.gpu import lower_kernel
    from tilesched.passes.register_operand import legal_blocks, mma_sync_why_not, why_not

    k = lower_kernel(load_program(CONFIGS / "w3a16_gemm.yaml"))
    assert why_not(k) is None and "(mma.sync)" in mma_sync_why_not(k)[1]
    groups = {"G_Z_K": 128, "G_S_K": 128}
    for bk in (64, 128):
        assert legal_blocks({"M": 256, "N": 128, "K": bk}, 8, groups, k, stages=2) is None
    assert "BLOCK_K of 64 or 128 (uint3" in legal_blocks({"M": 256, "N": 128, "K": 32}, 8, groups, k)
    assert "or the value 'wgmma' (uint3 weights take the wgmma kernel only)" in legal_blocks(
        {"M": 16, "N": 128, "K": 128}, 8, groups, k)
    assert legal_blocks({"M": 16, "N": 128, "K": 128}, 8, groups, k, wgmma=True) is None  # the value "wgmma"
    src = compiled(load_program(CONFIGS / "w3a16_gemm.yaml"))[1]
    assert "def w3a16_gemm_wgmma_kernel(" in src and "_gluon_kernel" not in src
    assert "    i5_first = -(t0 % 5)" in src and "for i5 in range(i5_first, k_tiles, 5):" in src and TRIPLE_PAIR in src
    assert "    if WHOLE_STEPS or ((i >= 0) & (i < k_tiles)):" in src and "def _gl_triple_words(w, OFFSET: ttgl.constexpr):" in src


@pytest.mark.parametrize("chain,steps", [
    ("[cast, sub, mul], reads: [w, Z, S]", [("sub", "(128.0 + r_Z)"), ("mul", "r_S")]),  # 128 + z is exact
    ("[cast, sub, div], reads: [w, Z, S]", [("sub", "(128.0 + r_Z)"), ("mul", "(1.0 / r_S)")]),
    ("[cast, mul, add], reads: [w, S, Z]", [("sub",), ("fma", "r_S", "r_Z")]),  # one rounding for v s + z
    ("[cast, mul], reads: [w, S]", [("sub",), ("mul", "r_S")]),
])
def test_wgmma_dequantisation_in_packed_halves(chain, steps):
    """The chain runs on BIAS + v in 16-bit pairs: BIAS leaves with the first integer zero point (exact),
    else on its own; a product then a sum is one fma; the PTX follows the steps."""
    from tilesched.backends.cuda.gluon_wgmma import chain_asm, chain_steps
    from tilesched.passes.gpu import lower_kernel
    from tilesched.passes.register_operand import the_dot

    edits = [("fn: [cast, sub, mul], reads: [w, Z, S]", f"fn: {chain}")]
    if "Z" not in chain:
        edits.append(("  Z: {shape: [K, N], dtype: uint4, group: {K: 128}, pack: N}\n", ""))
    k = lower_kernel(_variant("w4a16_gemm", *edits))
    assert chain_steps(k, the_dot(k), 128, 128) == steps  # bf16: 128 + z exact for z <= 128
    asm, operands = chain_asm(steps, "fp16")
    assert len(operands) == sum(len(s) - 1 for s in steps) and asm.count(".f16x2") == len(steps)
    assert ("mov.b32 b, 0x64006400; sub.rn.f16x2 t, $2, b;" in asm) == (steps[0] == ("sub",))


def test_wgmma_points_need_a_hopper_gpu(monkeypatch):
    """The wgmma kernel runs on compute capability 9.x only; elsewhere a point that takes it is refused."""
    import types

    from tilesched.backends.cuda import gluon_schedules
    from tilesched.backends.cuda.kernel import _check_gluon_device

    wgmma = gluon_schedules.BY_CONSTANT["REGISTER_OPERAND_WGMMA"]
    cuda = types.SimpleNamespace(type="cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(LaunchError, match=r"register-operand \(wgmma\) schedule is a Gluon kernel for Hopper.*is 8.0"):
        _check_gluon_device("w4a16_gemm", wgmma, cuda)
    _check_gluon_device("w4a16_gemm", gluon_schedules.BY_CONSTANT["REGISTER_OPERAND"], cuda)  # mma.sync: any GPU
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    _check_gluon_device("w4a16_gemm", wgmma, cuda)
    kernel = Kernel(load_program(CONFIGS / "w4a16_gemm.yaml"))
    params = {**RO, "BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 128}
    ins = oracle_inputs(kernel.program, {"M": 70, "N": 64, "K": 256}, seed=0, params=params)[2]
    with pytest.raises(LaunchError, match=r"register-operand \(wgmma\) schedule is a Gluon kernel.*CUDA GPU"):
        kernel(params=params, **ins)


@pytest.mark.parametrize("bits,block_red", [(4, 64), (4, 128), (2, 128), (2, 256), (8, 128)])
def test_wgmma_pairs_layout_covers_the_tile_once(bits, block_red):
    """gluon_layouts.wgmma_pairs_bases: every element of [64 columns, words, pairs] belongs to exactly one
    (register, lane, warp) of a warpgroup, and a thread's pair j of a word holds reduction indices
    2j + {0, 1} of that word's values, as wgmma's k_width-2 operand expects (its compile checks the rest)."""
    from itertools import product

    from tilesched.backends.cuda.gluon_layouts import wgmma_pairs_bases

    b = wgmma_pairs_bases(block_red, bits)
    rows, words, pairs = b["shape"]
    assert (rows, words, pairs) == (64, block_red * bits // 32, 16 // bits)
    bases = b["reg_bases"] + b["lane_bases"] + b["warp_bases"]
    seen = set()
    for bitsel in product((0, 1), repeat=len(bases)):
        point = [0, 0, 0]
        for on, base in zip(bitsel, bases):
            if on:
                point = [p ^ v for p, v in zip(point, base)]
        seen.add(tuple(point))
    assert len(seen) == 2 ** len(bases) == rows * words * pairs  # a bijection onto the tile
    lane_k = [2 * (w * pairs + j) for _, w, j in b["lane_bases"][:2]]  # lanes 1, 2: reduction indices 2, 4
    assert lane_k == [2, 4]


def _prmt(a: int, b: int, sel: int) -> int:
    """PTX prmt.b32 (default mode): output byte i is byte (sel >> 4i) & 7 of b:a."""
    pool = (b << 32 | a).to_bytes(8, "little")
    return int.from_bytes(bytes(pool[(sel >> 4 * i) & 7] for i in range(4)), "little")


def test_wgmma_4bit_pairs_from_a_byte_match_the_shifted_nibbles():
    """The wgmma kernel's 4-bit pair (gluon_wgmma.NIBBLE_PAIR, as emitted): PRMT with the lane's
    selector, the multiply and the LOP3 give value 2j in the low half and 2j + 1 in the high half,
    each ORed into BIAS, for every byte j of random words (the shift form it replaced, evaluated here)."""
    import random
    import re

    from tilesched.backends.cuda.gluon_wgmma import BYTE_SELECT, NIBBLE_PAIR, PACKED

    mul = int(re.search(r"mul\.lo\.u32 x, x, (\d+);", NIBBLE_PAIR).group(1))
    mask = int(re.search(r"lop3\.b32 \$0, x, (0x[0-9A-Fa-f]+), \$3, 0xEA;", NIBBLE_PAIR).group(1), 16)
    assert "prmt.b32 x, $1, 0, $2;" in NIBBLE_PAIR
    rng = random.Random(0)
    for bias in (PACKED["bf16"][1], PACKED["fp16"][1]):
        magic = int(bias, 16)
        for word in [0, 0xFFFFFFFF, 0x76543210] + [rng.getrandbits(32) for _ in range(200)]:
            for j in range(4):
                x = _prmt(word, 0, j + BYTE_SELECT) * mul % (1 << 32)
                got = (x & mask) | magic  # lop3 0xEA: (a & b) | c
                v = word >> (8 * j)
                assert got == (v & 0xF) | ((v << 12) & 0xF0000) | magic
                assert got & 0xFFFF == magic & 0xFFFF | (word >> 8 * j) & 0xF  # value 2j, low half
                assert got >> 16 == magic >> 16 | (word >> (8 * j + 4)) & 0xF  # value 2j + 1, high half
    src = compiled(load_program(CONFIGS / "w4a16_gemm.yaml"))[1]
    assert NIBBLE_PAIR in src and f"j + 0x{BYTE_SELECT:X}" in src


def _layout_points(b: dict) -> dict[tuple, tuple]:
    """(register, lane, warp) index -> the element a linear layout's bases put there."""
    from itertools import product

    groups = [b["reg_bases"], b["lane_bases"], b["warp_bases"]]
    out = {}
    for sel in product(*[list(product((0, 1), repeat=len(g))) for g in groups]):
        point = [0] * len(b["shape"])
        for bits_on, bases in zip(sel, groups):
            for on, base in zip(bits_on, bases):
                if on:
                    point = [p ^ v for p, v in zip(point, base)]
        key = tuple(sum(on << i for i, on in enumerate(s)) for s in sel)
        out[key] = tuple(point)
    return out


@pytest.mark.parametrize("rows,warps", [(64, 4), (128, 4), (256, 4), (128, 8), (256, 8)])
def test_words_load_layout_renumbers_rows_into_consecutive_columns(rows, warps):
    """gluon_layouts.words_load_bases: a bijection onto [columns, words]; each (lane, warp) holds
    the words of the rows it holds in the words' layout (pairs_bases), at columns row_column(row);
    and a thread's columns are consecutive, so they load as one vector."""
    from tilesched.backends.cuda.gluon_layouts import pairs_bases, row_column, words_load_bases

    load = words_load_bases(rows, 128, warps, 4)
    points = _layout_points(load)
    assert sorted(points.values()) == [(q, c) for q in range(rows) for c in range(16)]
    held = {}  # (lane, warp) -> the (row, word) pairs the words' layout gives it
    for (_, lane, warp), (r, c, _) in _layout_points(pairs_bases(rows, 128, warps, 4)).items():
        held.setdefault((lane, warp), set()).add((r, c))
    loaded = {}
    for (_, lane, warp), (q, c) in points.items():
        loaded.setdefault((lane, warp), set()).add((q, c))
    assert all(loaded[t] == {(row_column(r, rows, warps), c) for r, c in held[t]} for t in held)
    # and register by register: the kernel renumbers a thread's registers by these bits (_gl_rows)
    pairs_regs = [base[0] for base in pairs_bases(rows, 128, warps, 4)["reg_bases"] if base[0]]
    assert [row_column(r, rows, warps) for r in pairs_regs] == [base[0] for base in load["reg_bases"] if base[0]]
    assert sorted({row_column(r, rows, warps) for r in range(rows)}) == list(range(rows))
    columns = sorted({q for q, c in loaded[(0, 0)] if c == 0})
    assert columns == list(range(len(columns))) and len(columns) == 2 * rows // (16 * warps)
    # the kernel's own column of row r (its stores and coefficients) is the same map
    src = compiled(load_program(CONFIGS / "w4a16_gemm.yaml"))[1]
    line = next(ln for ln in src.splitlines() if "cq = pid_N * BLOCK_N + (r // 8)" in ln)
    expr = line.split("BLOCK_N + ", 1)[1]
    env = {"NW": warps, "BLOCKS": rows // (16 * warps)}
    assert [eval(expr, {}, {**env, "r": r}) for r in range(rows)] == [row_column(r, rows, warps) for r in range(rows)]


def test_register_operand_wgmma_value_takes_decode_row_tiles_and_split_shares():
    """The option's value "wgmma" puts a row tile of 1 or 16 on the wgmma kernel (wgmma's n of 8 at
    least), with split-K shares that meet through one counter per consumer thread; `true` keeps such
    a tile on mma.sync."""
    from tilesched.backends.cuda.kernel import launch_config
    from tilesched.ir.bind import bind

    program = load_program(CONFIGS / "w4a16_gemm.yaml")
    kernel = Kernel(program)
    params = {"BLOCK_M": 1, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8, "NUM_WARPS": 4, "NUM_STAGES": 8,
              "SPLIT_K": 4, "MATERIALIZE": False, "REGISTER_OPERAND": "wgmma"}
    sizes = {"M": 1, "N": 4096, "K": 4096}
    launch = launch_config(kernel.ir, bind(program, {**sizes, **params}))
    assert launch.constexprs["REGISTER_OPERAND_WGMMA"] and launch.grid == (64, 4)
    launch = launch_config(kernel.ir, bind(program, {**sizes, **params, "REGISTER_OPERAND": True, "NUM_STAGES": 4}))
    assert launch.constexprs["REGISTER_OPERAND"] and not launch.constexprs["REGISTER_OPERAND_WGMMA"]
    src = compiled(program)[1]
    assert "_gl_count_release(counter)" in src and "_gl_wait_acquire(counter" in src
    assert "arrival_counters(cfg.device, cfg.grid[0] * 2 * 128)" in src
    # decode tiles: two CTAs an SM, a CTA of 8 warps (one consumer) or 12 (two: the loader's warpgroup)
    assert "cap = {1: 96, 2: 80}[consumers]" in src and "regs = dict(maxnreg=cap, CONSUMER_REGS=cap)" in src


def _prmt(a: int, b: int, selector: int) -> int:
    """PTX prmt.b32 (default mode): byte i of the result is byte (selector's nibble i) of {b, a}."""
    pool = a.to_bytes(4, "little") + b.to_bytes(4, "little")
    return int.from_bytes(bytes(pool[(selector >> 4 * i) & 7] for i in range(4)), "little")


@pytest.mark.parametrize("spec,act,at", [("w2a16_gemm", "bf16", 3), ("w2a16_gemm", "fp16", 5),
                                          ("w4a16_gemm", "fp16", 2), ("w4a16_gemm", "bf16", 1)])
def test_mma_sync_pairs_a_shift_serves_decode_to_their_bias_plus_value(spec, act, at):
    """The mma.sync kernel's word decode, its constants as emitted: pair j's shift, mask and BIAS_j give
    BIAS_j + v in each half of its 16-bit float pair (v: values j and j + pairs of the word), BIAS_j the
    x_bias of those values' reduction indices, so the MMA started from -sum(BIAS_k x_k) sums v x exactly;
    with one pair a shift (4-bit bf16), one BIAS taken out with the offset's sum as before."""
    import random
    import re

    from tilesched.backends.cuda.gluon_emit import positions

    bits = 2 if spec == "w2a16_gemm" else 4
    assert positions(act, bits) == at
    text = (CONFIGS / f"{spec}.yaml").read_text().replace("dtype: bf16", f"dtype: {act}")
    spec_obj, source = load_spec_text(text)
    src = compiled(lower(spec_obj, source))[1]
    src = src[src.index("_gluon_kernel("):src.index("def gluon_launch")]  # the mma.sync kernel
    per, pairs = 32 // bits, 16 // bits
    lines = {m.group(1): m.group(2) for m in re.finditer(r"^ +(at|shifts|masks|x_bias|j) = (.*)$", src, re.M)}
    magic = int(re.search(r"bias_pairs = ttgl\.full\(\[[^]]*\], (0x[0-9A-F]+), ttgl\.int32, PAIRS\) \| \(n_N >> 31\)",
                          src).group(1), 16)
    half = np.float16 if act == "fp16" else None

    def as_float(h: int) -> float:  # a 16-bit pattern as the activation dtype's value
        return float(np.array(h, np.uint16).view(np.float16)) if half else float(np.array(h << 16, np.uint32).view(np.float32))

    ns = {"ttgl": type("T", (), {"arange": staticmethod(lambda lo, hi, layout=None: np.arange(lo, hi)),
                                 "expand_dims": staticmethod(np.expand_dims), "SliceLayout": staticmethod(lambda *a: None),
                                 "full": staticmethod(lambda shape, v, dt, layout: np.int64(v)), "int32": None}),
          "PAIRS": None, "BLOCK_N": 64, "BLOCK_K": 128}
    if at == 1:
        assert "lop3.b32 $0, $1, 0x" in src and "x_bias" not in src and "mma_v2(w_op, x_op, zeros)" in src
        shifts, masks, bias = eval(lines["shifts"], ns).ravel(), [((1 << bits) - 1) * 0x10001] * pairs, [magic] * pairs  # noqa: S307
        x_bias = np.full(per, as_float(magic & 0xFFFF))
    else:
        assert "\"lop3.b32 $0, $1, $2, $3, 0xEA;\", \"=r,r,r,r\", [ttgl.expand_dims(v_words, 2) >> shifts, masks, bias_pairs]" \
            in src
        assert "mma_v2(w_op, x_op, zeros - x_bias_sum[None, :])" in src
        assert "x_bias_sum = ttgl.convert_layout(ttgl.reduce(v_x.to(ttgl.float32) * x_bias[None, :], 1, _gl_add)" in src
        ns["j"] = eval(lines["j"], ns)  # noqa: S307
        ns["at"] = eval(lines["at"], ns)  # noqa: S307
        shifts, masks = eval(lines["shifts"], ns).ravel(), eval(lines["masks"], ns).ravel()  # noqa: S307
        step = int(re.search(r"bias_pairs = bias_pairs - at \* (0x[0-9A-F]+)", src).group(1), 16)
        bias = [magic - a * step for a in ns["at"].ravel()]
        x_bias = eval(lines["x_bias"].replace(".to(ttgl.float32)", ""), {"xc": np.arange(per)}).astype(float)  # noqa: S307
    assert len(set(shifts.tolist())) == -(-pairs // at)  # one shift a word per `at` pairs
    rng = random.Random(0)
    for word in [0, -1, 0x76543210] + [rng.getrandbits(32) - (1 << 31) for _ in range(300)]:  # int32 words
        for j in range(pairs):
            got = ((word >> int(shifts[j])) & int(masks[j])) | bias[j]  # lop3 0xEA: (a & b) | c
            for i, h in ((j, got & 0xFFFF), (j + pairs, (got >> 16) & 0xFFFF)):
                v = (word >> (bits * i)) & ((1 << bits) - 1)
                assert as_float(h) == x_bias[i] + v, (word, j, i)


@pytest.mark.parametrize("signed", [False, True])
def test_byte_words_dequantise_by_one_prmt_a_value(signed):
    """8-bit weights load as 16-bit words (two columns' bytes), two words a register; BYTE_FP32's four
    PRMTs put each byte in the low byte of fp32 BIAS = 1.5 x 2^23: exactly BIAS + v (int8: its bytes
    XOR 0x80 first, v + 128 against a BIAS 128 higher), in the output order the kernel joins."""
    import re
    import struct

    from tilesched.backends.cuda.gluon_wgmma import BYTE_FP32, FP32_BIAS, FP32_BIAS_BITS

    selectors = [int(x, 16) for x in re.findall(r"0x([0-9a-f]{4});", BYTE_FP32)]
    outputs = [int(x) for x in re.findall(r"prmt\.b32 \$(\d)", BYTE_FP32)]
    rng = np.random.default_rng(3)
    for w0, w1 in rng.integers(0, 1 << 16, size=(200, 2)):
        word = int(w0) | int(w1) << 16
        if signed:
            word ^= 0x80808080
        got = {o: struct.unpack("<f", struct.pack("<I", _prmt(word, int(FP32_BIAS_BITS, 16), sel)))[0]
               for o, sel in zip(outputs, selectors)}
        # $0, $1: the low bytes of words 0 and 1; $2, $3: their high bytes
        for o, (w, shift) in zip(range(4), [(w0, 0), (w1, 0), (w0, 8), (w1, 8)]):
            v = (int(w) >> shift) & 0xFF
            if signed:
                v = v - 256 if v >= 128 else v
            assert got[o] - (FP32_BIAS + 128 * signed) == v


@pytest.mark.parametrize("spec,count", [("w8a16_gemm", 4), ("w4a16_gemm", 2), ("w2a16_gemm", 1), ("w3a16_gemm", 1)])
def test_wide_tiles_dequantise_in_parts_each_mma_issued_before_the_next_part(spec, count):
    """The wgmma kernel with K tiles of 128 (PARTS, as the launcher sets it): bytes past 16 rows in four
    parts, 4-bit words at every row tile in two, that cover the words' and X's tile once each, part h's
    MMA issued before part h + 1 is dequantised (a wait on all but the groups issued so far, which
    waits on nothing), every part's operand a dependency of the last wait; byte decode tiles and K
    tiles of 64 keep one part, and 2- and 3-bit tiles have none."""
    import re

    src = compiled(load_program(CONFIGS / f"{spec}.yaml"))[1]
    if count == 1:
        assert "PARTS" not in src
        return
    rule = re.search(r'kw\["PARTS"\] = (.*)', src).group(1)
    decode = count if count == 2 else 1  # 4-bit words at every row tile, bytes past 16 rows
    for block_k, block_m, parts in ((128, 256, count), (128, 32, count), (128, 16, decode), (128, 1, decode),
                                    (64, 256, 1)):
        assert eval(rule, {"kw": {"BLOCK_K": block_k, "BLOCK_M": block_m}}) == parts  # noqa: S307
    body = src[src.index("        else:\n            # the K tile in parts"):src.index("_gl_mbarrier.arrive(empty.index(slot)")]
    assert f"ttgl.static_assert(PARTS == {count})" in body
    events = re.findall(r"slice\((\d) \* ([^,]*) // PARTS, ([^,]*) // PARTS, (\d)\)|warpgroup_mma\((a\d)|"
                        r"warpgroup_mma_wait\((\d), deps=\[([^]]*)\]", body)
    order = []
    for part, start, length, dim, mma, wait, deps in events:
        assert start == length  # part h starts at h times its length
        order.append(f"w{part}" if dim == "0" else f"x{part}" if part else mma or f"wait{wait}:{deps}")
    want = []
    for h in range(count):
        want += [f"w{h}", f"a{h}", f"x{h}"] + ([f"wait{h + 1}:tok"] if h < count - 1 else [])
    assert order == want + [f"wait0:tok, {', '.join(f'a{h}' for h in range(count))}"]


def test_byte_words_layout_puts_a_threads_two_rows_in_one_word():
    """wgmma_byte_words_bases: a thread's word holds the bytes of MMA rows r and r + 8 (columns 2 j, 2 j + 1
    with byte_row_column), and its reduction indices are the operand's (k_width 2: 2t, 2t + 1, 2t + 8,
    2t + 9 of every 16); byte_row_column is a permutation of the 64 columns."""
    from tilesched.backends.cuda.gluon_layouts import byte_row_column, wgmma_byte_words_bases

    block_red = 128
    bases = wgmma_byte_words_bases(block_red)
    assert sorted(byte_row_column(r) for r in range(64)) == list(range(64))

    def place(kind: str, index: int) -> tuple[int, int]:
        col, red = 0, 0
        for bit, (c, k) in enumerate(bases[kind]):
            if index >> bit & 1:
                col, red = col ^ c, red ^ k
        return col, red

    for warp in range(4):
        for lane in range(32):
            (lc, lk), (wc, wk) = place("lane_bases", lane), place("warp_bases", warp)
            ks = {lk ^ wk ^ place("reg_bases", reg)[1] for reg in range(1 << len(bases["reg_bases"]))}
            word = lc ^ wc
            assert {place("reg_bases", reg)[0] for reg in range(1 << len(bases["reg_bases"]))} == {0}
            t = lane % 4
            assert ks == {16 * s + 2 * t + d for s in range(block_red // 16) for d in (0, 1, 8, 9)}
            for byte in (0, 1):  # the MMA fragment's rows of this thread: lane // 4 (+ 8), in its warp's 16
                r = lane // 4 + 8 * byte + 16 * warp
                assert byte_row_column(r) == 2 * word + byte


@pytest.mark.parametrize("bits", [4, 2])
def test_decode_tiles_load_a_threads_two_rows_as_adjacent_columns(bits):
    """wgmma_pairs_bases(by_column=True): the words' rows are columns, a thread's two operand rows (lane // 4
    and + 8 in its warp's 16) the adjacent columns byte_row_column gives them, and the reduction indices
    are those of the layout in row order (by_column=False), which keeps row r at column r."""
    from tilesched.backends.cuda.gluon_layouts import byte_row_column, wgmma_pairs_bases

    by_col, by_row = wgmma_pairs_bases(128, bits, by_column=True), wgmma_pairs_bases(128, bits)

    def place(bases: dict, kind: str, index: int) -> list[int]:
        out = [0, 0, 0]
        for bit, b in enumerate(bases[kind]):
            if index >> bit & 1:
                out = [x ^ y for x, y in zip(out, b)]
        return out

    for warp in range(4):
        for lane in range(32):
            for reg in range(1 << len(by_row["reg_bases"])):
                got, ref = ([a ^ b ^ c for a, b, c in zip(place(L, "lane_bases", lane), place(L, "warp_bases", warp),
                                                          place(L, "reg_bases", reg))] for L in (by_col, by_row))
                assert got[1:] == ref[1:]  # the same word and pair of the reduction
                assert got[0] == byte_row_column(ref[0])  # row r of the MMA at column byte_row_column(r)


def test_the_kernel_helper_maps_rows_to_columns_as_the_layouts_do():
    """The generated `_gl_byte_columns` (device code) computes byte_row_column (the layouts' rows), the
    one mapping the coefficients, split-K workspace and outputs follow."""
    import re

    from tilesched.backends.cuda.gluon_layouts import byte_row_column
    from tilesched.backends.cuda.gluon_wgmma import HELPERS

    body = re.search(r"def _gl_byte_columns\(r\):\n(?:\s*#.*\n)*\s*return (.+)\n", HELPERS).group(1)
    r = np.arange(64)
    assert list(eval(body, {"r": r})) == [byte_row_column(int(x)) for x in r]  # noqa: S307 - our own source


class _NumpyGluon:
    """Just enough of gluon / ttgl to run the wgmma kernel's 3-bit helpers and expressions on numpy arrays."""
    constexpr = int

    @staticmethod
    def jit(fn):
        return fn

    @staticmethod
    def where(c, a, b):
        return np.where(c, a, b)


@pytest.mark.parametrize("block", [64, 128])
def test_3bit_pairs_by_the_tiles_offset_match_the_packed_values(block):
    """3-bit weights, ten to a word: the wgmma kernel's decode as emitted (the loader's first word row,
    the generated `_gl_triple_words` with numpy's slices for its split and join helpers, the slot and shift
    expressions, TRIPLE_PAIR's instructions evaluated here) gives each lane j of quad m of tile t the
    values 2 (4m + j) and + 1 of the tile, for ten tiles (every offset in a word, twice) of random words."""
    import re

    from tilesched.backends.cuda.gluon_triple import (
        TRIPLE_OFFSET,
        TRIPLE_PAIR,
        TRIPLE_ROW,
        TRIPLE_SHIFTS,
        TRIPLE_SLOT,
        triple_words_helper,
    )
    from tilesched.backends.cuda.gluon_wgmma import PACKED

    ns = {"gluon": _NumpyGluon, "ttgl": _NumpyGluon,
          "_gl_halves": lambda t: (t[:, :t.shape[1] // 2], t[:, t.shape[1] // 2:]),
          "_gl_beside": lambda a, b: np.concatenate([a, b], axis=1)}
    helper = "\n".join(triple_words_helper())
    exec(helper.split("\n\n\n@gluon.jit\ndef _gl_halves")[0], ns)  # noqa: S102 - our own generated source
    assert re.findall(r"shf\.r\.clamp\.b32 x, \$1, \$2, \$3; shr\.b32 x, x, \$4; and\.b32 x, x, (\d+);", TRIPLE_PAIR) \
        == ["63"]
    mul = int(re.search(r"mul\.lo\.u32 x, x, (\d+);", TRIPLE_PAIR).group(1))
    mask = int(re.search(r"lop3\.b32 \$0, x, (0x[0-9A-Fa-f]+), \$5, 0xEA;", TRIPLE_PAIR).group(1), 16)
    magic = int(PACKED["bf16"][1], 16)
    rng = np.random.default_rng(0)
    tiles, per = 10, block // 8
    words = rng.integers(0, 1 << 30, size=(tiles * block // 10 + per, 1), dtype=np.int64)  # two top bits unused
    value = [(int(words[k // 10, 0]) >> 3 * (k % 10)) & 7 for k in range(10 * len(words))]
    quad = np.arange(per)[:, None]
    lane = np.arange(4)[None, :]
    for t in range(tiles):
        env = {"t": t, "step": t % 5, "BLOCK": block, "quad": quad, "lane": lane, "ttgl": _NumpyGluon}
        row = eval(TRIPLE_ROW, env)  # noqa: S307 - the kernel's expressions
        tile = words[row:row + per].T  # [1 column, per words], as the TMA box (never past the words here)
        lo, hi = ns["_gl_triple_words"](tile, eval(TRIPLE_OFFSET, env))  # noqa: S307
        env["u"] = eval(TRIPLE_SLOT, env)  # noqa: S307
        at, at_hi = (eval(e, env) for e in TRIPLE_SHIFTS)  # noqa: S307
        lo, hi = lo[0][:, None], hi[0][:, None]
        x = (((hi << 32) | lo) >> np.minimum(at, 32)) & 0xFFFFFFFF  # shf.r.clamp
        x = ((x >> at_hi) & 63) * mul % (1 << 32)
        got = (x & mask) | magic
        k = t * block + 2 * (4 * quad + lane)
        want_lo = np.vectorize(lambda i: value[i])(k)
        want_hi = np.vectorize(lambda i: value[i])(k + 1)
        assert ((got & 0xFFFF) == (magic & 0xFFFF | want_lo)).all(), (t, got & 0xFFFF, want_lo)
        assert ((got >> 16) == (magic >> 16 | want_hi)).all(), (t, got >> 16, want_hi)
