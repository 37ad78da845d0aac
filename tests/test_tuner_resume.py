"""Resume after SIGKILL (SQLite) and two workers sharing one study (PostgreSQL)."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import ROOT
from tests.tuner_helpers import Recorder, gemm_space
from tilesched.tuner.campaign import Campaign, make_storage
from tilesched.tuner.space import point_key

PG_URL = os.environ.get("TILESCHED_TEST_PG_URL")


def _worker(storage, study, trials, delay, log=None, stall_after=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if stall_after is not None:
        env["TILESCHED_TEST_STALL_AFTER"] = str(stall_after)
    cmd = [sys.executable, "-m", "tests.tuner_helpers", storage, study, str(trials), str(delay)]
    return subprocess.Popen(cmd + ([log] if log else []), cwd=ROOT, env=env)


def _evaluated(study):
    return [t for t in study.get_trials() if t.user_attrs.get("evaluated")]


def test_sigkilled_campaign_resumes_keeping_finished_trials(tmp_path):
    storage = f"sqlite:///{tmp_path}/studies.db"
    proc = _worker(storage, "killed", 30, 0.1, stall_after=5)  # the 6th evaluation hangs until killed
    deadline = time.time() + 60
    finished = []
    try:
        while time.time() < deadline:
            time.sleep(0.3)
            try:  # make_storage retries while the worker is still creating the tables
                study = optuna.load_study(study_name="killed", storage=make_storage(storage))
            except KeyError:
                continue
            finished = [t for t in _evaluated(study) if t.state == TrialState.COMPLETE]
            # a trial for a known or illegal point is RUNNING only for a moment: wait for the one
            # whose evaluation started (the 6th, which hangs)
            running = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if t.user_attrs.get("evaluating")]
            if len(finished) >= 5 and running:
                break
        else:
            pytest.fail("the worker did not finish 5 trials in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    study = optuna.load_study(study_name="killed", storage=storage)
    before = {t.number: point_key(t.params) for t in _evaluated(study) if t.state == TrialState.COMPLETE}
    zombies = study.get_trials(states=(TrialState.RUNNING,))
    assert len(before) == 5 and len(zombies) == 1
    time.sleep(1.6)  # past the heartbeat grace period
    rec = Recorder()
    camp = Campaign(gemm_space(), "model", storage=storage, study_name="killed", evaluator=rec,
                    heartbeat_s=0.2, grace_s=1.5, warm_k=2)
    res = camp.run(30)
    study = optuna.load_study(study_name="killed", storage=storage)
    after = {t.number: t for t in study.get_trials()}
    # finished trials are kept, with their values, and counted toward the 30
    for n, key in before.items():
        assert after[n].state == TrialState.COMPLETE and point_key(after[n].params) == key
    assert res.evaluated == 30 and len(rec.calls) == 30 - len(before)
    # no finished point was evaluated again
    assert not {point_key(c) for c in rec.calls} & set(before.values())
    # the zombies were failed as interrupted, not counted, and their points re-run first
    for z in zombies:
        t = after[z.number]
        assert t.state == TrialState.FAIL and t.user_attrs["reason"] == "interrupted"
        assert not t.user_attrs["evaluated"]
        if z.params:
            assert point_key(z.params) in {point_key(c) for c in rec.calls[: len(zombies)]}
    assert not study.get_trials(states=(TrialState.RUNNING,))


@pytest.mark.skipif(not PG_URL, reason="TILESCHED_TEST_PG_URL is not set (.ci/run sets it)")
def test_two_workers_share_one_study_on_postgresql(tmp_path):
    study_name = f"pg-two-workers-{os.getpid()}-{int(time.time())}"
    logs = [tmp_path / "w1.json", tmp_path / "w2.json"]
    procs = [_worker(PG_URL, study_name, 16, 0.15, str(log)) for log in logs]
    for p in procs:
        assert p.wait(timeout=120) == 0
    study = optuna.load_study(study_name=study_name, storage=PG_URL)
    ev = _evaluated(study)
    # the budget is the study's total; concurrent workers may overshoot by at most one
    assert 16 <= len(ev) <= 17
    workers = {t.user_attrs["worker"] for t in ev}
    assert len(workers) == 2, workers
    calls = [json.loads(log.read_text()) for log in logs]
    assert all(calls) and sum(map(len, calls)) == len(ev)
    optuna.delete_study(study_name=study_name, storage=PG_URL)
