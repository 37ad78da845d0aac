"""Experiment: Triton's warp specialisation on the key loops of the generated attention kernels
(`tl.range(..., warp_specialize=True)`), against the generated kernels, each beside SDPA flash and cuDNN in
the same run and checked against the oracle (bench/attention.py's bench_one). Writes OUT/attention-ws-exp.json.
`TRITON_INTERPRET=1 python bench/experiments/attention_ws.py` checks the patched source on the CPU."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import attention  # noqa: E402
import spec_bench as sb  # noqa: E402

import tilesched.backends.cuda.kernel as K  # noqa: E402
from tilesched import load_program  # noqa: E402
from tilesched.tuner.lockfile import LockFile  # noqa: E402

ORIG = K.compiled.__wrapped__
SHAPES = [((4, 32, 4096, 128), False), ((4, 32, 4096, 128), True), ((8, 16, 1024, 128), False),
          ((4, 32, 4096, 64), False)]


def warp_specialized(program):
    k, src = ORIG(program)
    out = src.replace("in tl.range(a_SK, b_SK):", "in tl.range(a_SK, b_SK, warp_specialize=True):")
    out = out.replace("in tl.range(0, tiles_SK):", "in tl.range(0, tiles_SK, warp_specialize=True):")
    assert out != src
    return k, out


def use(variant: str) -> None:
    K.compiled = functools.lru_cache(maxsize=256)({"v0": ORIG, "ws": warp_specialized}[variant])


def main() -> int:
    if os.environ.get("TRITON_INTERPRET"):
        from tests.cuda_util import run_against_oracle
        from tilesched.backends.cuda.io import retyped

        use("ws")
        for spec, sizes in attention.CHECK.items():
            prog = retyped(load_program(sb.CONFIGS / f"{spec}.yaml"), "bf16", "fp16")
            small = {**sizes, "B": 1, "SQ": 40, "SK": 40, **({"H": 2} if "G" not in sizes else {"H": 4, "G": 2})}
            params = {"BLOCK_M": 16, "BLOCK_N": 16, "NUM_WARPS": 4, "NUM_STAGES": 2}
            v = run_against_oracle(K.Kernel(prog), small, params, seed=1)
            print(spec, v.ok, v.why)
        return 0
    args = argparse.Namespace(repeats=20, workers=8)
    report = sb.report_header(__import__("torch").cuda.get_device_name(), "attention: warp-specialised key loops")
    for variant in ("v0", "ws"):
        use(variant)
        for shape, causal in SHAPES:
            n = len(report["rows"])
            try:
                attention.bench_one(args, report, LockFile(), attention.SPECS[causal], shape, causal)
            except Exception as exc:  # noqa: BLE001 - a variant that does not compile is a result
                print(variant, shape, causal, "ERR", str(exc).strip().splitlines()[-1][:200] if str(exc) else exc)
            for r in report["rows"][n:]:
                r["variant"] = variant
        Path(os.environ.get("OUT", "/tmp"), "attention-ws-exp.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
