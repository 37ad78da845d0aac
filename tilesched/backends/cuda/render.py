"""Load rendered Triton source as a Python module: the source goes to a content-addressed file,
because Triton reads a kernel's source through `inspect`."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from tilesched.fsutil import write_atomic


def cache_dir() -> Path:
    root = os.environ.get("TILESCHED_CACHE") or os.path.join(tempfile.gettempdir(), f"tilesched-{os.getuid()}")
    return Path(root) / "cuda"


def _import_gluon_first() -> None:
    """Import Gluon's language before any kernel runs in Triton's interpreter. While a kernel runs
    there, the interpreter swaps triton.language's reduce and scan for its own; a Gluon first
    imported inside that window (the interpreter imports it lazily) keeps the swapped ones for the
    rest of the process, and every later Gluon compile of a reduction fails (seen with Triton 3.9)."""
    try:
        import triton.experimental.gluon.language  # noqa: F401
    except ImportError:  # a Triton without Gluon: no Gluon kernels either
        pass


@lru_cache(maxsize=64)
def _load(source: str, interpret: bool) -> ModuleType:
    _import_gluon_first()
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

