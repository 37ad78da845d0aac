"""Whole networks on Cortex-M: tilesched's best fusion point against TensorFlow Lite Micro's arena for the
same network and weights, measured in the same run; writes bench/results/mcu-networks.json one entry at a
time (network x resolution / sequence length).

Per entry: the fusion/tile search (tilesched/tuner/mcu_fusion.py: fuse boundaries and the spec's loop
tiles, peaks from the memory plan), a few points spread over the peak range run under QEMU (the Pareto
front of peak SRAM vs instructions), the lowest-peak point run on the Cortex-M4 and the Cortex-M7 on fresh
random inputs and checked bit for bit against the oracle (instructions, flash bytes), and TFLM's arena:
for the CNNs the spec's own .tflite (tilesched/baselines/spec_tflite.py: the oracle's weights; TFLM's
output is compared with the oracle's), for BERT the builder's int8 layer of the same shapes
(tilesched/baselines/tflite_builder.py; see `bert_tflm`). A `layers` section re-measures the layers of
the per-family kernels (bench/results/mcu-tilesched.json, written by the templates before the rewrite)
with today's lowering and reports the instruction ratio.

    python bench/mcu_networks.py [--quick] [--only NAME ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from tilesched import load_with_source  # noqa: E402
from tilesched.backends.cortexm import session  # noqa: E402
from tilesched.fsutil import write_atomic  # noqa: E402
from tilesched.ir.bind import Binding, bind  # noqa: E402
from tilesched.tuner import mcu_fusion as mf  # noqa: E402

OUT = ROOT / "bench" / "results" / "mcu-networks.json"
OLD = ROOT / "bench" / "results" / "mcu-tilesched.json"
TARGETS = ("cortex-m4", "cortex-m7")

# (entry name, config, sizes)
FULL = [
    ("mobilenetv2_035_144", "mcu_mobilenetv2_035", {"R": 144}),
    ("mobilenetv2_035_96", "mcu_mobilenetv2_035", {"R": 96}),
    ("mcunet_128", "mcu_mcunet", {"R": 128}),
    *((f"bert_tiny_layer_s{s}", "mcu_bert_tiny_layer", {"S": s}) for s in (128, 256, 512, 1024)),
]
QUICK = [
    ("mobilenetv2_035_24", "mcu_mobilenetv2_035", {"R": 24}),
    ("mcunet_20", "mcu_mcunet", {"R": 20}),
    ("bert_tiny_layer_s16", "mcu_bert_tiny_layer", {"S": 16}),
]
# the per-family kernels' layers (bench/results/mcu-tilesched.json): config and its parameters there
LAYERS = {
    "ib_s1_80": ("mcu_inverted_bottleneck", {"ROWS": 1}),
    "ib_s2_80": ("mcu_inverted_bottleneck_s2", {"ROWS": 1}),
    "bert_tiny_s128": ("mcu_bert_tiny_attention", {"S": 128, "ROWS": 4, "HEADS": 2}),
    "bert_tiny_s256": ("mcu_bert_tiny_attention", {"S": 256, "ROWS": 4, "HEADS": 1}),
    "bert_tiny_s512": ("mcu_bert_tiny_attention", {"S": 512, "ROWS": 4, "HEADS": 1}),
}
# TinyEngine's published figures (MCUNetV2 / MCUNet papers, STM32 boards), literature constants
LITERATURE = {
    "mcunet-in0 (TinyEngine vs TFLM)": {"tinyengine_peak_kB": 49, "tflm_peak_kB": 161, "source": "MCUNet (Lin et al. "
                                        "2020), peak SRAM of mcunet-in0 under TinyEngine and TF-Lite Micro"},
    "mbv2-w0.35 (TinyEngine, STM32H743)": {"tinyengine_peak_kB": 295, "source": "MCUNetV2 (Lin et al. 2021), "
                                           "MobileNetV2 w0.35 per-layer inference peak on STM32H743"},
}
LITERATURE_NOTE = (
    "Literature constants, not measured here. Shapes differ: mcunet-in0 is an ImageNet model searched for a "
    "256 KB MCU (its own resolution and block list, 48/96-channel stages), not the NetAug MCUNet block list "
    "built here at 128x128; MobileNetV2 w0.35 in MCUNetV2's table runs at 144x144 with TinyEngine's "
    "in-place depthwise and per-layer buffers on real weights, where this bench uses random int8 weights "
    "of the same shapes. tilesched's arena includes the network input and output; TinyEngine's peaks are "
    "whole-SRAM peaks reported by its compiler.")


def _seed() -> int:
    return int(np.random.SeedSequence().entropy % 2**32)


def _bind(config: str, sizes: dict) -> Binding:
    prog, src = load_with_source(ROOT / "configs" / f"{config}.yaml")
    return bind(prog, sizes, src)


def bert_tflm(b: Binding, seed: int) -> dict:
    """TFLM's arena for the BERT-tiny layer: spec_tflite cannot write it (multi-row dots, layernorm), so the
    builder's layer of the same shapes (Q/K/V/output projections, attention, FFN 512, int8) is extended with
    the two residual ADDs and TFLite's int8 layernorm decomposition; see tflite_builder.bert_layer_model."""
    from tilesched.baselines import tflm
    from tilesched.baselines.tflite_builder import bert_layer_model

    model = bert_layer_model(b.sizes["S"], seed=seed)
    arena = tflm.tflm_arena(model, seed=seed)
    return {"tflm_arena_bytes": arena["total_bytes"], "tflm_head_bytes": arena["head_bytes"],
            "tflm_tail_bytes": arena["tail_bytes"], "tflm_model": "tflite_builder.bert_layer_model (same shapes, "
            "builder's random weights)", "tflm_matches_oracle": None}


def cnn_tflm(b: Binding, seed: int) -> dict:
    """TFLM's arena for the spec's own network, weights and input; its output compared with the oracle's."""
    from tilesched.baselines.spec_tflite import run_tflm

    wl = session.make_workload(b, seed)
    r = run_tflm(b, wl.inputs)
    return {"tflm_arena_bytes": r["total_bytes"], "tflm_head_bytes": r["head_bytes"], "tflm_tail_bytes": r["tail_bytes"],
            "tflm_model": "spec_tflite (the oracle's weights)", "tflite_model_bytes": r["model_bytes"],
            "tflm_matches_oracle": bool(np.array_equal(r["output"].astype(np.int64),
                                                       np.asarray(wl.expected).reshape(-1).astype(np.int64)))}


def run_entry(name: str, config: str, sizes: dict, measure_k: int = 3, log=print) -> dict:
    b = _bind(config, sizes)
    t0 = time.time()
    points = mf.search(b)
    t_search = time.time() - t0
    measured = mf.measure_front(b, points, k=measure_k, seed=_seed())
    front = mf.pareto(measured)
    best = mf.best(measured)
    budget = b.program.limits.sram_bytes
    log(f"{name}: {len(points)} points planned in {t_search:.0f} s; best peak {best.peak_bytes} B")
    rec = {"config": f"configs/{config}.yaml", "sizes": sizes, "target_of_spec": b.program.target,
           "tilesched_peak_bytes": best.peak_bytes, "fits_sram_bytes": best.peak_bytes <= budget,
           "sram_bytes": budget, "best": {"fuse": best.fuse, "halo": best.halo, "params": dict(best.params),
                                          "macs": best.macs}, "points_planned": len(points),
           "pareto": [p.as_dict() for p in front], "measured": [p.as_dict() for p in measured], "targets": {}}
    for target in TARGETS:
        seed = _seed()
        m = mf.measure_point(b, best, target=target, seed=seed)
        rec["targets"][target] = {"instructions": m.instructions, "flash_bytes": m.flash_bytes,
                                  "bit_exact": m.bit_exact, "seed": seed}
        log(f"  {target}: {m.instructions} instructions, flash {m.flash_bytes} B, bit-exact {m.bit_exact}")
    bb = mf.with_options(b, best.fuse, best.halo, dict(best.params))
    seed = _seed()
    tf = bert_tflm(bb, seed) if config == "mcu_bert_tiny_layer" else cnn_tflm(bb, seed)
    rec.update(tf)
    rec["tflm_seed"] = seed
    rec["ratio"] = round(best.peak_bytes / tf["tflm_arena_bytes"], 4)
    rec["instructions_m4"] = rec["targets"]["cortex-m4"]["instructions"]
    rec["instructions_m7"] = rec["targets"]["cortex-m7"]["instructions"]
    rec["flash_bytes"] = rec["targets"]["cortex-m4"]["flash_bytes"]
    rec["bit_exact"] = all(t["bit_exact"] for t in rec["targets"].values())
    log(f"  TFLM arena {tf['tflm_arena_bytes']} B: ratio {rec['ratio']}")
    return rec


def run_layer(name: str, old: dict) -> dict:
    config, values = LAYERS[name]
    b = _bind(config, values)
    out = {"config": f"configs/{config}.yaml", "values": values, "targets": {}}
    for target in TARGETS:
        bb = b.model_copy(update={"program": b.program.model_copy(update={"target": target})})
        rep = session.run_binding(bb, seed=_seed())
        before = old["workloads"][name]["targets"][target]["instructions"]
        out["targets"][target] = {"instructions": rep.run.instructions, "bit_exact": bool(rep.ok),
                                  "per_family_kernel_instructions": before,
                                  "ratio_vs_per_family": round(rep.run.instructions / before, 4)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a check of the glue, minutes)")
    ap.add_argument("--only", nargs="*", help="entry names to run (default: all)")
    ap.add_argument("--no-layers", action="store_true", help="skip the per-family layer comparison")
    ap.add_argument("--measure", type=int, default=3, help="points per entry run under QEMU for the front")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    out = args.out or (OUT if not args.quick else ROOT / "bench" / "results" / "mcu-networks-quick.json")
    entries = QUICK if args.quick else FULL
    if args.only:
        entries = [e for e in entries if e[0] in args.only]
    from tilesched.baselines import tflm

    doc = json.loads(out.read_text()) if out.exists() and args.only else {}
    doc.update({"benchmark": "mcu_networks", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "host": platform.platform(), "versions": {**session.versions(), "tflite_micro": tflm.tflm_version()},
                "device": ", ".join(session.device(t) for t in TARGETS),
                "notes": "tilesched_peak_bytes: the SRAM arena of the lowest-peak point the fusion search found (network "
                         "input and output included; weights in flash). tflm_arena_bytes: TFLM RecordingMicroAllocator "
                         "head + tail on the x86 interpreter (portable kernels). ratio = tilesched / TFLM. instructions: "
                         "qemu -icount shift=0 (executed instructions, not cycles). bit_exact: the generated C on fresh "
                         "random inputs vs the spec's oracle, outputs poisoned before the run, on each core.",
                "literature": {"figures": LITERATURE, "note": LITERATURE_NOTE}})
    doc.setdefault("networks", {})
    for name, config, sizes in entries:
        doc["networks"][name] = run_entry(name, config, sizes, args.measure)
        write_atomic(out, json.dumps(doc, indent=2) + "\n")
    layers = [n for n in LAYERS if not args.only or n in args.only]
    if not args.quick and not args.no_layers and layers:
        old = json.loads(OLD.read_text())
        doc.setdefault("layers", {"rows": {}})["source"] = (
            f"bench/results/mcu-tilesched.json (per-family template kernels, {old.get('date')}) vs today's lowering, "
            "same configs and parameters")
        for name in layers:
            doc["layers"]["rows"][name] = run_layer(name, old)
            print(f"{name}: " + ", ".join(f"{t} x{v['ratio_vs_per_family']}"
                                          for t, v in doc["layers"]["rows"][name]["targets"].items()))
            write_atomic(out, json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
