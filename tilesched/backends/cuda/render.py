"""Render a KernelPlan to Triton source and load it as a Python module.

Rendering is pure and deterministic (same plan, same bytes). Loading writes the source to a
content-addressed file, because Triton reads a kernel's source through `inspect`."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import jinja2

from tilesched.backends.cuda.plan import TRITON_DTYPES, KernelPlan
from tilesched.fsutil import write_atomic

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("tilesched.backends.cuda", "templates"),
    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
)


def render(kp: KernelPlan) -> str:
    """The Triton module source (kernel + host `launch`) for a kernel plan."""
    text = _ENV.get_template("gemm.py.j2").render(k=kp, dtypes=TRITON_DTYPES)
    # the template's macros leave whitespace-only lines; keep the output tidy and stable
    lines = [ln.rstrip() for ln in text.splitlines()]
    out: list[str] = []
    for i, ln in enumerate(lines):
        if ln == "":
            nxt = next((x for x in lines[i + 1:] if x), "")
            if nxt.startswith(" ") or (out and out[-1] == "" and len(out) > 1 and out[-2] == ""):
                continue  # no blank lines inside a function body; at most two between definitions
        out.append(ln)
    return "\n".join(out).strip("\n") + "\n"


def cache_dir() -> Path:
    root = os.environ.get("TILESCHED_CACHE") or os.path.join(tempfile.gettempdir(), f"tilesched-{os.getuid()}")
    return Path(root) / "cuda"


@lru_cache(maxsize=64)
def _load(source: str, interpret: bool) -> ModuleType:
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    path = cache_dir() / f"k_{digest}.py"
    write_atomic(path, source)
    # @triton.jit consults TRITON_INTERPRET when the module executes: one module per mode
    name = f"tilesched_generated_{digest}{'_interp' if interpret else ''}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # Triton resolves globals of jit functions through the module
    spec.loader.exec_module(mod)
    return mod


def load_source(source: str) -> ModuleType:
    """Import rendered Triton source (cached per source text and interpreter mode)."""
    return _load(source, os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"))


def load_module(kp: KernelPlan) -> ModuleType:
    """Render and import the kernel module of `kp` (cached per source text)."""
    return load_source(render(kp))
