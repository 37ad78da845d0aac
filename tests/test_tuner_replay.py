"""The replay harness of bench/tuner_efficiency.py on a SYNTHETIC grid (a formula, not a
measurement): tests the machinery only; these numbers are never results."""

import importlib.util
import json
import math

from tests.conftest import ROOT
from tests.tuner_helpers import SIZES, synthetic_time
from tilesched import load_program
from tilesched.tuner.space import Space

spec = importlib.util.spec_from_file_location("tuner_efficiency", ROOT / "bench" / "tuner_efficiency.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def synthetic_grid():
    space = Space(load_program(ROOT / "configs" / "gemm_bf16.yaml"), SIZES, {"NUM_WARPS": 8, "GROUP_M": 8})
    points = []
    for i, p in enumerate(space.legal_points):
        fail = i % 11 == 5
        points.append({"params": p, "time_ms": None if fail else synthetic_time(p),
                       "reason": "out_of_resources" if fail else None})
    return {"synthetic": True, "device": "synthetic-formula", "versions": {}, "date": "n/a", "spec": "gemm_bf16",
            "sizes": SIZES, "points": points}


def test_spearman_matches_known_cases():
    assert bench.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert bench.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert abs(bench.spearman([1, 2, 2, 3], [1, 3, 2, 4]) - 0.9487) < 1e-3


def test_trials_to_target():
    assert bench.trials_to_target([5, 4, 1.02, 1.0], 1.03) == 3
    assert bench.trials_to_target([5, math.inf], 1.03) is None


def test_replay_runs_the_tuner_and_reports(tmp_path):
    grid = synthetic_grid()
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(grid))
    out = tmp_path / "eff.json"
    assert bench.main([str(path), "--seeds", "2", "--budget-frac", "0.3", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["synthetic"] is True and res["pinned"] == {"NUM_WARPS": 8, "GROUP_M": 8}
    n = len(grid["points"])
    assert res["grid_points"] == n == res["legal_points"] and res["budget"] == math.floor(0.3 * n)
    for r in res["tuner"]["per_seed"]:
        assert r["evaluated"] == res["budget"]
        assert r["trials_to_target"] is None or 1 <= r["trials_to_target"] <= res["budget"]
    assert res["grid_best_ms"] == min(p["time_ms"] for p in grid["points"] if p["time_ms"] is not None)
    assert -1 <= res["costmodel_spearman"] <= 1 and res["costmodel_spearman_points"] == sum(
        p["time_ms"] is not None for p in grid["points"])
    assert set(res["targets"]) == {"within_tolerance_in_budget", "better_than_random", "spearman_ge_0.7"}
    assert len(res["tuner_without_warm_start"]["per_seed"]) == 2 and res["costmodel_note"]


def test_replay_evaluator_answers_from_the_grid():
    grid = synthetic_grid()
    space = bench.grid_space(grid)
    rep = bench.Replay(grid)
    ok = next(p for p in grid["points"] if p["time_ms"] is not None)
    bad = next(p for p in grid["points"] if p["time_ms"] is None)
    assert rep(space.bind(ok["params"])).time_ms == ok["time_ms"]
    m = rep(space.bind(bad["params"]))
    assert not m.ok and m.reason == "out_of_resources"


def test_synthetic_grid_is_not_written_to_bench_results(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(synthetic_grid()))
    assert bench.main([str(path), "--seeds", "1"]) == 2
