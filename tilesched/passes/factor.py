"""Factor: a dot operand's affine dequantisation leaves the sum over the contracted axis.

A dot in the reduction loop whose operand over (c, q) is built by an elementwise chain affine in
one value w (casts, then adds, subtracts, multiplies or divides by values constant along c within
a tile: per-group scales and zero points, per-column vectors, constants) sums

    x[p, c] (a[q] w[c, q] + b[q])  =  a[q] (x @ w)[p, q] + b[q] (sum_c x[p, c])

On CUDA cores (a row tile below 16: decode) the right side costs one multiply-add per weight
instead of the chain's operations plus one; the coefficients are applied once per tile and column.
The pass fuses the chain and the dot into one `affine_dot`; the target renders the factored form
where the row tile is small and every grouped coefficient is one row per tile (group % block), and
the chain then the dot otherwise. The factored form skips the chain's rounding of the operand to
its dtype (the products are exact in fp32): results differ from the spec's by less than that
rounding.
"""

from __future__ import annotations

from functools import lru_cache

from tilesched.errors import SpecError
from tilesched.ir.bind import Binding
from tilesched.ir.expr import evaluate
from tilesched.ir.looptree import LoopTree
from tilesched.ir.nodes import Program
from tilesched.passes.kernel import Instr, KernelIR, one_row_axis, producer

AFFINE = ("cast", "add", "bias", "sub", "mul", "scale", "div")


def constant_along(k: KernelIR, name: str, c: str, q: str) -> bool:
    """`name` takes one value per column q across a tile of c: it lacks c, or it is a load of a
    tensor grouped along c that the target reads as one row per tile when the group allows."""
    v = k.value(name)
    if not set(v.axes) <= {c, q}:
        return False
    if c not in v.axes:
        return True
    load = producer(k, name)
    if load is None or load.op != "load":
        return False
    acc = k.access(load.tensor, "load")
    return acc.dtype != "fp4e2m1" and one_row_axis(k, acc) == c


def _fused(k: KernelIR, dot: Instr) -> tuple[Instr, Instr] | None:
    """(the affine_dot replacing `dot`, the chain it absorbs), or None where `dot` does not qualify."""
    out = k.value(dot.out)
    if len(out.axes) != 2 or len(dot.args) != 2 or not k.axis(out.axes[0]).small:
        return None  # tensor cores only: the chain feeds tl.dot as it is
    p, q = out.axes
    a, b = (k.value(n) for n in dot.args)
    if p not in a.axes:
        a, b = b, a
    if p in b.axes or q not in b.axes or a.name == b.name:
        return None
    (c,) = set(a.axes) - {p}
    chain = next((i for i in k.loop if i.out == b.name), None)
    if chain is None or chain.op != "elementwise" or not chain.fn or b.name in k.carried:
        return None
    if [i for i in k.invariant + k.pre + k.loop + k.post if b.name in i.args] != [dot]:
        return None  # the dequantised operand is needed elsewhere
    if any(fn not in AFFINE for fn, _ in chain.fn):
        return None
    w = chain.args[0]
    if set(k.value(w).axes) != {c, q} or not all(constant_along(k, n, c, q) for n in chain.args[1:]):
        return None
    return Instr(op="affine_dot", stage=dot.stage, out=dot.out, args=dot.args + chain.args, fn=chain.fn,
                 accumulate=dot.accumulate, via=b.name), chain


def factor(program: Program, tree: LoopTree, k: KernelIR) -> KernelIR:
    """Fuse each affine operand chain with the dot it feeds (see the module docstring)."""
    loop = list(k.loop)
    for dot in [i for i in k.loop if i.op == "dot"]:
        found = _fused(k, dot)
        if found is None:
            continue
        fused, chain = found
        loop.remove(chain)
        loop[loop.index(dot)] = fused
    if len(loop) == len(k.loop):
        return k
    return k.model_copy(update={"loop": tuple(loop)})


@lru_cache(maxsize=64)
def _affine_dots(program: Program) -> tuple[tuple[str, str, str, tuple[str, ...]], ...]:
    """(rows axis, operand, dot stage, coefficient values) of each fused dot of the program's kernel."""
    from tilesched.passes.gpu import lower_kernel  # the pipeline imports this module

    try:
        k = lower_kernel(program)
    except SpecError:  # a program the backend refuses has nothing factored
        return ()
    return tuple((k.value(i.out).axes[0], i.via, i.stage, tuple(i.args[3:])) for i in k.loop if i.op == "affine_dot")


def factored_at(b: Binding) -> tuple[tuple[str, str], ...]:
    """(operand, dot stage) of each fused dot whose factored branch the kernel takes at this point: a
    row tile below 16, every coefficient grouped along the reduction axis by a multiple of its tile
    (the tests the rendered kernel makes)."""
    if b.option("materialize", False):
        return ()  # the consumer kernel loads the materialised operand: no chain left to factor
    if b.option("register_operand", False):
        return ()  # the mma.sync kernel (tilesched/passes/register_operand.py), not the CUDA-core branch
    red = next((lp.axis for lp in b.program.loops if lp.kind == "reduction"), None)
    out = []
    for rows, operand, stage, coefs in _affine_dots(b.program):
        groups = [dict(b.program.tensor(c).group).get(red) for c in coefs if b.program.tensor(c).scope != "tile"]
        sizes = [int(evaluate(g, b.env())) if isinstance(g, str) else g for g in groups if g is not None]
        if b.tile(rows) < 16 and all(g % b.tile(red) == 0 for g in sizes):
            out.append((operand, stage))
    return tuple(out)
