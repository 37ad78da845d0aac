"""Whole networks on the Cortex-M backend: the configs under configs/ (MobileNetV2-0.35, the MCUNet-style
net, the complete BERT-tiny layer) run bit for bit against the oracle at small sizes on both cores; the
fusion/tile search (tuner/mcu_fusion.py) on a small network: its peaks are the memory plan's, it finds
a grouping at least as good as the fixed ones, recomputed halo rows show in the MACs, the measured
front is bit-exact and non-dominated, and `tilesched tune-fusion` writes it."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.differential import program_of
from tilesched import load_with_source
from tilesched.backends.cortexm import build, session
from tilesched.ir.bind import bind
from tilesched.schedules.memory import plan_memory
from tilesched.tuner import mcu_fusion as mf

sys.path.insert(0, str(ROOT / "bench"))
nets = importlib.import_module("mcu_nets")

needs_toolchain = pytest.mark.skipif(build.toolchain_problem() is not None, reason=str(build.toolchain_problem()))
needs_tflm = pytest.mark.skipif(importlib.util.find_spec("tflite_micro") is None, reason="tflite-micro not installed")


def tiny_net() -> dict:
    """Stem 3x3 s2, an inverted bottleneck with a residual, one with stride 2, pooling and a classifier."""
    net = nets.Net("tiny", "test network", "cortex-m4", 12)
    x, lvl = net.input(3)
    y, lvl = net.conv("stem", x, lvl, 8, 3, 2, "relu6", nets.RELU6)
    y, lvl = net.inverted_bottleneck("b1", y, lvl, 8, 24, 3, 1, True, {"scale": 0.07, "zero_point": 1})
    y, lvl = net.inverted_bottleneck("b2", y, lvl, 12, 32, 5, 2, False, {"scale": 0.07, "zero_point": -2})
    net.head(y, lvl, 10)
    return nets._finish(net, 65536)


def _bind_config(name: str, **values):
    prog, src = load_with_source(ROOT / "configs" / f"{name}.yaml")
    return bind(prog, values, src)


@needs_toolchain
@pytest.mark.parametrize("name,values,target", [
    ("mcu_mobilenetv2_035", {"R": 32}, "cortex-m7"), ("mcu_mcunet", {"R": 20}, "cortex-m4"),
    ("mcu_bert_tiny_layer", {"S": 24, "ROWS": 8}, "cortex-m4"), ("mcu_bert_tiny_layer", {"S": 16, "HEADS": 2},
                                                                   "cortex-m7")])
def test_network_configs_bit_exact(name, values, target, tmp_path):
    b = _bind_config(name, **values)
    b = b.model_copy(update={"program": b.program.model_copy(update={"target": target})})
    seed = int(np.random.SeedSequence().entropy % 2**32)
    rep = session.run_binding(b, seed=seed, workdir=tmp_path)
    assert rep.ok, f"{rep.mismatches} of {rep.expected.size} outputs differ (seed {seed})"
    assert np.unique(rep.expected).size > 5
    assert rep.run.arena_bytes == rep.plan.peak_bytes


def test_network_configs_are_what_the_builders_write():
    for name, fn in nets.NETWORKS.items():
        spec = fn()
        text = nets.to_yaml(spec, f"# {spec['description']}\n")
        assert (ROOT / "configs" / f"{name}.yaml").read_text() == text, "rerun python bench/mcu_nets.py --write"


def test_search_peaks_are_the_memory_plan():
    b = bind(program_of(tiny_net()), {"R": 12})
    pts = mf.search(b)
    order = mf.candidates(b)
    fuses = {p.fuse for p in pts}
    assert "none" in fuses and ",".join(order) in fuses  # everything fused, and layer by layer
    for p in pts[:3] + pts[-2:]:
        assert p.peak_bytes == plan_memory(mf.with_options(b, p.fuse, p.halo)).peak_bytes
    low = pts[0]
    assert low.peak_bytes <= min(p.peak_bytes for p in pts if p.fuse in ("none", ",".join(order)))
    assert low.peak_bytes < plan_memory(mf.with_options(b, ",".join(order))).peak_bytes


def test_recomputed_halo_rows_are_counted_in_macs():
    b = bind(program_of(tiny_net()), {"R": 12})
    order = mf.candidates(b)
    ends = frozenset({"b2_pj"})  # one group over the 3 output rows of b2 (pooling would make it one row)
    cache = mf.evaluate(b, ends, order, "cache", {})
    rec = mf.evaluate(b, ends, order, "recompute", {})
    once = session.once_macs(plan_memory(mf.with_options(b, "b2_pj", "recompute")))
    assert cache.macs == once  # rings: every row computed once
    assert rec.macs > once  # each output row recomputes the window rows of its producers


@needs_toolchain
def test_measured_front_is_bit_exact_and_non_dominated():
    b = bind(program_of(tiny_net()), {"R": 12})
    pts = mf.search(b, halos=("cache", "recompute"))
    measured = mf.measure_front(b, pts, k=3)
    assert len(measured) >= 2 and all(p.bit_exact for p in measured)
    front = mf.pareto(measured)
    assert front and all(p.instructions > 0 for p in front)
    for p in front:
        assert not any(q.peak_bytes <= p.peak_bytes and q.instructions < p.instructions for q in measured)
    assert mf.best(measured).peak_bytes == min(p.peak_bytes for p in measured)


def test_cli_tune_fusion(tmp_path, capsys):
    from tilesched.cli import main

    spec = tmp_path / "tiny.yaml"
    spec.write_text(nets.to_yaml(tiny_net()))
    out = tmp_path / "f.json"
    assert main(["tune-fusion", str(spec), "--set", "R=10", "--measure", "0", "--quiet", "--json", str(out)]) == 0
    assert "points planned; lowest peak" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["points"][0]["peak_bytes"] == min(p["peak_bytes"] for p in doc["points"])
    assert doc["sizes"]["R"] == 10


@needs_toolchain
@needs_tflm
def test_bench_glue_at_a_tiny_size(tmp_path):
    """bench/mcu_networks.py --quick for the BERT layer at S=16: an entry with every field, written as it
    goes; the per-family layers it compares bind with the parameters recorded for them."""
    bench = importlib.import_module("mcu_networks")
    out = tmp_path / "n.json"
    assert bench.main(["--quick", "--only", "bert_tiny_layer_s16", "--measure", "2", "--out", str(out)]) == 0
    e = json.loads(out.read_text())["networks"]["bert_tiny_layer_s16"]
    assert e["bit_exact"] and e["tilesched_peak_bytes"] == min(p["peak_bytes"] for p in e["measured"])
    assert e["tflm_arena_bytes"] > 0 and e["ratio"] == round(e["tilesched_peak_bytes"] / e["tflm_arena_bytes"], 4)
    assert e["instructions_m4"] > 0 and e["instructions_m7"] > 0 and e["flash_bytes"] > 0
    assert e["pareto"] and all(p["bit_exact"] for p in e["pareto"])
    old = json.loads(bench.OLD.read_text())["workloads"]
    for name, (config, values) in bench.LAYERS.items():
        b = _bind_config(config, **values)
        assert all(b.sizes[k] == v for k, v in old[name]["sizes"].items() if k in b.sizes)


@needs_tflm
def test_spec_tflite_matches_the_oracle_on_a_small_network():
    """TFLM runs the spec's own network (same weights) and agrees with the oracle bit for bit."""
    from tilesched.baselines.spec_tflite import run_tflm

    b = bind(program_of(tiny_net()), {"R": 12})
    wl = session.make_workload(b, 3)
    r = run_tflm(b, wl.inputs)
    assert np.array_equal(r["output"].astype(np.int64), np.asarray(wl.expected).reshape(-1).astype(np.int64))
    assert r["total_bytes"] > 0


@needs_tflm
def test_bert_layer_tflite_model_runs():
    from tilesched.baselines import tflm
    from tilesched.baselines.tflite_builder import bert_layer_model

    a16, a32 = (tflm.tflm_arena(bert_layer_model(s), seed=1) for s in (16, 32))
    assert 0 < a16["total_bytes"] < a32["total_bytes"]
    assert a16["output_distinct"] > 1


def test_arena_plot_is_deterministic(tmp_path):
    """bench/mcu_arena_plot.py (the README's arena PNG) draws the same bytes twice from one plan."""
    plot_mod = importlib.import_module("mcu_arena_plot")
    b, _ = plot_mod.best_binding("mobilenetv2_035_24")
    plan = plan_memory(b)
    outs = [tmp_path / "a.png", tmp_path / "b.png"]
    for out in outs:
        plot_mod.plot(plan, "arena", out)
    data = [o.read_bytes() for o in outs]
    assert data[0][:8] == b"\x89PNG\r\n\x1a\n" and data[0] == data[1]
