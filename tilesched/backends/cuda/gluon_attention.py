"""Render the warp-specialised schedule (tilesched/passes/warp_specialize.py) with explicit layouts.

Three Gluon functions per kernel IR:
  - `<name>_specialized_kernel`: a CTA of BLOCK_<q> = 128 query rows; finds the key tiles [lo, hi) the mask
    keeps somewhere (the Triton kernel's interval tests), sets up the shared memory (the query
    tile's two halves, STAGES slots of K and V tiles, their barriers) and forks;
  - `<name>_specialized_loader` (one warp): TMA loads of the query halves, then of each key tile's K and V
    into slot (t - lo) % STAGES once both consumers freed it;
  - `<name>_specialized_consumer` (a warpgroup, twice): per key tile, the scores' wgmma (Q K_t^T, both from
    shared memory) and the previous tile's context wgmma (P_{t-1} V_{t-1}, P from registers) are
    issued together, to run while the softmax of tile t does. P_t is packed into the operand's
    registers only after that MMA ends (they are its operand until then). The sm_90 SASS shows
    ptxas placing that wait before the softmax anyway, so the overlap comes from the two
    warpgroups drifting apart: one's softmax runs while the tensor cores work for the other.
    The mask and the keys' ragged end are evaluated only on tiles the mask does not keep whole
    for the warpgroup's 64 rows.
Q, K and V are read through [points, rows, head] views (TMA zero-fills past each head's rows);
O is stored by pointers. Positional arguments are the Triton kernel's, after the descriptors.
With the `persistent` option the module also carries `<name>_persistent_*`, the same functions
walking the tiles of every point on a grid of at most one CTA an SM (render_persistent_kernel).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tilesched.backends.cuda.triton_rules import LOG2E, NEG_INF, Ctx, group_constant, index, user_mask
from tilesched.passes.kernel import KernelIR, mask_constant, producer

GL_DTYPES = {"fp16": "ttgl.float16", "bf16": "ttgl.bfloat16"}

IMPORTS = """from triton.experimental import gluon
from triton.experimental.gluon import language as ttgl
from triton.experimental.gluon.language.nvidia import hopper as _gl_hopper
from triton.experimental.gluon.language.nvidia.hopper import mbarrier as _gl_mbarrier
from triton.experimental.gluon.language.nvidia.hopper import tma as _gl_tma"""

HELPERS = '''
# Triton 3.6 names the TMA load async_copy_global_to_shared, later versions async_load
_gl_tma_load = getattr(_gl_tma, "async_load", None) or _gl_tma.async_copy_global_to_shared
'''


def _parts(k: KernelIR):
    load_k, scores, softmax, load_v, context = k.loop
    q_load = producer(k, next(a for a in scores.args if a != load_k.out))
    return q_load, load_k, scores, softmax, load_v, context


def constexprs(k: KernelIR) -> list[str]:
    """The kernel's compile-time arguments taken from the Triton launch's constexprs by name."""
    qa, r = k.grid[0], k.reduction
    head = next(a for a in k.value(_parts(k)[0].out).axes if a != qa)
    names = [f"BLOCK_{qa}", f"BLOCK_{r}", f"BLOCK_{head}"]  # BLOCK_<head>: the whole head dimension
    names += list(dict.fromkeys(group_constant(a.tensor, ax) for a in k.accesses for ax, _ in a.group))
    return names


def _row(k: KernelIR, tensor: str) -> str:
    """The [points, rows, head] view's first coordinate: the program's point indices (grouped ones
    divided by their group) flattened with the tensor's strides, over its last point axis' stride
    (the launcher builds the view, which exists only where that division is exact)."""
    acc = next(a for a in k.accesses if a.tensor == tensor)
    points = [a for a in acc.axes if a in k.points]
    if not points:
        return "0"
    groups = dict(acc.group)
    terms = [f"(pid_{a} // {group_constant(tensor, a)})" if a in groups else f"pid_{a}" for a in points]
    flat = " + ".join(f"{t} * s_{tensor}_{a}" for t, a in zip(terms, points))
    return f"(({flat}) // s_{tensor}_{points[-1]}).to(ttgl.int32)"


def _bounds(k: KernelIR, mask: str, mask_axes: tuple[str, ...], stage: str, first_row: str, rows: str,
            tile: str) -> tuple[str, str]:
    """(kept whole, kept nowhere) of key tile `tile` for the query rows [first_row, first_row + rows)."""
    from tilesched.ir.indexexpr import triton_bounds

    qa, r = k.grid[0], k.reduction

    def box(a: str) -> tuple[str, str]:
        if a not in mask_axes:
            raise KeyError(a)
        if a in k.points:
            return f"pid_{a}", f"pid_{a}"
        if a == qa:
            return first_row, f"tl.minimum({first_row} + {rows}, n_{qa}) - 1"
        if a == r:
            return f"{tile} * BLOCK_{r}", f"tl.minimum({tile} * BLOCK_{r} + BLOCK_{r}, n_{r}) - 1"
        return "0", f"n_{a} - 1"

    return triton_bounds(mask, box, lambda a: f"n_{a}" if a in mask_axes else mask_constant(stage, f"size_{a}"),
                         lambda n: mask_constant(stage, n))


def _kept_range(k: KernelIR) -> list[str]:
    """lo, hi: the key tiles the loop visits (all of them without a skipping mask)."""
    qa, r = k.grid[0], k.reduction
    lines = [f"tiles_{r} = (n_{r} + BLOCK_{r} - 1) // BLOCK_{r}", "lo = 0", f"hi = tiles_{r}"]
    if k.skip is None:
        return lines
    softmax = _parts(k)[3]
    none = lambda t: _bounds(k, k.skip, softmax.mask_axes, softmax.stage, f"pid_{qa} * BLOCK_{qa}",  # noqa: E731
                             f"BLOCK_{qa}", t)[1]
    return lines + [f"# tiles outside [lo, hi) hold nothing the mask {k.skip!r} keeps",
                    f"while (lo < tiles_{r}) & {none('lo')}:", "    lo += 1",
                    f"while (hi > lo) & {none('(hi - 1)')}:", "    hi -= 1"]


def _whole(k: KernelIR, tile: str) -> str:
    """Whether key tile `tile` needs no mask for the consumer's rows [start, start + HALF)."""
    r = k.reduction
    softmax = _parts(k)[3]
    tests = []
    if k.axis(r).masked:
        tests.append(f"(({tile} + 1) * BLOCK_{r} <= n_{r})")
    if softmax.mask is not None:
        tests.append(f"({_bounds(k, softmax.mask, softmax.mask_axes, softmax.stage, 'start', 'HALF', tile)[0]})")
    return " & ".join(tests) if tests else "True"


def _masked(k: KernelIR) -> list[str]:
    """The consumer's lines that mask `x` (the scaled scores over (queries, keys)) on a tile not kept whole."""
    qa, r = k.grid[0], k.reduction
    softmax = _parts(k)[3]
    axes = (qa, r)
    lines = []
    if k.axis(r).masked:
        lines.append(f"x = tl.where((o_{r} < n_{r}){index(axes, r)}, x, {NEG_INF})")
    ctx = Ctx(k, offs={qa: f"o_{qa}", r: f"o_{r}"}, phase="loop")
    user = user_mask(ctx, softmax, axes, softmax.mask_axes)
    if user is not None:
        lines.append(f"x = tl.where({user}, x, {NEG_INF})")
    return lines


def _names_in(lines: list[str], names: list[str]) -> list[str]:
    """The names (in order) that the lines use: what a partition takes as arguments."""
    text = "\n".join(lines)
    return [n for n in names if re.search(rf"\b{re.escape(n)}\b", text)]


def _decode(k: KernelIR) -> list[str]:
    """A persistent grid's lines that turn `tile` into the tile's indices (queries fastest, as a
    non-persistent grid launches them, then the point axes, the last fastest) and its first row.
    Claimed tiles go `claim_group` points at a time (the launcher's; one: point by point), their query
    tiles heaviest first across the group (the last group may hold fewer points)."""
    qa = k.grid[0]
    if k.claim_tiles and k.points:
        points = " * ".join(f"n_{p}" for p in k.points)
        lines = [f"group_tiles = tiles_{qa} * claim_group",
                 "base = tile // group_tiles * claim_group  # the group's first point",
                 f"width = ttgl.minimum(claim_group, {points} - base)",
                 f"within = tile - base * tiles_{qa}",
                 f"pid_{qa} = {'tiles_' + qa + ' - 1 - ' if k.descending else ''}within // width",
                 "rest = base + within % width"]
    else:
        first = f"tiles_{qa} - 1 - tile % tiles_{qa}" if k.descending else f"tile % tiles_{qa}"
        lines = [f"pid_{qa} = {first}"] + ([f"rest = tile // tiles_{qa}"] if k.points else [])
    for j, p in enumerate(reversed(k.points)):
        lines += [f"pid_{p} = (rest % n_{p}).to(ttgl.int64)"] + ([f"rest = rest // n_{p}"] if j < len(k.points) - 1 else [])
    return lines + [f"first = pid_{qa} * BLOCK_{qa}"]


def _fill_ring(r: str, position: str) -> list[str]:
    """The loader's lines bringing key tile t's K and V into the ring slot of the key tile at
    `position` (key tiles taken so far), once both consumers freed it."""
    return [
        f"slot = {position} % STAGES",
        f"if {position} >= STAGES:  # the slot's last tile: both consumers' MMAs on it are done",
        f"    _gl_mbarrier.wait(empty.index(slot), ({position} // STAGES - 1) & 1)",
        "_gl_mbarrier.expect(ready.index(slot), k_desc.block_type.nbytes + v_desc.block_type.nbytes)",
        f"_gl_tma_load(k_desc, [k_row, t * BLOCK_{r}, 0], ready.index(slot), k_ring.index(slot))",
        f"_gl_tma_load(v_desc, [v_row, t * BLOCK_{r}, 0], ready.index(slot), v_ring.index(slot))",
    ]


def render_kernel(k: KernelIR, positional: list[str]) -> list[str]:
    """The three Gluon functions of a kernel IR the warp_specialize pass marked: one CTA a tile."""
    return _render_kernel(k, positional, walk=False)


def render_persistent_kernel(k: KernelIR, positional: list[str]) -> list[str]:
    """`<name>_persistent_*`: the same on a persistent grid (the `persistent` option). Every function
    walks the tiles of the whole grid, point axes included: the loader brings the next tile's query
    halves and keys while the consumers finish the current tile, so a short sequence does not pay
    each CTA's fill and drain; the ring's slots and phases run on across tiles (`kv`: key tiles
    taken so far, `it`: tiles done). The walk strides by the grid, or, where the kernel IR says
    tiles differ in work (`claim_tiles`), the loader claims each next tile from a counter and
    tells the consumers which through shared memory."""
    return _render_kernel(k, positional, walk=True)


@dataclass(frozen=True)
class _Grid:
    """What the three functions share: the kernel's axes and dtypes, and the grid: one CTA a tile, or
    persistent (`walk`), its tiles claimed from a counter (`claimed`) or strided by the grid."""
    qa: str  # the query axis (the grid's first)
    r: str  # the key axis (the reduction)
    d: str  # the head axis
    dt: str
    walk: bool
    claimed: bool
    fn: str  # the functions' prefix

    @property
    def tile_args(self) -> list[str]:
        """Scalars a partition may take beside the kernel's positional arguments."""
        return ["total", f"tiles_{self.qa}", "claim_group"] if self.walk else []


def _grid(k: KernelIR, walk: bool) -> _Grid:
    q_load, _, _, softmax, _, _ = _parts(k)
    qa = k.grid[0]
    d = next(a for a in k.value(q_load.out).axes if a != qa)
    return _Grid(qa, k.reduction, d, GL_DTYPES[k.value(softmax.out).dtype], walk,
                 walk and k.claim_tiles,  # tiles from a counter (the loader claims, tile_id says which)
                 f"{k.name}_persistent" if walk else f"{k.name}_specialized")


def _online_softmax_step(k: KernelIR) -> list[str]:
    """Key tile t's scores `s` into probabilities `p`, the running maximum and sum rescaled (`alpha`).
    With a positive scale (the launch says) the row maximum of the raw scores, scaled, is the scaled
    scores' maximum, and each probability takes one fused multiply-add: 2^(c s - m)."""
    return [
        "x = s",
        f"if not ({_whole(k, 't')}):",
        *["    " + ln for ln in _masked(k)],
        "if SCALE_POSITIVE:",
        "    m_new = ttgl.maximum(m_i, ttgl.max(x, axis=1) * qk_scale)",
        "else:",
        "    x = x * qk_scale",
        "    m_new = ttgl.maximum(m_i, ttgl.max(x, axis=1))",
        f"m_safe = ttgl.where(m_new == {NEG_INF}, 0.0, m_new)  # a row with nothing kept yet: its terms are 0",
        "alpha = ttgl.exp2(m_i - m_safe)",
        "if SCALE_POSITIVE:",
        "    p = ttgl.exp2(x * qk_scale - ttgl.expand_dims(m_safe, 1))",
        "else:",
        "    p = ttgl.exp2(x - ttgl.expand_dims(m_safe, 1))",
        "l_i = l_i * alpha + ttgl.sum(p, axis=1)",
        "m_i = m_new",
    ]


def _consumer(k: KernelIR, g: _Grid, positional: list[str]) -> tuple[list[str], list[str], list[str]]:
    """`<fn>_consumer` (scores, online softmax, context for HALF query rows) and the scalars and constants
    it takes."""
    qa, r, d, dt, walk, claimed = g.qa, g.r, g.d, g.dt, g.walk, g.claimed
    out = k.post[1].tensor
    o_acc = k.access(out, "store")
    out_dt = {"fp32": "ttgl.float32", **GL_DTYPES}[o_acc.dtype]
    o_ptrs = " + ".join([f"p_{out}"] + [f"pid_{a} * s_{out}_{a}" for a in o_acc.axes if a in k.points]
                        + [f"ttgl.expand_dims(o_{qa}.to(ttgl.int64) * s_{out}_{qa}, 1)",
                           f"ttgl.expand_dims(cols * s_{out}_{d}, 0)"])
    k_tile = f"k_ring.index(slot).reshape([BLOCK_{r}, HEAD]).permute((1, 0))"
    kv = "kv + " if walk else ""  # the ring's position of key tile lo
    # a walking consumer frees its query half after the tile's last scores MMA (the loader refills it)
    free_q = "_gl_mbarrier.arrive(q_free, count=1)  # the tile's last scores are done: Q's half may be refilled"
    step = _online_softmax_step(k)
    layouts = [
        "s_layout: ttgl.constexpr = ttgl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], "
        f"instr_shape=[16, BLOCK_{r}, 16])",
        "o_layout: ttgl.constexpr = ttgl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], "
        "instr_shape=[16, HEAD, 16])",
        "p_layout: ttgl.constexpr = ttgl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)",
        "row_o: ttgl.constexpr = ttgl.SliceLayout(1, o_layout)",
    ]
    tile_body = [
        f"o_{qa} = start + ttgl.arange(0, HALF, layout=ttgl.SliceLayout(1, s_layout))",
        *([] if walk else [f"s_zero = ttgl.zeros([HALF, BLOCK_{r}], ttgl.float32, s_layout)"]),
        f"m_i = ttgl.full([HALF], {NEG_INF}, ttgl.float32, ttgl.SliceLayout(1, s_layout))",
        "l_i = ttgl.zeros([HALF], ttgl.float32, ttgl.SliceLayout(1, s_layout))",
        "o = ttgl.zeros([HALF, HEAD], ttgl.float32, o_layout)",
        f"p_op = ttgl.zeros([HALF, BLOCK_{r}], {dt}, p_layout)",
        *([] if walk else ["q_tile = q_smem.reshape([HALF, HEAD])"]),
        *([] if claimed else ["_gl_mbarrier.wait(q_ready, it & 1)" if walk else "_gl_mbarrier.wait(q_bar, 0)"]),
        *(["if hi == lo:  # nothing kept: the query half is free at once", "    " + free_q] if walk else []),
        "if hi > lo:  # the first tile: nothing to overlap yet",
        "    t = lo",
        *(["    slot = kv % STAGES", "    _gl_mbarrier.wait(ready.index(slot), (kv // STAGES) & 1)"] if walk
          else ["    _gl_mbarrier.wait(ready.index(0), 0)"]),
        f"    s = _gl_hopper.warpgroup_mma(q_tile, {k_tile if walk else k_tile.replace('(slot)', '(0)')}, s_zero, "
        "use_acc=False)",
        *(["    if hi - lo == 1:", "        " + free_q] if walk else []),
        f"    o_{r} = t * BLOCK_{r} + ttgl.arange(0, BLOCK_{r}, layout=ttgl.SliceLayout(0, s_layout))",
        *["    " + ln for ln in step],
        f"    p_op = ttgl.convert_layout(p.to({dt}), p_layout)",
        "for t in range(lo + 1, hi):",
        f"    i = {kv}t - lo",
        "    slot = i % STAGES",
        "    prev = (i - 1) % STAGES",
        "    _gl_mbarrier.wait(ready.index(slot), (i // STAGES) & 1)",
        f"    s_tok = _gl_hopper.warpgroup_mma(q_tile, {k_tile}, s_zero, use_acc=False, is_async=True)",
        f"    o_tok = _gl_hopper.warpgroup_mma(p_op, v_ring.index(prev).reshape([BLOCK_{r}, HEAD]), o, is_async=True)",
        "    s = _gl_hopper.warpgroup_mma_wait(1, deps=[s_tok])",
        *(["    if t == hi - 1:", "        " + free_q] if walk else []),
        f"    o_{r} = t * BLOCK_{r} + ttgl.arange(0, BLOCK_{r}, layout=ttgl.SliceLayout(0, s_layout))",
        *["    " + ln for ln in step],
        "    # P_{t-1}'s registers stay live until its MMA ends; P_t is packed into them after it",
        "    o, p_op = _gl_hopper.warpgroup_mma_wait(0, deps=[o_tok, p_op])",
        "    _gl_mbarrier.arrive(empty.index(prev), count=1)  # both MMAs on slot `prev` are done",
        f"    p_op = ttgl.convert_layout(p.to({dt}), p_layout)",
        "    o = o * ttgl.expand_dims(ttgl.convert_layout(alpha, row_o), 1)",
        "if hi > lo:",
        *([f"    last = ({kv}hi - 1 - lo) % STAGES",
           f"    o = _gl_hopper.warpgroup_mma(p_op, v_ring.index(last).reshape([BLOCK_{r}, HEAD]), o)",
           "    _gl_mbarrier.arrive(empty.index(last), count=1)  # the next tile's keys may take the slot"]
          if walk else
          [f"    o = _gl_hopper.warpgroup_mma(p_op, v_ring.index((hi - 1 - lo) % STAGES).reshape([BLOCK_{r}, HEAD]), o)"]),
        "o = o / ttgl.expand_dims(ttgl.convert_layout(ttgl.where(l_i == 0.0, 1.0, l_i), row_o), 1)  # nothing kept: 0",
        f"o_{qa} = start + ttgl.arange(0, HALF, layout=row_o)",
        "cols = ttgl.arange(0, HEAD, layout=ttgl.SliceLayout(0, o_layout))",
        f"ttgl.store({o_ptrs}, o.to({out_dt}), mask=ttgl.expand_dims(o_{qa} < n_{qa}, 1))",
    ]
    per_tile = _decode(k) + _kept_range(k) + ["start = first + OFFSET"] + tile_body + ["kv += hi - lo", "it += 1"]
    # the loader's claim, once its query half is in (a claim of `total` or more: none left)
    read_claim = ["_gl_mbarrier.wait(q_ready, it & 1)", "tile = ttgl.max(tile_id.load(CLAIM_LAYOUT), axis=0)"]
    if walk:
        body = layouts + [
            f"s_zero = ttgl.zeros([HALF, BLOCK_{r}], ttgl.float32, s_layout)",
            "q_tile = q_smem.reshape([HALF, HEAD])",
            "kv = 0  # key tiles taken from the ring so far: its slot and phase",
            "it = 0  # tiles done: the query barriers' phase",
        ]
        if claimed:
            body += ["CLAIM_LAYOUT: ttgl.constexpr = ttgl.BlockedLayout([1], [32], [4], [0])", *read_claim,
                     "while tile < total:", *["    " + ln for ln in per_tile + read_claim]]
        else:
            body += ["for tile in range(ttgl.program_id(0), total, ttgl.num_programs(0)):",
                     *["    " + ln for ln in per_tile]]
        head_args = "q_smem, q_ready, q_free, " + ("tile_id, " if claimed else "") + "k_ring, v_ring, ready, empty, qk_scale, "
        tail_consts = "OFFSET: ttgl.constexpr, "
    else:
        body = layouts + tile_body
        head_args = "q_smem, q_bar, k_ring, v_ring, ready, empty, start, lo, hi, qk_scale, "
        tail_consts = ""
    pids = [] if walk else [f"pid_{p}" for p in k.points]
    scalars = _names_in(body, positional + g.tile_args + pids)
    cons = _names_in(body, constexprs(k))
    lines = ["@gluon.jit",
             f"def {g.fn}_consumer({head_args}"
             + "".join(f"{a}, " for a in scalars)
             + "".join(f"{c}: ttgl.constexpr, " for c in cons) + tail_consts + "HALF: ttgl.constexpr, "
             "HEAD: ttgl.constexpr, STAGES: ttgl.constexpr, SCALE_POSITIVE: ttgl.constexpr):"]
    return lines + ["    " + ln for ln in body], scalars, cons


def _loader(k: KernelIR, g: _Grid, positional: list[str]) -> tuple[list[str], list[str]]:
    """`<fn>_loader` (one warp: TMA loads of the query halves, then of each key tile's K and V; on a
    persistent grid tile after tile, claiming them where the grid does) and, on that grid, the
    arguments it takes after the shared memory and barriers."""
    q_load, load_k, _, _, load_v, _ = _parts(k)
    r = g.r
    if not g.walk:
        loader = [
            "for half in ttgl.static_range(2):",
            "    _gl_mbarrier.expect(q_bar.index(half), q_desc.block_type.nbytes)",
            "    _gl_tma_load(q_desc, [q_row, start + half * HALF, 0], q_bar.index(half), q_halves.index(half))",
            "for t in range(lo, hi):",
            "    i = t - lo",
            *["    " + ln for ln in _fill_ring(r, "i")],
        ]
        loader_args = ("q_desc, k_desc, v_desc, q_halves, k_ring, v_ring, q_bar, ready, empty, q_row, "
                       f"k_row, v_row, start, lo, hi, HALF: ttgl.constexpr, BLOCK_{r}: ttgl.constexpr, "
                       "STAGES: ttgl.constexpr")
        return ["@gluon.jit", f"def {g.fn}_loader({loader_args}):"] + ["    " + ln for ln in loader], []
    claimed = g.claimed
    q_free_wait = ["    if it > 0:  # the consumer's last scores of the previous tile are done"
                   + (" (its claim read)" if claimed else ""),
                   "        _gl_mbarrier.wait(q_free.index(half), (it - 1) & 1)"]
    post_claim = ["    tile_ids.index(half).store(ttgl.full([1], tile, ttgl.int32, CLAIM_LAYOUT))"] if claimed else []
    one_tile = [
        *_decode(k), *_kept_range(k),
        f"q_row = {_row(k, q_load.tensor)}",
        f"k_row = {_row(k, load_k.tensor)}",
        f"v_row = {_row(k, load_v.tensor)}",
        "for half in ttgl.static_range(2):",
        *q_free_wait, *post_claim,
        "    _gl_mbarrier.expect(q_ready.index(half), q_desc.block_type.nbytes)",
        "    _gl_tma_load(q_desc, [q_row, first + half * HALF, 0], q_ready.index(half), q_halves.index(half))",
        "for t in range(lo, hi):",
        *["    " + ln for ln in _fill_ring(r, "kv")],
        "    kv += 1",
        "it += 1",
    ]
    loader = ["kv = 0", "it = 0"]
    if claimed:
        # lane 0 increments the launch's counter; the warp shares its ticket
        claim = ["got = ttgl.atomic_add(tile_counter + lane * 0, lane * 0 + 1, mask=lane == 0)",
                 "tile = ttgl.max(ttgl.where(lane == 0, got, 0), axis=0)"]
        loader += [
            "CLAIM_LAYOUT: ttgl.constexpr = ttgl.BlockedLayout([1], [32], [1], [0])",
            "lane = ttgl.arange(0, 32, layout=CLAIM_LAYOUT)",
            *claim,
            "while tile < total:",
            *["    " + ln for ln in one_tile + claim],
            "for half in ttgl.static_range(2):  # none left: the consumers read the claim and stop",
            *q_free_wait, *post_claim,
            "    _gl_mbarrier.arrive(q_ready.index(half), count=1)",
            "# each CTA draws one ticket of total or more, the last of them resets the counter for the next launch",
            "if tile == total + ttgl.num_programs(0) - 1:",
            "    ttgl.store(tile_counter + lane * 0, lane * 0, mask=lane == 0)",
        ]
    else:
        loader += ["for tile in range(ttgl.program_id(0), total, ttgl.num_programs(0)):",
                   *["    " + ln for ln in one_tile]]
    l_scalars = _names_in(loader, positional + g.tile_args)
    l_cons = _names_in(loader, constexprs(k))
    loader_args = ("q_desc, k_desc, v_desc, q_halves, k_ring, v_ring, q_ready, q_free, "
                   + ("tile_ids, tile_counter, " if claimed else "") + "ready, empty, "
                   + "".join(f"{a}, " for a in l_scalars) + "".join(f"{c}: ttgl.constexpr, " for c in l_cons)
                   + "HALF: ttgl.constexpr, STAGES: ttgl.constexpr")
    return ["@gluon.jit", f"def {g.fn}_loader({loader_args}):"] + ["    " + ln for ln in loader], l_scalars + l_cons


def _kernel(k: KernelIR, g: _Grid, positional: list[str], scalars: list[str], cons: list[str],
            l_args: list[str]) -> list[str]:
    """`<fn>_kernel`: the tile (or the grid's tiles), the shared memory and barriers, the fork into two
    consumers (the scalars and constants they take) and the loader (`l_args` on a persistent grid)."""
    q_load, load_k, _, softmax, load_v, _ = _parts(k)
    qa, r, d, dt, walk, claimed, fn = g.qa, g.r, g.d, g.dt, g.walk, g.claimed, g.fn
    scale = f"{softmax.fn[0][1]} * {LOG2E!r}" if softmax.fn else repr(LOG2E)
    consts = constexprs(k)
    top = [f"HALF: ttgl.constexpr = BLOCK_{qa} // 2",
           f"HEAD: ttgl.constexpr = BLOCK_{d}"]
    if walk:
        top += [f"tiles_{qa} = (n_{qa} + BLOCK_{qa} - 1) // BLOCK_{qa}",
                f"total = tiles_{qa}" + "".join(f" * n_{p}" for p in k.points) + "  # the tiles of every point"]
    else:
        top += [(f"pid_{qa} = (n_{qa} + BLOCK_{qa} - 1) // BLOCK_{qa} - 1 - ttgl.program_id(0)  # the heaviest tiles "
                 "first" if k.descending else f"pid_{qa} = ttgl.program_id(0)")]
        top += [f"pid_{p} = ttgl.program_id({j + 1}).to(ttgl.int64)" for j, p in enumerate(k.points)]
        top += [f"start = pid_{qa} * BLOCK_{qa}"]
        top += _kept_range(k)
        top += [f"q_row = {_row(k, q_load.tensor)}", f"k_row = {_row(k, load_k.tensor)}",
                f"v_row = {_row(k, load_v.tensor)}"]
    q_bars = ["q_ready", "q_free"] if walk else ["q_bar"]
    top += [
        f"qk_scale = {scale}  # exp(c s - m) = 2^(c log2(e) s - m'): the softmax in base 2",
        f"q_halves = ttgl.allocate_shared_memory({dt}, [2, 1, HALF, HEAD], q_desc.layout)",
        f"k_ring = ttgl.allocate_shared_memory({dt}, [STAGES, 1, BLOCK_{r}, HEAD], k_desc.layout)",
        f"v_ring = ttgl.allocate_shared_memory({dt}, [STAGES, 1, BLOCK_{r}, HEAD], v_desc.layout)",
        *[f"{b} = ttgl.allocate_shared_memory(ttgl.int64, [2, 1], _gl_mbarrier.MBarrierLayout())" for b in q_bars],
        *(["tile_ids = ttgl.allocate_shared_memory(ttgl.int32, [2, 1], ttgl.SwizzledSharedLayout(1, 1, 1, [0]))  "
           "# each query half's tile, claimed by the loader"] if claimed else []),
        "ready = ttgl.allocate_shared_memory(ttgl.int64, [STAGES, 1], _gl_mbarrier.MBarrierLayout())",
        "empty = ttgl.allocate_shared_memory(ttgl.int64, [STAGES, 1], _gl_mbarrier.MBarrierLayout())",
        "for j in ttgl.static_range(2):",
        *[f"    _gl_mbarrier.init({b}.index(j), count=1)" for b in q_bars],
        "for j in ttgl.static_range(STAGES):",
        "    _gl_mbarrier.init(ready.index(j), count=1)",
        "    _gl_mbarrier.init(empty.index(j), count=2)  # one arrival per consumer warpgroup",
    ]
    if walk:
        common = ", ".join(scalars + cons)

        def consumer(half: int) -> str:
            return (f"    ({fn}_consumer, (q_halves.index({half}), q_ready.index({half}), "
                    f"q_free.index({half}), " + (f"tile_ids.index({half}), " if claimed else "")
                    + f"k_ring, v_ring, ready, empty, qk_scale, {common}, {half} * HALF, HALF, HEAD, STAGES, "
                    "SCALE_POSITIVE)),")

        forks = [consumer(0), consumer(1),
                 f"    ({fn}_loader, (q_desc, k_desc, v_desc, q_halves, k_ring, v_ring, q_ready, q_free, "
                 + ("tile_ids, tile_counter, " if claimed else "")
                 + f"ready, empty, {', '.join(l_args + ['HALF', 'STAGES'])})),"]
    else:
        common = ", ".join(scalars + cons + ["HALF", "HEAD", "STAGES", "SCALE_POSITIVE"])
        forks = [
            f"    ({fn}_consumer, (q_halves.index(0), q_bar.index(0), k_ring, v_ring, ready, empty, start, lo, "
            f"hi, qk_scale, {common})),",
            f"    ({fn}_consumer, (q_halves.index(1), q_bar.index(1), k_ring, v_ring, ready, empty, start + "
            f"HALF, lo, hi, qk_scale, {common})),",
            f"    ({fn}_loader, (q_desc, k_desc, v_desc, q_halves, k_ring, v_ring, q_bar, ready, empty, q_row, "
            f"k_row, v_row, start, lo, hi, HALF, BLOCK_{r}, STAGES)),",
        ]
    top += ["ttgl.warp_specialize([", *forks,
            "], [4, 1], [240, 24])  # registers: a consumer's accumulators and operands; the loader's few"]
    lines = ["@gluon.jit", f"def {fn}_kernel(", "    q_desc,", "    k_desc,", "    v_desc,"]
    lines += ["    tile_counter,", "    claim_group,"] if claimed else []
    lines += [f"    {a}," for a in positional]
    lines += [f"    {c}: ttgl.constexpr," for c in consts]
    lines += ["    STAGES: ttgl.constexpr,", "    SCALE_POSITIVE: ttgl.constexpr,", "):"]
    return lines + ["    " + ln for ln in top]


def _render_kernel(k: KernelIR, positional: list[str], walk: bool) -> list[str]:
    g = _grid(k, walk)
    consumer, scalars, cons = _consumer(k, g, positional)
    loader, l_args = _loader(k, g, positional)
    return consumer + ["", ""] + loader + ["", ""] + _kernel(k, g, positional, scalars, cons, l_args)


def render_host(k: KernelIR) -> list[str]:
    """`specialized_launch_args` / `specialized_launch`: descriptors of Q, K, V, then the Triton kernel's arguments."""
    return _render_host(k, walk=False)


def render_persistent_host(k: KernelIR) -> list[str]:
    """`persistent_launch_args` / `persistent_launch` (the grid: one axis, at most one CTA an SM; the
    launcher sizes it); with `claim_tiles` the tile counter follows the descriptors."""
    return _render_host(k, walk=True)


def _render_host(k: KernelIR, walk: bool) -> list[str]:
    q_load, load_k, _, softmax, load_v, _ = _parts(k)
    qa, r = k.grid[0], k.reduction
    d = next(a for a in k.value(q_load.out).axes if a != qa)
    dt = GL_DTYPES[k.value(softmax.out).dtype]
    prefix, fn = ("persistent", f"{k.name}_persistent") if walk else ("specialized", f"{k.name}_specialized")
    scale_positive = f"c[{softmax.fn[0][1]!r}] > 0" if softmax.fn else "True"
    views = [(q_load.tensor, qa, f'kw["BLOCK_{qa}"] // 2'), (load_k.tensor, r, f'kw["BLOCK_{r}"]'),
             (load_v.tensor, r, f'kw["BLOCK_{r}"]')]
    claimed = walk and k.claim_tiles
    lines = [
        f"def {prefix}_launch_args(cfg, t, n, c):",
        '    """The warp-specialised kernel\'s arguments: TMA descriptors of Q, K and V as [points, rows,',
        '    head] views (zero-filled past each head\'s rows), then the Triton kernel\'s arguments."""',
        *(["    from tilesched.backends.cuda.workspace import arrival_counters", ""] if claimed else []),
        "    args, kw = launch_args(cfg, t, n, c)",
    ]
    if claimed and k.claim_span:
        points = " * ".join(f"n[{p!r}]" for p in k.points)
        streamed = " + ".join(f"t[{T!r}].numel() * t[{T!r}].element_size()" for T in (load_k.tensor, load_v.tensor))
        lines += [f"    points = {points}",
                  f"    streamed = {streamed}  # the loop's operands over every point",
                  f"    span = {k.claim_span} * points // max(streamed, 1)  # points whose operands fit the span",
                  f"    tiles = points * -(-n[{qa!r}] // kw[\"BLOCK_{qa}\"])",
                  f"    few = tiles <= {k.claim_rounds} * cfg.grid[0]  # the CTAs take few tiles each",
                  "    # tiles claimed heaviest first across groups of points (point by point where each CTA takes many)",
                  "    group = max(1, min(points, span)) if few else 1"]
    elif claimed:
        lines += ["    group = 1  # tiles claimed point by point"]
    lines += ["    descriptors = ["]
    lines += [f"        _tma_view(t[{T!r}], n[{rows!r}], n[{d!r}], {block}, {T!r})," for T, rows, block in views]
    if claimed:
        lines += ["        arrival_counters(cfg.device, 1),  # the CTAs' tile counter: zero at launch, left zero by the kernel",
                  "        group,"]
    lines += [
        "    ]",
        f"    consts = {{name: kw[name] for name in {constexprs(k)!r}}}",
        f"    positive = {scale_positive}  # the softmax's scale: a compile-time sign",
        "    return (*descriptors, *args), dict(num_warps=cfg.num_warps, STAGES=cfg.num_stages, SCALE_POSITIVE=positive,",
        "                                       **consts)",
    ]
    if not walk:  # (the persistent kernel's host shares it)
        lines += [
            "",
            "",
            "def _tma_view(x, rows, head, block, name):",
            "    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor as GluonDescriptor",
            "",
            "    try:  # the point axes flattened; a view, never a copy",
            "        view = x.view(-1, rows, head) if x.dim() > 2 else x.view(1, rows, head)",
            "    except RuntimeError:",
            "        raise ValueError(f\"the warp-specialised schedule reads {name} as [points, rows, head] by TMA: its point \"",
            "                         \"axes must merge into one (pass it contiguous)\") from None",
            f"    layout = ttgl.NVMMASharedLayout.get_default_for([1, block, head], {dt})",
            "    return GluonDescriptor.from_tensor(view, [1, block, head], layout)",
        ]
    lines += [
        "",
        "",
        f"def {prefix}_launch(cfg, t, n, c):",
        f"    args, kwargs = {prefix}_launch_args(cfg, t, n, c)",
        f"    {fn}_kernel[cfg.grid](*args, **kwargs)",
    ]
    return lines
