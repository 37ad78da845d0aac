"""Peak SRAM of tilesched's Cortex-M schedules against the TensorFlow Lite Micro arena, per MCU workload.

The workloads are bench/mcu_workloads.py's layer records, shared with tilesched's Cortex-M bench. For each
workload the int8 model is written as a .tflite flatbuffer (tilesched.baselines.tflite_builder), run once in the
TFLM Python interpreter on random inputs, and its arena read from TFLM's RecordingMicroAllocator: `head` is the
planned activation arena, `tail` the persistent allocations, `total` = head + tail is the arena the model needs.
tilesched's peak comes from bench/results/mcu-tilesched.json (written by the Cortex-M benchmark) when present.

    python bench/mcu_memory.py [--out bench/results/mcu-memory.json] [--only NAME ...] [--tilesched FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import mcu_workloads  # noqa: E402

from tilesched.baselines import tflm  # noqa: E402
from tilesched.fsutil import write_atomic  # noqa: E402

TILESCHED_RESULTS = ROOT / "bench" / "results" / "mcu-tilesched.json"


def tilesched_peaks(path: Path = TILESCHED_RESULTS) -> dict[str, int]:
    """Per-workload `peak` bytes from the Cortex-M benchmark's results, in either a {name: {...}} mapping or a
    list of {"name"/"workload": ..., "peak"...} records (under a top-level "workloads" or "results" key)."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        data = data.get("workloads", data.get("results", data))
    items = data.items() if isinstance(data, dict) else ((r.get("name", r.get("workload")), r) for r in data)
    peaks = {}
    for name, rec in items:
        if not isinstance(rec, dict):
            continue
        for key in ("arena_peak_bytes", "peak", "peak_bytes", "peak_sram_bytes"):
            if isinstance(rec.get(key), int):
                peaks[name] = rec[key]
                break
    return peaks


def measure(names: list[str], seed: int, tilesched_json: Path = TILESCHED_RESULTS, label: str | None = None) -> dict:
    peaks = tilesched_peaks(tilesched_json)
    rows = {}
    for name in names:
        layers = mcu_workloads.WORKLOADS[name]
        arena = tflm.tflm_arena(tflm.model_from_layers(layers, mcu_workloads.IO.get(name), seed=seed), seed=seed)
        if arena["output_distinct"] < 2:
            raise RuntimeError(f"{name}: TFLM produced a constant output; the model is broken")
        peak = peaks.get(name)
        total = arena["total_bytes"]
        rows[name] = {
            "layers": [f"{la['name']}:{la['op']}" for la in layers],
            "input_shape": layers[0]["input_shape"],
            "tflm_arena_bytes": total,
            "tflm_head_bytes": arena["head_bytes"],
            "tflm_tail_bytes": arena["tail_bytes"],
            "tflm_tail_parts": arena["tail_parts"],
            "tflite_model_bytes": arena["model_bytes"],
            "tflm_output": {"shape": arena["output_shape"], "distinct_values": arena["output_distinct"],
                            "std": round(arena["output_std"], 3)},
            "tilesched_peak_bytes": peak,
            "ratio": round(total / peak, 3) if peak else None,
            "reduction_percent": round(100.0 * (1.0 - peak / total), 2) if peak else None,
            "ratio_head": round(arena["head_bytes"] / peak, 3) if peak else None,
            "reduction_percent_head": round(100.0 * (1.0 - peak / arena["head_bytes"]), 2) if peak else None,
        }
        print(f"{name:16s} TFLM arena {total:>9d} B (head {arena['head_bytes']:>9d}, tail {arena['tail_bytes']:>6d})"
              f"  tilesched peak {peak if peak is not None else '-':>9}"
              + (f"  x{rows[name]['ratio']}" if peak else ""))
    return {
        "benchmark": "mcu_memory",
        "baseline": "TensorFlow Lite Micro (tflite-micro Python interpreter, RecordingMicroAllocator)",
        "tflite_micro_version": tflm.tflm_version(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.platform(),
        "seed": seed,
        "tilesched_source": _source(tilesched_json, label) if peaks else None,
        "notes": "ratio = tflm_arena_bytes / tilesched_peak_bytes; reduction_percent = 100 * (1 - tilesched / tflm). "
                 "tflm_arena_bytes = head (planned activations, incl. kernel scratch) + tail (persistent: interpreter "
                 "structures, per-channel quantization data, and BATCH_MATMUL's transposed-RHS buffer, [heads, "
                 "head_dim, seq] bytes, which TFLM allocates persistently). "
                 "ratio_head / reduction_percent_head compare against the planned activation arena (head) only. "
                 "The x86 interpreter runs TFLM's portable kernels; CMSIS-NN kernels on a Cortex-M may request "
                 "extra scratch, so on a device the TFLM arena is at least this large. "
                 "Null tilesched fields: no tilesched result was available when this ran.",
        "workloads": rows,
    }


def _source(path: Path, label: str | None) -> dict:
    doc = json.loads(path.read_text())
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return {"file": label or str(rel), "date": doc.get("date") if isinstance(doc, dict) else None,
            "field": "arena_peak_bytes (tilesched SRAM arena, network input and output included)"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "mcu-memory.json")
    ap.add_argument("--only", nargs="*", choices=sorted(mcu_workloads.WORKLOADS), help="workloads to run (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tilesched", type=Path, default=TILESCHED_RESULTS,
                    help="tilesched's Cortex-M bench results (default: %(default)s)")
    ap.add_argument("--tilesched-label", help="how to name that file in the results (e.g. branch:path@commit)")
    args = ap.parse_args(argv)
    result = measure(args.only or list(mcu_workloads.WORKLOADS), args.seed, args.tilesched, args.tilesched_label)
    write_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
