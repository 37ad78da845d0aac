"""The lock file: tuned parameters per spec and shape bucket, read by code emission.

A shape bucket rounds every symbolic axis up to a power of two, so one tuned entry
serves all shapes in [2^(k-1)+1, 2^k]. Emission picks the entry of the exact bucket,
else the nearest one (in log2 distance), else the spec's defaults.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tilesched.fsutil import write_atomic
from tilesched.ir.hashing import content_hash
from tilesched.ir.nodes import Program
from tilesched.spec.models import Scalar

LOCK_VERSION = 1


def bucket_of(program: Program, sizes: dict[str, int]) -> dict[str, int]:
    """The shape bucket of `sizes`: each symbolic axis rounded up to a power of two."""
    return {a.name: 1 << max(sizes[a.name] - 1, 0).bit_length() for a in program.axes if a.symbolic}


def bucket_key(bucket: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(bucket.items())) or "*"


class LockEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    spec: str  # program name
    spec_hash: str  # content_hash of the Program the parameters were tuned for
    target: str
    bucket: dict[str, int]
    params: dict[str, Scalar]
    objective: str  # "measure" or "model"
    value: float | None = None  # best objective value (ms for measure; model units otherwise)
    device: str = ""
    versions: dict[str, str] = Field(default_factory=dict)
    study: str = ""
    trials: int = 0
    # added by the tuner (optional, so older lock files still read): the exact shape tuned
    # and every objective of the winner, e.g. {"time_ms": ...} or {"cycles": ..., "peak_sram_bytes": ...}
    sizes: dict[str, int] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)


class LockFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: int = LOCK_VERSION
    entries: tuple[LockEntry, ...] = ()

    @classmethod
    def read(cls, path: str | Path) -> LockFile:
        path = Path(path)
        if not path.exists():
            return cls()
        return cls.model_validate_json(path.read_text())

    def write(self, path: str | Path) -> bool:
        entries = sorted(self.entries, key=lambda e: (e.spec, e.target, bucket_key(e.bucket)))
        data = self.model_copy(update={"entries": tuple(entries)}).model_dump(mode="json")
        return write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def with_entry(self, entry: LockEntry) -> LockFile:
        """Replace the entry of the same spec, target and bucket (or add it)."""
        key = (entry.spec, entry.target, bucket_key(entry.bucket))
        kept = [e for e in self.entries if (e.spec, e.target, bucket_key(e.bucket)) != key]
        return LockFile(entries=tuple(kept) + (entry,))

    def entries_for(self, program: Program) -> list[LockEntry]:
        """Entries tuned for exactly this program (same IR hash and target)."""
        h = content_hash(program)
        return [e for e in self.entries if e.spec == program.name and e.spec_hash == h and e.target == program.target]

    def select(self, program: Program, sizes: dict[str, int]) -> LockEntry | None:
        """The entry for this shape: exact bucket, else nearest bucket, else None."""
        candidates = self.entries_for(program)
        if not candidates:
            return None
        want = bucket_of(program, sizes)

        def distance(e: LockEntry) -> float:
            return sum(abs(math.log2(e.bucket.get(k, v)) - math.log2(v)) for k, v in want.items())

        return min(candidates, key=lambda e: (distance(e), bucket_key(e.bucket)))
