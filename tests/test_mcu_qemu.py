"""Generated Cortex-M C, cross-compiled and run under QEMU, matches the numpy int8 reference
bit for bit (outputs poisoned before the run); golden files of the generated C."""

from dataclasses import replace

import numpy as np
import pytest

from tests.conftest import ROOT
from tilesched import load_with_source
from tilesched.backends.cortexm import build, session
from tilesched.backends.cortexm.measure import measure
from tilesched.ir.bind import bind
from tilesched.schedules.memory import plan_memory

IB = ROOT / "configs" / "mcu_inverted_bottleneck.yaml"
IB2 = ROOT / "configs" / "mcu_inverted_bottleneck_s2.yaml"
BERT = ROOT / "configs" / "mcu_bert_tiny_attention.yaml"
GOLDEN = ROOT / "tests" / "golden" / "cortexm"

needs_toolchain = pytest.mark.skipif(build.toolchain_problem() is not None, reason=str(build.toolchain_problem()))


def _bind(path, **values):
    prog, src = load_with_source(path)
    return bind(prog, values, src)


SMALL = {
    "ib_s1_ragged": (IB, {"H": 10, "W": 9, "C": 8, "E": 24, "CO": 8, "ROWS": 4}),
    "ib_s1_rows1": (IB, {"H": 6, "W": 7, "C": 4, "E": 12, "CO": 20, "ROWS": 1}),
    "ib_s2_odd": (IB2, {"H": 11, "W": 9, "C": 8, "E": 24, "CO": 8, "ROWS": 2}),
    "ib_s2_rows5": (IB2, {"H": 20, "W": 6, "C": 4, "E": 8, "CO": 12, "ROWS": 5}),
    "bert_s32": (BERT, {"S": 32, "ROWS": 8}),
    "bert_s32_heads2": (BERT, {"S": 32, "ROWS": 4, "HEADS": 2}),
    "bert_s64_rows1": (BERT, {"S": 64, "ROWS": 1}),
}


@needs_toolchain
@pytest.mark.parametrize("case", sorted(SMALL))
def test_small_variants_bit_exact(case, tmp_path):
    path, values = SMALL[case]
    seed = int(np.random.SeedSequence().entropy % 2**32)  # fresh data every run; the seed reproduces it
    rep = session.run_binding(_bind(path, **values), seed=seed, workdir=tmp_path)
    assert rep.ok, f"{rep.mismatches} of {rep.expected.size} outputs differ (seed {seed})"
    assert len(np.unique(rep.expected)) > 20  # the data exercises the value range
    assert rep.run.arena_bytes == rep.plan.peak_bytes
    assert rep.run.static_ram_bytes >= rep.plan.peak_bytes
    assert 0 < rep.run.stack_bytes < 4096
    assert rep.run.instructions > 0


@needs_toolchain
@pytest.mark.parametrize("path,values", [(IB, {"ROWS": 1}), (IB2, {}), (BERT, {"S": 128}), (BERT, {"S": 512})],
                         ids=["ib_s1_80", "ib_s2_80", "bert_tiny_s128", "bert_tiny_s512"])
def test_full_size_bit_exact(path, values, tmp_path):
    rep = session.run_binding(_bind(path, **values), seed=7, workdir=tmp_path)
    assert rep.ok, f"{rep.mismatches} of {rep.expected.size} outputs differ"


@needs_toolchain
@pytest.mark.parametrize("case,target", [("ib_s2_odd", "cortex-m4"), ("bert_s32", "cortex-m7")])
def test_other_core_bit_exact(case, target, tmp_path):
    """Both cores run both workload classes (the spec's target is swapped)."""
    path, values = SMALL[case]
    b = _bind(path, **values)
    b = b.model_copy(update={"program": b.program.model_copy(update={"target": target})})
    rep = session.run_binding(b, seed=11, workdir=tmp_path)
    assert rep.ok


@needs_toolchain
def test_an_unsafe_plan_gives_wrong_results(tmp_path):
    """The harness can fail: placing the output over the live ring of expanded rows corrupts it."""
    b = _bind(IB, H=10, W=9, C=8, E=24, CO=8, ROWS=2)
    plan = plan_memory(b)
    ring = plan.buffer("h_expand")
    bad = replace(plan, buffers=tuple(replace(p, offset=ring.offset) if p.name == "y" else p for p in plan.buffers),
                  peak_bytes=max(plan.peak_bytes, ring.offset + plan.buffer("y").size))
    wl = session.make_workload(b, seed=1)
    res = build.build_and_run(*session.sources(b, wl, bad), b.program.target, tmp_path)
    assert np.count_nonzero(res.output != wl.expected.reshape(-1)) > 0


@needs_toolchain
def test_measure_reports_instructions_and_sram():
    m = measure(_bind(IB2, H=8, W=8, C=4, E=8, CO=4, ROWS=1))
    assert m.ok and m.cycles > 0 and m.counter == build.COUNTER
    assert m.peak_sram_bytes > 0 and "qemu" in m.device


def test_measure_failure_is_a_value():
    m = measure(_bind(ROOT / "configs" / "gemm_bf16.yaml"))
    assert not m.ok and m.reason == "compile_error"


_r = np.random.default_rng(12345)
RANDOM_IB = [(IB if st == 1 else IB2, {"H": int(_r.integers(3, 14)), "W": int(_r.integers(2, 11)),
                                      "C": int(_r.integers(1, 12)), "E": int(_r.integers(2, 40)),
                                      "CO": int(_r.integers(1, 30)), "ROWS": int(_r.choice([1, 2, 4]))})
             for st in (1, 2, 1, 2)]


@needs_toolchain
@pytest.mark.parametrize("path,values", RANDOM_IB, ids=lambda v: str(v) if isinstance(v, dict) else v.stem)
def test_odd_ib_shapes_bit_exact(path, values, tmp_path):
    """Odd channel counts (dot products of 1..11 elements hit CMSIS's tail loops), ragged blocks."""
    values = dict(values)
    oh = (values["H"] - 1) // (1 if path == IB else 2) + 1
    values["ROWS"] = min(values["ROWS"], oh) if min(values["ROWS"], oh) in (1, 2, 4) else 1
    rep = session.run_binding(_bind(path, **values), seed=3, workdir=tmp_path)
    assert rep.ok, f"{rep.mismatches} of {rep.expected.size} outputs differ"


GOLDEN_CASES = {"ib_s1_small.c": SMALL["ib_s1_ragged"], "ib_s2_small.c": SMALL["ib_s2_odd"],
                "bert_s32.c": SMALL["bert_s32"]}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_generated_c_golden(name, update_golden):
    path, values = GOLDEN_CASES[name]
    b = _bind(path, **values)
    text = session.sources(b, session.make_workload(b, 1), plan_memory(b))[0]
    assert text == session.sources(b, session.make_workload(b, 2), plan_memory(b))[0]  # deterministic, data apart
    golden = GOLDEN / name
    if update_golden:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"{golden} is missing: create it with pytest --update-golden"
    assert text == golden.read_text(), f"{golden} is stale: refresh with pytest --update-golden"


def test_cli_plan_prints_the_memory_plan(capsys):
    from tilesched.cli import main

    assert main(["plan", str(IB2)]) == 0
    out = capsys.readouterr().out
    assert "memory plan: arena peak" in out and "timeline" in out and "ring" in out


@needs_toolchain
def test_cli_run_small(capsys, tmp_path):
    from tilesched.cli import main

    report = tmp_path / "r.json"
    assert main(["run", str(BERT), "--set", "S=16", "--set", "ROWS=4", "--seed", "5", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "bit-exact" in out and "instructions:" in out
    assert '"ok": true' in report.read_text()


@needs_toolchain
def test_instruction_counter_counts_instructions(tmp_path):
    """The latency proxy is real: a loop of exactly 3 instructions per iteration (nop, subs, bne)
    run 10^5 times reads as 3*10^5 instructions, to SysTick's 40-instruction resolution."""
    prog = r'''
#include <string.h>
#include "ts_runtime.h"
static unsigned char arena[4];
int main(void) {
  ts_timer_start();
  uint64_t t0 = ts_ticks();
  __asm volatile("ldr r3, =100000\n1: nop\nsubs r3, r3, #1\nbne 1b\n" ::: "r3", "cc");
  uint64_t ticks = ts_ticks() - t0;
  ts_write_file("out.bin", arena, 4);
  printf("TS_STATS ticks=%lu:%lu stack=%lu arena=4\n", (unsigned long)(ticks >> 32), (unsigned long)ticks,
         (unsigned long)ts_stack_peak());
  return 0;
}
'''
    elf = build.compile_program(prog, "", "cortex-m4", tmp_path)
    _, stats = build.run_elf(elf, "cortex-m4")
    assert abs(stats["instructions"] - 300_000) <= 200
