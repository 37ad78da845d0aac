"""Experiment: the persistent causal attention kernel claiming its tiles point by point (each head's
query tiles heaviest first, then the next head's) against heaviest first across groups of heads
(gluon_attention._decode): as many heads as keep their keys and values within 16 MiB
(heavy_first.CLAIM_SPAN), no more heads than make one round of the CTAs' tiles, or every head.
Point by point, the last claims are the last head's heaviest tiles and the CTAs that take them run on
after the others run dry. Per shape each variant's persistent candidates are searched, its winner
checked against the oracle, then the winners and torch SDPA's cuDNN backend are timed in turns. The
generator groups by the span where the CTAs take at most 16 tiles each (heavy_first.CLAIM_ROUNDS); the
variants replace that line of the generated launcher:

  python bench/attention.py check --persistent --out DIR     (the generated kernel vs the oracle)
  [LENGTHS=1024] python bench/experiments/attention_claim_groups.py --out DIR
"""

from __future__ import annotations

import argparse
import os
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

GROUPED = "    group = max(1, min(points, span)) if few else 1"
SHAPES = [(8, 16, 1024, 128, 1), (8, 16, 1024, 64, 1), (4, 32, 4096, 128, 1), (4, 32, 4096, 64, 1),
          (4, 32, 4096, 128, 4), (4, 16, 16384, 128, 1), (4, 16, 16384, 64, 1)]  # (B, H, S, D, G)


def kernels(program) -> dict:
    src = compiled(program)[1]
    if GROUPED not in src:
        raise SystemExit("the generated launcher no longer sizes the claim groups")
    variant = lambda line: Kernel(program, module=load_source(src.replace(GROUPED, line)))  # noqa: E731
    return {"point by point": variant("    group = 1"),
            "groups of 16 MiB": variant("    group = max(1, min(points, span))"),
            "and a round": variant("    group = max(1, min(points, span, -(-cfg.grid[0] // (tiles // points))))"),
            "every head": variant("    group = points")}


def main() -> int:
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--out", default=".")
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    only = {int(v) for v in os.environ.get("LENGTHS", "").split(",") if v}  # e.g. LENGTHS=1024: those shapes
    rows = []
    for b_, h, s, d, g in SHAPES:
        if only and s not in only:
            continue
        program = load_program(sb.CONFIGS / f"{attention.GQA_SPEC if g > 1 else attention.SPECS[True]}.yaml")
        sizes = {"B": b_, "H": h, "SQ": s, "SK": s, "D": d, **({"G": g} if g > 1 else {})}
        rows += compare(program, kernels(program), sizes, True, a.repeats)
    dev = torch.cuda.get_device_name()
    sb.write_json(Path(a.out) / f"attention-claim-groups-{sb.slug(dev)}.json",
                  {"what": __doc__.split("\n\n")[0], "date": sb.now(), "device": dev, "versions": sb.versions(),
                   "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
