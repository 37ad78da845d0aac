"""Every generated kernel compiles for Hopper (sm_90) ahead of time on this GPU-less machine:
Triton lowers to PTX and runs the ptxas it ships; the PTX shows which Hopper instructions the
kernel uses (wgmma for the tensor-core path, cp.async.bulk.tensor for TMA)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from tests.conftest import ROOT  # noqa: E402
from tests.cuda_util import cuda_gemm_specs  # noqa: E402
from tilesched import load_program  # noqa: E402
from tilesched.backends.cuda.aot import compile_for_hopper  # noqa: E402
from tilesched.backends.cuda.compile_pool import empty_inputs  # noqa: E402
from tilesched.backends.cuda.kernel import Kernel  # noqa: E402

SPECS = {p.stem: p for p in cuda_gemm_specs()}
SIZES = {"M": 512, "N": 512, "K": 512, "BATCH": 2, "NB": 2, "H": 16, "W": 16, "C": 256, "CO": 256,
         "B": 2, "SQ": 512, "SK": 512, "D": 128, "HKV": 4, "G": 4}
HOPPER_POINTS = [
    ("gemm_bf16_hopper", {"M": 4096, "N": 4096, "K": 4096}, {}),  # defaults: 128x256x64, persistent, subtile
    ("gemm_bf16_hopper", {"M": 16, "N": 4096, "K": 4096},
     {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 256, "NUM_WARPS": 4, "NUM_STAGES": 4, "PERSISTENT": False,
      "EPILOGUE_SUBTILE": False, "SPLIT_K": 4}),
    ("gemm_bf16_hopper", {"M": 1, "N": 4096, "K": 4096},
     {"BLOCK_M": 1, "BLOCK_N": 32, "BLOCK_K": 256, "NUM_WARPS": 4, "NUM_STAGES": 4, "PERSISTENT": False,
      "EPILOGUE_SUBTILE": False, "SPLIT_K": 1}),
]


@pytest.fixture(autouse=True)
def _compiled_mode(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def _build(name, sizes, params=None):
    from tilesched.ir.bind import bind

    kernel = Kernel(load_program(SPECS[name]))
    sym = {a.name: sizes.get(a.name, 512) for a in kernel.program.axes if a.symbolic}
    sizes = bind(kernel.program, sym, schedule=False).sizes  # derived axes (P = NB * H * W) too
    return kernel, compile_for_hopper(kernel, empty_inputs(kernel, sizes, "cpu"), params=params, sizes=sym)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_compiles_for_sm90(name):
    gemm, built = _build(name, SIZES)
    assert built.cubin_bytes > 0
    has_dot = any(i.op == "dot" for i in gemm.ir.loop + gemm.ir.post)
    # wgmma takes 64-row warpgroup tiles; specs whose default rows are fewer (low-bit decode GEMMs) use mma.sync
    from tilesched.backends.cuda.defaults import select_binding

    b, _ = select_binding(gemm.program, {**SIZES, **{a.name: 512 for a in gemm.program.axes if a.name not in SIZES}})
    rows = min((b.tile(gemm.ir.value(i.out).axes[0]) for i in gemm.ir.loop + gemm.ir.post if i.op == "dot"), default=0)
    assert built.wgmma == (has_dot and rows >= 64), f"{name}: wgmma in the PTX: {built.wgmma}, dots: {has_dot}"
    assert built.tma == any(a.tma for a in gemm.ir.accesses)
    assert 0 < built.shared_bytes <= 232448


@pytest.mark.parametrize("name,sizes,params", HOPPER_POINTS, ids=["large", "split-k", "decode"])
def test_hopper_variants_compile(name, sizes, params):
    gemm, built = _build(name, sizes, params or None)
    assert built.tma and built.cubin_bytes > 0
    # wgmma takes 64-row warpgroup tiles; smaller BLOCK_M uses mma.sync (16) or CUDA cores (< 16)
    assert built.wgmma == (params.get("BLOCK_M", 128) >= 64)


RO_POINTS = [  # the register-operand schedule (Gluon): split row tiles of 16, decode, ragged N and K
    ({"M": 16, "N": 4096, "K": 4096}, {"BLOCK_M": 16, "BLOCK_N": 128, "BLOCK_K": 128, "NUM_WARPS": 4, "SPLIT_K": 4}),
    ({"M": 1, "N": 4096, "K": 4096}, {"BLOCK_M": 1, "BLOCK_N": 256, "BLOCK_K": 128, "NUM_WARPS": 8, "SPLIT_K": 1}),
    ({"M": 20, "N": 200, "K": 520}, {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64, "NUM_WARPS": 4, "SPLIT_K": 2}),
]


@pytest.mark.parametrize("stages", [2, 4])
@pytest.mark.parametrize("spec", ["w4a16_gemm", "w2a16_gemm"])
@pytest.mark.parametrize("sizes,params", RO_POINTS, ids=["mma-16", "decode", "ragged"])
def test_register_operand_schedule_compiles_for_sm90(spec, sizes, params, stages):
    """The Gluon kernel builds for Hopper (its compile asserts that the words' layout becomes the MMA
    operand's without data movement) and runs on mma.sync; shared memory holds X's small tile and,
    with more than two stages, the ring of packed words in flight: never a dequantised weight tile."""
    kernel = Kernel(load_program(SPECS[spec]))
    full = {"GROUP_M": 8, "NUM_STAGES": stages, "MATERIALIZE": False, "REGISTER_OPERAND": True, **params}
    built = compile_for_hopper(kernel, empty_inputs(kernel, sizes, "cpu"), params=full, sizes=sizes)
    assert built.kernel == f"{spec}_gluon_kernel"
    assert built.mma_sync and not built.wgmma and not built.tma
    bits = 4 if spec == "w4a16_gemm" else 2
    weight_tile = params["BLOCK_N"] * params["BLOCK_K"] * 2  # a dequantised bf16 tile
    x_tile = max(params["BLOCK_M"], 8) * params["BLOCK_K"] * 2
    ring = stages * params["BLOCK_N"] * params["BLOCK_K"] * bits // 8 if stages > 2 else 0
    assert built.shared_bytes <= x_tile + ring, built
    assert built.shared_bytes - ring < weight_tile


def test_register_operand_schedule_takes_fp16_activations():
    """fp16 activations and scales: the pairs hold 1024 + v (fp16's mantissa), the same layouts."""
    from tilesched.backends.cuda.io import retyped

    kernel = Kernel(retyped(load_program(SPECS["w4a16_gemm"]), "bf16", "fp16"))
    sizes, params = RO_POINTS[0]
    full = {"GROUP_M": 8, "NUM_STAGES": 4, "MATERIALIZE": False, "REGISTER_OPERAND": True, **params}
    from tilesched.backends.cuda.kernel import compiled

    src = compiled(kernel.program)[1]
    bias = [ln for ln in src.splitlines() if "bias_pairs = ttgl.full(" in ln]  # mma.sync's and wgmma's BIAS pairs
    assert len(bias) == 2 and all("0x64006400, ttgl.int32" in ln for ln in bias) and "0x43004300" not in src
    built = compile_for_hopper(kernel, empty_inputs(kernel, sizes, "cpu"), params=full, sizes=sizes)
    assert built.mma_sync and not built.wgmma


WGMMA_POINTS = [  # the register-operand schedule's wgmma kernel: one or two consumers, ragged sizes, K tiles of 64
    ({"M": 1024, "N": 4096, "K": 4096}, {"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 128, "NUM_WARPS": 8, "NUM_STAGES": 2}),
    ({"M": 37, "N": 304, "K": 520}, {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 128, "NUM_WARPS": 4, "NUM_STAGES": 4}),
    ({"M": 100, "N": 272, "K": 392}, {"BLOCK_M": 32, "BLOCK_N": 128, "BLOCK_K": 64, "NUM_WARPS": 8, "NUM_STAGES": 3}),
    # decode row tiles on wgmma (the option's value), split-K shares meeting through a counter per thread
    ({"M": 16, "N": 8192, "K": 8192}, {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "NUM_WARPS": 4, "NUM_STAGES": 6,
                                       "SPLIT_K": 4, "REGISTER_OPERAND": "wgmma"}),
    ({"M": 3, "N": 272, "K": 520}, {"BLOCK_M": 1, "BLOCK_N": 128, "BLOCK_K": 128, "NUM_WARPS": 8, "NUM_STAGES": 4,
                                     "SPLIT_K": 4, "REGISTER_OPERAND": "wgmma"}),  # an empty share
]


@pytest.mark.parametrize("act", ["bf16", "fp16"])
@pytest.mark.parametrize("spec", ["w4a16_gemm", "w2a16_gemm", "w8a16_gemm", "w3a16_gemm"])
@pytest.mark.parametrize("sizes,params", WGMMA_POINTS, ids=["m1024", "one-consumer", "k64", "decode-16", "decode-1"])
def test_register_operand_wgmma_kernel_compiles_for_sm90(spec, sizes, params, act):
    """Row tiles past 16 take the wgmma kernel: TMA brings X's tiles and the packed words; its compile
    asserts that the words' layout becomes wgmma's register operand without data movement (8-bit
    weights, one to a byte, load in the operand's layout; 3-bit ones, ten to a word, take a tile's words
    as 4-bit ones do). Shared memory holds the ring of X tiles and weights as stored: never a dequantised
    weight tile."""
    from tilesched.backends.cuda.io import retyped

    bits = {"w4a16_gemm": 4, "w2a16_gemm": 2, "w8a16_gemm": 8, "w3a16_gemm": 4}[spec]  # (3 bits: words as 4 bits)
    if bits < 8 and params["BLOCK_K"] * bits // 32 < 8:
        pytest.skip("fewer than 8 rows of words a tile: refused (test_cuda_lowbit)")
    program = load_program(SPECS[spec])
    kernel = Kernel(program if act == "bf16" else retyped(program, "bf16", "fp16"))
    full = {"GROUP_M": 8, "SPLIT_K": 1, "MATERIALIZE": False, "REGISTER_OPERAND": True, **params}
    built = compile_for_hopper(kernel, empty_inputs(kernel, sizes, "cpu"), params=full, sizes=sizes)
    assert built.kernel == f"{spec}_wgmma_kernel"
    assert built.wgmma and built.tma and not built.mma_sync
    rows = max(params["BLOCK_M"], 8)  # wgmma's n: at least 8
    ring = params["NUM_STAGES"] * (rows * params["BLOCK_K"] * 2 + params["BLOCK_K"] * bits // 8 * params["BLOCK_N"])
    weight_tile = params["BLOCK_N"] * params["BLOCK_K"] * 2  # a dequantised 16-bit tile
    assert ring <= built.shared_bytes < ring + weight_tile, built


@pytest.mark.parametrize("sizes,params,whole", [(WGMMA_POINTS[i][0], WGMMA_POINTS[i][1], w) for i, w in
                                                 ((0, False), (2, False), (3, True), (4, True))],
                         ids=["m1024", "k64", "decode-16", "decode-1"])
def test_3bit_decode_tiles_run_whole_steps(sizes, params, whole):
    """3-bit launches: decode row tiles (16 rows or fewer) run whole steps of five K tiles (a branch
    around each tile cost them 15-18 %), wider ones skip a share's tiles outside it; decode tiles cap the
    registers so that two CTAs share an SM: 96 a thread with one consumer (at 80, three CTAs an SM, they
    returned wrong columns at 4 stages), 80 with two (a CTA of 12 warps)."""
    kernel = Kernel(load_program(SPECS["w3a16_gemm"]))
    full = {"GROUP_M": 8, "SPLIT_K": 1, "MATERIALIZE": False, "REGISTER_OPERAND": True, **params}
    plan, tensors = kernel.prepare(empty_inputs(kernel, sizes, "cpu"), params=full, sizes=sizes)
    fn, _, kw = kernel.jit_call(plan, tensors)
    assert fn.__name__ == "w3a16_gemm_wgmma_kernel" and kw["WHOLE_STEPS"] is whole
    assert kw.get("maxnreg") == ({4: 96, 8: 80}[params["NUM_WARPS"]] if whole else None)


WS_POINTS = [  # the warp-specialised schedule (Gluon): ragged queries and keys, both key tiles, GQA
    ("flash_attention", {"B": 2, "H": 3, "SQ": 300, "SK": 333, "D": 128}, 128, 3),
    ("flash_attention", {"B": 1, "H": 2, "SQ": 129, "SK": 200, "D": 64}, 64, 4),
    ("flash_attention_causal", {"B": 2, "H": 3, "SQ": 333, "SK": 333, "D": 64}, 128, 2),
    ("flash_attention_gqa", {"B": 1, "H": 8, "SQ": 257, "SK": 257, "D": 128, "G": 4}, 64, 3),
]


@pytest.mark.parametrize("spec,sizes,block_n,stages", WS_POINTS, ids=["d128", "d64", "causal", "gqa"])
def test_warp_specialised_attention_compiles_for_sm90(spec, sizes, block_n, stages):
    """The Gluon kernel builds for Hopper with wgmma and TMA; its shared memory is the query tile and
    the ring of K and V tiles (plus barriers), nothing else."""
    kernel = Kernel(load_program(f"configs/{spec}.yaml"))
    params = {"BLOCK_M": 128, "BLOCK_N": block_n, "NUM_WARPS": 4, "NUM_STAGES": stages, "WARP_SPECIALIZE": True}
    built = compile_for_hopper(kernel, empty_inputs(kernel, sizes, "cpu"), params=params, sizes=sizes)
    assert built.kernel == f"{spec}_specialized_kernel"
    assert built.wgmma and built.tma and not built.mma_sync
    tiles = 2 * sizes["D"] * (128 + 2 * stages * block_n)
    assert tiles <= built.shared_bytes <= tiles + 1024, built


def test_persistent_attention_compiles_for_sm90():
    """The persistent grid's kernel (every function walks the tiles) builds for Hopper; its shared
    memory adds only the query halves' second pair of barriers."""
    kernel = Kernel(load_program("configs/flash_attention.yaml"))
    sizes = {"B": 2, "H": 3, "SQ": 300, "SK": 333, "D": 128}
    params = {"BLOCK_M": 128, "BLOCK_N": 128, "NUM_WARPS": 4, "NUM_STAGES": 3, "WARP_SPECIALIZE": True,
              "PERSISTENT": True}
    built = compile_for_hopper(kernel, empty_inputs(kernel, sizes, "cpu"), params=params, sizes=sizes)
    assert built.kernel == "flash_attention_persistent_kernel" and built.wgmma and built.tma
    tiles = 2 * 128 * (128 + 2 * 3 * 128)
    assert tiles <= built.shared_bytes <= tiles + 1024, built


def test_gluon_compiles_after_a_kernel_ran_in_the_interpreter():
    """Triton's interpreter swaps triton.language's reduce while a kernel runs, and imports Gluon lazily:
    a Gluon first imported in that window kept the swapped reduce, and every later Gluon compile of a
    reduction failed (seen when a bench's CPU check ran before these tests). Loading a generated
    module imports Gluon first. In a fresh process, as the order matters."""
    import subprocess
    import sys

    code = (
        "import os; os.environ['TRITON_INTERPRET'] = '1'\n"
        "import torch\n"
        "from tilesched import load_program\n"
        "from tilesched.backends.cuda.kernel import Kernel\n"
        f"k = Kernel(load_program({str(SPECS['w4a16_gemm'].parent / 'softmax.yaml')!r}))\n"
        "y = k(X=torch.randn(8, 40).to(torch.bfloat16))\n"
        "from triton.experimental.gluon import language as ttgl\n"
        "print(ttgl.reduce.__qualname__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "reduce", out.stdout
