"""The GPU benchmarks of issue 16 (bench/attention.py, bench/lowbit.py, bench/fp8.py) import, their
candidate lists are legal at every bench shape, and their CPU-side glue works: inputs built as the
specs store them run through the generated kernels (Triton interpreter) and the oracle check, and
agree with the baselines' own reference computations where those run on a CPU."""

from __future__ import annotations

import importlib
import json
import math
import sys

import pytest

from tests.conftest import ROOT
from tilesched import bind, load_program

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
sys.path.insert(0, str(ROOT / "bench"))

attention = importlib.import_module("attention")
lowbit = importlib.import_module("lowbit")
fp8 = importlib.import_module("fp8")
sb = importlib.import_module("spec_bench")

CONFIGS = ROOT / "configs"


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def test_candidates_are_legal_at_every_bench_shape():
    for spec in attention.SPECS.values():
        prog = load_program(CONFIGS / f"{spec}.yaml")
        for b, h, s, d in attention.SHAPES:
            sizes = {"B": b, "H": h, "SQ": s, "SK": s, "D": d}
            assert all(sb.legal(prog, sizes, p) for p in attention.candidates(d)), (spec, sizes)
    gqa = load_program(CONFIGS / f"{attention.GQA_SPEC}.yaml")
    for b, h, s, d, g in attention.GQA_SHAPES:
        assert all(sb.legal(gqa, {"B": b, "H": h, "SQ": s, "SK": s, "D": d, "G": g}, p)
                   for p in attention.candidates(d))
    for bits, spec in lowbit.BITS_SPECS.items():
        prog = load_program(CONFIGS / f"{spec}.yaml")
        for n, k in lowbit.NK:
            for m in lowbit.MS:
                cands = lowbit.candidates(m, bits)
                legal = [p for p in cands if sb.legal(prog, {"M": m, "N": n, "K": k}, p)]
                assert len(legal) >= len(cands) // 2, (spec, m, n, k)  # w3 constrains its tiles further
                if bits in (2, 4):  # the register-operand points are all legal
                    assert all(p in legal for p in cands if p.get("REGISTER_OPERAND")), (m, n, k)
    prog = load_program(CONFIGS / "w4a16_gemm.yaml")  # the experiments' register-operand grids
    grid = list(lowbit.register_operand_bindings(prog, {"M": 16, "N": 200, "K": 512}, [(128, 4, 2), (64, 8, 2)], (2, 3)))
    assert [(p["BLOCK_N"], p["NUM_STAGES"], b.params["BLOCK_M"]) for p, b in grid] == [(128, 2, 16), (128, 3, 16)]
    for name, points in lowbit.REGISTER_OPERAND_CHECK.items():
        prog = load_program(CONFIGS / f"{name}.yaml")
        for sizes, params in points:
            assert params["REGISTER_OPERAND"] in (True, "wgmma")  # the check runs the schedule, not the Triton kernel
            assert sb.legal(prog, sizes, {p.name: p.default for p in prog.params} | params), (name, sizes, params)
    for bits, sizes, params in lowbit.REPEAT_POINTS:  # the repeated split-K calls and their SPLIT_K = 1 reference
        prog = load_program(CONFIGS / f"{lowbit.BITS_SPECS[bits]}.yaml")
        point = lowbit.repeat_point(params)
        assert sb.legal(prog, sizes, point) and sb.legal(prog, sizes, {**point, "SPLIT_K": params["SPLIT_K"]})
    prog = load_program(CONFIGS / "fp8_gemm.yaml")
    for m, n, k in fp8.SHAPES:
        assert all(sb.legal(prog, {"M": m, "N": n, "K": k}, p) for p in fp8.candidates(m)), (m, n, k)
    for name, sizes in {**attention.CHECK, **lowbit.CHECK, **fp8.CHECK}.items():
        bind(load_program(CONFIGS / f"{name}.yaml"), sizes)  # the check shapes bind


def test_spearman():
    assert sb.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert sb.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert sb.spearman([1, 2], [1, 2]) is None and sb.spearman([1, 1, 1], [1, 2, 3]) is None


def test_attention_glue_on_the_cpu():
    from tilesched.backends.cuda.io import retyped
    from tilesched.backends.cuda.kernel import Kernel

    for causal, g in ((False, 1), (True, 1), (True, 2)):
        spec = attention.GQA_SPEC if g > 1 else attention.SPECS[causal]
        prog = retyped(load_program(CONFIGS / f"{spec}.yaml"), "bf16", "fp32")
        kernel = Kernel(prog)
        ins = attention.make_inputs(1, 4, 40, 16, "cpu", torch.float32, g=g)
        sizes = {"B": 1, "H": 4, "SQ": 40, "SK": 40, "D": 16, **({"G": g} if g > 1 else {})}
        params = {"BLOCK_M": 16, "BLOCK_N": 16, "NUM_WARPS": 4, "NUM_STAGES": 2}
        err, why = attention.check_slice(kernel, prog, sizes, params, ins)
        assert math.isfinite(err) and err < 1e-5, why
        ours = kernel(params=params, **ins)
        want = attention.sdpa(None, causal, g)(ins["Q"], ins["K"], ins["V"])
        assert torch.allclose(ours, want, atol=1e-5)
    assert attention.flops(1, 1, 128, 128, 64, True) == 2 * 128 * 128 * 64


@pytest.mark.parametrize("bits", sorted(lowbit.BITS_SPECS))
def test_lowbit_glue_on_the_cpu(bits):
    from tilesched.backends.cuda.io import retyped
    from tilesched.backends.cuda.kernel import Kernel

    prog = retyped(load_program(CONFIGS / f"{lowbit.BITS_SPECS[bits]}.yaml"), "bf16", "fp32")
    kernel = Kernel(prog)
    ins = lowbit.make_inputs(bits, 3, 40, 260, "cpu", torch.float32)
    b = sb.legal(prog, {"M": 3, "N": 40, "K": 260}, lowbit.cfg(1, 32, 64, 4, 2, 2))
    err, why = sb.oracle_error(kernel, b, ins)
    assert math.isfinite(err) and err < 1e-5, why
    per = 32 // bits if bits < 8 else 1
    stored = sum(t.numel() * t.element_size() for t in ins.values()) + 3 * 40 * 4  # + Y (fp32 here)
    assert lowbit.weight_bytes(bits, 3, 40, 260) <= stored and per >= 1


def test_repeated_calls_find_the_call_that_differs():
    """lowbit.differing_calls (the repeated split-K check): a split-K point agrees with its SPLIT_K = 1
    reference on every call (Triton interpreter), and a call whose output is corrupted is reported
    with the rows and columns it got wrong."""
    from tilesched.backends.cuda.io import retyped
    from tilesched.backends.cuda.kernel import Kernel

    prog = retyped(load_program(CONFIGS / "w4a16_gemm.yaml"), "bf16", "fp32")
    sizes = {"M": 3, "N": 40, "K": 256}
    one, split = (sb.legal(prog, sizes, lowbit.cfg(1, 32, 64, 4, 2, s)) for s in (1, 2))
    ins = lowbit.make_inputs(4, 3, 40, 256, "cpu", torch.float32)
    kernel = Kernel(prog)
    assert lowbit.differing_calls(kernel, one, split, ins, 2) == []
    calls = []

    def corrupting(**kw):
        kernel(**kw)
        calls.append(1)
        if len(calls) == 3:  # the second call of the split point
            kw["Y"][2, 7] += 1e3

    corrupting.program = kernel.program
    assert lowbit.differing_calls(corrupting, one, split, ins, 3) == [([2], [7])]


def test_cublas_baseline_rotates_its_weights_past_l2():
    import torch

    sets = [lowbit.make_inputs(4, 2, 64, 128, "cpu", torch.float32) for _ in range(3)]
    calls = lowbit.cublas_calls(sets, 128, 64, torch.float32, device="cpu")
    weights = {id(c.__defaults__[0]) for c in calls}
    assert len(weights) == sb.n_sets(128 * 64 * 2) == len(calls)  # small matrices: as many as L2 takes
    assert {id(c.__defaults__[1]) for c in calls} == {id(s["X"]) for s in sets}
    assert calls[0]().shape == (2, 64)


def test_fp8_glue_on_the_cpu():
    from tilesched.backends.cuda.kernel import Kernel

    prog = load_program(CONFIGS / "fp8_gemm.yaml")
    kernel = Kernel(prog)
    ins = fp8.make_inputs(40, 48, 64, "cpu")
    assert ins["B"].stride(0) == 1 and ins["A"].dtype == torch.float8_e4m3fn
    params = fp8.cfg(64, 64, 64, 4, 2, False, True)
    err, why = sb.oracle_error(kernel, sb.legal(prog, {"M": 40, "N": 48, "K": 64}, params), ins)
    assert math.isfinite(err), why
    ours = kernel(params=params, **ins)
    ref = (ins["A"].float() @ ins["B"].float()) * ins["sa"][:, None] * ins["sb"][None, :]
    assert torch.allclose(ours.float(), ref, rtol=2e-2, atol=2e-2)
    try:
        base = fp8.scaled_mm(ins)
    except (RuntimeError, NotImplementedError):  # no fp8 matmul on this CPU build
        return
    assert torch.allclose(base.float(), ref, rtol=2e-2, atol=5e-2)


def test_collect_ops_appends_issue16_rows_once(tmp_path):
    import json

    import collect_ops

    dev = {"device": "GPU X", "date": "d0", "rows": [{"op": "softmax", "ratio": 1.0}]}
    (tmp_path / "ops-gpu-x.json").write_text(json.dumps(dev))
    run = {"device": "GPU X", "date": "d1", "versions": {"torch": "t"},
           "rows": [{"op": "attention", "ratio": 1.4, "candidates": [{"ms": 1.0}]}]}
    (tmp_path / "attention-gpu-x.json").write_text(json.dumps(run))
    assert collect_ops.collect(tmp_path, "gpu-x") == 1
    assert collect_ops.collect(tmp_path, "gpu-x") == 1  # re-collecting replaces, never duplicates
    rows = json.loads((tmp_path / "ops-gpu-x.json").read_text())["rows"]
    assert [r["op"] for r in rows] == ["softmax", "attention"]
    assert rows[1]["date"] == "d1" and rows[1]["source"] == "attention-gpu-x.json" and "candidates" not in rows[1]
    (tmp_path / "fp8-gpu-x.json").write_text(json.dumps({**run, "device": "GPU Y"}))
    with pytest.raises(SystemExit, match="GPU Y"):
        collect_ops.collect(tmp_path, "gpu-x")


@pytest.mark.parametrize("module, argv, expected", [
    ("attention", ["--quick"], [("flash_attention", attention.SHAPES[1], False),
                                ("flash_attention_causal", attention.SHAPES[1], True),
                                ("flash_attention", attention.SHAPES[4], False),
                                ("flash_attention_causal", attention.SHAPES[4], True)]),
    ("lowbit", ["--quick", "--bits", "4,2"], [(4, 1, 4096, 4096), (4, 16, 4096, 4096),
                                               (2, 1, 4096, 4096), (2, 16, 4096, 4096)]),
    ("fp8", [], [s for s in fp8.SHAPES]),
])
def test_bench_runs_every_case_and_writes_after_each(module, argv, expected, tmp_path, monkeypatch):
    """cmd_bench's cases (closures over the shapes) reach bench_one with their own shape, in order, and
    the result and lock files exist after the first case (a run cut short keeps what it measured)."""
    from tilesched.tuner.lockfile import LockFile

    mod = {"attention": attention, "lowbit": lowbit, "fp8": fp8}[module]
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "GPU X")
    monkeypatch.setattr(sb, "warm_up_clocks", lambda *a: None)
    seen = []

    def fake(args, report, lock, *case):
        seen.append(case[:-1] if module == "lowbit" else case[:3] if module == "attention" else case)
        if len(seen) > 1:
            assert (tmp_path / f"{module}-gpu-x.json").exists() and (tmp_path / f"{module}-lock-gpu-x.json").exists()
        report["rows"].append({"op": module, "case": list(map(str, case))})
        assert isinstance(lock, LockFile)
        return lock

    monkeypatch.setattr(mod, "bench_one", fake)
    parser_argv = ["bench", "--out", str(tmp_path), *argv]
    assert mod.main(parser_argv) == 0
    assert seen == [tuple(e) for e in expected]


def test_ops_bench_candidates_bind_at_its_shapes():
    """bench/ops.py (row-wise ops and the gated MLP) on the shared helpers: its searches have legal points."""
    ops = importlib.import_module("ops")
    for op in ops.ROWWISE:
        prog = load_program(CONFIGS / f"{op}.yaml")
        for m, n in ops.ROW_SHAPES:
            assert [p for p in ops._row_candidates(n) if sb.legal(prog, {"M": m, "N": n}, p)], (op, m, n)
    prog = load_program(CONFIGS / "gated_mlp.yaml")
    for m, n, k in ops.MLP_SHAPES:
        assert [p for p in ops._mlp_candidates(m) if sb.legal(prog, {"M": m, "N": n, "K": k}, p)], (m, n, k)


def test_costmodel_replay_on_the_committed_grids(tmp_path):
    """The model ranks the measured low-bit candidates (bench/results) at least as well as when they
    were measured; attention and fp8 do not get worse."""
    import costmodel_replay

    out = tmp_path / "replay.json"
    assert costmodel_replay.main(["--out", str(out)]) == 0
    ops = json.loads(out.read_text())["ops"]
    assert ops["lowbit"]["median_now"] >= max(0.6, ops["lowbit"]["median_recorded"])
    for name in ("attention", "fp8"):
        assert ops[name]["median_now"] >= ops[name]["median_recorded"] - 0.05
    for name in ("lowbit-register-operand-wgmma", "lowbit-register-operand-wgmma-8bit",
                 "lowbit-register-operand-wgmma-m128", "lowbit-register-operand-split-m128"):  # the wgmma grids
        assert ops[name]["median_now"] >= 0.75, (name, ops[name])



def test_the_ring_depth_experiment_times_every_stage_count_at_legal_points():
    """bench/experiments/lowbit_ring_depth.py: each case's points are legal register-operand points at
    the three shapes and span the stage counts its table reports (a spec change that dropped one would
    leave a column empty without failing the run)."""
    sys.path.insert(0, str(ROOT / "bench" / "experiments"))
    ring = importlib.import_module("lowbit_ring_depth")
    want = {(2, 1): {2, 3, 4, 6, 8}, (4, 1): {2, 3, 4, 6, 8}, (4, 16): {2, 4, 6, 8}, (3, 1): {4, 6, 8}}
    for (bits, m), stages in want.items():
        prog = load_program(CONFIGS / f"{lowbit.BITS_SPECS[bits]}.yaml")
        cands = ring.candidates(bits, m)
        assert {p["NUM_STAGES"] for p in cands} == stages
        assert all(p["REGISTER_OPERAND"] == (True if m == 1 and bits != 3 else "wgmma") for p in cands)
        for n, k in ring.SHAPES:
            assert all(sb.legal(prog, {"M": m, "N": n, "K": k}, p) for p in cands), (bits, m, n)

# the experiments that patch the generated source (bench/experiments/*.py, `patch(variant, source)`) and
# the specs and variants whose runs README reports: each still finds what it rewrites
PATCHING_EXPERIMENTS = [
    ("lowbit_pair_scale", "w8a16_gemm", ["cvt"]),
    ("mma_sync_positions", "w2a16_gemm", ["shift-a-pair"]),
    ("wgmma_x_ready", "w8a16_gemm", ["x-late"]),
    ("wgmma_wide_bound", "w8a16_gemm", ["no-decode"]),
    ("wgmma_wide_parts", "w8a16_gemm", ["whole"]),
    ("wgmma_decode_bound", "w4a16_gemm", ["no-decode"]),
    ("wgmma_decode_parts", "w4a16_gemm", ["whole"]),
    ("lowbit_wgmma_feed", "w8a16_gemm", ["x-once", "w-once"]),
    ("lowbit_wgmma_feed", "w4a16_gemm", ["x-once", "w-once"]),
    ("mma_sync_m16_registers", "w4a16_gemm", ["cap168"]),
    ("wgmma_wide_pingpong", "w8a16_gemm", ["free"]),
    ("mma_sync_x_bound", "w4a16_gemm", ["x-once"]),
    ("lowbit_byte_pairs", "w4a16_gemm", ["shift"]),
    ("wgmma_decode_coefficients", "w4a16_gemm", ["ahead2", "l2-4", "same-tile"]),
    ("wgmma_decode_register_cap", "w4a16_gemm", ["r64", "r96", "none"]),
    ("mma_sync_m1_parts", "w2a16_gemm", ["no-sums", "no-coef", "x-once", "core"]),
    ("mma_sync_m1_parts", "w4a16_gemm", ["no-sums", "no-coef", "x-once", "core"]),
    ("attention_diagonal_bound", "flash_attention_causal", ["no-diagonal"]),
    ("attention_pingpong", "flash_attention", ["ping-pong"]),
    ("attention_pingpong", "flash_attention_causal", ["ping-pong"]),
    ("attention_rescale", "flash_attention", ["lazy", "no-rescale"]),
    ("attention_rescale", "flash_attention_causal", ["lazy", "no-rescale"]),
]


@pytest.mark.parametrize("module,spec,variants", PATCHING_EXPERIMENTS)
def test_experiment_patches_apply_to_the_generated_source(module, spec, variants):
    """Each variant rewrites the current generated module into valid Python that differs from it (the
    experiments' "v0" is the module as generated: bench/experiments/patched_kernels.py)."""
    import ast

    from tilesched.backends.cuda.kernel import compiled

    sys.path.insert(0, str(ROOT / "bench" / "experiments"))
    mod = importlib.import_module(module)
    src = compiled(load_program(CONFIGS / f"{spec}.yaml"))[1]
    for variant in variants:
        new = mod.patch(variant, src)
        assert new != src
        ast.parse(new)


@pytest.mark.parametrize("spec", ["flash_attention_causal", "flash_attention_gqa"])
def test_the_claim_group_experiment_finds_its_line(spec):
    """bench/experiments/attention_claim_groups.py replaces the generated launcher's claim group: the
    line is there, and each variant launches with its group (one head, the span's, a round's, every head's); the
    generated launcher groups by the span only where the CTAs take few tiles each."""
    from tilesched.backends.cuda.compile_pool import empty_inputs
    from tilesched.backends.cuda.kernel import Kernel

    sys.path.insert(0, str(ROOT / "bench" / "experiments"))
    mod = importlib.import_module("attention_claim_groups")
    kernels = mod.kernels(load_program(CONFIGS / f"{spec}.yaml"))
    sizes = {"B": 2, "H": 8, "SQ": 128, "SK": 128, "D": 64, **({"G": 2} if "gqa" in spec else {})}
    params = {"BLOCK_M": 128, "BLOCK_N": 128, "NUM_WARPS": 4, "NUM_STAGES": 2, "WARP_SPECIALIZE": True,
              "PERSISTENT": True}
    groups = []
    for kern in kernels.values():
        plan, t = kern.prepare(empty_inputs(kern, sizes, "cpu"), params=params, sizes=sizes)
        fn, args, _ = kern.jit_call(plan, t)
        assert fn.__name__.endswith("_persistent_kernel") and list(fn.arg_names[3:5]) == ["tile_counter", "claim_group"]
        groups.append(args[4])
    # 16 MiB holds all 16 heads' K and V; the interpreter's 4 CTAs take a round of 4 heads' one query tile
    assert groups == [1, 16, 4, 16]
    # as generated: in groups where the 4 CTAs take 16 tiles or fewer each (16 tiles), else head by head (128)
    kern = Kernel(load_program(CONFIGS / f"{spec}.yaml"))
    for sq, group in ((128, 16), (1024, 1)):
        at = {**sizes, "SQ": sq, "SK": sq}
        plan, t = kern.prepare(empty_inputs(kern, at, "cpu"), params=params, sizes=at)
        assert kern.jit_call(plan, t)[1][4] == group, sq
