"""Whole networks as tilesched specs (one spec = one network, every layer a stage), int8 with TFLite's
quantisation, random weights (drawn by the oracle's `random_inputs`, calibrated so every layer's output is
informative). The builders write the YAML under configs/ (`python bench/mcu_nets.py --write`); tests build
small resolutions in memory.

- MobileNetV2 (Sandler et al. 2018), width 0.35: channels make_divisible(c * 0.35, 8), the 17 inverted
  bottlenecks (t, c, n, s) = (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1),
  a 3x3 stride-2 stem of 16, a last 1x1 conv to 1280, global average pooling, a 1000-way classifier;
  ReLU6 after expand and depthwise, residual adds where stride 1 and channels match.
- MCUNet-style: the MCUNet block list published with NetAug (mit-han-lab/netaug, models/base/mcunet.py):
  stem 3x3 s2 16, a depthwise-separable block to 8, five stages of inverted bottlenecks given as (expand
  ratios, kernel sizes, depth, stride) -> width: ([3,5,5,4], [7,3,7,5], 4, 2) -> 16,
  ([5,5,5], [5,5,5], 3, 2) -> 24, ([5,6,4], [3,7,5], 3, 2) -> 40, ([5,5,5], [5,7,3], 3, 1) -> 48,
  ([6,5,4], [3,7,3], 3, 2) -> 96, a 7x7 head block with 480 mid channels to 160, pooling, 1000 classes.
- BERT-tiny encoder layer: configs/mcu_bert_tiny_layer.yaml (written by hand, see the file; not built here).

`fuse_prefix(spec, k, rows)` puts the first k stages in one loop over the rows of stage k-1's output (row
blocks carried by rings, MCUNetV2's fused first stages): the fusion boundary the tuner searches.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RELU6 = {"scale": 0.0235294118, "zero_point": -128}  # 6/255: ReLU6 spans [0, 6]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    min_value = min_value or divisor
    new = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:
        new += divisor
    return new


class Net:
    """Accumulates axes, tensors and stages of a CNN over [H, W, C] tensors with SAME padding."""

    def __init__(self, name: str, description: str, target: str, hint: int):
        self.spec = {"name": name, "description": description, "target": target,
                     "axes": {"R": {"size": "R", "hint": hint}, "H0": "R", "W0": "R"},
                     "tensors": {}, "stages": []}
        self.level = 0
        self.n = 0

    def axis(self, name: str, size) -> str:
        self.spec["axes"].setdefault(name, size)
        return name

    def spatial(self, level: int) -> tuple[str, str]:
        while self.level < level:
            self.level += 1
            self.axis(f"H{self.level}", f"-(-H{self.level - 1} // 2)")
            self.axis(f"W{self.level}", f"-(-W{self.level - 1} // 2)")
        return f"H{level}", f"W{level}"

    def channels(self, c: int, avoid: str | None = None) -> str:
        name = f"C{c}"
        if name == avoid:
            name = f"C{c}b"
        return self.axis(name, c)

    def tensor(self, name: str, shape, quant=None, scope="tile", dtype="int8", region=None) -> str:
        t = {"shape": list(shape), "dtype": dtype}
        if quant is not None:
            t["quant"] = dict(quant)
        if scope != "global":
            t["scope"] = scope
        if region:
            t["region"] = region
        self.spec["tensors"][name] = t
        return name

    def stage(self, **st) -> None:
        st = {"kind": "compute", **st, "at": None}
        self.spec["stages"].append(st)

    def weight_scale(self) -> float:
        self.n += 1
        return round(0.004 + 0.0007 * (self.n % 11), 6)

    # -------------------------------------------------------------------------------- layers
    def input(self, c: int) -> tuple[str, int]:
        h, w = self.spatial(0)
        x = self.tensor("x", [h, w, self.channels(c)], {"scale": 0.0235, "zero_point": -128}, scope="global",
                        region="sram")
        return x, 0

    def conv(self, name: str, x: str, level: int, cout: int, k: int, stride: int, act: str | None,
             out_q: dict) -> tuple[str, int]:
        xt = self.spec["tensors"][x]["shape"]
        olevel = level + (1 if stride == 2 else 0)
        oh, ow = self.spatial(olevel)
        co = self.channels(cout, avoid=xt[2])
        if k == 1:
            wshape = [co, xt[2]]
        else:
            wshape = [self.axis(f"KH{k}", k), self.axis(f"KW{k}", k), xt[2], co]
        w = self.tensor(f"{name}_w", wshape, {"scale": self.weight_scale()}, scope="global", region="flash")
        b = self.tensor(f"{name}_b", [co], None, scope="global", dtype="int32", region="flash")
        y = self.tensor(f"{name}_y", [oh, ow, co], out_q)
        st = {"name": name, "op": "conv2d", "kernel": [k, k], "reads": [x, w, b], "writes": [y]}
        if stride != 1 or k != 1:
            st.update(stride=stride, padding="same")
        if act:
            st["fn"] = [act]
        self.stage(**st)
        return y, olevel

    def depthwise(self, name: str, x: str, level: int, k: int, stride: int) -> tuple[str, int]:
        xt = self.spec["tensors"][x]["shape"]
        olevel = level + (1 if stride == 2 else 0)
        oh, ow = self.spatial(olevel)
        w = self.tensor(f"{name}_w", [self.axis(f"KH{k}", k), self.axis(f"KW{k}", k), xt[2]],
                        {"scale": self.weight_scale() * 3}, scope="global", region="flash")
        b = self.tensor(f"{name}_b", [xt[2]], None, scope="global", dtype="int32", region="flash")
        y = self.tensor(f"{name}_y", [oh, ow, xt[2]], RELU6)
        self.stage(name=name, op="depthwise_conv2d", kernel=[k, k], stride=stride, padding="same", fn=["relu6"],
                   reads=[x, w, b], writes=[y])
        return y, olevel

    def add(self, name: str, a: str, b: str, out_q: dict) -> str:
        y = self.tensor(f"{name}_y", self.spec["tensors"][a]["shape"], out_q)
        self.stage(name=name, op="elementwise", fn=["add"], reads=[a, b], writes=[y])
        return y

    def inverted_bottleneck(self, name: str, x: str, level: int, cout: int, mid: int, k: int, stride: int,
                            residual: bool, out_q: dict) -> tuple[str, int]:
        h = x
        if mid != int(self.spec["axes"][self.spec["tensors"][x]["shape"][2]]):  # expansion 1: no expand conv
            h, _ = self.conv(f"{name}_ex", x, level, mid, 1, 1, "relu6", RELU6)
        h, olevel = self.depthwise(f"{name}_dw", h, level, k, stride)
        proj_q = {"scale": 0.05, "zero_point": (self.n * 7) % 11 - 5} if residual else out_q
        y, _ = self.conv(f"{name}_pj", h, olevel, cout, 1, 1, None, proj_q)
        if residual:
            y = self.add(f"{name}_add", y, x, out_q)
        return y, olevel

    def head(self, x: str, level: int, classes: int) -> None:
        xt = self.spec["tensors"][x]["shape"]
        p = self.tensor("pool_y", [self.axis("P1", 1), self.axis("Q1", 1), xt[2]], self.spec["tensors"][x]["quant"])
        self.stage(name="pool", op="avgpool2d", reads=[x], writes=[p])
        k = self.channels(classes)
        w = self.tensor("fc_w", [xt[2], k], {"scale": 0.004}, scope="global", region="flash")
        acc = self.tensor("fc_acc", ["P1", "Q1", k], None, dtype="int32")
        b = self.tensor("fc_b", [k], None, scope="global", dtype="int32", region="flash")
        y = self.tensor("logits", ["P1", "Q1", k], {"scale": 0.1, "zero_point": -10}, scope="global", region="sram")
        self.stage(name="fc", op="dot", reads=[p, w], writes=[acc])
        self.stage(name="fc_rq", op="requantize", reads=[acc, b], writes=[y])


def _finish(net: Net, sram: int) -> dict:
    spec = net.spec
    spec["limits"] = {"sram_bytes": sram, "flash_bytes": 4 << 20}
    return spec


def mobilenet_v2(width: float = 0.35, hint: int = 144, target: str = "cortex-m7") -> dict:
    net = Net(f"mcu_mobilenetv2_{str(width).replace('.', '')}", f"MobileNetV2 width {width}, int8, whole network",
              target, hint)
    x, lvl = net.input(3)
    c0 = make_divisible(32 * width)
    y, lvl = net.conv("stem", x, lvl, c0, 3, 2, "relu6", RELU6)
    cin = c0
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]
    i = 0
    for t, c, n, s in settings:
        cout = make_divisible(c * width)
        for j in range(n):
            i += 1
            stride = s if j == 0 else 1
            residual = stride == 1 and cin == cout
            mid = int(round(cin * t))
            q = {"scale": 0.07, "zero_point": (i * 5) % 9 - 4}
            y, lvl = net.inverted_bottleneck(f"b{i}", y, lvl, cout, mid, 3, stride, residual, q)
            cin = cout
    last = make_divisible(1280 * max(1.0, width))
    y, lvl = net.conv("last", y, lvl, last, 1, 1, "relu6", RELU6)
    net.head(y, lvl, 1000)
    return _finish(net, 262144)


MCUNET_STAGES = [([3, 5, 5, 4], [7, 3, 7, 5], 4, 2, 16), ([5, 5, 5], [5, 5, 5], 3, 2, 24),
                 ([5, 6, 4], [3, 7, 5], 3, 2, 40), ([5, 5, 5], [5, 7, 3], 3, 1, 48),
                 ([6, 5, 4], [3, 7, 3], 3, 2, 96)]


def mcunet(hint: int = 128, target: str = "cortex-m7") -> dict:
    net = Net("mcu_mcunet", "MCUNet-style network, int8, whole network: the MCUNet block list published with NetAug "
              "(github.com/mit-han-lab/netaug, models/base/mcunet.py), random weights", target, hint)
    x, lvl = net.input(3)
    y, lvl = net.conv("stem", x, lvl, 16, 3, 2, "relu6", RELU6)
    y, lvl = net.inverted_bottleneck("ds", y, lvl, 8, 16, 3, 1, False, {"scale": 0.07, "zero_point": 2})
    cin, i = 8, 0
    for es, ks, n, s, c in MCUNET_STAGES:
        for j in range(n):
            i += 1
            stride = s if j == 0 else 1
            mid = make_divisible(round(es[j] * cin), 8)
            residual = stride == 1 and cin == c and j != 0
            q = {"scale": 0.07, "zero_point": (i * 5) % 9 - 4}
            y, lvl = net.inverted_bottleneck(f"b{i}", y, lvl, c, mid, ks[j], stride, residual, q)
            cin = c
    y, lvl = net.inverted_bottleneck("head", y, lvl, 160, 480, 7, 1, False, {"scale": 0.07, "zero_point": 1})
    net.head(y, lvl, 1000)
    return _finish(net, 262144)


def block_ends(spec: dict) -> list[int]:
    """Stage counts k after which a network's prefix may end: after the stem and after every block."""
    names = [s["name"] for s in spec["stages"]]
    out = []
    for k in range(1, len(names)):
        cur, nxt = names[k - 1].split("_")[0], names[k].split("_")[0]
        if cur != nxt:
            out.append(k)
    return out


def fuse_prefix(spec: dict, k: int, rows: int | str = "ROWS", choices=(1, 2, 4, 8)) -> dict:
    """The first k stages inside one loop over the rows of stage k-1's output, the rest outside."""
    spec = copy.deepcopy(spec)
    spec.pop("loops", None)
    spec.pop("search_space", None)
    for st in spec["stages"]:
        st["at"] = None
    if k <= 0:
        return spec
    last = spec["stages"][k - 1]
    axis = spec["tensors"][last["writes"][0]]["shape"][0]
    spec["loops"] = [{"axis": axis, "tile": rows}]
    for st in spec["stages"][:k]:
        st["at"] = axis
    if isinstance(rows, str):
        spec["search_space"] = {"params": {rows: {"choices": list(choices), "default": choices[0]}}}
    return spec


def to_yaml(spec: dict, header: str = "") -> str:
    body = yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=120)
    return header + body


NETWORKS = {"mcu_mobilenetv2_035": mobilenet_v2, "mcu_mcunet": mcunet}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="write configs/<network>.yaml")
    args = ap.parse_args(argv)
    for name, fn in NETWORKS.items():
        spec = fn()
        print(f"{name}: {len(spec['stages'])} stages, {len(spec['tensors'])} tensors")
        if args.write:
            (ROOT / "configs" / f"{name}.yaml").write_text(to_yaml(spec, f"# {spec['description']}\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
