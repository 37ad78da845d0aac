"""Warp specialisation: an online-softmax loop (attention) as FlashAttention-3 runs it on Hopper.

Triton's lowering of the loop keeps every warp on every job: each warp loads, multiplies and
exponentiates, and the compiler separates the warpgroups' shared-memory traffic with CTA-wide
barriers, so one warpgroup's softmax cannot run while the tensor cores work for the other. The
schedule this pass marks gives the jobs to warps (rendered with explicit layouts: Gluon):
  - a loader warp brings the query tile and then each key tile's K and V by TMA into a ring of
    shared-memory slots, each with a `ready` barrier, and refills a slot once both consumers
    have said (`empty` barrier) that their MMAs on it are done;
  - two consumer warpgroups take 64 query rows each; per key tile a consumer issues the scores'
    MMA (Q K_t^T) and the previous tile's context MMA (P_{t-1} V_{t-1}, P in wgmma's register
    operand), and runs the softmax of tile t while the second is in flight;
  - tiles the spec's mask keeps nowhere are not visited; the mask (and the keys' ragged end) is
    evaluated only on the tiles it does not keep whole.
Measured before this lowering existed, hand-written (bench/experiments/attention_gluon.py,
bench/results/attention-gluon-*.json): 0.97-1.02x cuDNN at S >= 4096, D = 128.

The pass checks that the kernel has that shape, else it refuses at the stage that breaks it:
a reduction loop of exactly load K, scores = dot(q, K), online softmax of the scores (at most a
scale folded in), load V, context += dot(p, V); before it the query tile's load and the
accumulators' zeros; after it the normalisation and the store; one grid axis (the queries), the
head dimension whole, 16-bit floats, row-major tensors read by pointer (the kernel makes its own
descriptors). Whether a point takes the schedule is the option's parameter; the launcher checks
the point (`legal_point`).
"""

from __future__ import annotations

from tilesched.ir.looptree import LoopTree
from tilesched.ir.nodes import Program
from tilesched.passes.kernel import Instr, KernelIR, producer
from tilesched.passes.optional import mark

OPTION = "warp_specialize"
DTYPES = ("bf16", "fp16")
HEAD_DIMS = (64, 128)  # the head dimension: wgmma's N for the context, K for the scores
ROWS = 128  # query rows per CTA: two consumer warpgroups of 64
KEY_TILES = (64, 128)
SMEM_BYTES = 227 * 1024  # Hopper's shared memory per CTA


def _ops(instrs: tuple[Instr, ...]) -> list[str]:
    return [i.op for i in instrs]


def why_not(k: KernelIR) -> tuple[str, str] | None:
    """(stage, what is missing) where the kernel lacks the schedule's shape, else None."""
    first = (k.loop or k.pre or k.post)[0].stage if (k.loop or k.pre or k.post) else ""
    if k.reduction is None or _ops(k.loop) != ["load", "dot", "online_softmax", "load", "dot"]:
        stage = next((i.stage for i in k.loop if i.op not in ("load", "dot", "online_softmax")), first)
        return stage, "a reduction loop of: load K, dot(q, K), online softmax, load V, dot(p, V) accumulated"
    load_k, scores, softmax, load_v, context = k.loop
    r = k.reduction
    if len(k.grid) != 1 or k.split_k is not None or k.materialize is not None:
        return scores.stage, "one grid axis (the queries), without split-K or materialising"
    qa = k.grid[0]
    q = next((a for a in scores.args if a != load_k.out), None)
    q_load = producer(k, q) if q is not None else None
    if q_load is None or q_load.op != "load" or q_load not in k.pre or scores.accumulate:
        return scores.stage, "scores = dot(the query tile loaded before the loop, K's tile)"
    head = [a for a in k.value(q).axes if a != qa]
    if len(head) != 1 or k.value(q).axes != (qa, head[0]) or k.axis(head[0]).role != "whole":
        return scores.stage, f"a query tile over ({qa}, the head dimension, whole)"
    d = head[0]
    if k.value(load_k.out).axes != (r, d) or k.value(scores.out).axes != (qa, r):
        return scores.stage, f"scores over ({qa}, {r}) from K's tile over ({r}, {d})"
    if softmax.args[0] != scores.out or softmax.axis != r or softmax.targets != (context.out,):
        return softmax.stage, f"an online softmax of the scores along {r} that rescales the context"
    if any(fn != "scale" for fn, _ in softmax.fn) or len(softmax.fn) > 1:
        return softmax.stage, "an online softmax with at most a scale folded in"
    if (context.args[:2] != (softmax.out, load_v.out) or not context.accumulate
            or k.value(load_v.out).axes != (r, d) or k.value(context.out).axes != (qa, d)):
        return context.stage, f"context += dot(the probabilities, V's tile over ({r}, {d}))"
    zeros = {i.out for i in k.pre if i.op == "zeros"}
    if set(k.pre) - {q_load} - {i for i in k.pre if i.op == "zeros"} or not {*softmax.args[1:], context.out} <= zeros:
        stage = next((i.stage for i in k.pre if i.op not in ("zeros", "load")), q_load.stage)
        return stage, "nothing before the loop but the query tile's load and the accumulators' zeros"
    if _ops(k.post) != ["normalize", "store"] or k.post[1].args != (k.post[0].out,):
        stage = next((i.stage for i in k.post if i.op not in ("normalize", "store")), context.stage)
        return stage, "an epilogue that normalises the context and stores it"
    for i in (q_load, load_k, load_v, k.post[1]):
        acc = k.access(i.tensor, "store" if i.op == "store" else "load")
        if acc.tma or acc.pack or acc.layout != "row_major":
            return i.stage, f"{i.tensor} read or written by pointer, row-major (the kernel makes its own descriptors)"
        if i.op == "load" and (acc.dtype not in DTYPES or any(ax not in k.points for ax, _ in acc.group)):
            return i.stage, f"{i.tensor} as {' or '.join(DTYPES)}, grouped along point axes only"
    if len({k.access(i.tensor, "load").dtype for i in (q_load, load_k, load_v)} | {k.value(softmax.out).dtype}) != 1:
        return context.stage, "one 16-bit type for Q, K, V and the probabilities"
    return None


def warp_specialize(program: Program, tree: LoopTree, k: KernelIR) -> KernelIR:
    """Mark the kernel for the schedule where the spec asks for it (tilesched/passes/optional.py)."""
    return mark(program, k, OPTION, why_not)


def legal_point(block: dict[str, int], warps: int, stages: int, head: int, k: KernelIR) -> str | None:
    """Why a point does not fit the schedule (None when it does): 128 query rows, 64 or 128 keys a
    tile, a head dimension of 64 or 128, 4 warps a consumer warpgroup, at least two ring slots and
    the query tile plus the ring within shared memory."""
    qa, r = k.grid[0], k.reduction
    if block[qa] != ROWS:
        return f"BLOCK_{qa} = {ROWS} (two consumer warpgroups of 64 rows; got {block[qa]})"
    if block[r] not in KEY_TILES:
        return f"BLOCK_{r} in {KEY_TILES} (got {block[r]})"
    if head not in HEAD_DIMS:
        return f"a head dimension in {HEAD_DIMS} (got {head})"
    if warps != 4:
        return f"NUM_WARPS = 4, the warps of a consumer warpgroup (got {warps})"
    smem = 2 * head * (ROWS + 2 * stages * block[r])
    if stages < 2 or smem > SMEM_BYTES - 1024:
        return f"2 or more stages whose K and V tiles fit shared memory with Q's ({stages} stages: {smem} bytes)"
    return None
