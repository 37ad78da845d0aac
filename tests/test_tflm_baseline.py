"""TFLite Micro baseline: the flatbuffers we write load and run in TFLM, the arena report parses, and TFLM's
int8 convolutions match our numpy reference of TFLite's requantization bit for bit."""

import numpy as np
import pytest

pytest.importorskip("tflite_micro")

from tilesched.baselines import tflm  # noqa: E402
from tilesched.baselines.tflm import QParams  # noqa: E402

SMALL = {
    "ib_s1_80": {"h": 12, "w": 10},
    "ib_s2_80": {"h": 12, "w": 10},
    "bert_tiny_s128": {"seq": 16},
    "bert_tiny_s256": {"seq": 24},
    "bert_tiny_s512": {"seq": 32},
}


def test_small_table_covers_every_workload():
    assert set(SMALL) == set(tflm.WORKLOADS)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_workload_runs_in_tflm(name):
    model = tflm.build_workload(name, **SMALL[name])
    assert model[4:8] == b"TFL3"
    r = tflm.tflm_arena(model, seed=1)
    assert r["head_bytes"] > 0 and r["tail_bytes"] > 0
    assert r["total_bytes"] == r["head_bytes"] + r["tail_bytes"]
    assert r["output_distinct"] > 8 and r["output_std"] > 1.0  # real, non-saturated data came out
    fn, kw = tflm.WORKLOADS[name]
    kw = {**kw, **SMALL[name]}
    if fn is tflm.inverted_bottleneck:
        assert r["output_shape"] == [1, -(-kw["h"] // kw["stride"]), -(-kw["w"] // kw["stride"]), kw["cout"]]
        # the depthwise conv reads the whole expanded tensor while writing its output: both live at once
        e = kw["h"] * kw["w"] * kw["expand"]
        assert r["head_bytes"] >= e + e // kw["stride"] ** 2
    else:
        assert r["output_shape"] == [kw["seq"], kw["hidden"]]
        # scores and softmax probabilities ([heads, seq, seq] int8 each) are live together
        assert r["head_bytes"] >= 2 * kw["heads"] * kw["seq"] ** 2


def test_outputs_depend_on_inputs():
    model = tflm.build_workload("bert_tiny_s128", seq=8)
    a = tflm.tflm_run(model, tflm.random_inputs(model, seed=1))[0][0]
    b = tflm.tflm_run(model, tflm.random_inputs(model, seed=2))[0][0]
    assert a.shape == (8, 128) and not np.array_equal(a, b)


def test_arena_grows_with_sequence_length():
    heads = [tflm.tflm_arena(tflm.bert_encoder(seq=s))["head_bytes"] for s in (32, 64, 128, 256)]
    assert heads == sorted(set(heads))
    # the [heads, seq, seq] attention tensors take over: growth becomes super-linear
    assert heads[3] > 2.2 * heads[2]


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
    _, wt, bias = (m.tensors[i][1] for i in range(3))
    assert len(wt.q.scale) == (12 if kind == "conv" else 8)  # per-channel weight scales
    xin = np.random.default_rng(h + w).integers(-128, 128, size=(1, h, w, 8), dtype=np.int8)
    got = tflm.tflm_run(model, [xin])[0][0]
    ref_fn = tflm.conv2d_int8_reference if kind == "conv" else tflm.depthwise_conv2d_int8_reference
    want = ref_fn(xin, x_q, m.consts[wt.index], wt.q, m.consts[bias.index], out_q, stride=stride, act=act)
    assert got.shape == want.shape == y.shape
    assert np.unique(want).size > 16  # the comparison is over real data, not a saturated block
    np.testing.assert_array_equal(got, want)


def test_layer_norm_decomposition_normalizes():
    m = tflm.ModelBuilder(seed=5)
    x_q = QParams.per_tensor(0.06, 3)
    x = m.input("x", (8, 128), x_q)
    out_q = QParams.per_tensor(0.03, 0)
    m.mark_output(m.layer_norm("ln", x, out_q, spread=40.0))
    model = m.build()
    rng = np.random.default_rng(7)
    xin = np.clip(np.round(rng.normal(3, 40, size=(8, 128))), -128, 127).astype(np.int8)
    got = (tflm.tflm_run(model, [xin])[0][0].astype(np.float64) - 0) * out_q.scale[0]
    xr = (xin.astype(np.float64) - 3) * x_q.scale[0]
    gamma, beta = (m.consts[i].astype(np.float64) * 0.01 for i in sorted(m.consts)[-2:])
    want = (xr - xr.mean(-1, keepdims=True)) / xr.std(-1, keepdims=True) * gamma + beta
    assert np.abs(got - want).max() < 0.15 and np.abs(got - want).mean() < 0.035  # int8 LN: ~0.11 / 0.022


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
    out = tmp_path / "mcu-memory.json"
    assert bench.main(["--only", "ib_s2_80", "--out", str(out)]) == 0
    row = json.loads(out.read_text())["workloads"]["ib_s2_80"]
    assert row["tflm_arena_bytes"] == row["tflm_head_bytes"] + row["tflm_tail_bytes"]
    assert row["tflm_head_bytes"] >= 80 * 80 * 96 + 40 * 40 * 96  # expanded input + depthwise output
    if row["tilesched_peak_bytes"] is not None:
        assert row["ratio"] == round(row["tflm_arena_bytes"] / row["tilesched_peak_bytes"], 3)
