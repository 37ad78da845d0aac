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
