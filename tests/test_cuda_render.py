"""Rendering of the CUDA backend: kernel plans, golden Triton source, determinism, plan errors."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import CONFIGS, ROOT
from tests.cuda_util import cuda_gemm_specs
from tilesched import bind, load_program
from tilesched.backends.cuda.plan import kernel_plan, launch_plan
from tilesched.backends.cuda.render import render
from tilesched.errors import SpecError

GOLDEN = ROOT / "tests" / "golden" / "cuda"
SPECS = cuda_gemm_specs()


def test_the_example_gemm_specs_are_covered():
    names = {p.stem for p in SPECS}
    assert {"gemm_bf16", "gemm_bias_gelu", "batched_gemm", "gemm_silu_residual", "gemm_bf16_hopper",
            "gemm_bias_gelu_hopper", "gemm_tma_col_a"} <= names


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_golden_source(path, update_golden):
    src = render(kernel_plan(load_program(path)))
    ast.parse(src)  # valid Python
    golden = GOLDEN / f"{path.stem}.py"
    if update_golden:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(src)
    assert golden.exists(), f"missing {golden}: run pytest --update-golden"
    assert src == golden.read_text(), f"{golden} differs from the rendered source (pytest --update-golden)"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_render_is_deterministic(path):
    prog = load_program(path)
    assert render(kernel_plan(prog)) == render(kernel_plan(load_program(path)))


def test_plan_follows_the_spec_annotations():
    gelu = kernel_plan(load_program(CONFIGS[0].parent / "gemm_bias_gelu.yaml"))
    assert [op.fn for op in gelu.epilogue] == ["bias", "gelu"] and gelu.b.layout == "col_major"
    assert not gelu.tma and gelu.persistent is None and gelu.k_mask
    res = kernel_plan(load_program(CONFIGS[0].parent / "gemm_silu_residual.yaml"))
    assert [op.fn for op in res.epilogue] == ["bias", "silu", "add"]  # cast is the store's
    assert res.a.layout == "col_major" and res.extra_operands[1].axes == ("m", "n")
    hop = kernel_plan(load_program(CONFIGS[0].parent / "gemm_bf16_hopper.yaml"))
    assert hop.tma and hop.persistent == "PERSISTENT" and hop.epilogue_subtile == "EPILOGUE_SUBTILE" and hop.small_m
    src = render(hop)
    assert "a_desc.load" in src and "tl.range(tl.program_id(0), num_pid_m * num_pid_n, NUM_SMS)" in src
    batched = kernel_plan(load_program(CONFIGS[0].parent / "batched_gemm.yaml"))
    assert batched.batched and "pid_b = tl.program_id(1)" in render(batched)
    # what the spec does not ask for is not rendered
    assert "erf" not in render(batched) and "PERSISTENT" not in render(batched)


def test_launch_plan_masks_come_from_the_schedule():
    prog = load_program(CONFIGS[0].parent / "gemm_bias_gelu.yaml")
    kp = kernel_plan(prog)
    even = launch_plan(kp, bind(prog, {"M": 256, "N": 256, "K": 256, "BLOCK_M": 128, "BLOCK_N": 128}))
    assert even.constexprs["EVEN_M"] and even.constexprs["EVEN_K"] and even.grid == (4,)
    ragged = launch_plan(kp, bind(prog, {"M": 37, "N": 50, "K": 70, "BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}))
    assert not ragged.constexprs["EVEN_M"] and not ragged.constexprs["EVEN_N"] and not ragged.constexprs["EVEN_K"]
    hop = load_program(CONFIGS[0].parent / "gemm_bf16_hopper.yaml")
    lp = launch_plan(kernel_plan(hop), bind(hop, {"M": 4096, "N": 4096, "K": 4096}), num_sms=132)
    assert lp.persistent and lp.grid == (132,) and lp.tiles == 32 * 16 and lp.num_warps == 8


def test_comm_specs_are_refused_with_a_clear_message():
    for name in ("ag_gemm", "gemm_rs"):
        with pytest.raises(SpecError, match="overlap backend"):
            kernel_plan(load_program(CONFIGS[0].parent / f"{name}.yaml"))


def test_unsupported_epilogue_fn_is_refused(tmp_path):
    text = (CONFIGS[0].parent / "gemm_bias_gelu.yaml").read_text().replace("fn: [bias, gelu]", "fn: [bias, scale]")
    path = tmp_path / "scaled.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match="scale"):
        kernel_plan(load_program(path))
