"""Experiment: what feeds the wgmma register-operand kernel's 256-row tiles at M = 1024. Variant "x-once"
loads X's tile only into the ring's first STAGES slots (later tiles multiply stale slots: wrong values,
the same instructions but for X's TMA loads), "w-once" the same for the weights' words; "v0" is the
kernel as generated. If "x-once" is much faster, X's reads from L2 (each CTA re-reads its 256 rows of X
for every 128 weight columns: 1 GB at M = 1024, 8192^2) bound the kernel, and a cluster sharing X's tile
(TMA multicast) is the next step; if neither is, the consumers are. 8- and 4-bit specs, each variant's
best 256-row point (its oracle check recorded: the patched variants fail it by construction), beside bf16
cuBLAS in the same run. Writes OUT/lowbit-wgmma-feed-<device>.json."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "experiments")]

import lowbit  # noqa: E402
import patched_kernels as pk  # noqa: E402
import spec_bench as sb  # noqa: E402

EXPECT = "_gl_mbarrier.expect(ready.index(slot), x_desc.block_type.nbytes + CONSUMERS * w_desc.block_type.nbytes)"


def patch(variant: str, src: str) -> str:
    lines = src.split("\n")
    start = next(i for i, ln in enumerate(lines) if "_wgmma_loader(" in ln and ln.startswith("def "))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("@gluon.jit"))
    body = lines[start:end]
    at = next(i for i, ln in enumerate(body) if ln.strip() == EXPECT)
    ind = body[at][:len(body[at]) - len(body[at].lstrip())]
    x_at = next(i for i, ln in enumerate(body) if ln.strip().startswith("_gl_tma_load(x_desc"))
    w_at = next(i for i, ln in enumerate(body) if ln.strip().startswith("for wg in ttgl.static_range(CONSUMERS):"))
    once = [body[x_at].strip()] if variant == "x-once" else [body[w_at].strip(), "    " + body[w_at + 1].strip()]
    rest = "CONSUMERS * w_desc.block_type.nbytes" if variant == "x-once" else "x_desc.block_type.nbytes"
    new = [f"{ind}if i < STAGES:  # the first slots only ({variant})", f"{ind}    {EXPECT}",
           *[f"{ind}    {ln}" for ln in once], f"{ind}else:", f"{ind}    _gl_mbarrier.expect(ready.index(slot), {rest})"]
    drop = {x_at} if variant == "x-once" else {w_at, w_at + 1}
    body = [ln for i, ln in enumerate(body) if i not in drop and i != at]
    body[at:at] = new
    return "\n".join(lines[:start] + body + lines[end:])


def candidates(m: int) -> list[dict]:
    return [lowbit.register_operand(256, 128, 8, 1, bk=128, stages=st) for st in (2, 3)]


CASES = [(b, 1024, n, k) for b in (8, 4) for n, k in ((8192, 8192), (28672, 8192))]

if __name__ == "__main__":
    import torch

    sys.exit(pk.run_cases(patch, CASES, lambda b, m: ("v0", "x-once", "w-once", "v0"), candidates,
                          f"lowbit-wgmma-feed-{sb.slug(torch.cuda.get_device_name())}.json", __doc__.split("\n")[0]))
