"""Random int8 parameters for a planned MCU workload, its exact numpy reference output, and
the C data header (weights, biases, requantisation multipliers and shifts, input).

Activation scales and zero points come from the spec's `quant` (per-tensor). Weight scales
are per output channel and calibrated on the random data (as post-training quantisation
would): each channel's requantised output gets a spread of about 40 steps, so outputs
neither saturate nor collapse and a wrong byte shows. Zero points of
inputs are folded into the biases as TFLite/CMSIS-NN do (bias - zp_in * sum(w)), except for
the depthwise convolution where padded taps must contribute nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tilesched.backends.cortexm import reference as ref
from tilesched.ir.bind import Binding
from tilesched.schedules.memory_programs import BertShape, IBShape


@dataclass
class Workload:
    kind: str
    shape: object
    x: np.ndarray  # network input (int8)
    expected: np.ndarray  # network output (int8), exact
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # C name -> constant array
    defines: dict[str, int] = field(default_factory=dict)


def _q(b: Binding, name: str, default: tuple[float, int]) -> tuple[float, int]:
    try:
        q = b.program.tensor(name).quant
    except StopIteration:
        q = None
    if q is None:
        return default
    scale = q.scale if isinstance(q.scale, float | int) else float(np.mean(q.scale))
    return float(scale), int(q.zero_point)


def _weights(rng, shape):
    return rng.integers(-127, 128, size=shape, dtype=np.int64)


def _centre(acc: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shift each channel's bias so its accumulators centre on zero (calibrated biases)."""
    shift = np.round(acc.reshape(-1, acc.shape[-1]).mean(axis=0)).astype(np.int64)
    return acc - shift, bias - shift


def _calibrated(rng, acc: np.ndarray, in_scale: float, out_scale: float, channel_axis: int = -1) -> np.ndarray:
    """Per-channel weight scales giving each output channel a spread of ~40 quantisation steps."""
    axes = tuple(i for i in range(acc.ndim) if i != channel_axis % acc.ndim)
    std = np.maximum(acc.astype(np.float64).std(axis=axes), 1.0)
    return out_scale * 40.0 / (in_scale * std) * rng.uniform(0.8, 1.2, size=std.shape)


def _bias(rng, n: int, lim: int = 4000) -> np.ndarray:
    return rng.integers(-lim, lim + 1, size=n, dtype=np.int64)


def _mults(in_scale: float, w_scales, out_scale: float):
    return ref.quantize_multipliers(in_scale * np.asarray(w_scales) / out_scale)


def ib_workload(b: Binding, sh: IBShape, rng: np.random.Generator) -> Workload:
    prog = b.program
    convs = [s for s in prog.stages if s.op == "conv2d"]
    dws = next(s for s in prog.stages if s.op == "depthwise_conv2d")
    sx, zx = _q(b, convs[0].reads[0], (0.0235, -128))
    sh_, zh = _q(b, convs[0].writes[0], (6 / 255, -128))
    sd, zd = _q(b, dws.writes[0], (6 / 255, -128))
    sy, zy = _q(b, convs[1].writes[0], (0.0412, 3))
    x = rng.integers(-128, 128, size=(sh.H, sh.W, sh.C), dtype=np.int64)
    w1 = _weights(rng, (sh.E, sh.C))
    wd = _weights(rng, (sh.E, sh.KH, sh.KW))
    w2 = _weights(rng, (sh.CO, sh.E))
    b1, bd, b2 = _bias(rng, sh.E), _bias(rng, sh.E), _bias(rng, sh.CO)
    hmin, hmax = ref.act_range("relu6", sh_, zh)
    dmin, dmax = ref.act_range("relu6", sd, zd)
    acc1, b1 = _centre(ref.conv1x1(x, w1, b1, zx), b1)
    m1, sf1 = _mults(sx, _calibrated(rng, acc1, sx, sh_), sh_)
    h = ref.requantize(acc1, m1, sf1, zh, hmin, hmax)
    wd_hwc = np.transpose(wd, (1, 2, 0))
    accd, bd = _centre(ref.depthwise3x3(h, wd_hwc, bd, zh, sh.stride, sh.pad), bd)
    md, sfd = _mults(sh_, _calibrated(rng, accd, sh_, sd), sd)
    d = ref.requantize(accd, md, sfd, zd, dmin, dmax)
    acc2, b2 = _centre(ref.conv1x1(d, w2, b2, zd), b2)
    m2, sf2 = _mults(sd, _calibrated(rng, acc2, sd, sy), sy)
    y = ref.requantize(acc2, m2, sf2, zy)
    arrays = {
        "int8_t ts_input": x, "int8_t ts_w1": w1, "int32_t ts_b1": b1 - zx * w1.sum(axis=1),
        "int32_t ts_m1": m1, "int32_t ts_s1": sf1,
        "int8_t ts_wdw": wd_hwc, "int32_t ts_bdw": bd, "int32_t ts_mdw": md, "int32_t ts_sdw": sfd,
        "int8_t ts_w2": w2, "int32_t ts_b2": b2 - zd * w2.sum(axis=1), "int32_t ts_m2": m2, "int32_t ts_s2": sf2,
    }
    defines = {"ZP_H": zh, "H_MIN": hmin, "H_MAX": hmax, "ZP_D": zd, "D_MIN": dmin, "D_MAX": dmax,
               "ZP_Y": zy, "Y_MIN": -128, "Y_MAX": 127}
    return Workload("ib", sh, x.astype(np.int8), y, arrays, defines)


def bert_workload(b: Binding, sh: BertShape, rng: np.random.Generator) -> Workload:
    sx, zx = _q(b, "x", (0.031, 2))
    sqkv = {n: _q(b, n, (0.05, 0)) for n in ("q8", "k8", "v8")}
    ss, zs = _q(b, "s8", (0.125, 0))
    sc, zc = _q(b, "c8", (0.05, 0))
    sa, za = _q(b, "a8", (0.06, -1))
    shh, zh = _q(b, "h8", (0.04, -128))
    sy, zy = _q(b, "out", (0.06, 1))
    if any(z != 0 for _, z in sqkv.values()) or zs != 0 or zc != 0:
        raise ValueError("the Cortex-M attention kernel expects zero points 0 for q, k, v, scores and context")
    d, f = sh.D, sh.F
    x = rng.integers(-128, 128, size=(sh.S, d), dtype=np.int64)
    ws = {}
    for name, n_out, n_in in (("q", d, d), ("k", d, d), ("v", d, d), ("o", d, d), ("f1", f, d), ("f2", d, f)):
        ws[name] = (_weights(rng, (n_out, n_in)), _bias(rng, n_out))
    arrays: dict[str, np.ndarray] = {"int8_t ts_input": x}

    def fc(inp, name, zin, s_in, s_out, z_out, lo=-128):
        w, bias = ws[name]
        acc, bias = _centre(ref.conv1x1(inp, w, bias, zin), bias)
        m, sf = _mults(s_in, _calibrated(rng, acc, s_in, s_out), s_out)
        arrays[f"int8_t ts_w{name}"] = w
        arrays[f"int32_t ts_b{name}"] = bias - zin * w.sum(axis=1)
        arrays[f"int32_t ts_m{name}"] = m
        arrays[f"int32_t ts_s{name}"] = sf
        return ref.requantize(acc, m, sf, z_out, lo, 127)

    q = fc(x, "q", zx, sx, sqkv["q8"][0], 0)
    k = fc(x, "k", zx, sx, sqkv["k8"][0], 0)
    v = fc(x, "v", zx, sx, sqkv["v8"][0], 0)
    ms, sfs = ref.quantize_multiplier(sqkv["q8"][0] * sqkv["k8"][0] / math.sqrt(sh.HD) / ss)
    mc, sfc = ref.quantize_multiplier(sqkv["v8"][0] / 256.0 / sc)  # probabilities have scale 1/256
    lut = ref.softmax_lut(ss)
    ctx = np.zeros((sh.S, d), dtype=np.int64)
    for h in range(sh.NH):
        cols = slice(h * sh.HD, (h + 1) * sh.HD)
        qh, kh, vh = (t[:, cols].astype(np.int64) for t in (q, k, v))
        s = ref.requantize(qh @ kh.T, ms, sfs, 0)
        p = ref.softmax_int8(s, lut)
        ctx[:, cols] = ref.requantize((p.astype(np.int64) + 128) @ vh, mc, sfc, 0)
    a = fc(ctx, "o", 0, sc, sa, za)
    hid = fc(a, "f1", za, sa, shh, zh, lo=ref.act_range("relu", shh, zh)[0])
    y = fc(hid, "f2", zh, shh, sy, zy)
    arrays["uint32_t ts_softmax_lut"] = lut
    defines = {"ZP_Q": 0, "ZP_K": 0, "ZP_V": 0, "ZP_S": 0, "ZP_C": 0, "ZP_A": za, "ZP_H": zh,
               "H_MIN": ref.act_range("relu", shh, zh)[0], "ZP_Y": zy,
               "MULT_S": ms, "SHIFT_S": sfs, "MULT_C": mc, "SHIFT_C": sfc}
    return Workload("bert", sh, x.astype(np.int8), y, arrays, defines)


def data_header(wl: Workload) -> str:
    lines = ["/* Generated by tilesched: random test data -- do not edit. */", "#ifndef TS_DATA_H",
             "#define TS_DATA_H", "#include <stdint.h>"]
    for k, v in wl.defines.items():
        lines.append(f"#define {k} ({int(v)})")
    for decl, arr in wl.arrays.items():
        flat = np.asarray(arr).reshape(-1).tolist()
        body = ",\n".join(",".join(str(int(t)) for t in flat[i:i + 32]) for i in range(0, len(flat), 32))
        align = " __attribute__((aligned(4)))"
        lines.append(f"static const {decl}[{len(flat)}]{align} = {{\n{body}\n}};")
    lines.append("#endif")
    return "\n".join(lines) + "\n"
