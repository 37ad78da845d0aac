#!/usr/bin/env python3
"""The cost model against grids measured earlier: for every shape of the attention, low-bit and fp8
bench results (each candidate's device time, measured on the GPU named in the file), the model's
prediction per candidate now and their Spearman rank correlation, per shape and the median per op.
Runs on the CPU (the model needs no GPU); a model change is judged on the measurements it was not
fitted to before the next device run.

  python bench/costmodel_replay.py [--results DIR] [--device nvidia-h100-80gb-hbm3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import spec_bench as sb  # noqa: E402

from tilesched import load_program  # noqa: E402
from tilesched.tuner.costmodel import predict  # noqa: E402

ATTENTION = {("attention", False): "flash_attention", ("attention", True): "flash_attention_causal",
             ("attention_gqa", True): "flash_attention_gqa"}
SOURCES = {"attention": lambda r: ATTENTION[(r["op"], r["causal"])], "lowbit": lambda r: r["op"],
           "lowbit-register-operand": lambda r: r["op"], "lowbit-register-operand-2bit": lambda r: r["op"],
           "lowbit-register-operand-wgmma": lambda r: r["op"], "lowbit-register-operand-wgmma-8bit": lambda r: r["op"],
           "lowbit-register-operand-wgmma-m128": lambda r: r["op"], "lowbit-register-operand-split": lambda r: r["op"],
           "lowbit-register-operand-split-m128": lambda r: r["op"],
           "lowbit-register-operand-decode-wgmma": lambda r: r["op"],
           "lowbit-register-operand-decode-wgmma-8bit": lambda r: r["op"],
           "lowbit-register-operand-bias-register-m1": lambda r: r["op"],
           "lowbit-register-operand-bias-register-m16": lambda r: r["op"],
           "lowbit-register-operand-bias-register-2bit-m1": lambda r: r["op"],
           "lowbit-register-operand-vector-words": lambda r: r["op"], "lowbit-register-cap-m16": lambda r: r["op"],
           "lowbit-register-cap-8bit": lambda r: r["op"], "lowbit-byte-words": lambda r: r["op"],
           "lowbit-pair-columns": lambda r: r["op"], "lowbit-3bit": lambda r: r["op"],
           "lowbit-8bit-stages": lambda r: r["op"], "lowbit-decode-cap": lambda r: r["op"],
           "lowbit-decode-model": lambda r: r["op"], "lowbit-8bit-pair-scale": lambda r: r["op"],
           "lowbit-2bit-positions": lambda r: r["op"],
           "lowbit-8bit-parts": lambda r: r["op"], "lowbit-8bit-parts-b": lambda r: r["op"],
           "lowbit-4bit-m16-parts": lambda r: r["op"],
           "attention-causal-groups": lambda r: ATTENTION[(r["op"], r["causal"])],
           "lowbit-4bit-parts": lambda r: r["op"],
           "fp8": lambda r: "fp8_gemm",
           "attention-ws-step": lambda r: ATTENTION[(r["op"], r["causal"])],
           "attention-ws-step-causal": lambda r: ATTENTION[(r["op"], r["causal"])]}
# candidates of a kernel since replaced: the -m128 grid's wgmma split points met element by element (a
# release each), 1.8-5.5x slower than the per-thread meet the kernel has now (-split grids)
REPLACED = {"lowbit-register-operand-wgmma-m128": lambda p: p.get("REGISTER_OPERAND") and p.get("SPLIT_K", 1) > 1}


def replay(path: Path, spec_of, replaced=lambda params: False) -> list[dict]:
    """One row per shape: the recorded Spearman (the model when it ran) and the model's now, over the
    candidates whose kernel is still generated."""
    data = json.loads(path.read_text())
    seen, rows = set(), []
    for r in data["rows"]:
        if "candidates" not in r:
            continue
        spec = spec_of(r)
        key = (spec, json.dumps(r["shape"], sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        program = load_program(sb.CONFIGS / f"{spec}.yaml")
        measured, predicted = [], []
        for c in r["candidates"]:
            b = sb.legal(program, r["shape"], c["params"])
            if b is None or c.get("ms") is None or replaced(c["params"]):
                continue
            measured.append(c["ms"])
            predicted.append(predict(b).latency)
        rows.append({"spec": spec, "shape": r["shape"], "candidates": len(measured), "recorded": r.get("spearman"),
                     "now": sb.spearman(measured, predicted)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--device", default="nvidia-h100-80gb-hbm3")
    p.add_argument("--out", type=Path, help="also write the rows and medians as JSON")
    args = p.parse_args(argv)
    report = {"what": "cost model Spearman replayed on measured candidate grids", "date": sb.now(), "ops": {}}
    for name, spec_of in SOURCES.items():
        path = args.results / f"{name}-{args.device}.json"
        rows = replay(path, spec_of, REPLACED.get(name, lambda params: False))
        now = [x["now"] for x in rows if x["now"] is not None]
        rec = [x["recorded"] for x in rows if x["recorded"] is not None]
        report["ops"][name] = {"source": path.name, "measured": json.loads(path.read_text()).get("date"),
                               "median_now": statistics.median(now) if now else None,
                               "median_recorded": statistics.median(rec) if rec else None, "rows": rows}
        print(f"{name:24s} {len(rows):3d} shapes  median Spearman now {report['ops'][name]['median_now']:.2f}  "
              f"(recorded with the grid: {report['ops'][name]['median_recorded']:.2f})")
    if args.out:
        sb.write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
