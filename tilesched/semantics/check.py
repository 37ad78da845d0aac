"""Fresh random inputs for a spec, poison for its outputs, and the comparison of a backend's
outputs with the oracle's (dtype tolerance for floats, exact for integers).

Inputs are random, drawn so that outputs carry information: float operands of a dot are scaled
so the contraction's result stays near unit size; int8 weights and int32 biases of quantised
dots and convolutions are drawn with a spread that keeps the requantised outputs about 40 steps
wide for the spec's own scales (full-range weights would saturate most outputs, and a wrong
byte would hide among them)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from math import prod

import numpy as np

from tilesched.ir.bind import Binding
from tilesched.ir.dtypes import FLOAT
from tilesched.ir.nodes import Program
from tilesched.ir.storage import FP4_VALUES, grouped_shape, is_stored_differently, round_to, to_storage
from tilesched.semantics.interpreter import execute, input_names
from tilesched.semantics.ops import INT_RANGE
from tilesched.semantics.values import declared_quant

# ||out - ref|| / ||ref|| and max|out - ref| / max|ref| bounds by the coarsest float dtype involved:
# fp32 dots run as tf32 on tensor cores, fp16/bf16 round stored values
TOLERANCE = {"fp64": (1e-9, 1e-8), "fp32": (2e-3, 1e-2), "fp16": (3e-3, 1e-2), "bf16": (2e-2, 5e-2),
             "fp8e4m3": (8e-2, 2e-1), "fp8e5m2": (1.5e-1, 3e-1), "fp4e2m1": (1.5e-1, 3e-1)}
_COARSE = ["fp64", "fp32", "fp16", "bf16", "fp8e4m3", "fp8e5m2", "fp4e2m1"]


def _sources(program: Program) -> dict[str, str]:
    """tile tensor -> the global tensor a chain of memory stages fills it from."""
    src: dict[str, str] = {}
    for s in program.stages:
        if s.kind == "memory" and len(s.reads) == 1 and len(s.writes) == 1:
            src[s.writes[0]] = s.reads[0]
    out = {}
    for t in src:
        seen, cur = set(), t
        while cur in src and cur not in seen:
            seen.add(cur)
            cur = src[cur]
        out[t] = cur
    return out


def _contracted(program: Program, stage, sizes) -> int:
    ops = [program.tensor(n) for n in stage.reads if n not in stage.writes][:2]
    if len(ops) < 2:
        return 1
    out = program.tensor(stage.writes[0])
    axes = (set(ops[0].shape) & set(ops[1].shape)) - set(out.shape)
    return max(1, prod(sizes[a] for a in axes))


def _requant_scale_out(program: Program, acc_name: str, sizes):
    """The output quant of the requantize (or int8 conv) that turns `acc_name` into int8."""
    for s in program.stages:
        if s.op == "requantize" and s.reads and s.reads[0] == acc_name:
            return declared_quant(program.tensor(s.writes[0]), sizes)
    return None


def _amplitudes(b: Binding, name: str, stage, values) -> tuple[float, int]:
    """(float amplitude, integer amplitude; 0 = full range) for input `name`, first read by
    `stage`: the second operand of a dot or convolution (its weight) and its bias get a spread
    that keeps the result informative, given the first operand's values as computed so far."""
    program, sizes = b.program, b.sizes
    src = _sources(program)
    for s in program.order:
        s = program.stage(s)
        if s.op not in ("dot", "conv2d", "depthwise_conv2d"):
            continue
        operands = [n for n in s.reads if n not in s.writes]
        roles = [src.get(n, n) for n in operands]
        if name not in roles[1:] or len(operands) < 2:
            continue
        x_t, w_t = program.tensor(operands[0]), program.tensor(operands[1])
        if s.op == "dot":
            k = _contracted(program, s, sizes)
        else:
            kh, kw = s.kernel
            k = kh * kw * (1 if s.op == "depthwise_conv2d" else sizes[x_t.shape[2]])
        if w_t.dtype in FLOAT:
            # results spread over about +-8: past the knees of relu6 and the saturation of
            # tanh and sigmoid, so a backend that confuses them shows
            return (4.0 * math.sqrt(3.0 / k), 0) if roles.index(name) == 1 else (1.0, 0)
        qx, qw = declared_quant(x_t, sizes), declared_quant(w_t, sizes)
        out = program.tensor(s.writes[0])
        qout = declared_quant(out, sizes) if out.dtype != "int32" else _requant_scale_out(program, out.name, sizes)
        if qx is None or qw is None or qout is None:
            return 1.0, 0
        mult = float(np.max(np.asarray(qx.scale) * np.asarray(qw.scale))) / float(qout.scale)
        x_val = values.get(operands[0])
        sigma_x = 74.0  # a uniform int8 activation, when the operand is not computed yet
        if x_val is not None and not x_val.is_float:
            sigma_x = max(float(np.std(x_val.data - qx.zero_point)), 1.0)
        if roles.index(name) == 1:
            sigma_w = 40.0 / (mult * math.sqrt(k) * sigma_x)
            return 0.0, int(np.clip(round(math.sqrt(3.0) * sigma_w), 1, 127))
        return 0.0, int(np.clip(round(20.0 / mult), 1, 1 << 20))  # the bias: a few dozen output steps
    return 1.0, 0


def random_inputs(b: Binding, rng: np.random.Generator, given: Mapping[str, np.ndarray] | None = None
                  ) -> dict[str, np.ndarray]:
    """Fresh random values for every input of the spec, in each tensor's declared axis order;
    inputs in `given` keep those values (and count as computed for the amplitudes)."""
    program = b.program
    given = dict(given or {})
    drawn: dict[str, np.ndarray] = dict(given)

    env = b.env()

    def draw(name: str, stage, values) -> np.ndarray:
        t = program.tensor(name)
        # grouped tensors draw one value per group; narrow floats values on their grid; packed and
        # fp4 tensors come out as a caller stores them (tilesched.ir.storage)
        shape = grouped_shape(t, b.sizes, env)
        famp, iamp = _amplitudes(b, name, stage, values)
        if t.dtype == "fp4e2m1":  # every code equally likely
            x = FP4_VALUES[rng.integers(0, 16, size=shape)]
        elif t.dtype in FLOAT:
            x = rng.uniform(-famp, famp, size=shape)
            if t.dtype in ("fp8e4m3", "fp8e5m2"):
                x = round_to(t.dtype, x)
        elif t.dtype == "int32":
            lim = iamp or 4000
            x = rng.integers(-lim, lim + 1, size=shape, dtype=np.int64)
        else:
            lo, hi = INT_RANGE[t.dtype]
            if iamp:
                lo, hi = max(lo, -iamp), min(hi, iamp)
            x = rng.integers(lo, hi + 1, size=shape, dtype=np.int64)
        if is_stored_differently(t):
            x = to_storage(t, x)
        drawn[name] = x
        return x

    if all(program.tensor(n).dtype in FLOAT for n in input_names(program)):
        for name in input_names(program):  # float amplitudes need no computed values
            if name not in given:
                draw(name, None, {})
    else:
        execute(b, given, draw=draw)
    return drawn


def poison_value(dtype: str):
    """What an output is filled with before a run: NaN for floats, a byte pattern for integers
    (never zero, which a kernel that writes nothing could match)."""
    return float("nan") if dtype in FLOAT else {"int8": -91, "uint8": 165, "int16": -23131, "int32": -1515870811,
                                                "int4": -6, "uint4": 13, "int3": -3, "uint3": 5, "int2": -2,
                                                "uint2": 2}[dtype]


def tolerance(program: Program, output: str) -> tuple[float, float]:
    """(norm-relative, max-relative) bounds for a float output: the coarsest float dtype among
    the output and the global tensors the spec reads."""
    dtypes = {program.tensor(output).dtype} | {program.tensor(n).dtype for n in input_names(program)}
    worst = max((d for d in dtypes if d in FLOAT), key=_COARSE.index, default="fp32")
    return TOLERANCE[worst]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    rel_error: float  # floats: ||got - want|| / ||want||; integers: mismatches / size
    max_error: float
    why: str = ""


def compare(program: Program, output: str, got: np.ndarray, want: np.ndarray) -> Verdict:
    """A backend's output (any numeric numpy array, logical axis order) against the oracle's."""
    got = np.asarray(got)
    want = np.asarray(want)
    if got.shape != want.shape:
        return Verdict(False, math.inf, math.inf, f"{output}: shape {got.shape}, the spec's is {want.shape}")
    if program.tensor(output).dtype not in FLOAT:
        bad = int(np.count_nonzero(got.astype(np.int64) != want))
        return Verdict(bad == 0, bad / max(want.size, 1), float(np.max(np.abs(got.astype(np.int64) - want),
                                                                         initial=0)),
                       "" if bad == 0 else f"{output}: {bad} of {want.size} values differ")
    got = got.astype(np.float64)
    finite = np.isfinite(got)
    if not finite.all():
        n = int((~finite).sum())
        return Verdict(False, math.inf, math.inf, f"{output}: {n} of {got.size} values are not finite (unwritten?)")
    rel = float(np.linalg.norm(got - want)) / (float(np.linalg.norm(want)) or 1.0)
    mx = float(np.max(np.abs(got - want), initial=0.0)) / (float(np.max(np.abs(want), initial=0.0)) or 1.0)
    tol_norm, tol_max = tolerance(program, output)
    ok = rel <= tol_norm and mx <= tol_max
    return Verdict(ok, rel, mx, "" if ok else f"{output}: error {rel:.2e} (bound {tol_norm:.0e}), "
                                               f"max {mx:.2e} (bound {tol_max:.0e})")
