"""Append the rows of the issue-16 benches (attention, low-bit, fp8; each measured beside its baselines
in its own run) to bench/results/ops-<device>.json, the one file of op rows the issues name. Each row
keeps the date of its run and the file it came from (with the candidate tables, left out here); rows
of those ops from an earlier collection are replaced, the ops' own rows are kept. A later source's row
replaces an earlier source's row of the same op, shape, dtype, causality and baseline (lowbit-decode re-measures
M = 1 of the low-bit grid after a change to the decode path; lowbit-register-operand[-2bit] the 4-bit
[2-bit] grid with the register-operand schedule among the M <= 16 candidates; lowbit-rotated-baseline the
4- and 2-bit M <= 16 columns with bf16 cuBLAS reading its weights from HBM too;
lowbit-register-operand-wgmma[-8bit] the 4- and 2-bit [8-bit] M = 1024 rows with the schedule's wgmma
kernel among the candidates; -m128 the 4- and 2-bit M = 128 rows likewise;
lowbit-register-operand-split the 4-bit M <= 128 rows with the wgmma kernel's split-K shares and decode
row tiles among the candidates, -split-m128 the 2- and 8-bit M = 128 rows likewise;
lowbit-register-operand-decode-wgmma[-8bit] the 4- and 2-bit [8-bit] M <= 16 rows with the decode row tiles'
register cap; lowbit-register-operand-bias-register-{m1,m16,2bit-m1} the 4- and 2-bit M <= 16 rows with the
mma.sync kernel's BIAS pair in a register; lowbit-register-operand-vector-words the 4-bit M <= 16 rows with its
words loaded a vector per thread; lowbit-byte-words, lowbit-pair-columns the 8-bit rows and the 4- and 2-bit
M = 16 rows after changes to the wgmma kernel's loads; lowbit-3bit the 3-bit grid with the wgmma kernel's 3-bit
points among the candidates; lowbit-8bit-stages the 8-bit M = 1024 rows again, more stages among the candidates;
lowbit-decode-cap the M <= 16 rows of all four widths with the decode tiles' register caps by consumer count;
lowbit-4bit-m16-parts the 4-bit M = 16 rows after the decode tiles' parts; attention-causal-groups the causal
attention rows after the persistent kernel's claims in groups of heads).

  python bench/collect_ops.py [--results DIR] [--device nvidia-h100-80gb-hbm3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("attention", "lowbit", "lowbit-decode", "lowbit-register-operand", "lowbit-register-operand-2bit",
           "lowbit-rotated-baseline", "lowbit-register-operand-wgmma", "lowbit-register-operand-wgmma-8bit",
           "lowbit-register-operand-wgmma-m128", "lowbit-register-operand-split", "lowbit-register-operand-split-m128",
           "lowbit-register-operand-decode-wgmma", "lowbit-register-operand-decode-wgmma-8bit",
           "lowbit-register-operand-bias-register-m1", "lowbit-register-operand-bias-register-m16",
           "lowbit-register-operand-bias-register-2bit-m1", "lowbit-register-operand-vector-words",
           "lowbit-register-cap-m16", "lowbit-register-cap-8bit", "lowbit-byte-words", "lowbit-pair-columns",
           "lowbit-3bit", "lowbit-8bit-stages", "lowbit-decode-cap", "lowbit-8bit-pair-scale", "lowbit-2bit-positions", "lowbit-8bit-parts",
           "lowbit-8bit-parts-b", "lowbit-4bit-parts", "lowbit-4bit-m16-parts", "attention-causal-groups", "fp8",
           "attention-ws-step", "attention-ws-step-causal")
IDENTITY = ("op", "shape", "dtype", "causal", "baseline")  # what a row measures (the rest is its result)


def _identity(row: dict) -> str:
    return json.dumps([row.get(k) for k in IDENTITY], sort_keys=True)


def collect(results: Path, device: str) -> int:
    ops_path = results / f"ops-{device}.json"
    ops = json.loads(ops_path.read_text())
    rows = [r for r in ops["rows"] if r.get("source") not in {f"{s}-{device}.json" for s in SOURCES}]
    collected: list[dict] = []
    for name in SOURCES:
        path = results / f"{name}-{device}.json"
        if not path.exists():
            continue
        run = json.loads(path.read_text())
        if run.get("device") != ops.get("device"):
            raise SystemExit(f"{path}: device {run.get('device')!r} is not {ops.get('device')!r}")
        new = [{**{k: v for k, v in r.items() if k != "candidates"}, "date": run["date"], "source": path.name,
                "versions": run.get("versions")} for r in run["rows"]]
        measured = {_identity(r) for r in new}
        collected = [r for r in collected if _identity(r) not in measured] + new
    added = len(collected)
    ops["rows"] = rows + collected
    note = "rows with a `source` come from that file's run (its date and versions in the row; baselines in the same run)"
    ops["notes"] = [n for n in ops.get("notes", []) if n != note] + [note]
    ops_path.write_text(json.dumps(ops, indent=2, sort_keys=True) + "\n")
    return added


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(ROOT / "bench" / "results"))
    p.add_argument("--device", default="nvidia-h100-80gb-hbm3")
    a = p.parse_args(argv)
    print(f"{collect(Path(a.results), a.device)} rows appended to ops-{a.device}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
