import json

import pytest

from tests.conftest import CONFIGS, ROOT
from tilesched.cli import main


def test_validate_all_configs(capsys):
    assert main(["validate", *map(str, CONFIGS)]) == 0
    assert capsys.readouterr().out.count(": ok (") == len(CONFIGS)


def test_expected_examples_exist():
    names = {p.stem for p in CONFIGS}
    assert {"gemm_bf16", "gemm_bias_gelu", "batched_gemm", "ag_gemm", "gemm_rs", "mcu_inverted_bottleneck",
            "mcu_bert_tiny_attention"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_plan_every_config(path, tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["plan", str(path), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "tile grid:" in text and "stages (dependency order):" in text
    plan = json.loads(out.read_text())
    assert plan["program"] == path.stem
    assert plan["totals"]["flops"] > 0


def test_plan_json_is_byte_identical(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    spec = str(ROOT / "configs" / "gemm_bf16.yaml")
    main(["plan", spec, "--json", str(a)])
    main(["plan", spec, "--json", str(b)])
    assert a.read_bytes() == b.read_bytes()


def test_invalid_spec_exits_1(capsys):
    broken = ROOT / "tests" / "specs" / "broken" / "unknown_tensor.yaml"
    assert main(["validate", str(broken)]) == 1
    assert "unknown tensor 'Q'" in capsys.readouterr().err


def test_plan_set_errors(capsys):
    spec = str(ROOT / "configs" / "gemm_bf16.yaml")
    assert main(["plan", spec, "--set", "BLOCK_M=100"]) == 1
    assert "BLOCK_M=100 is not one of [64, 128, 256]" in capsys.readouterr().err
    assert main(["plan", spec, "--set", "M=16"]) == 1
    assert "tile size 128 exceeds the size 16 of axis M" in capsys.readouterr().err
    assert main(["plan", spec, "--set", "NUM_STAGES=5", "--set", "BLOCK_K=128", "--set", "BLOCK_M=256"]) == 1
    assert "fails at this point" in capsys.readouterr().err
    assert main(["plan", spec, "--set", "oops"]) == 1


def test_plan_failure_writes_nothing(tmp_path):
    out = tmp_path / "plan.json"
    assert main(["plan", str(ROOT / "configs" / "gemm_bf16.yaml"), "--set", "BLOCK_M=100", "--json", str(out)]) == 1
    assert not out.exists()


def test_demo_runs_end_to_end():
    """README's first command: validate, plan, and run one generated GEMM and one MCU block."""
    import os
    import shutil
    import subprocess
    import sys

    if shutil.which("qemu-system-arm") is None:
        pytest.skip("needs QEMU and the Arm toolchain (scripts/setup.sh installs them)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "tilesched.cli", "demo"], capture_output=True, text=True, env=env,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "-> OK" in r.stdout and "bit-exact" in r.stdout


def test_plan_dump_ir_prints_every_pass(capsys):
    assert main(["plan", str(ROOT / "configs" / "gemm_bias_gelu.yaml"), "--dump-ir"]) == 0
    out = capsys.readouterr().out
    for name in ("looptree", "skeleton", "carried", "sink", "tma", "masks", "switches"):
        assert f"=== after {name}" in out
    assert "acc[M, N]:fp32 = dot(a_tile, b_tile) accumulate" in out


def test_plan_and_run_fit_the_free_parameters_to_a_decode_shape(capsys, monkeypatch):
    """At M = 1 the low-bit spec's default row tile (16) does not fit: plan and run take the nearest
    legal point for the parameters left free, as the launcher does, and say so; a value set by the
    user that does not fit is still refused with its own error."""
    spec = str(ROOT / "configs" / "w4a16_gemm.yaml")
    assert main(["plan", spec, "--set", "M=1"]) == 0
    out = capsys.readouterr().out
    assert "note: the spec's defaults do not fit these sizes; nearest legal point: BLOCK_M=1" in out
    assert "params: BLOCK_M=1 BLOCK_N=128" in out
    assert main(["plan", spec, "--set", "M=1", "--set", "BLOCK_M=16"]) == 1
    assert "tile size 16 exceeds the size 1 of axis M" in capsys.readouterr().err
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert main(["run", spec, "--set", "M=1", "--set", "N=40", "--set", "K=256"]) == 0
    assert "-> OK" in capsys.readouterr().out
