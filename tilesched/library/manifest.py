"""The manifest of an emitted kernel library: what it was generated from, with hashes."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

MANIFEST = "manifest.json"


class SpecRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    path: str  # the spec file, relative to the library directory
    spec_hash: str  # content hash of the lowered Program
    lock_hash: str  # content hash of the lock entries used for it ("" if none)


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

    def dumps(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        return cls.model_validate_json((Path(directory) / MANIFEST).read_text())
