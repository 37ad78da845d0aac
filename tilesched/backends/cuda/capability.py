"""Whether the CUDA backend can generate a spec: a kernel through the lowering
(tilesched/passes/gpu.py), or an overlap consumer (one all_gather or reduce_scatter around a
plain GEMM). Every stage is rendered or refused by name; nothing is dropped."""

from __future__ import annotations

from tilesched.errors import SpecError, spec_error
from tilesched.ir.nodes import Program

OVERLAP_COLLECTIVES = ("all_gather", "reduce_scatter")


def _refuse(stage, what: str) -> SpecError:
    return spec_error(("stages", stage.index), f"cuda cannot generate {what} yet (stage {stage.name!r})")


def match_overlap(program: Program) -> None:
    """An overlap spec: one chunked all_gather (into the dot's first operand) or reduce_scatter
    (of the stored product), around load -> dot -> store with no epilogue (the consumers
    render none)."""
    from tilesched.passes.gpu import lower_kernel

    comm = [s for s in program.stages if s.kind == "comm"]
    if len(comm) > 1:
        raise _refuse(comm[1], "a second comm stage")
    stage = comm[0]
    if stage.op not in OVERLAP_COLLECTIVES:
        raise _refuse(stage, f"comm stage {stage.op} (overlap: {', '.join(OVERLAP_COLLECTIVES)})")
    rest = program.model_copy(update={"stages": tuple(s for s in program.stages if s is not stage),
                                      "order": tuple(n for n in program.order if n != stage.name),
                                      "tile_order": program.tile_order.model_copy(update={"kind": "row_major"})})
    k = lower_kernel(rest)
    extra = [i for i in k.post if i.op != "store"] + [i for i in k.loop if i.op not in ("load", "dot")]
    if extra:
        raise _refuse(program.stage(extra[0].stage), "an operand prologue or an epilogue in an overlap consumer")
    dot = next(i for i in k.loop if i.op == "dot")
    loads = {i.out: i.tensor for i in k.loop if i.op == "load"}
    if stage.op == "all_gather" and loads.get(dot.args[0]) != stage.writes[0]:
        raise _refuse(stage, "an all_gather that does not feed the dot's first operand")
    stores = [i.tensor for i in k.post if i.op == "store"]
    if stage.op == "reduce_scatter" and stores != [stage.reads[0]]:
        raise _refuse(stage, "a reduce_scatter of anything but the stored product")


def generation_problem(program: Program) -> SpecError | None:
    """Why the CUDA backend cannot generate `program` (a SpecError naming the stage), or None."""
    from tilesched.passes.gpu import lower_kernel

    try:
        if any(s.kind == "comm" for s in program.stages):
            match_overlap(program)
        else:
            lower_kernel(program)
    except SpecError as exc:
        return exc
    return None
