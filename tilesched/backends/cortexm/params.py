"""The C data of a Cortex-M kernel, packed from the spec's own tensors: inputs, weights and biases
as the oracle drew them, requantisation multipliers from the spec's scales, zero points folded
into biases as TFLite/CMSIS-NN do (bias - zp_in * sum(w); not for the depthwise convolution,
whose padded taps must contribute nothing). The expected output is the semantics oracle's; this
module only changes layouts, never values."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tilesched.backends.cortexm.match import BertMatch, Conv, IBMatch
from tilesched.ir.bind import Binding
from tilesched.ir.nodes import Program
from tilesched.semantics import quant as Q
from tilesched.semantics.values import QInfo, Value, align, declared_quant


@dataclass
class Workload:
    kind: str
    x: np.ndarray  # network input (int8)
    expected: np.ndarray  # network output (int8), the oracle's
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # C declaration -> constant array
    defines: dict[str, int] = field(default_factory=dict)


class _Packer:
    def __init__(self, b: Binding, inputs: dict[str, np.ndarray]):
        self.b = b
        self.program: Program = b.program
        self.inputs = inputs

    def q(self, name: str) -> QInfo:
        return declared_quant(self.program.tensor(name), self.b.sizes)

    def array(self, name: str, axes: tuple[str, ...]) -> np.ndarray:
        """Input `name` with its axes in the order `axes` (the C layout)."""
        t = self.program.tensor(name)
        v = Value(np.asarray(self.inputs[name], dtype=np.int64), t.shape, t.dtype)
        return align(None, v, axes)

    def channel_scale(self, name: str, channel_axis: str, n: int) -> np.ndarray:
        """A weight's scale per output channel (a per-tensor scale repeated)."""
        q = self.q(name)
        return np.broadcast_to(np.asarray(q.scale, dtype=np.float64), (n,)) if q.axis in (None, channel_axis) \
            else np.full(n, np.nan)

    def mults(self, acc_scale, out: str):
        return Q.requant_multipliers(acc_scale, self.q(out).scale)

    def act(self, act: str, out: str) -> tuple[int, int]:
        q = self.q(out)
        return Q.act_range(act, q.scale, q.zero_point)


def _conv_arrays(p: _Packer, c: Conv, tag: str, depthwise: bool, fold: bool) -> dict[str, np.ndarray]:
    prog = p.program
    x_t, out_t, w_t = prog.tensor(c.x), prog.tensor(c.out), prog.tensor(c.w)
    cin, cout = x_t.shape[2], out_t.shape[2]
    kernel_axes = tuple(a for a in w_t.shape if a not in (cin, cout))
    n = p.b.sizes[cout]
    w = p.array(c.w, kernel_axes + (cin,) if depthwise else (cout, cin))
    bias = p.array(c.bias, (cout,)) if c.bias else np.zeros(n, dtype=np.int64)
    if fold:
        bias = bias - p.q(c.x).zero_point * w.sum(axis=1)
    m, s = p.mults(float(p.q(c.x).scale) * p.channel_scale(c.w, cout, n), c.out)
    return {f"int8_t ts_w{tag}": w, f"int32_t ts_b{tag}": bias, f"int32_t ts_m{tag}": m, f"int32_t ts_s{tag}": s}


def ib_workload(b: Binding, m: IBMatch, inputs: dict[str, np.ndarray], expected: np.ndarray) -> Workload:
    p = _Packer(b, inputs)
    arrays = {"int8_t ts_input": p.array(m.expand.x, b.program.tensor(m.expand.x).shape)}
    arrays.update(_conv_arrays(p, m.expand, "1", depthwise=False, fold=True))
    arrays.update(_conv_arrays(p, m.depthwise, "dw", depthwise=True, fold=False))
    arrays.update(_conv_arrays(p, m.project, "2", depthwise=False, fold=True))
    (hmin, hmax), (dmin, dmax), (ymin, ymax) = (p.act(c.act, c.out) for c in (m.expand, m.depthwise, m.project))
    defines = {"ZP_H": p.q(m.expand.out).zero_point, "H_MIN": hmin, "H_MAX": hmax,
               "ZP_D": p.q(m.depthwise.out).zero_point, "D_MIN": dmin, "D_MAX": dmax,
               "ZP_Y": p.q(m.project.out).zero_point, "Y_MIN": ymin, "Y_MAX": ymax}
    return Workload("ib", arrays["int8_t ts_input"], expected, arrays, defines)


def bert_workload(b: Binding, m: BertMatch, inputs: dict[str, np.ndarray], expected: np.ndarray) -> Workload:
    p = _Packer(b, inputs)
    prog = b.program
    arrays: dict[str, np.ndarray] = {"int8_t ts_input": p.array(m.x, prog.tensor(m.x).shape)}

    def fc(tag: str, dot, rq, out_axes: tuple[str, ...], in_axes: tuple[str, ...]):
        """Weights as [output channel][input channel] (the C loops' layout), biases with the input
        zero point folded in, multipliers per output channel."""
        w = p.array(dot.b, out_axes + in_axes)
        n_out = int(np.prod([b.sizes[a] for a in out_axes]))
        w = w.reshape(n_out, -1)
        zp_in = p.q(dot.a).zero_point
        arrays[f"int8_t ts_w{tag}"] = w
        arrays[f"int32_t ts_b{tag}"] = -zp_in * w.sum(axis=1)
        wq = p.q(dot.b)
        if wq.axis is not None:
            raise ValueError("per-channel weight scales are not packed for the BERT layer")
        mult, shift = p.mults(np.full(n_out, float(p.q(dot.a).scale) * float(wq.scale)), rq.out)
        arrays[f"int32_t ts_m{tag}"] = mult
        arrays[f"int32_t ts_s{tag}"] = shift

    def axes_of(name: str) -> tuple[str, ...]:
        return prog.tensor(name).shape

    # projections: x [S, D] . w [NH, D, HD] -> [NH, S, HD]: output channel c = h * HD + d
    for tag, (dot, rq) in (("q", m.q), ("k", m.k), ("v", m.v)):
        w_axes = axes_of(dot.b)
        d_in = axes_of(dot.a)[-1]
        out_ch = tuple(a for a in axes_of(rq.out) if a in w_axes)
        fc(tag, dot, rq, out_ch, (d_in,))
    dot, rq = m.out_proj  # c8 [NH, S, HD] . wo [NH, HD, D] -> [S, D]: input channel h * HD + d
    contracted = tuple(a for a in axes_of(dot.a) if a in axes_of(dot.b) and a not in axes_of(rq.out))
    fc("o", dot, rq, (axes_of(rq.out)[-1],), contracted)
    for tag, (dot, rq) in (("f1", m.ffn1), ("f2", m.ffn2)):
        fc(tag, dot, rq, (axes_of(rq.out)[-1],), (axes_of(dot.a)[-1],))
    sdot, srq = m.scores
    factor = 1.0
    if srq.factor is not None:
        from tilesched.ir.expr import evaluate

        factor = float(evaluate(srq.factor, b.env()) if isinstance(srq.factor, str) else srq.factor)
    ms, sfs = p.mults(float(p.q(sdot.a).scale) * float(p.q(sdot.b).scale) * factor, srq.out)
    cdot, crq = m.context
    mc, sfc = p.mults(float(p.q(cdot.a).scale) * float(p.q(cdot.b).scale), crq.out)
    hmin, hmax = p.act(m.ffn1[1].act, m.ffn1[1].out)
    arrays["uint32_t ts_softmax_lut"] = Q.softmax_lut(p.q(srq.out).scale)
    defines = {"ZP_Q": 0, "ZP_K": 0, "ZP_V": 0, "ZP_S": 0, "ZP_C": 0, "ZP_A": p.q(m.out_proj[1].out).zero_point,
               "ZP_H": p.q(m.ffn1[1].out).zero_point, "H_MIN": hmin, "H_MAX": hmax,
               "ZP_Y": p.q(m.output).zero_point, "MULT_S": int(ms), "SHIFT_S": int(sfs), "MULT_C": int(mc),
               "SHIFT_C": int(sfc)}
    return Workload("bert", arrays["int8_t ts_input"], expected, arrays, defines)


def data_header(wl: Workload) -> str:
    lines = ["/* Generated by tilesched: random test data -- do not edit. */", "#ifndef TS_DATA_H",
             "#define TS_DATA_H", "#include <stdint.h>"]
    for k, v in wl.defines.items():
        lines.append(f"#define {k} ({int(v)})")
    for decl, arr in wl.arrays.items():
        flat = np.asarray(arr).reshape(-1).tolist()
        body = ",\n".join(",".join(str(int(t)) for t in flat[i:i + 32]) for i in range(0, len(flat), 32))
        align_attr = " __attribute__((aligned(4)))"
        lines.append(f"static const {decl}[{len(flat)}]{align_attr} = {{\n{body}\n}};")
    lines.append("#endif")
    return "\n".join(lines) + "\n"
