"""Whether the CUDA backend can generate a spec: the GEMM kernel (plan.kernel_plan), or an
overlap consumer (one all_gather or reduce_scatter around a plain GEMM). Every stage is
rendered or refused by name; nothing is dropped."""

from __future__ import annotations

from tilesched.errors import SpecError, spec_error
from tilesched.ir.nodes import Program

OVERLAP_COLLECTIVES = ("all_gather", "reduce_scatter")


def match_overlap(program: Program) -> None:
    """An overlap spec: one chunked all_gather (into the dot's A operand) or reduce_scatter (of the
    stored product), around load -> dot -> store with no epilogue (the consumers render none)."""
    from tilesched.backends.cuda.plan import match_dataflow

    comm = [s for s in program.stages if s.kind == "comm"]
    if len(comm) > 1:
        raise spec_error(("stages", comm[1].index), f"cuda cannot generate a second comm stage yet "
                                                    f"(stage {comm[1].name!r})")
    stage = comm[0]
    if stage.op not in OVERLAP_COLLECTIVES:
        raise spec_error(("stages", stage.index), f"cuda cannot generate comm stage {stage.op} yet "
                                                  f"(overlap: {', '.join(OVERLAP_COLLECTIVES)}; stage {stage.name!r})")
    rest = tuple(n for n in program.order if n != stage.name)
    flow = match_dataflow(program.model_copy(update={"stages": tuple(s for s in program.stages if s is not stage),
                                                    "order": rest}))
    if flow.epilogue:
        s = flow.epilogue[0]
        raise spec_error(("stages", s.index), f"cuda cannot generate an epilogue in an overlap consumer yet "
                                              f"(stage {s.name!r})")
    if stage.op == "all_gather" and stage.writes[0] != flow.a:
        raise spec_error(("stages", stage.index), "cuda cannot generate an all_gather that does not feed the dot's "
                                                  f"first operand yet (stage {stage.name!r})")
    if stage.op == "reduce_scatter" and stage.reads[0] != flow.store.writes[0]:
        raise spec_error(("stages", stage.index), "cuda cannot generate a reduce_scatter of anything but the "
                                                  f"stored product yet (stage {stage.name!r})")


def generation_problem(program: Program) -> SpecError | None:
    """Why the CUDA backend cannot generate `program` (a SpecError naming the stage), or None."""
    from tilesched.backends.cuda.plan import kernel_plan

    try:
        if any(s.kind == "comm" for s in program.stages):
            match_overlap(program)
        else:
            kernel_plan(program)
    except SpecError as exc:
        return exc
    return None
