"""Shared by the attention experiments that compare variants of one generated kernel: per shape, each
variant's persistent candidates are searched, its winner checked against the oracle on the device,
then the winners and torch SDPA's cuDNN backend are timed in turns (bench/spec_bench.interleaved).
`run_patched` drives the experiments whose variants patch the generated module's source."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import attention  # noqa: E402
import spec_bench as sb  # noqa: E402


def compare(program, variants: dict, sizes: dict, causal: bool, repeats: int) -> list[dict]:
    """Rows (one a variant) of `variants` (name: Kernel of `program`) at `sizes` ([B, H, S, D], G), timed
    in turns with cuDNN; each row's winner checked against the oracle first."""
    from torch.nn.attention import SDPBackend

    b_, h, s, d, g = sizes["B"], sizes["H"], sizes["SQ"], sizes["D"], sizes.get("G", 1)
    cands = [c for c in attention.candidates(d, persistent=True) if c.get("PERSISTENT")]
    per_set = 2 * (b_ * h * s * d * 2 + 2 * b_ * (h // g) * s * d)
    sets = [attention.make_inputs(b_, h, s, d, "cuda", g=g) for _ in range(sb.n_sets(per_set))]
    timers, found = {}, {}
    for name, kern in variants.items():
        best, table, _ = sb.search(kern, program, sizes, cands, sets, repeats)
        err, why = attention.check_slice(kern, program, sizes, best["params"], sets[0])
        found[name] = {"params": best["params"], "search_ms": best["ms"], "rel_err": err, "check": why or "ok",
                       "candidates": table}
        bound = sb.legal(program, sizes, best["params"])
        timers[name] = lambda kern=kern, bound=bound: sb.time_kernel(kern, bound, sets, repeats)
    fn = attention.sdpa(SDPBackend.CUDNN_ATTENTION, causal, g)
    timers["cuDNN"] = lambda: sb.time_fns([lambda t=t: fn(t["Q"], t["K"], t["V"]) for t in sets], repeats)
    ms = sb.interleaved(timers)
    fl = attention.flops(b_, h, s, s, d, causal)
    rows = []
    for name, f in found.items():
        rows.append({"shape": sizes, "causal": causal, "variant": name, "ms": ms[name], "cudnn_ms": ms["cuDNN"],
                     "ratio_vs_cudnn": ms["cuDNN"] / ms[name], "TFLOPs": fl / ms[name] / 1e9, **f})
        print(f"{' '.join(f'{k}={v}' for k, v in sizes.items())} causal={causal} {name:18s} {ms[name]:.4f} ms "
              f"x{ms['cuDNN'] / ms[name]:.3f} cuDNN  {f['check']} {f['params']}", flush=True)
    return rows


def in_consumer(src: str, edit) -> str:
    """`src` with `edit(text) -> text` applied to the persistent consumer's function only (from its
    name to the next kernel)."""
    start = src.index("_persistent_consumer(")
    end = src.index("@gluon.jit", start)
    return src[:start] + edit(src[start:end]) + src[end:]


def run_patched(patch, variants: list[str], shapes: list[tuple], name: str, what: str) -> int:
    """Each (B, H, S, D, causal) shape's `variants` (`patch(variant, source)` of the generated module)
    compiled in parallel, then compared in turns with cuDNN (`compare`); the rows written to
    --out/<name>-<device>.json after each shape. LENGTHS=1024,... keeps those sequence lengths."""
    import patched_kernels as pk
    import torch

    from tilesched import load_program
    from tilesched.backends.cuda.kernel import Kernel, compiled
    from tilesched.backends.cuda.render import load_source

    p = argparse.ArgumentParser(description=what)
    p.add_argument("--out", default=".")
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    only = {int(v) for v in os.environ.get("LENGTHS", "").split(",") if v}
    dev = torch.cuda.get_device_name()
    shapes = [sh for sh in shapes if not only or sh[2] in only]
    pk.warm(patch, [(v, attention.SPECS[causal], {"B": b_, "H": h, "SQ": s, "SK": s, "D": d}, c)
                    for b_, h, s, d, causal in shapes for v in variants
                    for c in attention.candidates(d, persistent=True) if c.get("PERSISTENT")])
    rows = []
    for b_, h, s, d, causal in shapes:
        program = load_program(sb.CONFIGS / f"{attention.SPECS[causal]}.yaml")
        src = compiled(program)[1]
        kernels = {v: Kernel(program, module=load_source(patch(v, src))) for v in variants}
        rows += compare(program, kernels, {"B": b_, "H": h, "SQ": s, "SK": s, "D": d}, causal, a.repeats)
        sb.write_json(Path(a.out) / f"{name}-{sb.slug(dev)}.json",
                      {"what": what, "date": sb.now(), "device": dev, "versions": sb.versions(), "rows": rows})
    return 0
