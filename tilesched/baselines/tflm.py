"""TensorFlow Lite Micro baseline: run a .tflite model in the TFLM Python interpreter and read its arena.

`tflm_arena(model_bytes)` runs a model once on random int8 inputs and parses what TFLM's
RecordingMicroAllocator prints: `head` is the planned (non-persistent) activation arena, including kernel
scratch buffers; `tail` the persistent allocations; `total` = head + tail, the arena the model needs.
The models come from tilesched.baselines.tflite_builder; the builder API is re-exported here.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Sequence

import numpy as np

from tilesched.baselines.int8_ref import (  # noqa: F401 - re-exported
    QParams,
    conv2d_int8_reference,
    depthwise_conv2d_int8_reference,
    fully_connected_int8_reference,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
)
from tilesched.baselines.tflite_builder import ModelBuilder, Tensor, fb, model_from_layers  # noqa: F401

try:  # the `mcu` extra
    from tflite_micro.python.tflite_micro import runtime as _tflm_runtime
except ImportError:  # pragma: no cover - exercised only without the extra
    _tflm_runtime = None

__all__ = [
    "QParams", "ModelBuilder", "Tensor", "model_from_layers", "tflm_arena", "tflm_run", "tflm_version",
    "parse_allocations", "random_inputs", "quantize_multiplier", "multiply_by_quantized_multiplier",
    "conv2d_int8_reference", "depthwise_conv2d_int8_reference", "fully_connected_int8_reference",
]


def _require_tflm() -> None:
    if _tflm_runtime is None:
        raise RuntimeError("the TFLite Micro baseline needs the `mcu` extra: pip install 'tilesched[mcu]'")


def tflm_version() -> str:
    _require_tflm()
    from tflite_micro.python.tflite_micro import _version

    return _version.__version__




_ALLOC_RE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
_PART_RE = re.compile(r"'([^']+)' used (\d+) bytes")


def _capture_fd1_fd2(fn):
    """Run fn() with the process's stdout and stderr (fd 1 and 2) sent to a file; return (result, text)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        error = None
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            result = fn()
        except Exception as e:  # TFLM explains its failures on stderr: keep that text with the error
            error = e
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        tmp.seek(0)
        text = tmp.read().decode("utf-8", "replace")
    if error is not None:
        raise RuntimeError(f"TFLM: {error}; its log:\n{text[-2000:]}") from error
    return result, text


def parse_allocations(text: str) -> dict[str, int]:
    """Pull total/head/tail bytes out of the RecordingMicroAllocator report."""
    found = {k: int(v) for k, v in _ALLOC_RE.findall(text)}
    missing = {"total", "head", "tail"} - set(found)
    if missing:
        raise RuntimeError(f"TFLM allocation report lacks {sorted(missing)}: {text[:500]!r}")
    return found


def tflm_run(model_bytes: bytes, inputs: Sequence[np.ndarray], arena_size: int = 64 << 20):
    """Run one inference; return (outputs, allocation report text)."""
    _require_tflm()

    def go():
        it = _tflm_runtime.Interpreter.from_bytes(model_bytes, arena_size=arena_size)
        for i, a in enumerate(inputs):
            it.set_input(a, i)
        it.invoke()
        outs = [np.array(it.get_output(i)) for i in range(_n_outputs(model_bytes))]
        it.print_allocations()
        return outs

    return _capture_fd1_fd2(go)


def _n_outputs(model_bytes: bytes) -> int:
    return fb.Model.GetRootAsModel(model_bytes, 0).Subgraphs(0).OutputsLength()


def random_inputs(model_bytes: bytes, seed: int = 0) -> list[np.ndarray]:
    """Fresh random int8 inputs for every graph input of a model."""
    _require_tflm()
    model = fb.Model.GetRootAsModel(model_bytes, 0)
    sg = model.Subgraphs(0)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(sg.InputsLength()):
        t = sg.Tensors(sg.Inputs(i))
        out.append(rng.integers(-128, 128, size=tuple(t.ShapeAsNumpy()), dtype=np.int8))
    return out


def tflm_arena(model_bytes: bytes, seed: int = 0, arena_size: int = 64 << 20) -> dict:
    """Run the model once on random int8 inputs and report TFLM's arena: total, head (planned activations) and
    tail (persistent) bytes, plus output statistics that show the run produced real data."""
    (outs, text) = tflm_run(model_bytes, random_inputs(model_bytes, seed), arena_size)
    alloc = parse_allocations(text)
    y = outs[0]
    return {
        "total_bytes": alloc["total"],
        "head_bytes": alloc["head"],
        "tail_bytes": alloc["tail"],
        "tail_parts": {k: int(v) for k, v in _PART_RE.findall(text)},  # persistent allocations by kind
        "model_bytes": len(model_bytes),
        "output_shape": list(y.shape),
        "output_distinct": int(np.unique(y).size),
        "output_std": float(np.std(y.astype(np.float64))),
    }
