import time

import optuna  # noqa: F401  (used by a filterwarnings mark)
import pytest
from optuna.trial import TrialState

from tests.tuner_helpers import MCU_SMALL, SIZES, Recorder, gemm_space, model_rank, synthetic_time
from tilesched import load_program
from tilesched.backends.base import Measurement
from tilesched.tuner.campaign import Campaign
from tilesched.tuner.lockfile import LockFile
from tilesched.tuner.space import Space


def test_warm_start_enqueues_the_cost_models_top_k_first(tmp_path):
    space = gemm_space()
    rec = Recorder()
    camp = Campaign(space, "model", storage=f"sqlite:///{tmp_path}/s.db", seed=0, evaluator=rec, warm_k=4)
    camp.run(10)
    top = model_rank(space, 4)
    assert rec.calls[:4] == top  # evaluated first, in the model's order
    first = sorted(camp.study.get_trials(), key=lambda t: t.number)[:4]
    assert [t.user_attrs["source"] for t in first] == ["cost-model"] * 4
    assert [t.user_attrs["model_rank"] for t in first] == [0, 1, 2, 3]
    # a second run of the same study does not enqueue them again
    camp2 = Campaign(space, "model", storage=f"sqlite:///{tmp_path}/s.db", seed=0, evaluator=rec, warm_k=4)
    assert camp2.warm_start(20) == []


def test_failures_are_recorded_and_never_abort(tmp_path):
    space = gemm_space()
    calls = []

    def flaky(b):
        calls.append(b.params)
        i = len(calls)
        if i % 5 == 1:
            return Measurement(ok=False, reason="compile_error", detail="ptxas: boom")
        if i % 5 == 2:
            return Measurement(ok=False, reason="wrong_result", detail="max rel err 0.3", time_ms=0.001)
        if i % 5 == 3:
            raise RuntimeError("evaluator crashed")
        if i == 4:
            time.sleep(1.0)  # over the 0.3 s per-trial timeout
        return Measurement(ok=True, time_ms=synthetic_time(b.params), device="synthetic")

    camp = Campaign(space, "model", storage=f"sqlite:///{tmp_path}/s.db", seed=1, evaluator=flaky,
                    timeout_s=0.3, heartbeat_s=0.1, warm_k=0)
    res = camp.run(12)
    assert res.evaluated == 12
    ev = [t for t in camp.study.get_trials() if t.user_attrs.get("evaluated")]
    reasons = [t.user_attrs.get("reason") for t in ev if t.state == TrialState.FAIL]
    assert {"compile_error", "wrong_result", "runtime_error", "timeout"} <= set(reasons)
    assert res.failed == len(reasons)
    # the wrong result's (tiny) time never counts: the best is a checked point
    ok = [t for t in ev if t.state == TrialState.COMPLETE]
    assert res.best_values[0] == min(t.values[0] for t in ok) > 0.5
    crashed = next(t for t in ev if t.user_attrs.get("reason") == "runtime_error")
    assert "evaluator crashed" in crashed.user_attrs["detail"]


def test_lock_file_has_one_entry_per_bucket_and_select_reads_it(tmp_path):
    lock_path = tmp_path / "tilesched.lock.json"
    best = {}
    for sizes in ({"M": 1024, "N": 1024, "K": 512}, {"M": 100, "N": 1024, "K": 512}):
        space = gemm_space(sizes)
        camp = Campaign(space, "model", storage=f"sqlite:///{tmp_path}/s.db", seed=0, warm_k=3)
        res = camp.run(6)
        LockFile.read(lock_path).with_entry(camp.lock_entry()).write(lock_path)
        best[sizes["M"]] = res.best_params
    lock = LockFile.read(lock_path)
    assert len(lock.entries) == 2
    prog = gemm_space().program
    e_small = lock.select(prog, {"M": 90, "N": 1024, "K": 512})
    e_big = lock.select(prog, {"M": 1000, "N": 1024, "K": 512})
    assert e_small.bucket["M"] == 128 and e_small.params == best[100]
    assert e_big.bucket["M"] == 1024 and e_big.params == best[1024]
    assert e_big.objective == "model" and e_big.metrics["time_ms"] == e_big.value and e_big.device
    assert e_big.versions["optuna"] and e_big.sizes == {"M": 1024, "N": 1024, "K": 512}


def test_mcu_model_objective_gives_a_pareto_front_under_the_sram_budget(tmp_path):
    from tilesched.tuner.costmodel import predict

    prog = load_program(MCU_SMALL)
    peaks = sorted(predict(Space(prog).bind(p)).peak_sram_bytes for p in Space(prog).legal_points)
    budget = peaks[len(peaks) // 2]  # half the points over it, whichever planner sizes them
    prog = prog.model_copy(update={"limits": prog.limits.model_copy(update={"sram_bytes": budget})})
    space = Space(prog)
    camp = Campaign(space, "model", storage=f"sqlite:///{tmp_path}/s.db", seed=0)
    res = camp.run(len(space.legal_points))
    assert camp.study.directions and len(camp.study.directions) == 2
    done = camp.completed()
    over = [t for t in done if t.values[1] > budget]
    assert over, "the test spec has points over the SRAM budget"
    assert all(t.user_attrs["constraint"][0] > 0 for t in over)
    front = res.pareto
    assert len(front) >= 2
    assert all(p["values"][1] <= budget for p in front)
    # a real trade-off: along the front, less SRAM costs more cycles
    by_sram = sorted(front, key=lambda p: p["values"][1])
    assert all(a["values"][0] > b["values"][0] for a, b in zip(by_sram, by_sram[1:]))
    # nothing feasible dominates a front point
    for p in front:
        for t in done:
            if t.values[1] <= budget:
                assert not (t.values[0] < p["values"][0] and t.values[1] < p["values"][1])
    assert res.best_values[0] == min(p["values"][0] for p in front)


def test_duplicate_suggestions_are_answered_from_the_study(tmp_path):
    # a tiny space (1 free parameter) forces the sampler to repeat itself
    from tests.tuner_helpers import GEMM

    space = Space(load_program(GEMM), SIZES, {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8,
                                              "NUM_STAGES": 3})
    rec = Recorder()
    camp = Campaign(space, "model", storage=f"sqlite:///{tmp_path}/s.db", seed=0, evaluator=rec, warm_k=0)
    res = camp.run(10)  # more than the 2 legal points
    assert res.evaluated == 2 and len(rec.calls) == 2


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_sampler_stuck_on_known_points_still_progresses(tmp_path):

    space = gemm_space()
    rec = Recorder()
    camp = Campaign(space, "model", storage=f"sqlite:///{tmp_path}/s.db", seed=0, evaluator=rec, warm_k=0)
    stuck = {p.name: v for p, v in zip(space.free, space.legal_points[0].values())}
    camp.study.sampler = optuna.samplers.PartialFixedSampler(stuck, optuna.samplers.RandomSampler(seed=0))
    res = camp.run(3)
    assert res.evaluated == 3 and len({str(c) for c in rec.calls}) == 3
    sources = [t.user_attrs.get("source") for t in camp.study.get_trials() if t.user_attrs.get("evaluated")]
    assert sources == [None, "random-unexplored", "random-unexplored"]
    dups = [t for t in camp.study.get_trials() if "duplicate_of" in t.user_attrs]
    assert len(dups) == 60 and all(t.values == dups[0].values for t in dups)


def test_measure_evaluator_is_looked_up_by_target(monkeypatch):
    import sys
    import types

    from tilesched.tuner import evaluators

    seen = {}

    def fake_measure(binding, *, lock=None, timeout_s=None):
        seen.update(lock=lock, timeout_s=timeout_s)
        return Measurement(ok=True, time_ms=1.0)

    mod = types.ModuleType("tilesched.backends.cuda.measure")
    mod.measure = fake_measure
    monkeypatch.setitem(sys.modules, "tilesched.backends.cuda.measure", mod)
    ev = evaluators.get_evaluator("cuda", "measure", timeout_s=7.0)
    assert ev(gemm_space().bind(gemm_space().legal_points[0])).time_ms == 1.0
    assert seen == {"lock": evaluators.DEVICE_LOCK, "timeout_s": 7.0}
    assert evaluators.get_evaluator("cortex-m7", "model") is evaluators.model_evaluator
    with pytest.raises(ValueError):
        evaluators.get_evaluator("cuda", "guess")
