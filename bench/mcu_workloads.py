"""The MCU benchmark workloads as plain data, shared by the tilesched Cortex-M bench
(bench/mcu_peak.py) and the TFLite Micro baseline, so both build exactly the same layers.

Conventions (TFLite int8): activations are int8 with a per-tensor (scale, zero_point);
weights are int8, symmetric (zero point 0), per output channel (`weight_scales`, one per
output channel); biases are int32 with scale input_scale * weight_scale[c] and zero point 0.
Shapes are NHWC for convolutions ([1, H, W, C]) and [rows, features] for fully connected
layers. Weights: conv2d [CO, KH, KW, CI] (TFLite OHWI), depthwise [1, KH, KW, C],
fully_connected [OUT, IN]. Activations are applied as clamps on the quantized output
(relu: [zp, 127]; relu6: [zp, zp + round(6 / scale)] clipped to int8).

Attention (`op: attention`) is multi-head self-attention over already projected q, k, v
(each [S, NH*HD], head h = columns h*HD:(h+1)*HD):
  scores_h = requant(q_h @ k_h^T, multiplier = q_scale * k_scale / sqrt(HD) / score_scale)  -> int8
  probs_h  = softmax over keys (output scale 1/256, zero point -128, TFLite int8 softmax range)
  ctx_h    = requant(probs_h @ v_h)                                                    -> int8
with ctx = concat_h ctx_h of shape [S, NH*HD]. tilesched's integer softmax is documented in
tilesched/semantics/quant.py.
"""

from __future__ import annotations


def _scales(n: int, base: float, seed: int) -> list[float]:
    """Deterministic per-channel weight scales in [base, 1.5*base)."""
    return [round(base * (1.0 + ((i * 37 + seed * 11) % 50) / 100.0), 7) for i in range(n)]


RELU6_SCALE = 6.0 / 255.0  # relu6 outputs with zero point -128 span exactly [0, 6]


def inverted_bottleneck(h: int, w: int, c: int, expand: int, co: int, stride: int) -> list[dict]:
    e = c * expand
    oh, ow = (h + 2 - 3) // stride + 1, (w + 2 - 3) // stride + 1
    return [
        {"name": "expand", "op": "conv2d", "input_shape": [1, h, w, c], "output_shape": [1, h, w, e],
         "weight_shape": [e, 1, 1, c], "kernel": [1, 1], "stride": 1, "padding": "valid", "activation": "relu6",
         "input_scale": 0.0235, "input_zero_point": -128, "output_scale": RELU6_SCALE, "output_zero_point": -128,
         "weight_scales": _scales(e, 0.006, 1)},
        {"name": "depthwise", "op": "depthwise_conv2d", "input_shape": [1, h, w, e], "output_shape": [1, oh, ow, e],
         "weight_shape": [1, 3, 3, e], "kernel": [3, 3], "stride": stride, "padding": "same", "pad": 1,
         "activation": "relu6", "input_scale": RELU6_SCALE, "input_zero_point": -128,
         "output_scale": RELU6_SCALE, "output_zero_point": -128, "weight_scales": _scales(e, 0.02, 2)},
        {"name": "project", "op": "conv2d", "input_shape": [1, oh, ow, e], "output_shape": [1, oh, ow, co],
         "weight_shape": [co, 1, 1, e], "kernel": [1, 1], "stride": 1, "padding": "valid", "activation": "none",
         "input_scale": RELU6_SCALE, "input_zero_point": -128, "output_scale": 0.0412, "output_zero_point": 3,
         "weight_scales": _scales(co, 0.0087, 3)},
    ]


def bert_tiny_layer(s: int, d: int = 128, nh: int = 2, ffn: int = 512) -> list[dict]:
    def fc(name, src, dst, n_in, n_out, in_q, out_q, act, seed, base):
        return {"name": name, "op": "fully_connected", "input": src, "output": dst,
                "input_shape": [s, n_in], "output_shape": [s, n_out], "weight_shape": [n_out, n_in],
                "activation": act, "input_scale": in_q[0], "input_zero_point": in_q[1],
                "output_scale": out_q[0], "output_zero_point": out_q[1],
                "weight_scales": _scales(n_out, base, seed)}

    xq, qkv, ctxq, attq, hq, yq = (0.031, 2), (0.05, 0), (0.05, 0), (0.06, -1), (0.04, -128), (0.06, 1)
    return [
        fc("q_proj", "x", "q", d, d, xq, qkv, "none", 1, 0.004),
        fc("k_proj", "x", "k", d, d, xq, qkv, "none", 2, 0.004),
        fc("v_proj", "x", "v", d, d, xq, qkv, "none", 3, 0.004),
        {"name": "attention", "op": "attention", "inputs": ["q", "k", "v"], "output": "ctx",
         "seq_len": s, "heads": nh, "head_dim": d // nh, "q_scale": qkv[0], "q_zero_point": qkv[1],
         "k_scale": qkv[0], "k_zero_point": qkv[1], "v_scale": qkv[0], "v_zero_point": qkv[1],
         "score_scale": 0.125, "score_zero_point": 0, "prob_scale": 1.0 / 256.0, "prob_zero_point": -128,
         "output_scale": ctxq[0], "output_zero_point": ctxq[1], "output_shape": [s, d]},
        fc("out_proj", "ctx", "attn", d, d, ctxq, attq, "none", 4, 0.005),
        fc("ffn1", "attn", "h", d, ffn, attq, hq, "relu", 5, 0.004),
        fc("ffn2", "h", "y", ffn, d, hq, yq, "none", 6, 0.003),
    ]


WORKLOADS: dict[str, list[dict]] = {
    "ib_s1_80": inverted_bottleneck(80, 80, 16, 6, 24, 1),
    "ib_s2_80": inverted_bottleneck(80, 80, 16, 6, 24, 2),
    "bert_tiny_s128": bert_tiny_layer(128),
    "bert_tiny_s256": bert_tiny_layer(256),
    "bert_tiny_s512": bert_tiny_layer(512),
}

# Network input and output tensors (counted in the arena by both tilesched and TFLM).
IO = {
    "ib_s1_80": {"input": "x", "output": "y"},
    "ib_s2_80": {"input": "x", "output": "y"},
    **{f"bert_tiny_s{s}": {"input": "x", "output": "y"} for s in (128, 256, 512)},
}
