"""Shared helpers of the CUDA backend tests."""

from __future__ import annotations

from tests.conftest import CONFIGS, ROOT
from tilesched import load_program

CUDA_SPEC_DIR = ROOT / "tests" / "specs" / "cuda"


def cuda_gemm_specs():
    """Every CUDA spec the GEMM backend generates (examples without comm stages + test specs)."""
    out = []
    for path in list(CONFIGS) + sorted(CUDA_SPEC_DIR.glob("*.yaml")):
        prog = load_program(path)
        if prog.target == "cuda" and not any(s.kind == "comm" for s in prog.stages):
            out.append(path)
    return out


def oracle_inputs(program, sizes: dict, seed: int, params: dict | None = None, scale: dict | None = None):
    """(binding, numpy inputs, torch CPU inputs, the oracle's outputs) for one point. `scale`
    multiplies named inputs (e.g. {"A": 8.0}: results past relu6's clamp at 6)."""
    import numpy as np

    from tilesched.backends.cuda.defaults import select_binding
    from tilesched.backends.cuda.io import to_device
    from tilesched.ir.bind import bind
    from tilesched.semantics import random_inputs, run_spec

    sym = {a.name: sizes[a.name] for a in program.axes if a.symbolic}
    b = bind(program, {**sym, **params}) if params else select_binding(program, sizes)[0]
    ins = random_inputs(b, np.random.default_rng(seed))
    for name, factor in (scale or {}).items():
        ins[name] = ins[name] * factor
    tensors = {n: to_device(program.tensor(n), v, "cpu") for n, v in ins.items()}
    return b, ins, tensors, run_spec(b, ins)


def run_against_oracle(gemm, sizes: dict, params: dict | None = None, seed: int = 0, scale: dict | None = None):
    """Run a Kernel on fresh random inputs with poisoned outputs; the worst Verdict vs the oracle."""
    from tilesched.backends.cuda.io import check_outputs, poisoned

    b, _, tensors, want = oracle_inputs(gemm.program, sizes, seed, params, scale)
    outs = {n: poisoned(gemm.program.tensor(n), b.sizes, "cpu") for n in gemm.outputs}
    gemm(params=params, sizes=dict(b.sizes), **tensors, **outs)
    verdicts = check_outputs(b, outs, want)
    return next((v for v in verdicts if not v.ok), verdicts[0])
