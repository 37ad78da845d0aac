"""The semantics oracle: what each op computes, checked against independent arithmetic (numpy,
TFLite's int8 kernels as TFLM runs them), and the rules that keep tiling out of the meaning."""

import math
import shutil

import numpy as np
import pytest

from tests.conftest import ROOT
from tilesched import bind, load_program, lower
from tilesched.errors import SpecError
from tilesched.semantics import compare, random_inputs, run_spec
from tilesched.semantics import quant as Q
from tilesched.spec import load_spec_text

SEM = ROOT / "tests" / "specs" / "semantics"


def _program(text: str):
    spec, source = load_spec_text(text, "t.yaml")
    return lower(spec, source)


FLOAT_HEAD = """
name: t
target: cuda
axes: {M: 7, N: 5, K: 6}
"""


def test_elementwise_chain_with_constants_and_broadcasts():
    prog = _program(FLOAT_HEAD + """
tensors:
  X: {shape: [M, N], dtype: fp32}
  r: {shape: [N], dtype: fp32}
  c: {shape: [M], dtype: fp32}
  Y: {shape: [M, N], dtype: fp32}
stages:
  - {name: e, kind: compute, op: elementwise, reads: [X, r, c],  writes: [Y], at: null,
     fn: [{scale: "1 / K"}, add, silu, sub, {max: -0.25}, abs, {add: 1.0}, rsqrt, relu6]}
""")
    b = bind(prog)
    ins = random_inputs(b, np.random.default_rng(0))
    x, r, c = ins["X"], ins["r"], ins["c"]
    v = x / 6 + r[None, :]
    v = v / (1 + np.exp(-v))
    v = np.abs(np.maximum(v - c[:, None], -0.25)) + 1.0
    want = np.clip(1 / np.sqrt(v), 0, 6)
    np.testing.assert_allclose(run_spec(b, ins)["Y"], want, rtol=1e-12)


def test_dot_contracts_by_axis_name_and_accumulates_into_a_global():
    prog = _program("""
name: t
target: cuda
axes: {B: 3, M: 4, N: 5, K: 6}
tensors:
  A: {shape: [B, K, M], dtype: fp32}
  W: {shape: [N, K], dtype: fp32}
  C: {shape: [B, M, N], dtype: fp32}
stages:
  - {name: d, kind: compute, op: dot, reads: [A, W, C], writes: [C], at: null}
""")
    b = bind(prog)
    ins = random_inputs(b, np.random.default_rng(1))
    assert set(ins) == {"A", "W", "C"}  # C is read before it is written: an input
    want = ins["C"] + np.einsum("bkm,nk->bmn", ins["A"], ins["W"])
    np.testing.assert_allclose(run_spec(b, ins)["C"], want, rtol=1e-12)


def test_softmax_layernorm_and_reductions():
    prog = _program(FLOAT_HEAD + """
tensors:
  X: {shape: [M, N], dtype: fp32}
  g: {shape: [N], dtype: fp32}
  P: {shape: [M, N], dtype: fp32}
  L: {shape: [M, N], dtype: fp32}
  S: {shape: [M], dtype: fp32}
  Mx: {shape: [N], dtype: fp32}
stages:
  - {name: sm, kind: compute, op: softmax, axis: N, reads: [X], writes: [P], at: null}
  - {name: ln, kind: compute, op: layernorm, axis: N, reads: [X, g], writes: [L], at: null}
  - {name: mean, kind: compute, op: reduce, reduce: mean, axis: N, reads: [X], writes: [S], at: null}
  - {name: mx, kind: compute, op: reduce, reduce: max, axis: M, reads: [X], writes: [Mx], at: null}
""")
    b = bind(prog)
    ins = random_inputs(b, np.random.default_rng(2))
    out = run_spec(b, ins)
    x = ins["X"]
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(out["P"], e / e.sum(1, keepdims=True), rtol=1e-12)
    mu, var = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    np.testing.assert_allclose(out["L"], (x - mu) / np.sqrt(var + 1e-5) * ins["g"], rtol=1e-10)
    np.testing.assert_allclose(out["S"], x.mean(1), rtol=1e-12)
    np.testing.assert_allclose(out["Mx"], x.max(0), rtol=1e-12)


def test_an_in_place_update_inside_a_loop_its_tensor_lacks_is_refused():
    """`at` decides how often a stage runs; where that would change the result, the spec is refused."""
    text = FLOAT_HEAD.replace("axes: {M: 7, N: 5, K: 6}", "axes: {M: 64, N: 64, K: 64}") + """
tensors:
  A: {shape: [M, K], dtype: fp16}
  B: {shape: [K, N], dtype: fp16}
  acc: {shape: [M, N], dtype: fp32, scope: tile}
  C: {shape: [M, N], dtype: fp16}
loops: [{axis: M, tile: 32}, {axis: N, tile: 32}, {axis: K, tile: 32, kind: reduction}]
stages:
  - {name: mma, kind: compute, op: dot, reads: [A, B, acc], writes: [acc], at: K}
  - {name: act, kind: compute, op: elementwise, fn: [relu], reads: [acc], writes: [acc], at: AT}
  - {name: store, kind: memory, op: store, reads: [acc], writes: [C], at: N}
"""
    with pytest.raises(SpecError, match=r"stages\[1\]\.at: .*once per K tile.*at: N"):
        _program(text.replace("AT", "K"))
    _program(text.replace("AT", "N"))  # after the reduction loop: once per output tile, fine


def test_alias_reads_the_same_values_under_other_axis_names():
    prog = _program((FLOAT_HEAD + """
tensors:
  X: {shape: [M, N], dtype: fp32}
  Xt: {shape: [K, N], dtype: fp32, alias: X}
  Y: {shape: [M, K], dtype: fp32}
stages:
  - {name: gram, kind: compute, op: dot, reads: [X, Xt], writes: [Y], at: null}
""").replace("K: 6", "K: 7"))
    b = bind(prog)
    ins = random_inputs(b, np.random.default_rng(3))
    assert set(ins) == {"X"}
    np.testing.assert_allclose(run_spec(b, ins)["Y"], ins["X"] @ ins["X"].T, rtol=1e-12)
    with pytest.raises(SpecError, match="alias of X"):
        _program(FLOAT_HEAD + """
tensors:
  X: {shape: [M, N], dtype: fp32}
  Xt: {shape: [K, N], dtype: fp16, alias: X}
  Y: {shape: [M, K], dtype: fp32}
stages:
  - {name: gram, kind: compute, op: dot, reads: [X, Xt], writes: [Y], at: null}
""")


# ---------------------------------------------------------------------------------- quantised

INT_HEAD = """
name: t
target: cortex-m7
axes: {H: 9, W: 7, C: 8, CO: 12, KH: 3, KW: 3, OH: "(H + 2 - 3) // 2 + 1", OW: "(W + 2 - 3) // 2 + 1"}
"""


@pytest.mark.parametrize("act", ["none", "relu", "relu6"])
def test_int8_convolutions_match_tflite_arithmetic(act):
    """conv2d 3x3 stride 2 pad 1 (per-channel weights) and depthwise, against baselines.int8_ref,
    whose kernels match TFLM's bit for bit (tests/test_tflm_baseline.py)."""
    from tilesched.baselines.int8_ref import QParams, conv2d_int8_reference, depthwise_conv2d_int8_reference

    wscales = [0.004 + 0.001 * i for i in range(12)]
    fn = "" if act == "none" else f", fn: [{act}]"
    prog = _program(INT_HEAD + f"""
tensors:
  x: {{shape: [H, W, C], dtype: int8, quant: {{scale: 0.05, zero_point: -3}}}}
  w: {{shape: [CO, KH, KW, C], dtype: int8, quant: {{scale: {wscales}, axis: CO}}}}
  b: {{shape: [CO], dtype: int32}}
  y: {{shape: [OH, OW, CO], dtype: int8, quant: {{scale: 0.08, zero_point: 7}}}}
  wd: {{shape: [KH, KW, C], dtype: int8, quant: {{scale: 0.01}}}}
  yd: {{shape: [OH, OW, C], dtype: int8, quant: {{scale: 0.03, zero_point: -9}}}}
stages:
  - {{name: conv, kind: compute, op: conv2d, kernel: [3, 3], stride: 2, padding: 1, reads: [x, w, b], writes: [y], at: null{fn}}}
  - {{name: dw, kind: compute, op: depthwise_conv2d, kernel: [3, 3], stride: 2, padding: 1, reads: [x, wd], writes: [yd], at: null{fn}}}
""")
    b = bind(prog)
    ins = random_inputs(b, np.random.default_rng(4))
    out = run_spec(b, ins)
    xq = QParams.per_tensor(0.05, -3)
    x = ins["x"].astype(np.int8)[None]
    # odd sizes: TFLite SAME at stride 2 pads 1 on each side, as `padding: 1` does
    want = conv2d_int8_reference(x, xq, ins["w"].astype(np.int8), QParams.per_channel(wscales, 0), ins["b"],
                                 QParams.per_tensor(0.08, 7), stride=2, padding="same", act=act)[0]
    np.testing.assert_array_equal(out["y"], want)
    assert np.unique(out["y"]).size > 10  # informative outputs, not saturated
    want_d = depthwise_conv2d_int8_reference(x, xq, ins["wd"].astype(np.int8)[None], QParams.per_tensor(0.01),
                                             np.zeros(8, dtype=np.int64), QParams.per_tensor(0.03, -9), stride=2,
                                             padding="same", act=act)[0]
    np.testing.assert_array_equal(out["yd"], want_d)


def test_int8_dot_and_requantize_match_fully_connected():
    from tilesched.baselines.int8_ref import QParams, fully_connected_int8_reference

    prog = _program("""
name: t
target: cortex-m4
axes: {S: 6, D: 16, F: 10}
tensors:
  x: {shape: [S, D], dtype: int8, quant: {scale: 0.04, zero_point: 5}}
  w: {shape: [D, F], dtype: int8, quant: {scale: 0.003}}
  bias: {shape: [F], dtype: int32}
  acc: {shape: [S, F], dtype: int32, scope: tile}
  y: {shape: [S, F], dtype: int8, quant: {scale: 0.02, zero_point: -7}}
stages:
  - {name: fc, kind: compute, op: dot, reads: [x, w], writes: [acc], at: null}
  - {name: rq, kind: compute, op: requantize, fn: [relu], reads: [acc, bias], writes: [y], at: null}
""")
    b = bind(prog)
    ins = random_inputs(b, np.random.default_rng(5))
    want = fully_connected_int8_reference(ins["x"].astype(np.int8), QParams.per_tensor(0.04, 5),
                                          ins["w"].T.astype(np.int8), QParams.per_tensor(0.003), ins["bias"],
                                          QParams.per_tensor(0.02, -7), act="relu")
    np.testing.assert_array_equal(run_spec(b, ins)["y"], want)


def test_int8_add_matches_tflm():
    """The residual add of quantised tensors is TFLite's ADD, checked against TFLM itself."""
    pytest.importorskip("tflite_micro")
    from tilesched.baselines import tflm
    from tilesched.baselines.tflm import QParams

    prog = _program("""
name: t
target: cortex-m4
axes: {H: 6, W: 5, C: 8}
tensors:
  a: {shape: [H, W, C], dtype: int8, quant: {scale: 0.031, zero_point: -4}}
  b: {shape: [H, W, C], dtype: int8, quant: {scale: 0.017, zero_point: 9}}
  y: {shape: [H, W, C], dtype: int8, quant: {scale: 0.045, zero_point: -1}}
stages:
  - {name: add, kind: compute, op: elementwise, fn: [add, relu6], reads: [a, b], writes: [y], at: null}
""")
    bnd = bind(prog)
    ins = random_inputs(bnd, np.random.default_rng(6))
    m = tflm.ModelBuilder(seed=1)
    qa, qb, qy = QParams.per_tensor(0.031, -4), QParams.per_tensor(0.017, 9), QParams.per_tensor(0.045, -1)
    ta, tb = m.input("a", (1, 6, 5, 8), qa), m.input("b", (1, 6, 5, 8), qb)
    m.mark_output(m.add("y", ta, tb, "relu6", qy))
    got = tflm.tflm_run(m.build(), [ins["a"].astype(np.int8)[None], ins["b"].astype(np.int8)[None]])[0][0][0]
    np.testing.assert_array_equal(run_spec(bnd, ins)["y"], got)


def test_int8_unary_fns_are_exact_tables():
    q = np.arange(-128, 128)
    lut = Q.lut_int8(lambda v: 0.5 * v * (1 + np.vectorize(math.erf)(v / math.sqrt(2))), 0.05, -10, 0.04, -60)
    real = 0.05 * (q + 10)
    gelu = 0.5 * real * (1 + np.vectorize(math.erf)(real / math.sqrt(2)))
    np.testing.assert_array_equal(lut, np.clip(np.sign(gelu / np.float32(0.04)) *
                                               np.floor(np.abs(gelu / np.float32(0.04)) + 0.5) - 60, -128, 127))


def test_compare_is_exact_for_integers_and_bounded_for_floats():
    prog = load_program(ROOT / "configs" / "gemm_bias_gelu.yaml")
    want = np.ones((4, 4))
    assert compare(prog, "C", want, want).ok
    assert not compare(prog, "C", want * 1.01, want).ok
    assert not compare(prog, "C", np.full((4, 4), np.nan), want).ok
    mcu = load_program(ROOT / "configs" / "mcu_inverted_bottleneck.yaml")
    w = np.zeros((3, 3), dtype=np.int64)
    assert compare(mcu, "y", w, w).ok and not compare(mcu, "y", w + np.eye(3, dtype=np.int64), w).ok


# ------------------------------------------------------------------------------ issue specs

def test_relu_prologue_means_relu_before_the_dot_and_cuda_renders_it(monkeypatch):
    prog = load_program(SEM / "relu_prologue.yaml")
    b = bind(prog, {"M": 33, "N": 40, "K": 50})
    ins = random_inputs(b, np.random.default_rng(7))
    np.testing.assert_allclose(run_spec(b, ins)["C"], np.maximum(ins["A"], 0) @ ins["B"], rtol=1e-12)
    from tilesched.targets import generation_problem

    assert generation_problem(prog) is None  # the prologue is rendered (it used to become relu(A @ B))
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from tests.cuda_util import run_against_oracle
    from tilesched.backends.cuda.kernel import Kernel

    v = run_against_oracle(Kernel(prog), {"M": 33, "N": 40, "K": 50}, seed=7)
    assert v.ok, v.why


def test_the_ib_residual_block_adds_the_input_and_cortex_m_renders_it():
    prog = load_program(SEM / "ib_residual.yaml")
    b = bind(prog)
    ins = random_inputs(b, np.random.default_rng(8))
    y = run_spec(b, ins)["y"]
    assert y.shape == (10, 9, 8) and np.unique(y).size > 10
    # y = x + block(x): with the input held at its zero point the sum is the block alone, else not
    still = {**ins, "x": np.full_like(ins["x"], -5)}
    assert not np.array_equal(run_spec(b, still)["y"], y)
    from tilesched.targets import generation_problem

    assert generation_problem(prog) is None  # the residual add is TFLite's ADD, fused per pixel
    if shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm"):
        from tilesched.backends.cortexm import session

        rep = session.run_binding(b, seed=8)
        assert rep.ok, f"{rep.mismatches} outputs differ from the oracle"


@pytest.mark.parametrize("spec", ["bert_full_layer", "bert_gelu_ffn"])
def test_bert_variants_run_bit_exact(spec, capsys):
    """The complete layer (residual adds, layernorms, GELU FFN) and the GELU FFN alone: generated, and
    equal to the oracle under QEMU."""
    from tilesched.cli import main

    path = SEM / f"{spec}.yaml"
    if shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm"):
        assert main(["run", str(path), "--seed", "3"]) == 0, capsys.readouterr().err
        assert "bit-exact" in capsys.readouterr().out
    b = bind(load_program(path))
    out = run_spec(b, random_inputs(b, np.random.default_rng(9)))["out"]
    assert out.shape == (32, 128) and np.unique(out).size > 10  # the oracle runs the whole layer


needs_qemu = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                                reason="needs the Arm toolchain and QEMU (scripts/setup.sh)")


@needs_qemu
def test_relu_on_mcu_convolutions_is_relu_not_relu6():
    from tilesched.backends.cortexm import session

    b = bind(load_program(SEM / "ib_relu.yaml"))
    rep = session.run_binding(b, seed=3)
    assert rep.ok, f"{rep.mismatches} outputs differ from the oracle"
    # and it matters: the same data with ReLU6 in place of ReLU gives another output
    six = load_program(SEM / "ib_relu.yaml").model_copy()
    stages = tuple(s.model_copy(update={"fn": ("relu6",)}) if s.name == "expand" else s for s in six.stages)
    b6 = bind(six.model_copy(update={"stages": stages}))
    ins = random_inputs(b, np.random.default_rng(3))
    assert not np.array_equal(run_spec(b, ins)["y"], run_spec(b6, ins)["y"])


def test_the_readme_spec_runs(tmp_path):
    """The ten-line spec README shows validates, plans and runs against the oracle."""
    import re

    from tilesched.cli import main

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## A spec in ten lines\n\n```yaml\n(.*?)```", readme, re.S).group(1)
    spec = tmp_path / "gemm.yaml"
    spec.write_text(block)
    assert main(["validate", str(spec)]) == 0
    assert main(["plan", str(spec), "--set", "M=300"]) == 0
    assert main(["run", str(spec), "--set", "M=70", "--set", "BLOCK_M=64"]) == 0
