"""Differential testing against the semantics oracle: hypothesis strategies that draw random valid
specs over what a backend claims to generate (and specs just outside it), and the one helper per
backend that runs a drawn spec and compares it with the oracle. tests/test_differential_*.py,
tests/test_refusals.py and tests/test_mutation.py all go through these helpers.

A case is a frozen dataclass of small drawn parameters (sizes, dtypes, layouts, fns, tiles,
quantisation); `*_spec(case)` turns it into the spec's data (the dict SpecBuilder builds), so a
failure shrinks parameter by parameter to a small spec, which the assertion prints as YAML.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import numpy as np
import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tilesched import lower
from tilesched.errors import SpecError
from tilesched.ir.bind import bind
from tilesched.spec.loader import SourceInfo, parse_data

# Deterministic in CI: a fixed derivation of the examples, no example database.
DIFF_SETTINGS = dict(derandomize=True, database=None, deadline=None, print_blob=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.filter_too_much])


def diff_settings(max_examples: int) -> settings:
    return settings(max_examples=max_examples, **DIFF_SETTINGS)


def spec_yaml(data: dict) -> str:
    """The spec's data as YAML (what a user would write), for assertion messages."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)


def program_of(data: dict):
    return lower(parse_data(copy.deepcopy(data), SourceInfo(None)))


def _pow2_upto(n: int) -> int:
    """The largest tile a CUDA axis of size n admits (the next power of two)."""
    return 1 << max(n - 1, 0).bit_length()


# ------------------------------------------------------------------------------------------ CUDA

CUDA_UNARY = ("relu", "relu6", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh", "exp")
CUDA_BINARY = ("bias", "add", "mul")


@dataclass(frozen=True)
class Extra:
    """A global tensor a binary epilogue fn reads, over roles b (batch), m, n."""

    roles: tuple[str, ...]
    dtype: str = "fp32"
    layout: str = "row_major"


@dataclass(frozen=True)
class Fn:
    name: str
    extra: Extra | None = None


@dataclass(frozen=True)
class Epilogue:
    fns: tuple[Fn, ...]
    in_place: bool = True  # writes the tile it reads; else a fresh tile of `dtype`
    dtype: str = "fp32"


@dataclass(frozen=True)
class GemmCase:
    m: int
    n: int
    k: int
    batch: int = 0  # 0: not batched
    a_batched: bool = True  # with a batch: whether A (B) has the batch axis or is shared by every batch
    b_batched: bool = True
    dtype: str = "fp16"  # A and B
    out_dtype: str = "fp16"
    layouts: tuple[str, str, str] = ("row_major", "row_major", "row_major")  # A, B, C
    loads: tuple[bool, bool] = (True, True)  # the dot reads A (B) through a load stage, else directly
    accumulate: bool = True  # the dot reads acc (accumulates into it)
    tiles: tuple[int, int, int] = (16, 16, 16)
    tile_params: bool = False  # tiles and switches as search-space parameters, else literals
    symbolic: bool = False  # M, N, K (and BATCH) bound at plan time
    order: str = "row_major"
    group: int = 1
    epilogue: tuple[Epilogue, ...] = ()
    tma: bool = False
    persistent: bool | None = None
    subtile: bool | None = None
    split_k: int | None = None
    scale: float = 1.0  # A's random values multiplied by this: 8 puts results past relu6's clamp
    seed: int = 0

    @property
    def sizes(self) -> dict[str, int]:
        out = {"M": self.m, "N": self.n, "K": self.k}
        if self.batch:
            out["BATCH"] = self.batch
        return out


def gemm_spec(case: GemmCase) -> dict:
    """The spec's data: (load ->) dot -> elementwise* -> store over the case's choices."""
    batched = bool(case.batch)
    bx = ["BATCH"] if batched else []
    axes = {}
    for name, size in ([("BATCH", case.batch)] if batched else []) + [("M", case.m), ("N", case.n), ("K", case.k)]:
        axes[name] = {"size": name, "hint": size} if case.symbolic else {"size": size}
    la, lb, lc = case.layouts
    def layout(v: str) -> dict:
        return {"layout": v} if v != "row_major" else {}

    tensors = {
        "A": {"shape": (bx if case.a_batched else []) + ["M", "K"], "dtype": case.dtype, **layout(la)},
        "B": {"shape": (bx if case.b_batched else []) + ["K", "N"], "dtype": case.dtype, **layout(lb)},
        "acc": {"shape": bx + ["M", "N"], "dtype": "fp32", "scope": "tile"},
        "C": {"shape": bx + ["M", "N"], "dtype": case.out_dtype, **layout(lc)},
    }
    params: dict = {}
    options: dict = {}

    def knob(name: str, value, choices):
        """A literal, or a search-space parameter (whose choices include the value) bound to it."""
        if not case.tile_params:
            return value
        params[name] = {"choices": sorted(set(choices) | {value}, key=lambda v: (str(type(v)), v)),
                        "default": value}
        return name

    bm, bn, bk = case.tiles
    cap = {r: _pow2_upto(v) for r, v in (("M", case.m), ("N", case.n), ("K", case.k))}
    loops = ([{"axis": "BATCH", "tile": 1}] if batched else []) + [
        {"axis": "M", "tile": knob("BLOCK_M", bm, [c for c in (16, 64) if c <= cap["M"] or case.symbolic])},
        {"axis": "N", "tile": knob("BLOCK_N", bn, [c for c in (16, 64) if c <= cap["N"] or case.symbolic])},
        {"axis": "K", "tile": knob("BLOCK_K", bk, [c for c in (16, 64) if c <= cap["K"] or case.symbolic]),
         "kind": "reduction"}]
    engine = {"engine": "tma"} if case.tma else {}
    stages = []
    operands = []
    for name, via_load in (("A", case.loads[0]), ("B", case.loads[1])):
        if via_load:
            tile = f"{name.lower()}_tile"
            tensors[tile] = {"shape": tensors[name]["shape"], "dtype": case.dtype, "scope": "tile"}
            stages.append({"name": f"load_{name.lower()}", "kind": "memory", "op": "load", "reads": [name],
                           "writes": [tile], "at": "K", **engine})
            operands.append(tile)
        else:
            operands.append(name)
    stages.append({"name": "mma", "kind": "compute", "op": "dot",
                   "reads": operands + (["acc"] if case.accumulate else []), "writes": ["acc"], "at": "K"})
    current = "acc"
    role_axis = {"b": "BATCH", "m": "M", "n": "N"}
    n_extra = 0
    for i, ep in enumerate(case.epilogue):
        reads = [current]
        fns = []
        for fn in ep.fns:
            fns.append(fn.name)
            if fn.extra is not None:
                name = f"E{n_extra}"
                n_extra += 1
                tensors[name] = {"shape": [role_axis[r] for r in fn.extra.roles], "dtype": fn.extra.dtype}
                if len(fn.extra.roles) >= 2:
                    tensors[name].update(layout(fn.extra.layout))
                reads.append(name)
        out = current
        if not ep.in_place:
            out = f"t{i}"
            tensors[out] = {"shape": bx + ["M", "N"], "dtype": ep.dtype, "scope": "tile"}
            if ep.dtype != tensors[current]["dtype"]:
                fns.append("cast")  # a dtype change is explicit
        stages.append({"name": f"epilogue{i}", "kind": "compute", "op": "elementwise", "fn": fns, "reads": reads,
                       "writes": [out], "at": "N"})
        current = out
    stages.append({"name": "store_c", "kind": "memory", "op": "store", "reads": [current], "writes": ["C"],
                   "at": "N", **engine})
    options["num_warps"] = 4
    if case.persistent is not None:
        options["persistent"] = knob("PERSISTENT", case.persistent, [False, True])
    if case.subtile is not None:
        options["epilogue_subtile"] = knob("EPILOGUE_SUBTILE", case.subtile, [False, True])
    if case.split_k is not None:
        options["split_k"] = knob("SPLIT_K", case.split_k, [1])
    data = {"name": "diff_gemm", "target": "cuda", "axes": axes, "tensors": tensors, "loops": loops}
    if case.order == "grouped":
        data["tile_order"] = {"kind": "grouped", "group": knob("GROUP_M", case.group, [1])}
    else:
        data["tile_order"] = {"kind": case.order}
    data["stages"] = stages
    data["options"] = options
    if params:
        data["search_space"] = {"params": params}
        if "PERSISTENT" in params and "SPLIT_K" in params:
            data["search_space"]["constraints"] = ["SPLIT_K == 1 or not PERSISTENT"]
    return data


def case_params(case: GemmCase) -> dict | None:
    """The parameter point of the case (None: the spec has no parameters)."""
    if not case.tile_params:
        return None
    p = {"BLOCK_M": case.tiles[0], "BLOCK_N": case.tiles[1], "BLOCK_K": case.tiles[2]}
    if case.order == "grouped":
        p["GROUP_M"] = case.group
    for name, v in (("PERSISTENT", case.persistent), ("EPILOGUE_SUBTILE", case.subtile), ("SPLIT_K", case.split_k)):
        if v is not None:
            p[name] = v
    return p


def _tile(draw, size: int, lo: int, hi: int, tma: bool = False) -> int:
    """A power-of-two tile in [lo, hi] that the axis admits."""
    choices = [t for t in (1, 2, 4, 8, 16, 32, 64) if lo <= t <= min(hi, _pow2_upto(size))]
    return draw(st.sampled_from(choices))


GEMM_FAMILIES = ("pointer", "batched", "tma")


@st.composite
def gemm_cases(draw, family: str | None = None, max_size: int = 80) -> GemmCase:
    """Random GEMM specs the CUDA backend claims: ragged M/N/K (N and K >= 9: smaller axes admit no
    tile of >= 16, which tl.dot needs), batched or not (an operand may be shared by all batches),
    fp16/fp32 operands in either layout, through load stages or read directly, fp16/fp32 output
    in either layout, 0-2 epilogue stages mixing unary and binary fns over [N], [M], [M, N] (and
    batch) tensors, tile orders, and the TMA / persistent / subtile / split-K switches.
    `family`: pointer loads unbatched, batched, or TMA (None: any)."""
    family = family or draw(st.sampled_from(GEMM_FAMILIES))
    tma = family == "tma"
    batch = draw(st.integers(1, 3)) if family == "batched" else 0
    step = 8 if tma else 1  # TMA: 16-byte aligned rows
    m = draw(st.integers(1, max_size // step)) * step
    n = draw(st.integers(max(2, 9 // step + (1 if step == 8 else 0)), max_size // step)) * step
    k = draw(st.integers(max(2, 9 // step + (1 if step == 8 else 0)), max_size // step)) * step
    if step == 1:
        n, k = max(n, 9), max(k, 9)
    a_batched = b_batched = True
    if batch:
        a_batched = draw(st.booleans())
        b_batched = True if not a_batched else draw(st.booleans())
    dtype = draw(st.sampled_from(["fp16", "fp32"]))
    out_dtype = draw(st.sampled_from(["fp16", "fp32"]))
    layouts = tuple(draw(st.sampled_from(["row_major", "col_major"])) for _ in range(3))
    loads = (True, True) if tma else (draw(st.booleans()), draw(st.booleans()))
    # TMA blocks span >= 16 bytes along a tensor's contiguous axis: BLOCK_M >= 8 for a col_major A or C
    bm_lo = 8 if tma and "col_major" in (layouts[0], layouts[2]) else 1
    # below 16 rows (CUDA-core path, slow in the interpreter) only where M needs it
    bm = _tile(draw, m, bm_lo, 8) if m <= 8 else _tile(draw, m, 16, 64)
    tiles = (bm, _tile(draw, n, 16, 64), _tile(draw, k, 16, 64))
    order = draw(st.sampled_from(["row_major", "column_major", "grouped"]))
    group = draw(st.sampled_from([1, 2, 4])) if order == "grouped" else 1
    # oracle inputs keep dot results near unit size (|x| < 3): relu6 would never clamp; scale 8 makes
    # it (exp then stays out: exp(20) overflows fp16)
    scale = draw(st.sampled_from([1.0, 8.0]))
    roles = ["n", "m", "mn"] + (["bn", "bm", "bmn"] if batch else [])
    n_extra = 0
    epilogue = []
    have_exp = False
    for _ in range(draw(st.integers(0, 2))):
        fns = []
        for _ in range(draw(st.integers(1, 3))):
            name = draw(st.sampled_from(CUDA_UNARY + CUDA_BINARY))
            if name == "exp":
                if have_exp or scale != 1.0:  # exp once, on small values (exp(exp(x)) overflows fp16)
                    name = "relu6"
                have_exp = True
            extra = None
            if name in CUDA_BINARY:
                r = draw(st.sampled_from(roles))
                extra = Extra(tuple(r), draw(st.sampled_from(["fp32", "fp16"])),
                              draw(st.sampled_from(["row_major", "col_major"])))
                n_extra += 1
            fns.append(Fn(name, extra))
        in_place = draw(st.booleans())
        epilogue.append(Epilogue(tuple(fns), in_place, "fp32" if in_place else draw(st.sampled_from(["fp32", "fp16"]))))
    persistent = subtile = split_k = None
    if not batch and draw(st.booleans()):
        persistent = draw(st.booleans())
    if draw(st.booleans()):
        subtile = draw(st.booleans())
    if tma and draw(st.booleans()):
        split_k = 1 if persistent else draw(st.sampled_from([1, 2, 4]))
    return GemmCase(m=m, n=n, k=k, batch=batch, a_batched=a_batched, b_batched=b_batched, dtype=dtype,
                    out_dtype=out_dtype, layouts=layouts, loads=loads, accumulate=draw(st.booleans()), tiles=tiles,
                    tile_params=draw(st.booleans()), symbolic=draw(st.booleans()), order=order, group=group,
                    epilogue=tuple(epilogue), tma=tma, persistent=persistent, subtile=subtile, split_k=split_k,
                    scale=scale, seed=draw(st.integers(0, 2**16)))


@dataclass
class GemmRun:
    data: dict
    verdict: object

    def message(self, case: GemmCase) -> str:
        return (f"{self.verdict.why}\nsizes {case.sizes}, params {case_params(case)}, input seed {case.seed}, "
                f"A scaled by {case.scale}\nspec:\n{spec_yaml(self.data)}")


def run_gemm_case(case: GemmCase, data: dict | None = None) -> GemmRun:
    """Render the case's kernel, run it in the Triton interpreter (TRITON_INTERPRET=1 must be set)
    on the oracle's random inputs with a NaN-poisoned output, and compare with the oracle."""
    from tests.cuda_util import run_against_oracle
    from tilesched.backends.cuda.kernel import Kernel

    data = data if data is not None else gemm_spec(case)
    gemm = Kernel(program_of(data))
    verdict = run_against_oracle(gemm, case.sizes, case_params(case), seed=case.seed, scale={"A": case.scale})
    return GemmRun(data, verdict)


# ------------------------------------------------------------------------------------- Cortex-M

@dataclass(frozen=True)
class IBCase:
    """An inverted-bottleneck block: conv2d 1x1 (C -> E) -> depthwise KxK -> conv2d 1x1 (E -> CO)."""

    h: int
    w: int
    c: int
    e: int
    co: int
    kernel: tuple[int, int] = (3, 3)
    stride: int = 1
    pad: int = 1
    acts: tuple[str, str, str] = ("none", "none", "none")  # expand, depthwise, project
    act_scales: tuple[float, ...] = (0.05, 0.05, 0.05, 0.05)  # x, h_expand, h_dw, y
    zero_points: tuple[int, ...] = (0, 0, 0, 0)
    weight_scales: tuple[float, float, float] = (0.02, 0.02, 0.02)  # expand, depthwise, project
    per_channel: tuple[bool, bool, bool] = (False, False, False)
    biases: tuple[bool, bool, bool] = (True, True, True)
    transposed: tuple[bool, bool] = (False, False)  # 1x1 weights stored [in, out] (else [out, in])
    rows: int = 1
    target: str = "cortex-m7"
    seed: int = 0

    @property
    def oh(self) -> int:
        return (self.h + 2 * self.pad - self.kernel[0]) // self.stride + 1

    @property
    def ow(self) -> int:
        return (self.w + 2 * self.pad - self.kernel[1]) // self.stride + 1


def _channel_scales(base: float, n: int, seed: int) -> list[float]:
    """Per-channel scales around `base` (0.5x .. 2x), reproducible from the case's seed."""
    r = np.random.default_rng(seed)
    return [float(np.float32(base * 2.0 ** r.uniform(-1, 1))) for _ in range(n)]


def ib_spec(case: IBCase) -> dict:
    kh, kw = case.kernel
    s, p = case.stride, case.pad
    axes = {"H": case.h, "W": case.w, "C": case.c, "E": case.e, "CO": case.co, "KH": kh, "KW": kw,
            "OH": f"(H + 2 * {p} - KH) // {s} + 1", "OW": f"(W + 2 * {p} - KW) // {s} + 1"}
    sx, sh, sd, sy = case.act_scales
    zx, zh, zd, zy = case.zero_points

    def act(scale, zp):
        return {"scale": scale, "zero_point": zp}

    def weight_quant(i: int, axis: str, n: int) -> dict:
        if case.per_channel[i]:
            return {"scale": _channel_scales(case.weight_scales[i], n, case.seed + i), "axis": axis}
        return {"scale": case.weight_scales[i]}

    t1, t2 = case.transposed
    tensors = {
        "x": {"shape": ["H", "W", "C"], "dtype": "int8", "quant": act(sx, zx)},
        "w_expand": {"shape": ["C", "E"] if t1 else ["E", "C"], "dtype": "int8", "quant": weight_quant(0, "E", case.e)},
        "b_expand": {"shape": ["E"], "dtype": "int32"},
        "h_expand": {"shape": ["H", "W", "E"], "dtype": "int8", "scope": "tile", "quant": act(sh, zh)},
        "w_dw": {"shape": ["KH", "KW", "E"], "dtype": "int8",
                 "quant": weight_quant(1, "E", case.e)},
        "b_dw": {"shape": ["E"], "dtype": "int32"},
        "h_dw": {"shape": ["OH", "OW", "E"], "dtype": "int8", "scope": "tile", "quant": act(sd, zd)},
        "w_project": {"shape": ["E", "CO"] if t2 else ["CO", "E"], "dtype": "int8",
                      "quant": weight_quant(2, "CO", case.co)},
        "b_project": {"shape": ["CO"], "dtype": "int32"},
        "y": {"shape": ["OH", "OW", "CO"], "dtype": "int8", "quant": act(sy, zy)},
    }
    for i, name in enumerate(("b_expand", "b_dw", "b_project")):
        if not case.biases[i]:
            del tensors[name]

    def reads(x, w, b, i):
        return [x, w] + ([b] if case.biases[i] else [])

    def fn(i):
        return {"fn": [case.acts[i]]} if case.acts[i] != "none" else {}

    stages = [
        {"name": "expand", "kind": "compute", "op": "conv2d", "kernel": [1, 1], **fn(0),
         "reads": reads("x", "w_expand", "b_expand", 0), "writes": ["h_expand"], "at": "OH"},
        {"name": "depthwise", "kind": "compute", "op": "depthwise_conv2d", "kernel": [kh, kw], "stride": s,
         "padding": p, **fn(1), "reads": reads("h_expand", "w_dw", "b_dw", 1), "writes": ["h_dw"], "at": "OH"},
        {"name": "project", "kind": "compute", "op": "conv2d", "kernel": [1, 1], **fn(2),
         "reads": reads("h_dw", "w_project", "b_project", 2), "writes": ["y"], "at": "OH"},
    ]
    return {"name": "diff_ib", "target": case.target, "axes": axes, "tensors": tensors,
            "loops": [{"axis": "OH", "tile": case.rows}], "stages": stages}


SCALES = st.floats(0.005, 0.1, allow_nan=False).map(lambda v: float(np.float32(v)))


@st.composite
def ib_cases(draw, max_hw: int = 12) -> IBCase:
    """Random inverted bottlenecks the Cortex-M template claims: H, W 3..12, channels multiples of 4
    up to 32, a 3x3 (or 5x5, 3x5) depthwise with stride 1/2 and padding 0..K//2, fns none/relu/relu6
    per convolution, random activation scales and zero points, per-tensor or per-channel weight
    scales (zero point 0), optional biases, either weight axis order, a ROWS tile, M4 or M7."""
    kernel = draw(st.sampled_from([(3, 3), (3, 3), (5, 5), (3, 5)]))
    stride = draw(st.sampled_from([1, 2]))
    pad = draw(st.integers(0, max(kernel) // 2))
    h = draw(st.integers(max(3, kernel[0] - 2 * pad), max_hw))
    w = draw(st.integers(max(3, kernel[1] - 2 * pad), max_hw))
    ch = st.integers(1, 8).map(lambda v: 4 * v)
    c, e, co = draw(ch), draw(ch), draw(ch)
    acts = tuple(draw(st.sampled_from(["none", "relu", "relu6"])) for _ in range(3))
    case = IBCase(h=h, w=w, c=c, e=e, co=co, kernel=kernel, stride=stride, pad=pad, acts=acts,
                  act_scales=tuple(draw(SCALES) for _ in range(4)),
                  # a clamped output keeps >= 64 levels: zero point <= 64 after relu/relu6
                  zero_points=tuple(draw(st.integers(-128, 127 if act == "none" else 64))
                                    for act in ("none",) + acts),
                  weight_scales=tuple(draw(SCALES) for _ in range(3)),
                  per_channel=tuple(draw(st.booleans()) for _ in range(3)),
                  biases=tuple(draw(st.booleans()) for _ in range(3)),
                  transposed=tuple(draw(st.booleans()) for _ in range(2)),
                  target=draw(st.sampled_from(["cortex-m7", "cortex-m4"])), seed=draw(st.integers(0, 2**16)))
    return replace(case, rows=draw(st.integers(1, case.oh)))


@dataclass
class IBRun:
    data: dict
    report: object = field(repr=False)

    def message(self, case: IBCase) -> str:
        r = self.report
        return (f"{r.mismatches} of {r.expected.size} outputs differ from the oracle (input seed {case.seed})\n"
                f"spec:\n{spec_yaml(self.data)}")


def run_ib_case(case: IBCase, workdir=None, data: dict | None = None) -> IBRun:
    """Match, pack, render, cross-compile and run the case under QEMU against the oracle."""
    from tilesched.backends.cortexm import session

    data = data if data is not None else ib_spec(case)
    b = bind(program_of(data), {})
    return IBRun(data, session.run_binding(b, seed=case.seed, workdir=workdir))


# ------------------------------------------------------------------------------------- refusals

@dataclass(frozen=True)
class Refusal:
    """A valid spec outside what a backend claims, and the stage its refusal must name."""

    what: str
    data: dict = field(compare=False)
    stage: int

    def __repr__(self) -> str:
        return f"Refusal({self.what!r}, stage {self.stage})"


def _insert(data: dict, index: int, stage: dict) -> int:
    data["stages"].insert(index, stage)
    return index


def _stage_index(data: dict, name: str) -> int:
    return next(i for i, s in enumerate(data["stages"]) if s["name"] == name)


CUDA_REFUSALS = ("prologue", "second_dot", "layernorm", "softmax", "reduce", "constant_fn", "other_fn",
                 "global_elementwise", "loaded_operand", "writes_operand")


@st.composite
def cuda_refusals(draw, what: str | None = None) -> Refusal:
    """A GEMM spec the backend claims, with one stage outside the (load ->) dot -> elementwise* ->
    store kernel: a prologue on a dot operand, a second dot, a layernorm / softmax / reduce, a fn
    with a constant or one the template lacks, an elementwise writing a global tensor, an epilogue
    operand loaded into a tile, a stage computing a global dot operand."""
    case = draw(gemm_cases(max_size=32))
    what = what or draw(st.sampled_from(CUDA_REFUSALS))
    if what == "prologue":
        case = replace(case, loads=(True, case.loads[1]))
    if what == "writes_operand":
        case = replace(case, loads=(False, case.loads[1]), tma=False, split_k=None)
    data = gemm_spec(case)
    t = data["tensors"]
    stages = data["stages"]
    bx = ["BATCH"] if case.batch else []
    result = stages[-1]["reads"][0]  # what store_c stores
    rdt = t[result]["dtype"]

    def before_store(stage: dict) -> None:
        stages.insert(_stage_index(data, "store_c"), stage)

    if what == "prologue":  # a_tile -> fn -> a_pro -> dot
        t["a_pro"] = dict(t["a_tile"])
        stages.insert(_stage_index(data, "load_a") + 1,
                      {"name": "prologue", "kind": "compute", "op": "elementwise",
                       "fn": [draw(st.sampled_from(["relu", "silu", "exp"]))], "reads": ["a_tile"],
                       "writes": ["a_pro"], "at": "K"})
        mma = stages[_stage_index(data, "mma")]
        mma["reads"] = ["a_pro" if r == "a_tile" else r for r in mma["reads"]]
        name = "prologue"
    elif what == "second_dot":  # C = A @ B + A @ B, two dots into two accumulators
        t["acc2"] = {"shape": bx + ["M", "N"], "dtype": "fp32", "scope": "tile"}
        mma = stages[_stage_index(data, "mma")]
        stages.insert(_stage_index(data, "mma") + 1,
                      {"name": "mma2", "kind": "compute", "op": "dot", "reads": mma["reads"][:2],
                       "writes": ["acc2"], "at": "K"})
        t["joined"] = {"shape": bx + ["M", "N"], "dtype": rdt, "scope": "tile"}
        before_store({"name": "join", "kind": "compute", "op": "elementwise", "fn": ["add"] + ([] if rdt == "fp32"
                                                                                             else ["cast"]),
                      "reads": [result, "acc2"], "writes": ["joined"], "at": "N"})
        stages[-1]["reads"] = ["joined"]
        name = "mma2"
    elif what in ("layernorm", "softmax"):  # along N, once per row block (at M)
        t["normed"] = {"shape": bx + ["M", "N"], "dtype": rdt, "scope": "tile"}
        before_store({"name": what, "kind": "compute", "op": what, "axis": "N", "reads": [result],
                      "writes": ["normed"], "at": "M"})
        stages[-1]["reads"] = ["normed"]
        stages[-1]["at"] = "M"
        name = what
    elif what == "reduce":  # a second output: the row sums of the result
        t["rowsum"] = {"shape": bx + ["M"], "dtype": rdt, "scope": "tile"}
        t["S"] = {"shape": bx + ["M"], "dtype": rdt}
        stages.append({"name": "rowsum", "kind": "compute", "op": "reduce", "reduce": "sum", "axis": "N",
                       "reads": [result], "writes": ["rowsum"], "at": "M"})
        stages.append({"name": "store_s", "kind": "memory", "op": "store", "reads": ["rowsum"], "writes": ["S"],
                       "at": "M"})
        name = "rowsum"
    elif what in ("constant_fn", "other_fn"):
        fn = (draw(st.sampled_from([{"scale": 0.5}, {"add": 1.0}, {"max": 0.0}])) if what == "constant_fn"
              else draw(st.sampled_from(["abs", "neg", "sqrt", "sub", "max", "div"])))
        reads = [result]
        if fn in ("sub", "max", "div"):
            t["Y"] = {"shape": ["N"], "dtype": "fp32"}
            reads.append("Y")
        before_store({"name": "odd_fn", "kind": "compute", "op": "elementwise",
                      "fn": ["relu", "sqrt"] if fn == "sqrt" else [fn], "reads": reads, "writes": [result],
                      "at": "N"})
        name = "odd_fn"
    elif what == "global_elementwise":  # an elementwise stage writing a global tensor, then stored
        t["G"] = {"shape": bx + ["M", "N"], "dtype": rdt}
        before_store({"name": "to_global", "kind": "compute", "op": "elementwise", "fn": ["relu"],
                      "reads": [result], "writes": ["G"], "at": "N"})
        stages[-1]["reads"] = ["G"]
        name = "to_global"
    elif what == "loaded_operand":  # the bias loaded into a tile by its own stage
        t["bias"] = {"shape": ["N"], "dtype": "fp32"}
        t["bias_tile"] = {"shape": ["N"], "dtype": "fp32", "scope": "tile"}
        before_store({"name": "load_bias", "kind": "memory", "op": "load", "reads": ["bias"],
                      "writes": ["bias_tile"], "at": "N"})
        before_store({"name": "add_bias", "kind": "compute", "op": "elementwise", "fn": ["bias"],
                      "reads": [result, "bias_tile"], "writes": [result], "at": "N"})
        name = "load_bias"
    else:  # writes_operand: a stage computes the dot's global operand A before the dot
        t["A0"] = dict(t["A"])
        stages.insert(0, {"name": "make_a", "kind": "compute", "op": "elementwise", "fn": ["relu"],
                          "reads": ["A0"], "writes": ["A"], "at": None})
        name = "make_a"
    return Refusal(what, data, _stage_index(data, name))


MCU_REFUSALS = ("residual", "layernorm", "requantize", "unary_fn", "two_fns", "big_expand", "weight_zp",
                "second_output", "reduce", "softmax_axis", "float_stage")


@st.composite
def mcu_refusals(draw, what: str | None = None) -> Refusal:
    """An inverted bottleneck with one stage changed or added: a residual add of a second input (or a
    layernorm, a requantize) after the block, a unary fn other than the clamps, two fns, an expand or
    project convolution other than 1x1, a weight zero point, a second output, a reduction, a softmax
    along another axis than the last, a float stage."""
    case = draw(ib_cases(max_hw=6))
    what = what or draw(st.sampled_from(MCU_REFUSALS))
    data = ib_spec(case)
    t = data["tensors"]
    stages = data["stages"]
    if what in ("residual", "layernorm", "requantize"):  # a stage after the block's output y
        t["y"]["scope"] = "tile"
        t["z"] = {"shape": ["OH", "OW", "CO"], "dtype": "int8", "quant": {"scale": 0.05, "zero_point": 1}}
        if what == "residual":  # z = y + r (TFLite's int8 ADD)
            t["r"] = {"shape": ["OH", "OW", "CO"], "dtype": "int8", "quant": {"scale": 0.04, "zero_point": -3}}
            stages.append({"name": "residual", "kind": "compute", "op": "elementwise", "fn": ["add"],
                           "reads": ["y", "r"], "writes": ["z"], "at": "OH"})
        elif what == "layernorm":
            t["z"]["quant"] = {"scale": 0.02, "zero_point": 0}
            stages.append({"name": "norm", "kind": "compute", "op": "layernorm", "axis": "CO", "reads": ["y"],
                           "writes": ["z"], "at": "OH"})
        else:  # the project convolution to int32, then a requantize stage
            t["y"]["dtype"] = "int32"
            del t["y"]["quant"]
            stages[2].pop("fn", None)
            stages.append({"name": "requant", "kind": "compute", "op": "requantize", "reads": ["y"],
                           "writes": ["z"], "at": "OH"})
        idx = len(stages) - 1
    elif what in ("unary_fn", "two_fns"):
        i = draw(st.integers(0, 2))
        stages[i]["fn"] = ([draw(st.sampled_from(["gelu", "sigmoid", "tanh", "silu"]))] if what == "unary_fn"
                           else ["relu", "relu6"])
        idx = i
    elif what == "big_expand":
        i = draw(st.sampled_from([0, 2]))
        stages[i]["kernel"] = [3, 3]
        stages[i]["padding"] = 1
        w = "w_expand" if i == 0 else "w_project"
        data["axes"].update({"K3H": 3, "K3W": 3})
        t[w]["shape"] = ["K3H", "K3W"] + t[w]["shape"]
        if isinstance(t[w]["quant"]["scale"], list):
            t[w]["quant"]["scale"] = t[w]["quant"]["scale"][0]
            del t[w]["quant"]["axis"]
        idx = i
    elif what == "weight_zp":
        i = draw(st.integers(0, 2))
        w = ("w_expand", "w_dw", "w_project")[i]
        t[w]["quant"]["zero_point"] = draw(st.integers(1, 5))
        idx = i
    elif what == "second_output":  # the expanded activations stored too
        t["h_out"] = {"shape": ["H", "W", "E"], "dtype": "int8", "quant": dict(t["h_expand"]["quant"])}
        stages.insert(1, {"name": "store_h", "kind": "memory", "op": "store", "reads": ["h_expand"],
                          "writes": ["h_out"], "at": "OH"})
        idx = 1
    elif what == "reduce":  # the per-pixel maximum over the channels of the output
        t["y"]["scope"] = "tile"
        t["z"] = {"shape": ["OH", "OW"], "dtype": "int8", "quant": dict(t["y"]["quant"])}
        stages.append({"name": "chmax", "kind": "compute", "op": "reduce", "reduce": "max", "axis": "CO",
                       "reads": ["y"], "writes": ["z"], "at": "OH"})
        idx = len(stages) - 1
    elif what == "softmax_axis":  # a softmax along the output's columns
        t["y"]["scope"] = "tile"
        t["z"] = {"shape": ["OH", "OW", "CO"], "dtype": "int8", "quant": {"scale": 1.0 / 256, "zero_point": -128}}
        stages.append({"name": "colsoftmax", "kind": "compute", "op": "softmax", "axis": "OW", "reads": ["y"],
                       "writes": ["z"], "at": None})
        idx = len(stages) - 1
    else:  # float_stage: the output dequantised to fp32
        t["y"]["scope"] = "tile"
        t["z"] = {"shape": ["OH", "OW", "CO"], "dtype": "fp32"}
        stages.append({"name": "dequant", "kind": "compute", "op": "elementwise", "fn": ["cast"], "reads": ["y"],
                       "writes": ["z"], "at": "OH"})
        idx = len(stages) - 1
    return Refusal(what, data, idx)


def meaningful_program(refusal: Refusal):
    """The refusal's spec as a program, after the oracle has run it once (a valid spec with a meaning)."""
    from tilesched.semantics import random_inputs, run_spec

    prog = program_of(refusal.data)
    b = bind(prog, {})
    run_spec(b, random_inputs(b, np.random.default_rng(0)))
    return prog


def generated_or_refused(refusal: Refusal, generate, run) -> SpecError | None:
    """The invariant every backend keeps: it refuses the spec naming `stages[i]` (returns the
    SpecError), or it generates the spec and `run(program)` (the kernel against the oracle on
    fresh inputs) must return a passing Verdict (returns None)."""
    prog = meaningful_program(refusal)
    try:
        generate(prog)
    except SpecError as exc:
        return exc
    verdict = run(prog)
    assert verdict.ok, f"{refusal.what}: generated but wrong: {verdict.why}\nspec:\n{spec_yaml(refusal.data)}"
    return None


def expect_refusal(refusal: Refusal, generate) -> SpecError:
    """`generate(program)` must refuse the spec with a SpecError naming `stages[i]`; the oracle
    runs it (so it is a valid spec with a meaning)."""
    prog = meaningful_program(refusal)
    try:
        generate(prog)
    except SpecError as exc:
        return exc
    raise AssertionError(f"{refusal.what}: the backend generated a kernel for a spec outside what it claims\n"
                         f"spec:\n{spec_yaml(refusal.data)}")
