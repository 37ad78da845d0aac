"""One definition per concept: every op and fn of the language has its checks, its meaning in the
oracle, a cost, and, per target, a rule or a refusal."""

from typing import get_args

from tilesched.backends.cuda import triton_rules
from tilesched.ir.opchecks import OP_CHECKS
from tilesched.passes import gpu
from tilesched.schedules.costs import FLOPS_PER_ELEMENT
from tilesched.semantics import fns
from tilesched.semantics.ops import RULES
from tilesched.spec.models import OPS_BY_KIND, BinaryFn, UnaryFn


def test_every_op_has_a_check_and_a_meaning():
    ops = {op for kind in OPS_BY_KIND.values() for op in kind}
    assert ops == set(OP_CHECKS) == set(RULES)


def test_every_fn_has_a_meaning_a_cost_and_a_triton_rule():
    binary, unary = set(get_args(BinaryFn)), set(get_args(UnaryFn)) - {"cast"}
    assert binary == set(fns.BINARY) == set(triton_rules.BINARY) == set(gpu.BINARY)
    assert unary == set(fns.UNARY) == set(triton_rules.UNARY) == set(gpu.UNARY) - {"cast"}
    assert binary | unary | {"cast"} <= set(FLOPS_PER_ELEMENT)
    assert set(fns.DOC) == binary | unary | {"cast"}


def test_every_kernel_instruction_has_a_triton_rule():
    assert {"load", "store", "copy", "zeros", "dot", "elementwise", "reduce", "softmax", "layernorm",
            "online_softmax", "normalize", "affine_dot"} == set(triton_rules.RULES)


def test_the_factor_pass_knows_only_fns_the_chain_rule_renders():
    from tilesched.passes.factor import AFFINE

    assert set(AFFINE) - {"cast"} <= set(triton_rules.BINARY)
