"""GPU check: the mma.sync register-operand kernel on dequantisation chains other than the specs'
(v - z) * s, for 2- and 4-bit weights, bf16 and fp16 activations: v * s (a factor, no offset: the
kernel then needs no sum of X), v * s + z (an fma: factor and offset) and (v - z) / s (a division),
at ragged, split-K and ring points, each against the semantics oracle (fresh random inputs,
poisoned outputs). The 2-bit and fp16 4-bit kernels serve several value pairs a shift
(gluon_emit.positions). The division with fp16 is left out: the checker draws scales from (-1, 1), and
(v - z) / s then reaches past fp16's range in the spec's own result (a first run: the 6 of 8 such
points that failed were those whose oracle output exceeds 65504, the 2 that passed stayed under it).
Writes OUT/register-operand-chains-check-<device>.json; exit 1 if any failed."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import lowbit  # noqa: E402
import spec_bench as sb  # noqa: E402

from tilesched import lower  # noqa: E402
from tilesched.spec import load_spec_text  # noqa: E402

CHAINS = {  # name: (the spec's dequantisation stage replaced by, whether Z leaves the spec)
    "mul": ("fn: [cast, mul], reads: [w, S]", True),
    "fma": ("fn: [cast, mul, add], reads: [w, S, Z]", False),
    "div": ("fn: [cast, sub, div], reads: [w, Z, S]", False),
}
FP16 = [("X: {shape: [M, K], dtype: bf16}", "X: {shape: [M, K], dtype: fp16}"),
        ("x: {shape: [M, K], dtype: bf16", "x: {shape: [M, K], dtype: fp16"),
        ("wd: {shape: [K, N], dtype: bf16", "wd: {shape: [K, N], dtype: fp16"),
        ("S: {shape: [K, N], dtype: bf16", "S: {shape: [K, N], dtype: fp16"),
        ("Y: {shape: [M, N], dtype: bf16}", "Y: {shape: [M, N], dtype: fp16}")]
# mma.sync points of the register-operand check: two stages ragged, split-K at M = 5, 8 warps, a cp.async ring
POINTS = [lowbit.REGISTER_OPERAND_POINTS[i] for i in (0, 2, 6, 7)]


def variant(spec: str, chain: str, act: str):
    text = (sb.CONFIGS / f"{spec}.yaml").read_text()
    stage, drop_z = CHAINS[chain]
    swaps = [("fn: [cast, sub, mul], reads: [w, Z, S]", stage)] + (FP16 if act == "fp16" else [])
    for old, new in swaps:
        if old not in text:
            raise SystemExit(f"{spec}: no {old!r} to replace")
        text = text.replace(old, new)
    if drop_z:
        text = "\n".join(ln for ln in text.split("\n") if not ln.strip().startswith("Z: {"))
    spec_obj, source = load_spec_text(text)
    return lower(spec_obj, source)


if __name__ == "__main__":
    cases = []
    for spec in ("w2a16_gemm", "w4a16_gemm"):
        for chain in CHAINS:
            for act in ("bf16",) if chain == "div" else ("bf16", "fp16"):
                prog = variant(spec, chain, act)
                defaults = {p.name: p.default for p in prog.params}
                cases += [(f"{spec}-{chain}-{act}", prog, sizes, {**defaults, **params}) for sizes, params in POINTS]
    sys.exit(sb._run_checks(cases, random.Random(0), Path(os.environ.get("OUT", "/tmp")), "register-operand-chains"))
