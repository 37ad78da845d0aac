"""Experiment: take a group's scale and zero point out of the K-tile sum. When a K tile lies in one
group (G % BLOCK_K == 0), sum_k x[k] (w[k,n] - z[n]) s[n] = s[n] (sum_k x[k] w[k,n] - z[n] sum_k x[k]),
so the per-weight work is the unpacking and the product; the subtraction and the scaling move to
the [BLOCK_M, BLOCK_N] tile, once per K tile. Variants of the generated kernel:
  v0      as generated (dequantise every weight, then the product)
  factor  the factored sum: CUDA-core products of raw weights at BLOCK_M < 16, else tl.dot on the raw
          weights converted to the activation type (integers below 2^8 are exact in bf16) into a
          fresh accumulator per K tile
  magic   factor, with the conversion done by OR-ing the weight into the mantissa of a constant
          (bf16 0x4300 = 128 + w, fp16 0x6400 = 1024 + w, the bias removed through the x-sum like
          the zero point; on CUDA cores fp32 0x4B000000 = 2^23 + w, minus 2^23 before the product)
  words   factor, with per-word partial sums kept across the loop and one reduction after it
  bf16math  the tensor-core path dequantising in the activation type (magic bias, bf16 subtract and
          multiply: the spec's rounding exactly)
Times each at decode and small-batch sizes beside cuBLAS bf16, each checked against the oracle.
Writes OUT/lowbit-factor-scale-exp.json. `TRITON_INTERPRET=1 python bench/experiments/lowbit_factor_scale.py`
checks the patched sources on the CPU. It patches the renderer's output as of commit 0aa223b (the
results, bench/results/lowbit-factor-scale-*.json, were measured there); `factor` then became
tilesched/passes/factor.py, so the patch no longer applies to the current renderer."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

import tilesched.backends.cuda.kernel as K  # noqa: E402
from tilesched import load_program  # noqa: E402

BLOCK = """        x_wd = v_w.to(tl.float32)
        x_wd = x_wd - v_Z.to(tl.float32)
        x_wd = x_wd * v_S.to(tl.float32)
        v_wd = x_wd.to(tl.{act})
        if BLOCK_M < 16:  # too few rows for tensor cores: multiply-add on CUDA cores
            v_acc = v_acc + tl.reduce(v_x.to(tl.float32)[:, :, None] * v_wd.to(tl.float32)[None, :, :], 1, _add)
        else:
            v_acc = tl.dot(v_x, v_wd, v_acc)
"""
MAGIC = {"bfloat16": ("0x4300", "128.0"), "float16": ("0x6400", "1024.0")}


def factored(block: str, act: str, magic: bool, bits: int) -> str:
    if magic and bits < 8:
        word, bias = MAGIC[act]
        cuda = ("((v_w | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0)", "0.0")
        mma = (f"(v_w | {word}).to(tl.int16).to(tl.{act}, bitcast=True)", bias)
    else:
        cuda = ("v_w.to(tl.float32)", "0.0")
        mma = (f"v_w.to(tl.{act})", "0.0")
    body = f"""        if G_Z_K % BLOCK_K == 0 and G_S_K % BLOCK_K == 0:  # experiment: scale and zero out of the sum
            f_xs = tl.sum(v_x.to(tl.float32), 1)
            if BLOCK_M < 16:
                f_part = tl.sum(v_x.to(tl.float32)[:, :, None] * {cuda[0]}[None, :, :], 1)
                f_zero = r_Z.to(tl.float32) + {cuda[1]}
            else:
                f_part = tl.dot(v_x, {mma[0]})
                f_zero = r_Z.to(tl.float32) + {mma[1]}
            v_acc += (f_part - f_xs[:, None] * f_zero[None, :]) * r_S.to(tl.float32)[None, :]
        else:
"""
    return body + "".join("    " + line + "\n" for line in block.splitlines())


def bf16_math(block: str, act: str) -> str:
    word, _ = MAGIC[act]
    head = "".join(block.splitlines(keepends=True)[:4])
    as_act = f".to(tl.int16).to(tl.{act}, bitcast=True)"
    return block.replace(head, f"        x_wd = (v_w | {word}){as_act} - (v_Z | {word}){as_act}\n"
                               f"        v_wd = x_wd * v_S\n")


def words(src: str, block: str, bits: int) -> str:
    per = 32 // bits
    cond = f"G_Z_K % BLOCK_K == 0 and G_S_K % BLOCK_K == 0 and BLOCK_M == 1 and BLOCK_K % {per} == 0"
    body = f"""        if {cond}:  # experiment: per-word partial sums, one reduction after the loop
            f_xw = tl.reshape(v_x.to(tl.float32), (BLOCK_K // {per}, {per}))
            f_part = tl.sum(r_w3.to(tl.float32) * f_xw[:, :, None], 1)
            f_xs = tl.sum(f_xw, 1)
            acc_w += (f_part - f_xs[:, None] * r_Z.to(tl.float32)[None, :]) * r_S.to(tl.float32)[None, :]
        else:
"""
    src = src.replace(block, body + "".join("    " + line + "\n" for line in block.splitlines()))
    loop = "    for it_K in tl.range(lo_K, hi_K):\n"
    assert src.count(loop) == 2
    src = src.replace(loop, f"    acc_w = tl.zeros((BLOCK_K // {per}, BLOCK_N), tl.float32)\n" + loop, 1)
    meet = "    if SPLIT_K > 1:\n        # the shares"
    src = src.replace(meet, f"    if {cond}:\n        v_acc = tl.sum(acc_w, 0)[None, :]\n" + meet, 1)
    unpack = f"v_w = tl.reshape(((v_w[:, None, :] >> (tl.arange(0, {per}) * {bits})[None, :, None]) & ((1 << {bits}) - 1)), (BLOCK_K, BLOCK_N))"
    assert src.count(unpack) == 2, unpack
    return src.replace(unpack, f"r_w3 = ((v_w[:, None, :] >> (tl.arange(0, {per}) * {bits})[None, :, None]) & ((1 << {bits}) - 1))\n"
                               "            v_w = tl.reshape(r_w3, (BLOCK_K, BLOCK_N))", 1)


def patch(variant: str, src: str) -> str:
    unpacked = re.search(r"v_w = .*& \(\(1 << (\d)\) - 1\)", src)
    bits = int(unpacked.group(1)) if unpacked else 8
    act = "float16" if "tl.float16" in src.split("x_wd = x_wd * v_S")[1][:60] else "bfloat16"
    block = BLOCK.format(act=act)
    assert src.count(block) == 1, "generated dequantisation block not found"
    if variant == "bf16math":
        return src.replace(block, bf16_math(block, act))
    if variant == "words":
        out = words(src, block, bits)
    else:
        out = src.replace(block, factored(block, act, variant == "magic", bits))
    for t in ("Z", "S"):
        line = f"            v_{t} = tl.broadcast_to(v_{t}[None, :], (BLOCK_K, BLOCK_N))\n"
        assert line in out, line
        out = out.replace(line, f"            r_{t} = v_{t}\n" + line)
    return out


CASES = [(4, 1, 8192, 8192), (4, 1, 28672, 8192), (2, 1, 28672, 8192), (4, 16, 8192, 8192), (4, 16, 28672, 8192),
         (4, 128, 8192, 8192), (4, 1024, 8192, 8192)]
VARIANTS = ("v0", "factor", "words", "bf16math")


def runs(variant: str, bits: int, m: int) -> bool:
    if variant in ("factor", "words"):
        return m == 1 and (variant == "factor" or bits in (2, 4))
    return variant == "v0" or bits < 8


def candidates(m: int) -> list[dict]:
    c = lowbit.candidates(m)
    if m == 1:  # wider tiles: the factored loop does less per weight
        c += [lowbit.cfg(1, 256, 128, 8, 4, 4), lowbit.cfg(1, 128, 128, 4, 4, 4), lowbit.cfg(1, 256, 64, 4, 4, 4)]
    if m == 16:
        c += [lowbit.cfg(16, 256, 128, 8, 3, 2), lowbit.cfg(16, 128, 128, 4, 4, 2)]
    return [p for p in c if not p["MATERIALIZE"] and p["BLOCK_M"] <= m][:13]


def main() -> int:
    if os.environ.get("TRITON_INTERPRET"):
        from tests.cuda_util import run_against_oracle
        from tilesched.backends.cuda.io import retyped

        bad = 0
        for variant in VARIANTS[1:]:
            for bits in (4, 2, 8, 3):
                if not runs(variant, bits, 1) and not runs(variant, bits, 16):
                    continue
                pk.use(patch, variant)
                prog = retyped(load_program(sb.CONFIGS / f"{lowbit.BITS_SPECS[bits]}.yaml"), "bf16", "fp16")
                for p in (lowbit.cfg(16, 32, 128, 4, 2), lowbit.cfg(1, 32, 128, 4, 2, 2), lowbit.cfg(16, 32, 64, 4, 2)):
                    v = run_against_oracle(K.Kernel(prog), {"M": 20, "N": 40, "K": 520}, p, seed=1)
                    bad += not v.ok
                    print(variant, bits, p["BLOCK_M"], p["BLOCK_K"], v.ok, v.why, flush=True)
        return 1 if bad else 0
    return pk.run_cases(patch, CASES, lambda b, m: [v for v in VARIANTS if runs(v, b, m)], candidates,
                        "lowbit-factor-scale-exp.json", __doc__.split("\n")[0])

if __name__ == "__main__":
    raise SystemExit(main())
