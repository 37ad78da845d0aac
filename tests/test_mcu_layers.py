"""Every layer type the Cortex-M lowering renders, one small spec each, cross-compiled and run under QEMU
bit for bit against the semantics oracle (fresh random inputs, poisoned arena), alternating the M4 and
the M7: convolutions k x k with stride 1 and 2 (a 3x3 stem over RGB), depthwise k x k with TFLite SAME
padding, fully connected layers, residual adds with requantisation, average pooling, ReLU / ReLU6 /
none, the exact table softmax, layernorm, GELU tables, TFLite MUL / SUB."""

from __future__ import annotations

import numpy as np
import pytest

from tests.differential import program_of, spec_yaml
from tilesched.backends.cortexm import build, session
from tilesched.ir.bind import bind
from tilesched.ir.conv import pads

pytestmark = pytest.mark.skipif(build.toolchain_problem() is not None, reason=str(build.toolchain_problem()))


def q(scale: float, zp: int = 0) -> dict:
    return {"scale": scale, "zero_point": zp}


def conv_spec(h, w, c, co, k, stride, padding, op="conv2d", fn=(), target="cortex-m7", bias=True,
              w_axis=None, x_q=(0.05, -3), y_q=(0.04, 2)) -> dict:
    oh = pads(padding, h, k, stride)[2]
    ow = pads(padding, w, k, stride)[2]
    axes = {"H": h, "W": w, "C": c, "OH": oh, "OW": ow, "KH": k, "KW": k}
    if op == "conv2d":
        axes["CO"] = co
    ch_out = "CO" if op == "conv2d" else "C"
    wq = {"scale": [0.01 + 0.002 * (i % 5) for i in range(co if op == "conv2d" else c)], "axis": ch_out} \
        if w_axis else {"scale": 0.02}
    w_shape = ["KH", "KW", "C", "CO"] if op == "conv2d" else ["KH", "KW", "C"]
    if k == 1:
        w_shape = ["CO", "C"] if op == "conv2d" else ["C"]
    tensors = {"x": {"shape": ["H", "W", "C"], "dtype": "int8", "quant": q(*x_q)},
               "w": {"shape": w_shape, "dtype": "int8", "quant": wq},
               "y": {"shape": ["OH", "OW", ch_out], "dtype": "int8", "quant": q(*y_q)}}
    reads = ["x", "w"]
    if bias:
        tensors["b"] = {"shape": [ch_out], "dtype": "int32"}
        reads.append("b")
    st = {"name": "conv", "kind": "compute", "op": op, "kernel": [k, k], "stride": stride, "padding": padding,
          "reads": reads, "writes": ["y"], "at": None}
    if fn:
        st["fn"] = list(fn)
    return {"name": "layer", "target": target, "axes": axes, "tensors": tensors, "stages": [st]}


def run(data: dict, seed: int = 1):
    rep = session.run_binding(bind(program_of(data), {}), seed=seed)
    assert rep.ok, f"{rep.mismatches} of {rep.expected.size} outputs differ\nspec:\n{spec_yaml(data)}"
    assert np.unique(rep.expected).size > min(8, rep.expected.size // 2)  # the data exercises the value range
    return rep


CONVS = {
    "stem_3x3_s2_same_rgb_relu6": dict(h=11, w=9, c=3, co=16, k=3, stride=2, padding="same", fn=("relu6",),
                                       x_q=(0.02, -128), y_q=(6 / 255, -128)),
    "conv_3x3_s1_same_m4": dict(h=7, w=6, c=8, co=12, k=3, stride=1, padding="same", target="cortex-m4",
                                w_axis=True),
    "conv_5x5_s2_pad2_relu": dict(h=10, w=8, c=5, co=7, k=5, stride=2, padding=2, fn=("relu",), y_q=(0.03, -20)),
    "conv_1x1_s2": dict(h=9, w=8, c=6, co=10, k=1, stride=2, padding=0, target="cortex-m4", bias=False),
    "dw_3x3_s1_same": dict(h=9, w=7, c=12, co=12, k=3, stride=1, padding="same", op="depthwise_conv2d", w_axis=True),
    "dw_5x5_s2_same_even_m4": dict(h=10, w=8, c=8, co=8, k=5, stride=2, padding="same", op="depthwise_conv2d",
                                   fn=("relu6",), y_q=(6 / 255, -128), target="cortex-m4"),
    "dw_7x7_s1_same": dict(h=8, w=9, c=6, co=6, k=7, stride=1, padding="same", op="depthwise_conv2d"),
    "dw_3x3_s2_same_odd": dict(h=11, w=9, c=16, co=16, k=3, stride=2, padding="same", op="depthwise_conv2d",
                               bias=False, target="cortex-m4"),
}


@pytest.mark.parametrize("case", sorted(CONVS))
def test_convolutions(case):
    run(conv_spec(**CONVS[case]))


def test_fully_connected_with_bias_and_relu():
    """x [N, K] . w [K, F] -> int32, + bias in the requantize, ReLU: TFLite's FULLY_CONNECTED."""
    data = {"name": "fc", "target": "cortex-m7", "axes": {"N": 3, "K": 40, "F": 24},
            "tensors": {"x": {"shape": ["N", "K"], "dtype": "int8", "quant": q(0.05, 7)},
                        "w": {"shape": ["K", "F"], "dtype": "int8", "quant": q(0.01)},
                        "acc": {"shape": ["N", "F"], "dtype": "int32", "scope": "tile"},
                        "b": {"shape": ["F"], "dtype": "int32"},
                        "y": {"shape": ["N", "F"], "dtype": "int8", "quant": q(0.08, -10)}},
            "stages": [{"name": "fc", "kind": "compute", "op": "dot", "reads": ["x", "w"], "writes": ["acc"],
                        "at": None},
                       {"name": "rq", "kind": "compute", "op": "requantize", "fn": ["relu"], "reads": ["acc", "b"],
                        "writes": ["y"], "at": None}]}
    run(data)


def _residual_spec(fn: str, target: str) -> dict:
    """out = x (fn) f(x), f two 1x1 convolutions C -> E -> C: a residual connection with TFLite's int8 ADD
    (or SUB / MUL)."""
    return {"name": "res", "target": target, "axes": {"H": 6, "W": 5, "C": 8, "E": 12},
            "tensors": {"x": {"shape": ["H", "W", "C"], "dtype": "int8", "quant": q(0.05, -4)},
                        "w1": {"shape": ["E", "C"], "dtype": "int8", "quant": q(0.02)},
                        "h": {"shape": ["H", "W", "E"], "dtype": "int8", "scope": "tile", "quant": q(6 / 255, -128)},
                        "w2": {"shape": ["C", "E"], "dtype": "int8", "quant": q(0.02)},
                        "y": {"shape": ["H", "W", "C"], "dtype": "int8", "scope": "tile", "quant": q(0.04, 3)},
                        "out": {"shape": ["H", "W", "C"], "dtype": "int8", "quant": q(0.07, -1)}},
            "stages": [{"name": "pw1", "kind": "compute", "op": "conv2d", "kernel": [1, 1], "fn": ["relu6"],
                        "reads": ["x", "w1"], "writes": ["h"], "at": None},
                       {"name": "pw2", "kind": "compute", "op": "conv2d", "kernel": [1, 1], "reads": ["h", "w2"],
                        "writes": ["y"], "at": None},
                       {"name": "residual", "kind": "compute", "op": "elementwise", "fn": [fn], "reads": ["y", "x"],
                        "writes": ["out"], "at": None}]}


@pytest.mark.parametrize("fn,target", [("add", "cortex-m7"), ("sub", "cortex-m4"), ("mul", "cortex-m7")])
def test_residual_add_sub_mul(fn, target):
    run(_residual_spec(fn, target))


@pytest.mark.parametrize("kind", ["global", "3x3_s2_same", "2x2_s2_relu6"])
def test_average_pooling(kind):
    h, w, c = 7, 6, 9
    k, s, p, fn = {"global": ((7, 6), 1, 0, []), "3x3_s2_same": ((3, 3), 2, "same", []),
                   "2x2_s2_relu6": ((2, 2), 2, 0, ["relu6"])}[kind]
    oh, ow = pads(p, h, k[0], s)[2], pads(p, w, k[1], s)[2]
    qq = q(6 / 255, -128) if fn else q(0.05, 3)
    data = {"name": "pool", "target": "cortex-m4" if kind == "global" else "cortex-m7",
            "axes": {"H": h, "W": w, "C": c, "OH": oh, "OW": ow, "E": 12},
            "tensors": {"x": {"shape": ["H", "W", "E"], "dtype": "int8", "quant": q(0.05, 3)},
                        "w": {"shape": ["C", "E"], "dtype": "int8", "quant": q(0.02)},
                        "h": {"shape": ["H", "W", "C"], "dtype": "int8", "scope": "tile", "quant": qq},
                        "y": {"shape": ["OH", "OW", "C"], "dtype": "int8", "quant": qq}},
            "stages": [{"name": "pw", "kind": "compute", "op": "conv2d", "kernel": [1, 1], "reads": ["x", "w"],
                        "writes": ["h"], "at": None},
                       {"name": "pool", "kind": "compute", "op": "avgpool2d", "kernel": list(k), "stride": s,
                        "padding": p, "reads": ["h"], "writes": ["y"], "at": None, **({"fn": fn} if fn else {})}]}
    run(data)


def _rowwise_spec(op: str, target: str, gelu: str | None = None) -> dict:
    """x [S, D] -> fc -> requantize (optionally with a GELU table) -> softmax / layernorm along D."""
    tensors = {"x": {"shape": ["S", "K"], "dtype": "int8", "quant": q(0.05, 2)},
               "w": {"shape": ["K", "D"], "dtype": "int8", "quant": q(0.01)},
               "acc": {"shape": ["S", "D"], "dtype": "int32", "scope": "tile"},
               "h": {"shape": ["S", "D"], "dtype": "int8", "scope": "tile", "quant": q(0.06, -5)},
               "y": {"shape": ["S", "D"], "dtype": "int8", "quant": q(0.03, 1)}}
    stages = [{"name": "fc", "kind": "compute", "op": "dot", "reads": ["x", "w"], "writes": ["acc"], "at": None},
              {"name": "rq", "kind": "compute", "op": "requantize", "reads": ["acc"], "writes": ["h"], "at": None}]
    if gelu == "requantize":
        stages[1]["fn"] = ["gelu"]
    if op == "softmax":
        tensors["y"]["quant"] = q(1 / 256, -128)
        stages.append({"name": "sm", "kind": "compute", "op": "softmax", "axis": "D", "reads": ["h"], "writes": ["y"],
                       "at": None})
    elif op == "layernorm":
        tensors["g"] = {"shape": ["D"], "dtype": "int8", "quant": q(0.01, 0)}
        tensors["be"] = {"shape": ["D"], "dtype": "int8", "quant": q(0.01, 3)}
        stages.append({"name": "ln", "kind": "compute", "op": "layernorm", "axis": "D", "reads": ["h", "g", "be"],
                       "writes": ["y"], "at": None})
    else:  # an elementwise table: gelu (or gelu_tanh) from h's quantisation into y's
        stages.append({"name": "act", "kind": "compute", "op": "elementwise", "fn": [op], "reads": ["h"],
                       "writes": ["y"], "at": None})
    return {"name": "rows", "target": target, "axes": {"S": 5, "K": 20, "D": 48}, "tensors": tensors,
            "stages": stages}


@pytest.mark.parametrize("op,target,gelu", [("softmax", "cortex-m4", None), ("layernorm", "cortex-m7", None),
                                            ("layernorm", "cortex-m4", "requantize"), ("gelu", "cortex-m7", None),
                                            ("gelu_tanh", "cortex-m4", "requantize")])
def test_rowwise_ops_and_tables(op, target, gelu):
    run(_rowwise_spec(op, target, gelu))


def test_layer_in_row_blocks_with_a_ring():
    """The stem and a depthwise conv fused by blocks of output rows: the stem's rows live in a ring."""
    data = conv_spec(h=12, w=7, c=3, co=8, k=3, stride=2, padding="same", fn=("relu6",), x_q=(0.02, -128),
                     y_q=(6 / 255, -128))
    t = data["tensors"]
    data["axes"].update({"OH2": 3, "OW2": 2})
    t["y"]["scope"] = "tile"
    t["wd"] = {"shape": ["KH", "KW", "CO"], "dtype": "int8", "quant": q(0.03)}
    t["z"] = {"shape": ["OH2", "OW2", "CO"], "dtype": "int8", "quant": q(0.05, -2)}
    data["stages"][0]["at"] = "OH2"
    data["stages"].append({"name": "dw", "kind": "compute", "op": "depthwise_conv2d", "kernel": [3, 3], "stride": 2,
                           "padding": "same", "reads": ["y", "wd"], "writes": ["z"], "at": "OH2"})
    data["loops"] = [{"axis": "OH2", "tile": 1}]
    rep = run(data)
    ring = rep.plan.buffer("y")
    assert ring.size < 6 * 4 * 8  # fewer than the 6 rows of y
