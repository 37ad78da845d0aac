"""The CUDA lowering: kernel IR after every pass, golden Triton source, determinism, refusals."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import CONFIGS, ROOT
from tests.cuda_util import cuda_gemm_specs
from tilesched import bind, load_program
from tilesched.backends.cuda.kernel import compiled, launch_config
from tilesched.errors import SpecError
from tilesched.passes.gpu import dump_passes, lower_kernel

GOLDEN = ROOT / "tests" / "golden" / "cuda"
IR_GOLDEN = ROOT / "tests" / "golden" / "cuda_ir"
SPECS = cuda_gemm_specs()


def test_the_example_gemm_specs_are_covered():
    names = {p.stem for p in SPECS}
    assert {"gemm_bf16", "gemm_bias_gelu", "batched_gemm", "gemm_silu_residual", "gemm_bf16_hopper",
            "gemm_bias_gelu_hopper", "gemm_tma_col_a"} <= names


def _golden(path, text: str, update: bool) -> None:
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing {path}: run pytest --update-golden"
    assert text == path.read_text(), f"{path} differs from what is generated now (pytest --update-golden)"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_golden_source(path, update_golden):
    src = compiled(load_program(path))[1]
    ast.parse(src)  # valid Python
    _golden(GOLDEN / f"{path.stem}.py", src, update_golden)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_golden_ir_after_every_pass(path, update_golden):
    """Small IR goldens per pass: a change to one pass shows in its own section."""
    _golden(IR_GOLDEN / f"{path.stem}.txt", dump_passes(load_program(path)), update_golden)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_render_is_deterministic(path):
    assert compiled(load_program(path))[1] == compiled(load_program(path).model_copy())[1]


def test_the_ir_follows_the_spec_annotations():
    gelu = lower_kernel(load_program(CONFIGS[0].parent / "gemm_bias_gelu.yaml"))
    assert [i.fn for i in gelu.post if i.op == "elementwise"] == [(("bias", None), ("gelu", None))]
    assert not any(a.tma for a in gelu.accesses) and gelu.persistent is None and gelu.axis("K").masked
    assert gelu.access("B", "load").layout == "col_major" and gelu.carried == ("acc",)
    hop = lower_kernel(load_program(CONFIGS[0].parent / "gemm_bf16_hopper.yaml"))
    assert all(a.tma for a in hop.accesses) and hop.persistent == "PERSISTENT" and hop.axis("M").small
    src = compiled(load_program(CONFIGS[0].parent / "gemm_bf16_hopper.yaml"))[1]
    assert "d_A_load.load(" in src and "tl.range(tl.program_id(0), tiles_M * tiles_N, NUM_SMS)" in src
    batched = load_program(CONFIGS[0].parent / "batched_gemm.yaml")
    assert lower_kernel(batched).points == ("BATCH",)
    bsrc = compiled(batched)[1]
    assert "pid_BATCH = tl.program_id(1)" in bsrc
    # what the spec does not ask for is not rendered
    assert "erf" not in bsrc and "PERSISTENT" not in bsrc and "SPLIT_K" not in bsrc


def test_launch_masks_and_grid_come_from_the_binding():
    prog = load_program(CONFIGS[0].parent / "gemm_bias_gelu.yaml")
    k = lower_kernel(prog)
    even = launch_config(k, bind(prog, {"M": 256, "N": 256, "K": 256, "BLOCK_M": 128, "BLOCK_N": 128}))
    assert even.constexprs["EVEN_M"] and even.constexprs["EVEN_K"] and even.grid == (4,)
    ragged = launch_config(k, bind(prog, {"M": 37, "N": 50, "K": 70, "BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}))
    assert not ragged.constexprs["EVEN_M"] and not ragged.constexprs["EVEN_N"] and not ragged.constexprs["EVEN_K"]
    hop = load_program(CONFIGS[0].parent / "gemm_bf16_hopper.yaml")
    lp = launch_config(lower_kernel(hop), bind(hop, {"M": 4096, "N": 4096, "K": 4096}), num_sms=132)
    assert lp.constexprs["PERSISTENT"] and lp.grid == (132,) and lp.num_warps == 8


def test_comm_specs_are_refused_with_a_clear_message():
    for name in ("ag_gemm", "gemm_rs"):
        with pytest.raises(SpecError, match="overlap consumers"):
            lower_kernel(load_program(CONFIGS[0].parent / f"{name}.yaml"))


def test_an_unknown_fn_is_refused_and_the_new_ones_render(tmp_path):
    text = (CONFIGS[0].parent / "gemm_bias_gelu.yaml").read_text()
    path = tmp_path / "scaled.yaml"
    path.write_text(text.replace("fn: [bias, gelu]", 'fn: [bias, {scale: "1 / K"}, rsqrt, {max: 0.5}]'))
    k = lower_kernel(load_program(path))
    assert [c.expr for c in k.constants] == ["1 / K", 0.5]
    src = compiled(load_program(path))[1]
    assert "tl.rsqrt(" in src and "c_epilogue_1" in src
