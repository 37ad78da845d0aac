"""Experiment: the persistent attention kernel with one pair of query slots (the loader brings a
tile's query halves only once the consumers' last scores of the previous tile are done) against two
where shared memory holds them (QBUF = 2: the next tile's halves load while the consumers finish
this one). Per shape, each variant's persistent candidates are searched, its winner checked against
the oracle, then both winners and torch SDPA's cuDNN backend are timed in turns. The second pair is
not in the generator (no gain measured: bench/results/attention-query-slots-*.json); the patch adds it:

  git apply bench/experiments/attention_query_slots.patch
  python bench/attention.py check --persistent --out DIR     (the patched kernel vs the oracle)
  python bench/experiments/attention_query_slots.py --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import attention  # noqa: E402
import spec_bench as sb  # noqa: E402
from attention_turns import compare  # noqa: E402

from tilesched import load_program  # noqa: E402
from tilesched.backends.cuda.kernel import Kernel, compiled  # noqa: E402
from tilesched.backends.cuda.render import load_source  # noqa: E402

AUTO = 'consts["QBUF"] = 2 if 2 * q_bytes + ring_bytes <= 231424 else 1'
SHAPES = [(8, 16, 1024, 128), (8, 16, 1024, 64), (4, 32, 4096, 128), (4, 32, 4096, 64)]


def kernels(program) -> dict:
    src = compiled(program)[1]
    if AUTO not in src:
        raise SystemExit("the generated launcher no longer picks the query slots")
    return {"one pair": Kernel(program, module=load_source(src.replace(AUTO, 'consts["QBUF"] = 1'))),
            "two where they fit": Kernel(program)}


def main() -> int:
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--out", default=".")
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    rows = []
    for b_, h, s, d in SHAPES:
        for causal in (False, True):
            program = load_program(sb.CONFIGS / f"{attention.SPECS[causal]}.yaml")
            sizes = {"B": b_, "H": h, "SQ": s, "SK": s, "D": d}
            rows += compare(program, kernels(program), sizes, causal, a.repeats)
    dev = torch.cuda.get_device_name()
    sb.write_json(Path(a.out) / f"attention-query-slots-{sb.slug(dev)}.json",
                  {"what": __doc__.split("\n\n")[0], "date": sb.now(), "device": dev, "versions": sb.versions(),
                   "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
