"""`tilesched run` for CUDA specs on a machine without a GPU: the runner selects the Triton
interpreter itself (fresh process, TRITON_INTERPRET unset) and checks against float64 numpy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytest.importorskip("torch")
pytest.importorskip("triton")


def _cli(*args, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["TILESCHED_CACHE"] = str(tmp_path / "cache")
    return subprocess.run([sys.executable, "-m", "tilesched.cli", "run", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_gpu(), reason="checks the no-GPU path")
def test_run_uses_the_interpreter_and_checks_the_result(tmp_path):
    out = tmp_path / "report.json"
    r = _cli("configs/gemm_silu_residual.yaml", "--set", "M=37", "--set", "N=50", "--set", "K=70",
             "--set", "BLOCK_M=64", "--set", "BLOCK_N=64", "--set", "BLOCK_K=32", "--seed", "3", "--json", str(out),
             tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Triton interpreter" in r.stdout and "OK" in r.stdout
    report = json.loads(out.read_text())
    assert report["ok"] and report["rel_error"] < 3e-3 and report["sizes"] == {"M": 37, "N": 50, "K": 70}


@pytest.mark.skipif(_has_gpu(), reason="checks the no-GPU path")
def test_bf16_specs_run_in_fp32_under_the_interpreter(tmp_path):
    r = _cli("configs/gemm_bf16.yaml", "--set", "M=65", "--set", "N=72", "--set", "K=40", "--set", "BLOCK_M=64",
             "--set", "BLOCK_N=64", "--set", "BLOCK_K=32", tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bf16 -> fp32" in r.stdout


def test_comm_specs_are_refused(tmp_path):
    r = _cli("configs/ag_gemm.yaml", tmp_path=tmp_path)
    assert r.returncode == 1  # a spec this target cannot generate is invalid input for it, named by stage
    assert "ag_gemm.yaml:" in r.stderr and "stages[0]: cuda cannot generate comm stage all_gather" in r.stderr
    assert "overlap consumers" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(_has_gpu(), reason="checks the no-GPU path")
def test_measure_without_a_gpu_is_a_failed_measurement():
    from tilesched import bind, load_program
    from tilesched.backends.cuda.measure import classify, measure

    m = measure(bind(load_program(ROOT / "configs" / "gemm_bf16.yaml")), repeats=3)
    assert not m.ok and m.reason == "runtime_error" and "GPU" in m.detail

    class OutOfResources(Exception):
        pass

    assert classify(OutOfResources("shared memory")) == "out_of_resources"
    assert classify(RuntimeError("CUDA error: illegal address")) == "runtime_error"
