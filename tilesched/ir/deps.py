"""Derive stage dependencies from reads and writes, and order stages topologically."""

from __future__ import annotations

from collections.abc import Sequence

from tilesched.ir.nodes import Dep, StageIR


def derive_deps(stages: Sequence[StageIR], after: dict[str, Sequence[str]]) -> tuple[Dep, ...]:
    """Dependencies in the spec's stage order.

    A read depends on the latest earlier writer of the tensor; a read with no earlier
    writer depends on the first later writer (the spec listed the producer after its
    consumer, which is allowed when the graph stays acyclic). Writes depend on earlier
    readers (war) and writers (waw) of the same tensor. `after` adds explicit edges.
    """
    deps: list[Dep] = []
    last_writer: dict[str, str] = {}
    readers: dict[str, list[str]] = {}

    def add(src: str, dst: str, tensor: str | None, kind: str) -> None:
        if src != dst and not any(d.src == src and d.dst == dst and d.tensor == tensor for d in deps):
            deps.append(Dep(src=src, dst=dst, tensor=tensor, kind=kind))

    for i, stage in enumerate(stages):
        for t in stage.reads:
            if t in last_writer:
                add(last_writer[t], stage.name, t, "raw")
                readers.setdefault(t, []).append(stage.name)
                continue
            later = next((s.name for s in stages[i + 1:] if t in s.writes), None)
            if later is not None and t not in stage.writes:
                add(later, stage.name, t, "raw")  # forward reference: not a reader of the old value
            else:
                readers.setdefault(t, []).append(stage.name)
        for t in stage.writes:
            for r in readers.pop(t, []):
                add(r, stage.name, t, "war")
            if t in last_writer:
                add(last_writer[t], stage.name, t, "waw")
            last_writer[t] = stage.name
        for a in after.get(stage.name, ()):
            add(a, stage.name, None, "order")
    return tuple(deps)


def topological_order(names: Sequence[str], deps: Sequence[Dep]) -> tuple[tuple[str, ...], list[str] | None]:
    """(order, cycle): a stable topological order, or the stages of one cycle if any."""
    preds = {n: {d.src for d in deps if d.dst == n and d.src in names} for n in names}
    done: list[str] = []
    remaining = list(names)
    while remaining:
        ready = next((n for n in remaining if preds[n] <= set(done)), None)
        if ready is None:
            return tuple(done), _find_cycle(remaining, preds)
        done.append(ready)
        remaining.remove(ready)
    return tuple(done), None


def _find_cycle(nodes: list[str], preds: dict[str, set[str]]) -> list[str]:
    # walk predecessors inside the stuck set until a node repeats
    stuck = set(nodes)
    path = [nodes[0]]
    while True:
        nxt = sorted(preds[path[-1]] & stuck, key=nodes.index)[0]
        if nxt in path:
            cycle = path[path.index(nxt):]
            return list(reversed(cycle))
        path.append(nxt)
