"""The MCU memory planner on the events of the Cortex-M lowering (tilesched.passes.mcu: a dry run of the
kernel IR the C is rendered from): an independent byte-level replay proves that no live byte is
overwritten before its last read (rings included: a read must find the row it names), for many
schedules; peaks match hand-derived values."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT
from tests.differential import IBCase, ib_spec, program_of
from tilesched import load_with_source
from tilesched.errors import SpecError
from tilesched.ir.bind import bind
from tilesched.schedules.memory import place_program, plan_memory

IB = ROOT / "configs" / "mcu_inverted_bottleneck.yaml"
IB2 = ROOT / "configs" / "mcu_inverted_bottleneck_s2.yaml"
BERT = ROOT / "configs" / "mcu_bert_tiny_attention.yaml"


def replay(plan) -> list[str]:
    """Simulate the tile program on a shadow arena, event by event: a write stamps its bytes
    with the data tag, a read requires every byte of its segment to still carry the tag.
    Inputs are stamped before the first step, outputs checked after the last. Uses only the
    events and the offsets, not the planner's lifetimes."""
    prog = plan.program
    owner = np.full(plan.peak_bytes, -1, dtype=np.int64)
    tags: dict[str, int] = {}
    buf = {b.name: b for b in plan.buffers}
    errors = []

    def span(name, seg):
        b = buf[name]
        lo = b.offset + seg * b.seg_bytes
        assert 0 <= lo and lo + b.seg_bytes <= plan.peak_bytes, f"{name}[{seg}] outside the arena"
        return slice(lo, lo + b.seg_bytes)

    def tag_id(tag):
        return tags.setdefault(tag, len(tags))

    first_reads = {}
    for ev in prog.events:
        if ev.access == "r":
            first_reads.setdefault((ev.buffer, ev.seg), ev.tag)
    for b in prog.buffers:
        if b.role == "input":
            for seg in range(b.n_segs):
                owner[span(b.name, seg)] = tag_id(first_reads.get((b.name, seg), f"{b.name}{seg}"))
    written_outputs = {}
    for ev in prog.events:
        sl = span(ev.buffer, ev.seg)
        if ev.access == "w":
            owner[sl] = tag_id(ev.tag)
            if buf[ev.buffer].role == "output":
                written_outputs[(ev.buffer, ev.seg)] = ev.tag
        elif not np.all(owner[sl] == tag_id(ev.tag)):
            errors.append(f"step {prog.steps[ev.step]}: {ev.buffer}[{ev.seg}] lost {ev.tag}")
    for (name, seg), tag in written_outputs.items():
        if not np.all(owner[span(name, seg)] == tag_id(tag)):
            errors.append(f"output {name}[{seg}] overwritten after it was written")
    n_out = sum(b.n_segs for b in prog.buffers if b.role == "output")
    if len(written_outputs) != n_out:
        errors.append(f"only {len(written_outputs)} of {n_out} output segments written")
    return errors


def _bind(path, **values):
    prog, src = load_with_source(path)
    return bind(prog, values, src)


IB_CASES = [
    (IB, {}), (IB, {"ROWS": 1}), (IB, {"ROWS": 8}),
    (IB, {"H": 16, "W": 8, "C": 8, "E": 16, "CO": 8, "ROWS": 16}),  # one block: no tiling
    (IB, {"H": 20, "W": 8, "C": 8, "E": 16, "CO": 8, "ROWS": 5}),
    (IB, {"H": 10, "W": 9, "C": 8, "E": 24, "CO": 8, "ROWS": 4}),  # ragged last block
    (IB, {"H": 7, "W": 5, "C": 4, "E": 8, "CO": 12, "ROWS": 2}),  # output rows larger than input rows
    (IB2, {}), (IB2, {"ROWS": 1}), (IB2, {"ROWS": 4}),
    (IB2, {"H": 20, "W": 8, "C": 8, "E": 16, "CO": 8, "ROWS": 10}),
    (IB2, {"H": 11, "W": 9, "C": 8, "E": 24, "CO": 8, "ROWS": 4}),
]
BERT_CASES = [
    {"S": 128}, {"S": 256}, {"S": 512}, {"S": 64, "ROWS": 8, "HEADS": 2},
    {"S": 64, "ROWS": 32}, {"S": 32, "ROWS": 1}, {"S": 128, "ROWS": 1},
]


@pytest.mark.parametrize("path,values", IB_CASES, ids=lambda v: str(v) if isinstance(v, dict) else v.stem)
def test_ib_plans_never_overwrite_live_bytes(path, values):
    plan = plan_memory(_bind(path, **values))
    assert replay(plan) == []
    assert plan.peak_bytes < plan.naive_bytes


@pytest.mark.parametrize("values", BERT_CASES, ids=str)
def test_bert_plans_never_overwrite_live_bytes(values):
    plan = plan_memory(_bind(BERT, **values))
    assert replay(plan) == []
    assert plan.peak_bytes < plan.naive_bytes


def test_replay_catches_an_unsafe_offset():
    """The checker can fail: nudging the input 4 bytes below its earliest safe offset breaks it."""
    plan = plan_memory(_bind(IB, ROWS=1))
    bad = replace(plan, buffers=tuple(replace(b, offset=b.offset - 4) if b.name == "x" else b for b in plan.buffers))
    assert any("lost x" in e for e in replay(bad))


def test_ib_stride1_earliest_safe_input_offset():
    """vMCU-style overlap, derived by hand: with ROWS=1, output row r (1920 B) is written once
    input rows <= r+1 (1280 B each) are consumed, so y at 0 and x at D is safe iff
    (r+1)*1920 <= D + (r+2)*1280 for every r whose input rows are still live (r <= 77):
    D = max_r 640*(r-1) = 48640. The arena is y plus the 3-row ring plus one pixel."""
    plan = plan_memory(_bind(IB, ROWS=1))
    assert plan.buffer("x").offset - plan.buffer("y").offset == 48640
    assert plan.peak_bytes == 80 * 80 * 24 + 3 * 80 * 96 + 96 == 176736
    assert plan.naive_bytes == 80 * 80 * (16 + 96 + 96 + 24)


def test_ib_stride2_output_fits_inside_consumed_input():
    plan = plan_memory(_bind(IB2, ROWS=1))
    # every output row (960 B) trails the consumed input rows: no extra room for y at all
    assert plan.peak_bytes <= 80 * 80 * 16 + 3 * 80 * 96 + 96
    assert replay(plan) == []


def test_bert_s512_fits_256k_and_shares_the_row_buffers():
    plan = plan_memory(_bind(BERT, S=512))
    off = plan.offsets
    assert off["x"] == off["out"]  # the layer output reuses consumed input rows
    assert plan.peak_bytes <= 256 * 1024
    # x / out share one [S, D] region; K and V^T are whole; the rest is block scratch
    assert plan.peak_bytes >= 3 * 512 * 128
    assert plan.peak_bytes <= 3 * 512 * 128 + 24 * 1024


def test_timeline_matches_the_live_segments():
    plan = plan_memory(_bind(BERT, S=64))
    assert len(plan.timeline) == len(plan.program.steps)
    assert max(p.high_water for p in plan.timeline) == plan.peak_bytes
    assert all(p.live_bytes <= p.high_water for p in plan.timeline)


def test_placement_is_deterministic():
    """The planner works on tile programs alone, and stays deterministic."""
    plan = plan_memory(_bind(IB, H=6, W=4, C=4, E=8, CO=4, ROWS=2))
    a, b = place_program(plan.program), place_program(plan.program)
    assert a.offsets == b.offsets and replay(a) == []


def test_non_mcu_spec_has_no_memory_schedule():
    with pytest.raises(SpecError, match="not a Cortex-M target"):
        plan_memory(_bind(ROOT / "configs" / "gemm_bf16.yaml"))


@settings(max_examples=60, deadline=None)
@given(h=st.integers(3, 24), w=st.integers(1, 12), c=st.integers(1, 16), e=st.integers(1, 32),
       co=st.integers(1, 40), stride=st.sampled_from([1, 2]), rows=st.integers(1, 8))
def test_random_ib_programs_replay_clean(h, w, c, e, co, stride, rows):
    case = IBCase(h=h, w=w, c=c, e=e, co=co, stride=stride, pad=1)
    rows = min(rows, case.oh)
    plan = plan_memory(bind(program_of(ib_spec(replace(case, rows=rows))), {}))
    assert replay(plan) == []
    assert all(b.offset % 4 == 0 for b in plan.buffers)
    # never worse than keeping every buffer apart
    assert plan.peak_bytes <= sum(-(-b.size // 4) * 4 for b in plan.buffers)


def _bert_variant(s_len: int, nh: int, hd: int, f: int, rows: int, heads: int):
    import yaml

    data = yaml.safe_load(BERT.read_text())
    data["axes"].update({"S": s_len, "D": nh * hd, "NH": nh, "HD": hd, "F": f})
    data["loops"] = [{"axis": "S", "tile": rows}, {"axis": "NH", "tile": heads}]
    data.pop("search_space", None)
    return bind(program_of(data), {})


@settings(max_examples=30, deadline=None)
@given(s_blocks=st.integers(1, 6), rows=st.sampled_from([1, 2, 4]), nh=st.sampled_from([1, 2, 4]),
       hd=st.sampled_from([2, 4, 8]), heads_all=st.booleans(), f=st.sampled_from([4, 8, 24]))
def test_random_bert_programs_replay_clean(s_blocks, rows, nh, hd, heads_all, f):
    plan = plan_memory(_bert_variant(s_blocks * rows, nh, hd, f, rows, nh if heads_all else 1))
    assert replay(plan) == []


@pytest.mark.parametrize("rows", [4, 16])
def test_bert_s512_peak_matches_hand_count(rows):
    """S=512, D=128, one head per block: x and out share [S, D] (out rows over consumed x rows); K and
    V^T are whole, with the int32 column sums of V (4 D: the probabilities' zero point); the context
    of a row block for both heads is a ring of ROWS rows; one query row at a time, its query (HD),
    scores and probabilities (T each) are one vector each, and the FFN's vectors fit into them."""
    s, d, hd = 512, 128, 64
    plan = plan_memory(_bind(BERT, S=s, ROWS=rows, HEADS=1))
    assert plan.peak_bytes == 3 * s * d + 4 * d + rows * d + hd + 2 * s
    assert replay(plan) == []
