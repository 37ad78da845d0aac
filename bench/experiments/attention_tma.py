"""Experiment: attention with TMA loads and stores. The configs load Q, K, V and store O by pointer
arithmetic; TMA now also covers row-major tensors whose leading axes are point axes (batch, head;
a box of 1 along them, GQA's key/value head as index // G). Times each attention spec as it is
and with `engine: tma` on its four memory stages, over the bench's candidates, each winner checked
against the oracle, beside SDPA's cuDNN backend in the same run. Writes OUT/attention-tma.json."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import attention  # noqa: E402
import spec_bench as sb  # noqa: E402

from tilesched import lower  # noqa: E402
from tilesched.spec import load_spec_text  # noqa: E402

CASES = [("flash_attention", (4, 32, 4096, 128), False, 1), ("flash_attention_causal", (4, 32, 4096, 128), True, 1),
         ("flash_attention", (8, 16, 1024, 128), False, 1), ("flash_attention", (4, 16, 16384, 128), False, 1),
         ("flash_attention", (4, 32, 4096, 64), False, 1), ("flash_attention_gqa", (4, 32, 4096, 128), True, 4)]


def program(spec: str, tma: bool):
    text = (sb.CONFIGS / f"{spec}.yaml").read_text()
    if tma:
        text, n = re.subn(r"(\{name: (?:load_q|load_k|load_v|store), kind: memory, op: (?:load|store),)",
                          r"\1 engine: tma,", text)
        assert n == 4, n
    spec_, source = load_spec_text(text)
    return lower(spec_, source)


def main() -> int:
    import torch
    from torch.nn.attention import SDPBackend

    from tilesched.backends.cuda.kernel import Kernel

    rows = []
    for spec, (b, h, s, d), causal, g in CASES:
        sizes = {"B": b, "H": h, "SQ": s, "SK": s, "D": d, **({"G": g} if g > 1 else {})}
        sets = [attention.make_inputs(b, h, s, d, "cuda", g=g) for _ in range(2)]
        fn = attention.sdpa(SDPBackend.CUDNN_ATTENTION, causal, g)
        cudnn = sb.time_fns([lambda t=t, fn=fn: fn(t["Q"], t["K"], t["V"]) for t in sets], 20)
        fl = attention.flops(b, h, s, s, d, causal)
        for tma in (False, True):
            prog = program(spec, tma)
            kern = Kernel(prog)
            best, table, _ = sb.search(kern, prog, sizes, attention.candidates(d), sets, 20)
            err, why = attention.check_slice(kern, prog, sizes, best["params"], sets[0])
            rows.append({"spec": spec, "shape": sizes, "causal": causal, "tma": tma, "ms": best["ms"],
                         "TFLOPs": fl / best["ms"] / 1e9, "cudnn_ms": cudnn, "ratio_vs_cudnn": cudnn / best["ms"],
                         "params": best["params"], "rel_err": err, "check": why or "ok", "candidates": table})
            print(f"{spec:24s} {sizes} tma={tma!s:5s} {best['ms']:.4f} ms {fl / best['ms'] / 1e9:.0f} TFLOP/s  "
                  f"cuDNN {cudnn:.4f} ms x{cudnn / best['ms']:.2f}  err {err:.1e} {why} {best['params']}", flush=True)
    report = {**sb.report_header(torch.cuda.get_device_name(), __doc__.split("\n")[0]), "rows": rows}
    sb.write_json(Path(os.environ.get("OUT", "/tmp")) / "attention-tma.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
