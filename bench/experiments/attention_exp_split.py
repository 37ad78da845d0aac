"""Attention with some of the softmax's exponentials on the FMA units. An H100 SM computes 16
exponentials a clock (MUFU) against 1024 bf16 MMA multiply-adds, so at D = 64 a key tile's 2^x take
as long as its two MMAs (at D = 128 half as long). The variants compute k of every n consecutive
register elements of the probability tile by a degree-3 polynomial (2^x = 2^round(x) 2^f, f in
[-1/2, 1/2], p(0) = 1, relative error 1.0e-4; the integer part added to the exponent bits; x clamped at
-127 so -inf gives +0) and the rest by ex2.approx, in both schedules (Triton's kernel and the
warp-specialised Gluon one): "q4" 1 of 4, "e8" 3 of 8, "h2" 1 of 2; "v0" is the kernel as
generated. Each variant's candidates are timed on the same rotated inputs, its fastest checked
against the oracle, beside torch SDPA's cuDNN backend in the same run.
Writes OUT/attention-exp-split-<device>.json.

  python bench/experiments/attention_exp_split.py --out DIR
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import attention as att  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

from tilesched import load_program  # noqa: E402

SHAPES = [tuple(int(v) for v in s.split("x")) for s in os.environ.get(
    "SHAPES", "8x16x1024x128,8x16x1024x64,4x32x4096x64,4x32x4096x128").split(",")]  # B x H x S x D
CAUSAL = [c == "1" for c in os.environ.get("CAUSAL", "0,1").split(",")]
VARIANTS = {"v0": None, "q4": (4, 1), "e8": (8, 3), "h2": (2, 1)}  # (pack, polynomial elements)
COEFS = ("0f3F800000", "0f3F317AFD", "0f3E780627", "0f3D61510C")  # c0 = 1 (then p >= 1 for f >= 0), c1..c3 fitted


def asm(pack: int, poly: int) -> str:
    lines = ["{ .reg .f32 x, t, j, f, p; .reg .b32 e, b;"]
    for i in range(pack):
        out, src = f"${i}", f"${pack + i}"
        if i < pack - poly:
            lines.append(f"ex2.approx.ftz.f32 {out}, {src};")
            continue
        lines += [f"max.f32 x, {src}, 0fC2FE0000;",  # -127: -inf -> +0, no exponent wrap
                  "add.rn.f32 t, x, 0f4B400000;", "sub.rn.f32 j, t, 0f4B400000;", "sub.rn.f32 f, x, j;",
                  f"fma.rn.f32 p, f, {COEFS[3]}, {COEFS[2]};", f"fma.rn.f32 p, p, f, {COEFS[1]};",
                  f"fma.rn.f32 p, p, f, {COEFS[0]};",
                  "mov.b32 e, t;", "shl.b32 e, e, 23;", "mov.b32 b, p;", "add.s32 b, b, e;", f"mov.b32 {out}, b;"]
    lines.append("}")
    return " ".join(lines)


def helper(lang: str, name: str, pack: int, poly: int) -> str:
    cons = ",".join(["=f"] * pack + ["f"] * pack)
    deco = "gluon.jit" if lang == "ttgl" else "triton.jit"
    return (f"@{deco}\ndef {name}(x):\n    return {lang}.inline_asm_elementwise(\"{asm(pack, poly)}\", \"{cons}\", [x], "
            f"dtype={lang}.float32, is_pure=True, pack={pack})\n\n\n")


TRITON_EXP = re.compile(r"(e_\w+) = tl\.exp2\((x_\w+) - (ms_\w+)\[:, None\]\)")
GLUON_EXP = re.compile(r"p = ttgl\.exp2\((x(?: \* qk_scale)? - ttgl\.expand_dims\(m_safe, 1\))\)")


def patch(variant: str, src: str) -> str:
    pack, poly = VARIANTS[variant]
    src, n = TRITON_EXP.subn(r"\1 = _ts_exp2_split(\2 - \3[:, None])", src)
    src, g = GLUON_EXP.subn(r"p = _gl_exp2_split(\1)", src)
    if not n or not g:
        raise SystemExit(f"the generated source no longer holds the probabilities' exp2 ({n} Triton, {g} Gluon)")
    first_t = src.index("@triton.jit")
    src = src[:first_t] + helper("tl", "_ts_exp2_split", pack, poly) + src[first_t:]
    first_g = src.index("@gluon.jit")
    return src[:first_g] + helper("ttgl", "_gl_exp2_split", pack, poly) + src[first_g:]


def candidates(d: int) -> list[dict]:
    def c(bm, bn, w, s, ws=False):
        return {"BLOCK_M": bm, "BLOCK_N": bn, "NUM_WARPS": w, "NUM_STAGES": s, "WARP_SPECIALIZE": ws}

    if d <= 64:
        return [c(128, 64, 8, 3), c(64, 64, 4, 4), c(128, 64, 4, 4), c(128, 128, 4, 3, True), c(128, 128, 4, 4, True)]
    return [c(128, 64, 8, 3), c(128, 128, 4, 3, True), c(128, 64, 4, 4, True)]


def main() -> int:
    import torch
    from torch.nn.attention import SDPBackend

    p = argparse.ArgumentParser()
    p.add_argument("--out", default=".")
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    report = sb.report_header(torch.cuda.get_device_name(), __doc__.split("\n")[0])
    jobs = []
    for causal in CAUSAL:
        for b, h, s, d in SHAPES:
            sizes = {"B": b, "H": h, "SQ": s, "SK": s, "D": d}
            jobs += [(v, att.SPECS[causal], sizes, c) for v in VARIANTS for c in candidates(d)]
    pk.warm(patch, jobs)
    for causal in CAUSAL:
        program = load_program(sb.CONFIGS / f"{att.SPECS[causal]}.yaml")
        for b, h, s, d in SHAPES:
            sizes = {"B": b, "H": h, "SQ": s, "SK": s, "D": d}
            per_set = 2 * (b * h * s * d * 2 + 2 * b * h * s * d)
            sets = [att.make_inputs(b, h, s, d, "cuda") for _ in range(sb.n_sets(per_set))]
            fn = att.sdpa(SDPBackend.CUDNN_ATTENTION, causal)
            cudnn = sb.time_fns([lambda t=t, fn=fn: fn(t["Q"], t["K"], t["V"]) for t in sets], a.repeats)
            for variant in VARIANTS:
                pk.use(patch, variant)
                kern = pk.K.Kernel(program)
                best, table, _ = sb.search(kern, program, sizes, candidates(d), sets, a.repeats)
                err, why = att.check_slice(kern, program, sizes, best["params"], sets[0])
                report["rows"].append({"shape": sizes, "causal": causal, "variant": variant, "ms": best["ms"],
                                       "params": best["params"], "cudnn_ms": cudnn, "ratio_vs_cudnn": cudnn / best["ms"],
                                       "rel_err": err, "check": why or "ok", "candidates": table})
                print(f"B={b} H={h} S={s} D={d} causal={causal:d} {variant:3s} {best['ms'] * 1e3:8.1f} us  cuDNN "
                      f"{cudnn * 1e3:8.1f} us x{cudnn / best['ms']:.3f}  err {err:.1e} {why or 'ok'} {best['params']}",
                      flush=True)
    sb.write_json(Path(a.out) / f"attention-exp-split-{sb.slug(report['device'])}.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
