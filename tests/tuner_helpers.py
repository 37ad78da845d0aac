"""Shared helpers of the tuner tests: specs, injected evaluators, and a worker entry point
run in subprocesses (resume after SIGKILL, PostgreSQL workers)."""

from __future__ import annotations

import json
import os
import sys
import time

from tests.conftest import ROOT
from tilesched import load_program
from tilesched.backends.base import Measurement
from tilesched.tuner.costmodel import predict
from tilesched.tuner.space import Space

GEMM = ROOT / "configs" / "gemm_bf16.yaml"
MCU_SMALL = ROOT / "tests" / "specs" / "mcu_ib_small.yaml"
SIZES = {"M": 1024, "N": 1024, "K": 512}


def gemm_space(sizes=None) -> Space:
    return Space(load_program(GEMM), sizes or SIZES)


def synthetic_time(params: dict) -> float:
    """A made-up smooth objective (synthetic: for testing machinery only)."""
    return (1.0 + abs(params["BLOCK_M"] - 128) / 64 + abs(params["BLOCK_N"] - 128) / 128
            + abs(params["BLOCK_K"] - 64) / 64 + 0.1 * params["NUM_STAGES"] + 0.05 * params["GROUP_M"]
            + (0.2 if params["NUM_WARPS"] == 4 else 0.0))


class Recorder:
    """Evaluator that records every point it is asked for and returns synthetic times."""

    def __init__(self, delay: float = 0.0, stall_after: int | None = None):
        self.calls: list[dict] = []
        self.delay = delay
        self.stall_after = stall_after  # hang on later calls (a worker to be killed mid-trial)

    def __call__(self, b) -> Measurement:
        self.calls.append(dict(b.params))
        if self.stall_after is not None and len(self.calls) > self.stall_after:
            time.sleep(3600)
        if self.delay:
            time.sleep(self.delay)
        return Measurement(ok=True, time_ms=synthetic_time(b.params), device="synthetic")


def worker_main(storage: str, study: str, trials: int, delay: float, log: str | None = None) -> None:
    """Run one campaign worker with a slow synthetic evaluator (a subprocess entry point)."""
    from tilesched.tuner.campaign import Campaign

    stall = os.environ.get("TILESCHED_TEST_STALL_AFTER")
    rec = Recorder(delay, int(stall) if stall else None)
    camp = Campaign(gemm_space(), "model", storage=storage, study_name=study, seed=None, evaluator=rec,
                    heartbeat_s=0.2, grace_s=1.5, warm_k=2)
    camp.run(trials)
    if log:
        with open(log, "w") as f:
            json.dump(rec.calls, f)


def model_rank(space: Space, k: int) -> list[dict]:
    from tilesched.tuner.space import point_key

    scored = sorted(space.legal_points, key=lambda p: (predict(space.bind(p)).latency, point_key(p)))
    return scored[:k]


if __name__ == "__main__":
    worker_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None)
