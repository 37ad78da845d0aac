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
    from torch.nn.attention import SDPBackend

    p = argparse.ArgumentParser()
    p.add_argument("--out", default=".")
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    rows = []
    for b_, h, s, d in SHAPES:
        for causal in (False, True):
            program = load_program(sb.CONFIGS / f"{attention.SPECS[causal]}.yaml")
            sizes = {"B": b_, "H": h, "SQ": s, "SK": s, "D": d}
            cands = [c for c in attention.candidates(d, persistent=True) if c.get("PERSISTENT")]
            per_set = 2 * (b_ * h * s * d * 2 + 2 * b_ * h * s * d)
            sets = [attention.make_inputs(b_, h, s, d, "cuda") for _ in range(sb.n_sets(per_set))]
            timers, found = {}, {}
            for name, kern in kernels(program).items():
                best, table, _ = sb.search(kern, program, sizes, cands, sets, a.repeats)
                err, why = attention.check_slice(kern, program, sizes, best["params"], sets[0])
                found[name] = {"params": best["params"], "search_ms": best["ms"], "rel_err": err, "check": why or "ok",
                               "candidates": table}
                bound = sb.legal(program, sizes, best["params"])
                timers[name] = lambda kern=kern, bound=bound, sets=sets: sb.time_kernel(kern, bound, sets, a.repeats)
            fn = attention.sdpa(SDPBackend.CUDNN_ATTENTION, causal)
            timers["cuDNN"] = lambda fn=fn, sets=sets: sb.time_fns([lambda t=t: fn(t["Q"], t["K"], t["V"]) for t in sets],
                                                        a.repeats)
            ms = sb.interleaved(timers)
            fl = attention.flops(b_, h, s, s, d, causal)
            for name, f in found.items():
                rows.append({"shape": sizes, "causal": causal, "variant": name, "ms": ms[name], "cudnn_ms": ms["cuDNN"],
                             "ratio_vs_cudnn": ms["cuDNN"] / ms[name], "TFLOPs": fl / ms[name] / 1e9, **f})
                print(f"B={b_} H={h} S={s} D={d} causal={causal} {name:20s} {ms[name]:.4f} ms "
                      f"x{ms['cuDNN'] / ms[name]:.3f} cuDNN  {f['check']} {f['params']}", flush=True)
    dev = torch.cuda.get_device_name()
    sb.write_json(Path(a.out) / f"attention-query-slots-{sb.slug(dev)}.json",
                  {"what": __doc__.split("\n\n")[0], "date": sb.now(), "device": dev, "versions": sb.versions(),
                   "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
