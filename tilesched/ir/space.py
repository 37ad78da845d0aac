"""The search space: parameter domains, constraints, and walking the legal points."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from tilesched.ir.expr import ExprError, evaluate, names
from tilesched.ir.nodes import ConstraintIR, ParamIR
from tilesched.spec.models import Param

MAX_DOMAIN = 4096


def domain(param: Param) -> tuple:
    """All values a parameter can take, in order."""
    if param.choices is not None:
        return tuple(param.choices)
    lo, hi = param.range
    if param.pow2:
        v = 1
        while v < lo:
            v *= 2
        vals = []
        while v <= hi:
            vals.append(v)
            v *= 2
        return tuple(vals)
    count = (hi - lo) // param.step + 1
    if count > MAX_DOMAIN:
        raise ValueError(f"range {lo}..{hi} step {param.step} has {count} values; at most {MAX_DOMAIN}")
    return tuple(range(lo, hi + 1, param.step))


class ConstraintError(ExprError):
    """A constraint that cannot be evaluated at a point (`1/0`, `N % BLOCK` with BLOCK=0): a
    mistake in the spec, which is not the same as a point that fails the constraint."""

    def __init__(self, constraint: ConstraintIR, error: ExprError, env: Mapping[str, object]):
        self.constraint = constraint
        used = sorted(names(constraint.expr) & env.keys())
        at = ", ".join(f"{n}={env[n]!r}" for n in used)
        super().__init__(f"{error} at {at}" if at else str(error))


def satisfies(constraint: ConstraintIR, env: Mapping[str, object]) -> bool:
    """Whether `env` satisfies `constraint`; ConstraintError when it cannot be evaluated there."""
    try:
        return bool(evaluate(constraint.expr, env))
    except ExprError as exc:
        raise ConstraintError(constraint, exc, env) from None


def violated(constraints: Sequence[ConstraintIR], env: Mapping[str, object]) -> ConstraintIR | None:
    """The first constraint that `env` fails, or None. Constraints over unbound names are skipped.
    Raises ConstraintError for a constraint that cannot be evaluated at `env`."""
    for c in constraints:
        if not names(c.expr) <= env.keys():
            continue
        if not satisfies(c, env):
            return c
    return None


def iter_points(
    params: Sequence[ParamIR],
    constraints: Sequence[ConstraintIR],
    fixed: Mapping[str, object],
    budget: int = 2_000_000,
    strict: bool = False,
) -> Iterator[dict[str, object]]:
    """Every point of the space that satisfies the constraints, by backtracking.

    Each constraint is tested as soon as all of its names are bound, so whole subtrees
    of illegal points are pruned. `fixed` binds axes, limits and pinned parameters.
    Stops after `budget` partial assignments. A constraint that cannot be evaluated at a
    point makes the point illegal, or with `strict` raises ConstraintError (spec checking).
    """
    free = [p for p in params if p.name not in fixed]
    known = set(fixed) | {p.name for p in params}
    # a constraint can be checked at the first depth where every name it uses is bound
    checks_at: list[list[ConstraintIR]] = [[] for _ in range(len(free) + 1)]
    for c in constraints:
        used = names(c.expr)
        if not used <= known:
            continue  # refers to an unbound symbol: undecidable here
        depth = max((i + 1 for i, p in enumerate(free) if p.name in used), default=0)
        checks_at[depth].append(c)
    env = dict(fixed)
    steps = 0

    def ok(depth: int) -> bool:
        try:
            return all(satisfies(c, env) for c in checks_at[depth])
        except ConstraintError:
            if strict:
                raise
            return False

    def walk(depth: int) -> Iterator[dict[str, object]]:
        nonlocal steps
        if depth == len(free):
            yield {p.name: env[p.name] for p in params}
            return
        p = free[depth]
        for v in p.values:
            steps += 1
            if steps > budget:
                return
            env[p.name] = v
            if ok(depth + 1):
                yield from walk(depth + 1)
        env.pop(p.name, None)

    if ok(0):
        yield from walk(0)


def count_points(params, constraints, fixed, limit: int = 1_000_000) -> int:
    n = 0
    for _ in iter_points(params, constraints, fixed):
        n += 1
        if n >= limit:
            break
    return n
