import itertools

import pytest

from tests.tuner_helpers import Recorder, gemm_space
from tilesched.errors import SpecError
from tilesched.ir.bind import bind
from tilesched.tuner.campaign import Campaign


def test_legal_points_are_exactly_the_points_bind_accepts():
    space = gemm_space()
    prog = space.program
    legal, illegal = [], 0
    for combo in itertools.product(*(p.values for p in prog.params)):
        point = dict(zip((p.name for p in prog.params), combo))
        try:
            bind(prog, {**space.sizes, **point})
            legal.append(point)
        except SpecError:
            illegal += 1
    assert illegal > 0  # the space really has illegal points (smem, registers)
    assert sorted(map(str, space.legal_points)) == sorted(map(str, legal))
    assert space.check({"BLOCK_M": 256, "BLOCK_N": 256, "BLOCK_K": 128, "GROUP_M": 1, "NUM_WARPS": 8,
                        "NUM_STAGES": 5}) is not None


def test_pinned_parameters_restrict_the_space():
    from tests.tuner_helpers import GEMM, SIZES
    from tilesched import load_program
    from tilesched.tuner.space import Space

    space = Space(load_program(GEMM), SIZES, {"BLOCK_K": 32})
    assert space.legal_points and all(p["BLOCK_K"] == 32 for p in space.legal_points)
    assert [p.name for p in space.free] == ["BLOCK_M", "BLOCK_N", "GROUP_M", "NUM_WARPS", "NUM_STAGES"]


def test_illegal_suggestions_are_pruned_without_evaluation(tmp_path):
    space = gemm_space()
    rec = Recorder()
    camp = Campaign(space, "model", storage=f"sqlite:///{tmp_path}/s.db", seed=3, evaluator=rec, warm_k=0)
    camp.run(40)
    # every evaluated point is legal: nothing illegal reached the evaluator
    assert rec.calls and all(space.check(p) is None for p in rec.calls)
    trials = camp.study.get_trials()
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned, "seed 3 proposes illegal points with this space"
    for t in pruned:
        assert t.user_attrs["reason"] == "illegal" and space.check(t.params) is not None
        assert not t.user_attrs["evaluated"]
    # the budget counts evaluations only, each point once
    assert len(rec.calls) == 40 == camp.result().evaluated
    assert len({str(sorted(c.items())) for c in rec.calls}) == 40


@pytest.mark.parametrize("spec", ["gemm_bf16", "ag_gemm", "gemm_rs", "batched_gemm", "gemm_bias_gelu",
                                  "mcu_inverted_bottleneck", "mcu_bert_tiny_attention"])
def test_cost_model_predicts_every_legal_point_of_the_examples(spec):
    from tests.conftest import ROOT
    from tilesched import load_program
    from tilesched.tuner.costmodel import predict
    from tilesched.tuner.space import Space

    space = Space(load_program(ROOT / "configs" / f"{spec}.yaml"))
    preds = [predict(space.bind(p)) for p in space.legal_points[:60]]
    assert preds and all(p.latency > 0 for p in preds)
    assert len({round(p.latency, 9) for p in preds}) > 1 or len(preds) == 1


def test_a_shape_where_the_defaults_do_not_fit_still_has_its_space():
    """Decode: at M = 1 the spec's default row tile (16) is illegal; the space still resolves the sizes
    and offers exactly the points that fit (row tile 1)."""
    from tests.conftest import CONFIGS
    from tilesched import load_program
    from tilesched.tuner.space import Space

    space = Space(load_program(CONFIGS[0].parent / "w4a16_gemm.yaml"), {"M": 1, "N": 4096, "K": 4096})
    assert space.sizes["M"] == 1 and space.legal_points
    assert {p["BLOCK_M"] for p in space.legal_points} == {1}
