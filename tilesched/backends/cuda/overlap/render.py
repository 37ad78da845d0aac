"""The overlap consumers: the spec's GEMM through the same lowering as every kernel
(tilesched/passes/gpu.py and triton_rules.py), plus what the overlap schedule inserts.

The spec without its comm stage is lowered to a kernel IR; this module forces TMA on the dot's
operand loads and the output store (a persistent TMA GEMM is what the consumers are), renders
the reduction loop and the store with the shared per-op rules, and wraps them in:
- the plan's tile order: a persistent loop over the chunks in the order the plan gives
  (`order_ptr`), GROUP_M row tiles sweeping the columns inside a chunk;
- all-gather: before a remote chunk's first tile, a wait on its flag (the owner's copy engine
  raises it after pushing the rows); the rank's own chunks are read straight from its shard;
- reduce-scatter: the epilogue pushes each partial tile of a peer's chunk into the owner's
  receive slot and counts it on the owner's signal (release); the rank's own chunks wait for
  every peer's count, add the received tiles and store the reduced tile.
The kernel signature is the one `launch.py` passes (one source for every rank of a world).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from tilesched.backends.cuda.render import load_source
from tilesched.backends.cuda.triton_emit import HELPERS, _emit, _post
from tilesched.backends.cuda.triton_rules import Ctx
from tilesched.ir.nodes import Program
from tilesched.passes.gpu import lower_kernel
from tilesched.passes.kernel import KernelIR
from tilesched.schedules.overlap import OverlapPlan

CONFIGS = Path(__file__).resolve().parents[4] / "configs"
SPEC_OF = {"all_gather": "ag_gemm", "reduce_scatter": "gemm_rs"}

SIGNALS = '''
@triton.jit
def wait_signal(flag_ptr, target, status_ptr, rank, chunk, max_spin):
    # Spin until the flag reaches `target` (acquire, system scope: the writer may be a
    # peer GPU or a copy engine). After `max_spin` polls, record (chunk + 1, rank, seen)
    # in the status buffer and go on, so the host reports instead of hanging.
    seen = tl.atomic_add(flag_ptr, 0, sem="acquire", scope="sys")
    spins = 0
    while (seen < target) & (spins < max_spin):
        seen = tl.atomic_add(flag_ptr, 0, sem="acquire", scope="sys")
        spins += 1
    if seen < target:
        tl.atomic_cas(status_ptr, 0, chunk + 1, sem="relaxed", scope="sys")
        tl.store(status_ptr + 1, rank)
        tl.store(status_ptr + 2, seen)
        tl.store(status_ptr + 3, target)
    tl.debug_barrier()  # no thread of the program reads the chunk before the flag was seen


@triton.jit
def tile_of(t, order_ptr, TILES_M, TILES_N, GROUP_M: tl.constexpr):
    # Tile t of the schedule: the chunk order is the plan's (`order`); inside a chunk,
    # GROUP_M row tiles sweep the columns together so B stays in L2.
    per_chunk = TILES_M * TILES_N
    chunk = tl.load(order_ptr + t // per_chunk)
    i = t % per_chunk
    width = GROUP_M * TILES_N
    first_m = (i // width) * GROUP_M
    rows = tl.minimum(TILES_M - first_m, GROUP_M)
    pm = first_m + (i % width) % rows
    pn = (i % width) // rows
    return chunk, pm, pn
'''


def spec_program(program: Program | str, collective: str) -> Program:
    """The consumer's spec: a Program, or the example spec of the collective (configs/)."""
    if isinstance(program, Program):
        return program
    from tilesched import load_program

    return load_program(CONFIGS / f"{SPEC_OF[collective]}.yaml")


@lru_cache(maxsize=16)
def consumer_ir(program: Program) -> KernelIR:
    """The spec's GEMM without its comm stage, lowered like every kernel; TMA on the operand
    loads and the store, a subtiled epilogue switch, no tile order of its own (the plan's)."""
    comm = next(s for s in program.stages if s.kind == "comm")
    rest = program.model_copy(update={
        "stages": tuple(s for s in program.stages if s is not comm),
        "order": tuple(n for n in program.order if n != comm.name),
        "tile_order": program.tile_order.model_copy(update={"kind": "row_major", "axis": None}),
        "options": tuple((k, v) for k, v in program.options if k in ("num_warps", "num_stages")),
    })
    k = lower_kernel(rest)
    if len(k.grid) != 2 or k.reduction is None or len(k.carried) != 1:
        raise ValueError(f"{program.name}: an overlap consumer is one [M, N] GEMM with a reduction loop")
    accesses = tuple(a.model_copy(update={"tma": True}) for a in k.accesses)
    return k.model_copy(update={"accesses": accesses, "subtile": "EPILOGUE_SUBTILE", "persistent": None,
                                "split_k": None})


def _names(k: KernelIR):
    m, n = k.grid
    dot = next(i for i in k.loop if i.op == "dot")
    loads = {i.out: i.tensor for i in k.loop if i.op == "load"}
    a_tensor, b_tensor = loads[dot.args[0]], loads[dot.args[1]]
    store = next(i for i in k.post if i.op == "store")
    return m, n, k.reduction, a_tensor, b_tensor, store.tensor, k.carried[0]


def _ctx(k: KernelIR, start_m: str) -> Ctx:
    m, n, r, *_ = _names(k)
    ctx = Ctx(k=k)
    ctx.block = {m: f"BLOCK_{m}", n: f"BLOCK_{n}", r: f"BLOCK_{r}"}
    ctx.offs = {m: f"o_{m}", n: f"o_{n}", r: f"o_{r}"}
    ctx.start = {m: start_m, n: f"pid_{n} * BLOCK_{n}", r: f"it_{r} * BLOCK_{r}"}
    return ctx


def _mainloop(k: KernelIR, start_m: str) -> list[str]:
    m, n, r, *_ = _names(k)
    lines = _emit(_ctx(k, start_m), tuple(i for i in k.pre))
    lines.append(f"for it_{r} in tl.range(0, k_tiles):")
    lines += ["    " + ln for ln in _emit(_ctx(k, start_m), k.loop)]
    return lines


def _header(plan: OverlapPlan, label: str, what: str) -> list[str]:
    return [f"# Generated by tilesched from {label} ({plan.collective}, world {plan.world}, "
            f"{plan.chunks_per_rank} chunks/rank,", f"# engine {plan.engine}). Do not edit: re-render from the spec.",
            what, "import triton", "import triton.language as tl", "", HELPERS.strip("\n"), "", SIGNALS.rstrip("\n"),
            "", "", "# epoch, rank and max_spin are not specialised: one binary serves every call and rank",
            "# (a recompile at epoch 2 or 16 would stall this rank while its peers spin on it)",
            '@triton.jit(do_not_specialize=["epoch", "rank", "max_spin"])']


def _consts(k: KernelIR, extra: str = "") -> list[str]:
    m, n, r, *_ = _names(k)
    return [f"    BLOCK_{m}: tl.constexpr, BLOCK_{n}: tl.constexpr, BLOCK_{r}: tl.constexpr, GROUP_M: tl.constexpr,",
            f"    NUM_SMS: tl.constexpr, EPILOGUE_SUBTILE: tl.constexpr,{extra}", "):"]


def _ag(k: KernelIR, plan: OverlapPlan, label: str) -> str:
    m, n, r, a, b, c, acc = _names(k)
    lines = _header(plan, label, "# Consumer of an all-gather: the spec's GEMM, persistent over TMA, walking the tiles "
                                 "in the\n# plan's chunk order (own chunks first, read from the local shard); a remote "
                                 "chunk's first\n# tile waits on the chunk's flag, raised by the owner's copy engine "
                                 "after its push.")
    lines += ["def ag_gemm_kernel(", "    a_local_desc, a_full_desc, b_desc, c_desc, flags_ptr, order_ptr, status_ptr,",
              f"    epoch, rank, max_spin, n_{n}, n_{r}, CHUNK_ROWS, CHUNKS, N_TILES,"] + _consts(k)
    body = [f"TILES_M = CHUNK_ROWS // BLOCK_{m}", f"TILES_N = (n_{n} + BLOCK_{n} - 1) // BLOCK_{n}",
            f"k_tiles = (n_{r} + BLOCK_{r} - 1) // BLOCK_{r}", f"d_{b}_load = b_desc", f"d_{c}_store = c_desc",
            "for t in tl.range(tl.program_id(0), N_TILES, NUM_SMS):"]
    tile = [f"chunk, pm, pid_{n} = tile_of(t, order_ptr, TILES_M, TILES_N, GROUP_M)",
            f"row = chunk * CHUNK_ROWS + pm * BLOCK_{m}",
            "if chunk // CHUNKS == rank:",
            f"    d_{a}_load = a_local_desc", "    a_row = row - rank * CHUNKS * CHUNK_ROWS",
            "else:",
            "    wait_signal(flags_ptr + chunk, epoch, status_ptr, rank, chunk, max_spin)",
            f"    d_{a}_load = a_full_desc", "    a_row = row"]
    tile += _mainloop(k, "a_row")
    tile += _post(k, _ctx(k, "row"))
    body += ["    " + ln for ln in tile]
    lines += ["    " + ln for ln in body]
    return "\n".join(lines) + "\n"


def _rs(k: KernelIR, plan: OverlapPlan, label: str) -> str:
    m, n, r, a, b, c, acc = _names(k)
    world = plan.world
    lines = _header(plan, label, "# GEMM + reduce-scatter: the spec's GEMM, persistent over TMA, tiles in the plan's "
                                 "chunk order: the\n# peers' chunks first, each partial tile pushed into the owner's "
                                 "receive slot [rank] and counted\n# on the owner's signal (release); own chunks "
                                 "last, their epilogue waits for every peer's count,\n# adds the received partial "
                                 "tiles and stores the reduced tile.")
    peers = "".join(f"    recv{d}, sig{d},\n" for d in range(world)).rstrip("\n")
    lines += ["def gemm_rs_kernel(", "    a_desc, b_desc, out_desc, order_ptr, recv_ptr, sig_ptr, status_ptr,", peers,
              f"    epoch, rank, max_spin, n_{n}, n_{r}, CHUNK_ROWS, CHUNKS, N_TILES,"] + _consts(k, " WORLD: tl.constexpr,")
    body = ["# receive buffers (`recv_ptr` this rank's, `recv<d>` rank d's, this call's parity) are",
            "# [WORLD, ROWS_PER_RANK, N] row-major on every rank; signals are [WORLD * CHUNKS] counters",
            f"TILES_M = CHUNK_ROWS // BLOCK_{m}", f"TILES_N = (n_{n} + BLOCK_{n} - 1) // BLOCK_{n}",
            "ROWS_PER_RANK = CHUNK_ROWS * CHUNKS", f"k_tiles = (n_{r} + BLOCK_{r} - 1) // BLOCK_{r}",
            f"d_{a}_load = a_desc", f"d_{b}_load = b_desc", f"d_{c}_store = out_desc",
            "for t in tl.range(tl.program_id(0), N_TILES, NUM_SMS):"]
    tile = [f"chunk, pm, pid_{n} = tile_of(t, order_ptr, TILES_M, TILES_N, GROUP_M)",
            "owner = chunk // CHUNKS", "local = chunk % CHUNKS", f"col = pid_{n} * BLOCK_{n}"]
    tile += _mainloop(k, f"chunk * CHUNK_ROWS + pm * BLOCK_{m}")
    v = f"v_{acc}"
    tile += [f"lrow = local * CHUNK_ROWS + pm * BLOCK_{m}", f"rows = lrow + tl.arange(0, BLOCK_{m})",
             f"rn = col + tl.arange(0, BLOCK_{n})", f"offs = rows[:, None] * n_{n} + rn[None, :]",
             f"in_n = rn[None, :] < n_{n}",
             "if owner == rank:",
             "    target = epoch * TILES_M * TILES_N",
             "    for src in tl.static_range(WORLD):",
             "        if src != rank:",
             "            wait_signal(sig_ptr + src * CHUNKS + local, target, status_ptr, rank, chunk, max_spin)",
             f"            peer = tl.load(recv_ptr + src * ROWS_PER_RANK * n_{n} + offs, mask=in_n, other=0.0)",
             f"            {v} += peer.to(tl.float32)"]
    tile += ["    " + ln for ln in _post(k, _ctx(k, "lrow"))]
    tile += ["else:", f"    val = {v}.to(recv0.dtype.element_ty)"]
    for d in range(world):
        tile += [f"    if owner == {d}:",
                 f"        tl.store(recv{d} + rank * ROWS_PER_RANK * n_{n} + offs, val, mask=in_n)",
                 "        tl.debug_barrier()  # every thread's stores precede the release below",
                 f'        tl.atomic_add(sig{d} + rank * CHUNKS + local, 1, sem="release", scope="sys")']
    body += ["    " + ln for ln in tile]
    lines += ["    " + ln for ln in body]
    return "\n".join(lines) + "\n"


def render(plan: OverlapPlan, program: Program | str) -> str:
    """Kernel source for `plan` (identical for every rank of one world: the rank and the chunk
    order are kernel arguments). `program`: the spec, or a label for the collective's example spec."""
    prog = spec_program(program, plan.collective)
    k = consumer_ir(prog)
    label = program if isinstance(program, str) else prog.name
    text = (_ag if plan.collective == "all_gather" else _rs)(k, plan, label)
    return "\n".join(ln.rstrip() for ln in text.splitlines()) + "\n"


# the GEMM backend's loader: a content-addressed file (Triton reads kernel source through
# `inspect`), one module per interpreter mode
load = load_source
