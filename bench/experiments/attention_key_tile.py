"""Experiment: key tiles of 256 for the warp-specialised attention kernel (the generated one, with
tilesched.passes.warp_specialize.KEY_TILES and the specs' BLOCK_N choices widened in memory),
against key tiles of 128, each checked against the oracle at a ragged shape first, then timed in
turns with SDPA's cuDNN backend (spec_bench.interleaved). Writes OUT/attention-key-tile.json."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import attention  # noqa: E402
import spec_bench as sb  # noqa: E402

import tilesched.passes.warp_specialize as wsp  # noqa: E402
from tilesched import lower  # noqa: E402
from tilesched.spec import load_spec_text  # noqa: E402

wsp.KEY_TILES = (64, 128, 256)
SHAPES = [((4, 32, 4096, 64), False), ((4, 32, 4096, 64), True), ((8, 16, 1024, 64), False),
          ((8, 16, 1024, 64), True), ((4, 16, 16384, 64), False), ((8, 16, 1024, 128), False)]


def program(causal: bool):
    name = attention.SPECS[causal]
    text = (sb.CONFIGS / f"{name}.yaml").read_text().replace("BLOCK_N: {choices: [16, 32, 64, 128]",
                                                              "BLOCK_N: {choices: [16, 32, 64, 128, 256]")
    spec, source = load_spec_text(text)
    return lower(spec, source)


def points(d: int) -> list[dict]:
    out = []
    for bn in (128, 256):
        for st in (2, 3, 4):
            if 2 * d * (128 + 2 * st * bn) <= 227 * 1024 - 1024:
                out.append({"BLOCK_M": 128, "BLOCK_N": bn, "NUM_WARPS": 4, "NUM_STAGES": st, "WARP_SPECIALIZE": True})
    return out


def timers_of(kernel, prog, sizes, sets, d, cudnn) -> dict:
    """A timer per point (its binding fixed here) and one for cuDNN, over the same rotated sets."""
    timers = {}
    for p in points(d):
        b = sb.legal(prog, sizes, p)
        timers[json.dumps(p)] = lambda b=b: sb.time_kernel(kernel, b, sets, 20)
    timers["cudnn"] = lambda: sb.time_fns([lambda t=t: cudnn(t["Q"], t["K"], t["V"]) for t in sets], 20)
    return timers


def main() -> int:
    import torch
    from torch.nn.attention import SDPBackend

    from tilesched.backends.cuda.kernel import Kernel

    report = sb.report_header(torch.cuda.get_device_name(), "attention: warp-specialised key tiles of 256")
    report["checks"], report["rows"] = [], []
    for causal in (False, True):
        prog = program(causal)
        kernel = Kernel(prog)
        for d in (64, 128):
            sizes = {"B": 1, "H": 2, "SQ": 517, "SK": 517, "D": d}
            ins = attention.make_inputs(1, 2, 517, d, "cuda")
            for p in points(d):
                if p["BLOCK_N"] != 256:
                    continue
                err, why = sb.oracle_error(kernel, sb.legal(prog, sizes, p), ins)
                report["checks"].append({"causal": causal, "sizes": sizes, "params": p, "rel_err": err, "why": why})
                print("check", causal, d, p, f"{err:.1e}", why, flush=True)
    for (b, h, s, d), causal in SHAPES:
        prog = program(causal)
        kernel = Kernel(prog)
        sizes = {"B": b, "H": h, "SQ": s, "SK": s, "D": d}
        sets = [attention.make_inputs(b, h, s, d, "cuda") for _ in range(sb.n_sets(4 * b * h * s * d * 2))]
        times = sb.interleaved(timers_of(kernel, prog, sizes, sets, d, attention.sdpa(SDPBackend.CUDNN_ATTENTION,
                                                                                       causal)))
        cudnn = times.pop("cudnn")
        row = {"shape": sizes, "causal": causal, "cudnn_ms": cudnn,
               "points": [{"params": json.loads(k), "ms": v, "vs_cudnn": cudnn / v} for k, v in times.items()]}
        report["rows"].append(row)
        best = {bn: max((x["vs_cudnn"] for x in row["points"] if x["params"]["BLOCK_N"] == bn), default=None)
                for bn in (128, 256)}
        print(sizes, causal, "best x cuDNN by key tile:", best, flush=True)
        Path(os.environ.get("OUT", "/tmp"), "attention-key-tile.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
