"""`tilesched run SPEC` for Cortex-M targets: print the memory plan, run the generated C under
QEMU on random int8 data and check it bit for bit against the numpy reference."""

from __future__ import annotations

import json
import sys

from tilesched.backends.cortexm import build, session
from tilesched.fsutil import write_atomic
from tilesched.ir.bind import Binding
from tilesched.schedules.memory import format_memory_plan


def run_cli(binding: Binding, args) -> int:
    seed = getattr(args, "seed", None)
    try:
        report = session.run_binding(binding, seed=seed, check_sram=True)
    except build.BuildError as exc:
        print(f"{binding.program.name}: {exc}", file=sys.stderr)
        return 2
    prog = binding.program
    print(f"{prog.name}  (target {prog.target}, {session.device(prog.target)})")
    print("sizes:  " + " ".join(f"{k}={v}" for k, v in binding.sizes.items()))
    if binding.params:
        print("params: " + " ".join(f"{k}={v}" for k, v in binding.params.items()))
    print(format_memory_plan(report.plan))
    d = report.as_dict()
    verdict = "bit-exact" if report.ok else f"WRONG: {report.mismatches} of {d['outputs']} outputs differ"
    print(f"result: {verdict} vs the spec's semantics (exact TFLite integers; seed {seed if seed is not None else 'fresh'})")
    print(f"arena peak {d['arena_peak_bytes']} B, static RAM {d['static_ram_bytes']} B (.data+.bss), "
          f"peak stack {d['peak_stack_bytes']} B, flash {d['flash_text_bytes']} B")
    print(f"instructions: {d['instructions']} ({d['counter']}: qemu -icount shift=0, SysTick x 40)")
    if args.json:
        d.update(program=prog.name, target=prog.target, sizes=binding.sizes, params=binding.params,
                 device=session.device(prog.target), versions=session.versions())
        write_atomic(args.json, json.dumps(d, indent=2, sort_keys=True) + "\n")
        print(f"wrote {args.json}")
    return 0 if report.ok else 3
