"""Elementwise functions: the meaning of every `fn` of the language, defined once.

A stage's `fn` list is applied left to right to its first input x. A *binary* fn combines x
with its argument: the next tensor the stage reads (broadcast by axis name), or a constant
written `{add: 0.5}` / `{scale: "1 / sqrt(D)"}` (an expression over axes and parameters).
A *unary* fn maps x. `cast` changes the value domain to the output's dtype (on quantised
integers: dequantise / quantise with the tensors' `quant`)."""

from __future__ import annotations

import math
from collections.abc import Callable

# name -> (x, y, xp) -> value. `bias` and `add` are the same operation; `bias` says what y is.
BINARY: dict[str, Callable] = {
    "bias": lambda x, y, xp: x + y,
    "add": lambda x, y, xp: x + y,
    "sub": lambda x, y, xp: x - y,
    "mul": lambda x, y, xp: x * y,
    "scale": lambda x, y, xp: x * y,  # mul by a constant (the argument is required)
    "div": lambda x, y, xp: x / y,
    "max": lambda x, y, xp: xp.maximum(x, y),
    "min": lambda x, y, xp: xp.minimum(x, y),
}


def _sigmoid(x, xp):
    return 1.0 / (1.0 + xp.exp(-x))


UNARY: dict[str, Callable] = {
    "relu": lambda x, xp: xp.maximum(x, 0.0),
    "relu6": lambda x, xp: xp.minimum(xp.maximum(x, 0.0), 6.0),
    "gelu": lambda x, xp: 0.5 * x * (1.0 + xp.erf(x * (1.0 / math.sqrt(2.0)))),  # exact (erf) GELU
    "gelu_tanh": lambda x, xp: 0.5 * x * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x))),
    "silu": lambda x, xp: x * _sigmoid(x, xp),
    "sigmoid": _sigmoid,
    "tanh": lambda x, xp: xp.tanh(x),
    "exp": lambda x, xp: xp.exp(x),
    "exp2": lambda x, xp: xp.exp2(x),
    "log": lambda x, xp: xp.log(x),
    "sqrt": lambda x, xp: xp.sqrt(x),
    "rsqrt": lambda x, xp: 1.0 / xp.sqrt(x),
    "reciprocal": lambda x, xp: 1.0 / x,
    "abs": lambda x, xp: xp.abs(x),
    "neg": lambda x, xp: -x,
}

CAST = "cast"
CLAMPS = ("relu", "relu6")  # on quantised values with unchanged quantisation: TFLite's activation clamps
ALL = (*BINARY, *UNARY, CAST)

DOC = {
    "bias": "x + y (y a bias vector)", "add": "x + y", "sub": "x - y", "mul": "x * y",
    "scale": "x * c (c a constant or parameter)", "div": "x / y", "max": "max(x, y)", "min": "min(x, y)",
    "relu": "max(x, 0)", "relu6": "min(max(x, 0), 6)", "gelu": "x/2 (1 + erf(x / sqrt 2))",
    "gelu_tanh": "x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))", "silu": "x sigmoid(x)",
    "sigmoid": "1 / (1 + exp(-x))", "tanh": "tanh x", "exp": "e^x", "exp2": "2^x", "log": "ln x",
    "sqrt": "sqrt x", "rsqrt": "1 / sqrt x", "reciprocal": "1 / x", "abs": "|x|", "neg": "-x",
    "cast": "convert to the output dtype (quantised: dequantise / quantise)",
}


def is_binary(name: str) -> bool:
    return name in BINARY
