"""The manifest of an emitted kernel library: what it was generated from, with hashes.

A manifest comes from a downstream repository and is untrusted: every path it names is
checked here (generated files: plain relative paths inside the library; specs and the lock
file: relative paths with the right suffix), and its size is bounded before it is read."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from tilesched.errors import ToolFailure

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 4 << 20
MAX_FILES = 10_000
_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
SPEC_SUFFIXES = (".yaml", ".yml")


def generated_path_problem(path: str) -> str | None:
    """Why `path` cannot be a file of a library (relative, inside it, plain names), or None."""
    if not isinstance(path, str) or not path or len(path) > 400:
        return "not a short relative path"
    parts = path.split("/")
    if len(parts) > 4 or any(not _COMPONENT.match(p) for p in parts):
        return "not a plain relative path inside the library"
    return None


def reference_path_problem(path: str, suffixes: tuple[str, ...]) -> str | None:
    """Why `path` cannot name a spec or lock file from a manifest, or None (it may climb out
    of the library with `..`; `check` later confirms it stays inside the repository)."""
    if not isinstance(path, str) or not path or len(path) > 1000 or "\0" in path:
        return "not a relative path"
    p = PurePosixPath(path)
    if p.is_absolute():
        return "an absolute path"
    if p.suffix not in suffixes:
        return f"not a {'/'.join(suffixes)} file"
    return None


class SpecRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    path: str  # the spec file, relative to the library directory
    spec_hash: str  # content hash of the lowered Program
    lock_hash: str  # content hash of the lock entries used for it ("" if none)

    @field_validator("path")
    @classmethod
    def _spec_path(cls, v: str) -> str:
        why = reference_path_problem(v, SPEC_SUFFIXES)
        if why:
            raise ValueError(f"spec path {v!r} is {why}")
        return v


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True)

    tool: str = "tilesched"
    tool_version: str
    target: str  # "cuda" or "cortex-m"
    package: str  # python package / C library name
    lock: str | None  # lock file, relative to the library directory
    templates_hash: str
    specs: tuple[SpecRecord, ...]
    files: dict[str, str]  # generated file -> sha256

    @field_validator("lock")
    @classmethod
    def _lock_path(cls, v: str | None) -> str | None:
        why = v is not None and reference_path_problem(v, (".json",))
        if why:
            raise ValueError(f"lock path {v!r} is {why}")
        return v

    @field_validator("files")
    @classmethod
    def _file_paths(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > MAX_FILES:
            raise ValueError(f"lists {len(v)} files; at most {MAX_FILES}")
        for path in v:
            why = generated_path_problem(path)
            if why or path == MANIFEST:
                raise ValueError(f"file {path!r} is {why or 'the manifest itself'}")
        return v

    @field_validator("package")
    @classmethod
    def _package(cls, v: str) -> str:
        if not v.isidentifier():
            raise ValueError(f"package {v!r} is not an identifier")
        return v

    def dumps(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        """The manifest of a library; ToolFailure naming the file and the first problem."""
        path = Path(directory) / MANIFEST
        if path.is_symlink() or not path.is_file():
            raise ToolFailure(f"{path}: not a regular file")
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ToolFailure(f"{path}: {path.stat().st_size} bytes; a manifest is at most {MAX_MANIFEST_BYTES}")
        try:
            manifest = cls.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ToolFailure(f"{path}: invalid manifest: {where + ': ' if where else ''}"
                              f"{err['msg'].removeprefix('Value error, ')}") from None
        if manifest.tool != "tilesched":
            raise ToolFailure(f"{path}: written by {manifest.tool!r}, not tilesched")
        return manifest
