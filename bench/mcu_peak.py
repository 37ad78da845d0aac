"""Peak SRAM of tilesched's memory-planned Cortex-M schedules on the MCU workloads
(bench/mcu_workloads.py), measured under QEMU: writes bench/results/mcu-tilesched.json.

Per workload: the tile sizes that minimise the arena (tilesched.schedules.memory.
min_memory_binding), the arena peak, static RAM (.data + .bss from arm-none-eabi-size,
the arena included), the painted-stack peak, executed instructions (qemu -icount
shift=0 + SysTick; see tilesched/backends/cortexm/build.py) on Cortex-M4 (mps2-an386) and
Cortex-M7 (mps2-an500), bit-exactness against the numpy int8 reference, and `naive_peak`
(every activation tensor whole and live at once, no reuse) for context. The TFLite Micro
arena of the same layers comes from the TFLM baseline bench, which combines the two files.

    PYTHONPATH=. python bench/mcu_peak.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tilesched import load_with_source  # noqa: E402
from tilesched.backends.cortexm import session  # noqa: E402
from tilesched.fsutil import write_atomic  # noqa: E402
from tilesched.schedules.memory import min_memory_binding  # noqa: E402

CONFIGS = ROOT / "configs"
# workload name (bench/mcu_workloads.py) -> spec and its sizes
SPECS = {
    "ib_s1_80": ("mcu_inverted_bottleneck.yaml", {}),
    "ib_s2_80": ("mcu_inverted_bottleneck_s2.yaml", {}),
    "bert_tiny_s128": ("mcu_bert_tiny_attention.yaml", {"S": 128}),
    "bert_tiny_s256": ("mcu_bert_tiny_attention.yaml", {"S": 256}),
    "bert_tiny_s512": ("mcu_bert_tiny_attention.yaml", {"S": 512}),
}
TARGETS = ("cortex-m4", "cortex-m7")


def bench_one(name: str, seed: int) -> dict:
    spec, sizes = SPECS[name]
    prog, src = load_with_source(CONFIGS / spec)
    b, plan = min_memory_binding(prog, sizes, src)
    entry = {
        "workload": name, "spec": f"configs/{spec}", "sizes": b.sizes, "params": b.params,
        "arena_peak_bytes": plan.peak_bytes, "naive_peak": plan.naive_bytes,
        "buffers": {p.name: {"offset": p.offset, "size": p.size} for p in plan.buffers},
        "targets": {},
    }
    for target in TARGETS:
        tb = b.model_copy(update={"program": b.program.model_copy(update={"target": target})})
        rep = session.run_binding(tb, seed=seed)
        d = rep.as_dict()
        d["device"] = session.device(target)
        entry["targets"][target] = d
        print(f"{name:16} {target}: arena {d['arena_peak_bytes']:>7} B  static {d['static_ram_bytes']:>7} B  "
              f"stack {d['peak_stack_bytes']:>5} B  instr {d['instructions']:>11}  "
              f"{'bit-exact' if rep.ok else 'WRONG'}", flush=True)
    main_t = entry["targets"][prog.target]
    entry.update(target=prog.target, static_ram_bytes=main_t["static_ram_bytes"],
                 peak_stack_bytes=main_t["peak_stack_bytes"], instructions=main_t["instructions"],
                 counter=main_t["counter"], bit_exact=all(t["ok"] for t in entry["targets"].values()),
                 within_256k=plan.peak_bytes <= 256 * 1024)
    return entry


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=sorted(SPECS))
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "bench" / "results" / "mcu-tilesched.json")
    args = ap.parse_args(argv)
    names = args.only or list(SPECS)
    results = {n: bench_one(n, args.seed) for n in names}
    doc = {
        "bench": "mcu_peak", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": "QEMU (no hardware): " + ", ".join(session.device(t) for t in TARGETS),
        "versions": session.versions(), "seed": args.seed,
        "notes": "arena_peak_bytes: tilesched SRAM arena (network input and output included, weights in flash); "
                 "static_ram_bytes: .data+.bss of the ELF (arena + runtime); instructions: qemu -icount shift=0, "
                 "SysTick ticks x 40 (executed instructions, not cycles); naive_peak: all activations whole and "
                 "live at once. The TFLM baseline (same layers, bench/mcu_workloads.py) is measured by the TFLM "
                 "bench.",
        "workloads": results,
    }
    write_atomic(args.output, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.output}")
    return 0 if all(r["bit_exact"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
