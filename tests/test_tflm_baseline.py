"""TFLite Micro baseline: the flatbuffers we write load and run in TFLM, the arena report parses, and TFLM's
int8 convolutions match our numpy reference of TFLite's requantization bit for bit."""

import sys

import numpy as np
import pytest

pytest.importorskip("tflite_micro")

from tests.conftest import ROOT  # noqa: E402
from tilesched.baselines import tflm  # noqa: E402
from tilesched.baselines.tflm import QParams  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import mcu_workloads  # noqa: E402

# Every shared MCU workload at a small size (same layer structure and quantization, smaller H/W or sequence).
SMALL = {
    "ib_s1_80": mcu_workloads.inverted_bottleneck(12, 10, 16, 6, 24, 1),
    "ib_s2_80": mcu_workloads.inverted_bottleneck(12, 10, 16, 6, 24, 2),
    "bert_tiny_s128": mcu_workloads.bert_tiny_layer(16),
    "bert_tiny_s256": mcu_workloads.bert_tiny_layer(24),
    "bert_tiny_s512": mcu_workloads.bert_tiny_layer(32),
}


def test_small_table_covers_every_workload():
    assert set(SMALL) == set(mcu_workloads.WORKLOADS)
    for name, layers in SMALL.items():
        assert [la["op"] for la in layers] == [la["op"] for la in mcu_workloads.WORKLOADS[name]]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_workload_runs_in_tflm(name):
    layers = SMALL[name]
    model = tflm.model_from_layers(layers, mcu_workloads.IO[name])
    assert model[4:8] == b"TFL3"
    r = tflm.tflm_arena(model, seed=1)
    assert r["head_bytes"] > 0 and r["tail_bytes"] > 0
    assert r["total_bytes"] == r["head_bytes"] + r["tail_bytes"]
    assert 0 < sum(r["tail_parts"].values()) <= r["tail_bytes"]
    assert r["output_distinct"] > 16 and r["output_std"] > 4.0  # real, non-saturated data came out
    assert r["output_shape"] == layers[-1]["output_shape"]
    if name.startswith("ib"):
        # the depthwise conv reads the whole expanded tensor while writing its output: both live at once
        assert r["head_bytes"] >= np.prod(layers[1]["input_shape"]) + np.prod(layers[1]["output_shape"])
    else:
        # scores and softmax probabilities ([heads, seq, seq] int8 each) are live together
        att = layers[3]
        assert r["head_bytes"] >= 2 * att["heads"] * att["seq_len"] ** 2


def test_outputs_depend_on_inputs():
    model = tflm.model_from_layers(mcu_workloads.bert_tiny_layer(8))
    a = tflm.tflm_run(model, tflm.random_inputs(model, seed=1))[0][0]
    b = tflm.tflm_run(model, tflm.random_inputs(model, seed=2))[0][0]
    assert a.shape == (8, 128) and not np.array_equal(a, b)


def test_arena_grows_with_sequence_length():
    heads = [tflm.tflm_arena(tflm.model_from_layers(mcu_workloads.bert_tiny_layer(s)))["head_bytes"]
             for s in (32, 64, 128, 256)]
    assert heads == sorted(set(heads))
    # the [heads, seq, seq] attention tensors take over: growth becomes super-linear
    assert heads[3] > 2.2 * heads[2]


def test_layer_shapes_are_checked():
    layers = mcu_workloads.inverted_bottleneck(12, 10, 16, 6, 24, 2)
    layers[2] = {**layers[2], "output_shape": [1, 12, 10, 24]}  # a stride-2 block cannot keep 12x10
    with pytest.raises(ValueError, match="project.*output_shape"):
        tflm.model_from_layers(layers)


def test_parse_allocations():
    text = ("[RecordingMicroAllocator] Arena allocation total 1544 bytes\n"
            "[RecordingMicroAllocator] Arena allocation head 128 bytes\n"
            "[RecordingMicroAllocator] Arena allocation tail 1416 bytes\n")
    assert tflm.parse_allocations(text) == {"total": 1544, "head": 128, "tail": 1416}
    with pytest.raises(RuntimeError, match="lacks"):
        tflm.parse_allocations(text.splitlines()[0])


def test_quantize_multiplier_round_trips():
    for real in (0.5, 0.75, 1e-3, 3.7e-5, 1.9, 0.99999999999):
        q, shift = tflm.quantize_multiplier(real)
        assert 1 << 30 <= q <= (1 << 31) - 1
        assert abs(q * 2.0 ** (shift - 31) - real) <= real * 2.0 ** -30


CONV_CASES = [  # (kind, kernel, stride, activation, input H, W)
    ("conv", 1, 1, "relu6", 11, 9),
    ("conv", 1, 2, "none", 10, 8),
    ("conv", 3, 2, "relu", 10, 8),
    ("conv", 3, 1, "none", 7, 5),
    ("depthwise", 3, 1, "relu6", 11, 9),
    ("depthwise", 3, 2, "relu6", 10, 8),
    ("depthwise", 3, 2, "none", 9, 7),
]


@pytest.mark.parametrize("kind,k,stride,act,h,w", CONV_CASES)
def test_int8_conv_matches_numpy_reference_exactly(kind, k, stride, act, h, w):
    m = tflm.ModelBuilder(seed=h * 31 + stride)
    x_q = QParams.per_tensor(6.0 / 255.0, -128) if act == "relu6" else QParams.per_tensor(0.0311, 5)
    out_q = QParams.per_tensor(6.0 / 255.0, -128) if act == "relu6" else QParams.per_tensor(0.043, -3)
    x = m.input("x", (1, h, w, 8), x_q)
    if kind == "conv":
        y = m.conv2d("y", x, 12, k, stride, act, out_q)
    else:
        y = m.depthwise_conv2d("y", x, k, stride, act, out_q)
    m.mark_output(y)
    model = m.build()
    wt, bias = m.tensor("y/weights"), m.tensor("y/bias")
    assert len(wt.q.scale) == (12 if kind == "conv" else 8)  # per-channel weight scales
    xin = np.random.default_rng(h + w).integers(-128, 128, size=(1, h, w, 8), dtype=np.int8)
    got = tflm.tflm_run(model, [xin])[0][0]
    ref_fn = tflm.conv2d_int8_reference if kind == "conv" else tflm.depthwise_conv2d_int8_reference
    want = ref_fn(xin, x_q, m.consts[wt.index], wt.q, m.consts[bias.index], out_q, stride=stride, act=act)
    assert got.shape == want.shape == y.shape
    assert np.unique(want).size > 16  # the comparison is over real data, not a saturated block
    np.testing.assert_array_equal(got, want)


def _bench_module():
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("mcu_memory", ROOT / "bench" / "mcu_memory.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_reads_tilesched_peaks_in_either_layout(tmp_path):
    bench = _bench_module()
    p = tmp_path / "r.json"
    p.write_text('{"workloads": {"ib_s1_80": {"peak": 1234}, "x": {"peak": "n/a"}}}')
    assert bench.tilesched_peaks(p) == {"ib_s1_80": 1234}
    p.write_text('[{"workload": "bert_tiny_s128", "peak_bytes": 99}]')
    assert bench.tilesched_peaks(p) == {"bert_tiny_s128": 99}
    assert bench.tilesched_peaks(tmp_path / "missing.json") == {}


def test_bench_writes_tflm_numbers(tmp_path):
    import json

    bench = _bench_module()
    out, peaks = tmp_path / "mcu-memory.json", tmp_path / "mcu-tilesched.json"
    peaks.write_text('{"date": "d", "workloads": {"ib_s2_80": {"arena_peak_bytes": 123936}}}')
    assert bench.main(["--only", "ib_s2_80", "--out", str(out), "--tilesched", str(peaks)]) == 0
    doc = json.loads(out.read_text())
    assert doc["tilesched_source"]["file"] == str(peaks) and doc["tflite_micro_version"]
    row = doc["workloads"]["ib_s2_80"]
    assert row["tilesched_peak_bytes"] == 123936
    assert row["layers"] == ["expand:conv2d", "depthwise:depthwise_conv2d", "project:conv2d"]
    assert row["tflm_arena_bytes"] == row["tflm_head_bytes"] + row["tflm_tail_bytes"]
    assert row["tflm_head_bytes"] >= 80 * 80 * 96 + 40 * 40 * 96  # expanded input + depthwise output
    assert row["ratio"] == round(row["tflm_arena_bytes"] / 123936, 3)
    assert row["reduction_percent"] == round(100 * (1 - 123936 / row["tflm_arena_bytes"]), 2)


@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_fully_connected_matches_numpy_reference_exactly(per_channel):
    m = tflm.ModelBuilder(seed=4)
    x_q, out_q = QParams.per_tensor(0.031, 2), QParams.per_tensor(0.05, -3)
    x = m.input("x", (16, 32), x_q)
    scales = [0.004 * (1 + 0.02 * i) for i in range(24)] if per_channel else None
    m.mark_output(m.fully_connected("fc", x, 24, "relu", out_q, w_scales=scales))
    model = m.build()
    wt, bias = m.tensor("fc/weights"), m.tensor("fc/bias")
    assert len(wt.q.scale) == (24 if per_channel else 1)
    xin = np.random.default_rng(0).integers(-128, 128, size=(16, 32), dtype=np.int8)
    got = tflm.tflm_run(model, [xin])[0][0]
    want = tflm.fully_connected_int8_reference(xin, x_q, m.consts[wt.index], wt.q, m.consts[bias.index], out_q,
                                               act="relu")
    assert np.unique(want).size > 16
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("h,w,stride", [(10, 8, 1), (11, 9, 2), (10, 8, 2), (9, 10, 2)])
def test_the_oracle_matches_tflm_on_an_expand_and_depthwise_block(h, w, stride):
    """The semantics oracle against TFLM itself: 1x1 conv expand + ReLU6, then 3x3 depthwise with
    `padding: same` + ReLU6 (TFLite SAME at stride 2 on an even size pads bottom/right only)."""
    from tilesched import bind, lower
    from tilesched.semantics import run_spec
    from tilesched.spec import load_spec_text

    x_q, mid_q = QParams.per_tensor(0.0235, -128), QParams.per_tensor(6.0 / 255.0, -128)
    m = tflm.ModelBuilder(seed=9)
    x = m.input("x", (1, h, w, 16), x_q)
    e = m.conv2d("expand", x, 24, 1, 1, "relu6", mid_q, padding="valid")
    m.mark_output(m.depthwise_conv2d("dw", e, 3, stride, "relu6", mid_q))
    model = m.build()
    xin = np.random.default_rng(3).integers(-128, 128, size=(1, h, w, 16), dtype=np.int8)
    got = tflm.tflm_run(model, [xin])[0][0][0]

    we, be, wd, bd = (m.tensor(n) for n in ("expand/weights", "expand/bias", "dw/weights", "dw/bias"))
    spec, source = load_spec_text(f"""
name: block
target: cortex-m7
axes: {{H: {h}, W: {w}, C: 16, E: 24, KH: 3, KW: 3, OH: "-(-H // {stride})", OW: "-(-W // {stride})"}}
tensors:
  x: {{shape: [H, W, C], dtype: int8, quant: {{scale: {x_q.scale[0]!r}, zero_point: -128}}}}
  w1: {{shape: [E, C], dtype: int8, quant: {{scale: {list(we.q.scale)}, axis: E}}}}
  b1: {{shape: [E], dtype: int32}}
  h1: {{shape: [H, W, E], dtype: int8, scope: tile, quant: {{scale: {mid_q.scale[0]!r}, zero_point: -128}}}}
  wd: {{shape: [KH, KW, E], dtype: int8, quant: {{scale: {list(wd.q.scale)}, axis: E}}}}
  bd: {{shape: [E], dtype: int32}}
  y: {{shape: [OH, OW, E], dtype: int8, quant: {{scale: {mid_q.scale[0]!r}, zero_point: -128}}}}
stages:
  - {{name: expand, kind: compute, op: conv2d, kernel: [1, 1], fn: [relu6], reads: [x, w1, b1], writes: [h1], at: null}}
  - {{name: dw, kind: compute, op: depthwise_conv2d, kernel: [3, 3], stride: {stride}, padding: same, fn: [relu6],
     reads: [h1, wd, bd], writes: [y], at: null}}
""")
    b = bind(lower(spec, source))
    inputs = {"x": xin[0], "w1": m.consts[we.index][:, 0, 0, :], "b1": m.consts[be.index],
              "wd": m.consts[wd.index][0], "bd": m.consts[bd.index]}
    want = run_spec(b, inputs)["y"]
    assert np.unique(want).size > 16
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("h,w,c,k,s,pad,act", [(7, 6, 5, 3, 2, "same", "none"), (5, 5, 8, 5, 1, 0, "none"),
                                               (9, 8, 4, 3, 1, "same", "relu6"), (8, 8, 3, 2, 2, 0, "relu")])
def test_avgpool_oracle_matches_tflm(h, w, c, k, s, pad, act):
    """The oracle's avgpool2d is TFLM's AVERAGE_POOL_2D bit for bit (SAME and VALID, fused clamps)."""
    from tests.differential import program_of
    from tilesched.ir.bind import bind
    from tilesched.ir.conv import pads
    from tilesched.semantics import run_spec

    m = tflm.ModelBuilder(seed=1)
    x = m.input("x", (1, h, w, c), QParams.per_tensor(0.05, -7))
    m.mark_output(m.average_pool2d("y", x, k, s, act, "same" if pad == "same" else "valid"))
    xin = np.random.default_rng(h).integers(-128, 128, size=(1, h, w, c), dtype=np.int8)
    got = tflm.tflm_run(m.build(), [xin])[0][0][0]
    oh, ow = pads(pad, h, k, s)[2], pads(pad, w, k, s)[2]
    qq = {"scale": 0.05, "zero_point": -7}
    spec = {"name": "pool", "target": "cortex-m7", "axes": {"H": h, "W": w, "C": c, "OH": oh, "OW": ow},
            "tensors": {"x": {"shape": ["H", "W", "C"], "dtype": "int8", "quant": qq},
                        "y": {"shape": ["OH", "OW", "C"], "dtype": "int8", "quant": qq}},
            "stages": [{"name": "pool", "kind": "compute", "op": "avgpool2d", "kernel": [k, k], "stride": s,
                        "padding": pad, "reads": ["x"], "writes": ["y"], "at": None,
                        **({"fn": [act]} if act != "none" else {})}]}
    want = run_spec(bind(program_of(spec), {}), {"x": xin[0].astype(np.int64)})["y"]
    np.testing.assert_array_equal(got, want)
