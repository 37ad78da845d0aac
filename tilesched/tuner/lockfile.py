"""The lock file: tuned parameters per spec and shape bucket, read by code emission.

A shape bucket rounds every symbolic axis up to a power of two, so one tuned entry
serves all shapes in [2^(k-1)+1, 2^k]. Emission picks the entry of the exact bucket,
else the nearest one (in log2 distance), else the spec's defaults.

A lock file is input like any other: `LockFile.read` bounds its size and turns bad JSON, another
format version or a malformed entry into one `InvalidInput` line naming the file and the first
problem. Entries carrying a spec's name that cannot serve that spec (tuned for another version
of it or another target, or a bucket over axes it does not have) are skipped by `entries_for`;
`stale_notes` says so in words, for callers to print.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tilesched import __version__
from tilesched.errors import InvalidInput, format_path
from tilesched.fsutil import write_atomic
from tilesched.ir.hashing import content_hash
from tilesched.ir.nodes import Program
from tilesched.spec.models import Identifier, Scalar

LOCK_VERSION = 1
# far above any real lock file (well under 1 KiB per entry); a wrong path (a log, a dataset)
# is refused before it is parsed
MAX_LOCK_BYTES = 16 * 1024 * 1024


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
    bucket: dict[Identifier, int]  # symbolic axis -> power of two
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

    @field_validator("bucket")
    @classmethod
    def _powers_of_two(cls, bucket: dict[str, int]) -> dict[str, int]:
        # select() measures distances in log2: 0 or 3 would fail there, far from the file
        bad = {k: v for k, v in bucket.items() if v < 1 or v & (v - 1)}
        if bad:
            raise ValueError(f"bucket sizes must be positive powers of two, got {bucket_key(bad)}")
        return bucket


class LockFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: int = LOCK_VERSION
    entries: tuple[LockEntry, ...] = ()

    @classmethod
    def read(cls, path: str | Path, *, must_exist: bool = False) -> LockFile:
        """The lock file at `path`; an empty one when there is none yet (the tuner creates it),
        unless `must_exist`. Raises InvalidInput naming the file and its first problem."""
        path = Path(path)
        if not path.exists():
            if must_exist:
                raise InvalidInput(f"{path}: no such lock file")
            return cls()
        with path.open("rb") as f:
            raw = f.read(MAX_LOCK_BYTES + 1)
        if len(raw) > MAX_LOCK_BYTES:
            raise InvalidInput(f"{path}: larger than {MAX_LOCK_BYTES >> 20} MiB: not a lock file")
        return cls.parse(raw, str(path))

    @classmethod
    def parse(cls, raw: str | bytes, where: str = "lock file") -> LockFile:
        """A lock file from its JSON text; errors name `where`."""
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # JSON syntax, not UTF-8, nested too deeply
            raise InvalidInput(f"{where}: invalid lock file: {_first_line(exc) or 'nested too deeply'}") from None
        if not isinstance(data, dict):
            raise InvalidInput(f"{where}: invalid lock file: expected a JSON object, got {type(data).__name__}")
        version = data.get("version", LOCK_VERSION)
        if version != LOCK_VERSION or isinstance(version, bool):
            raise InvalidInput(f"{where}: lock file version {version!r}, but this tilesched ({__version__}) "
                               f"reads version {LOCK_VERSION}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(f"{where}: invalid lock file: {_first_error(exc)}") from None

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
        """Entries tuned for exactly this program (same IR hash and target, a bucket over its
        symbolic axes). Entries of other specs are not its business; see `stale_notes`."""
        h = content_hash(program)
        return [e for e in self.entries if e.spec == program.name and _mismatch(e, program, h) is None]

    def stale_notes(self, program: Program, where: str = "lock file") -> list[str]:
        """One warning line per reason why entries named after `program` cannot serve it
        (empty when there is nothing to say), for callers to print on stderr."""
        h = content_hash(program)
        stale: dict[str, list[LockEntry]] = {}
        for e in self.entries:
            why = _mismatch(e, program, h) if e.spec == program.name else None
            if why is not None:
                stale.setdefault(why, []).append(e)
        outcome = "ignored" if self.entries_for(program) else "using defaults"
        return [f"{where}: {_stale_note(why, entries, program, h)}; {outcome} (re-tune to refresh the lock file)"
                for why, entries in stale.items()]

    def select(self, program: Program, sizes: dict[str, int]) -> LockEntry | None:
        """The entry for this shape: exact bucket, else nearest bucket, else None."""
        candidates = self.entries_for(program)
        if not candidates:
            return None
        want = bucket_of(program, sizes)

        def distance(e: LockEntry) -> float:
            return sum(abs(math.log2(e.bucket.get(k, v)) - math.log2(v)) for k, v in want.items())

        return min(candidates, key=lambda e: (distance(e), bucket_key(e.bucket)))


def _symbolic_axes(program: Program) -> set[str]:
    return {a.name for a in program.axes if a.symbolic}


def _mismatch(entry: LockEntry, program: Program, spec_hash: str) -> str | None:
    """Why an entry cannot serve `program` ("target", "spec_hash", "bucket"), None when it can.
    (The hash covers the target too: another target is the more telling reason.)"""
    if entry.target != program.target:
        return "target"
    if entry.spec_hash != spec_hash:
        return "spec_hash"
    if not entry.bucket.keys() <= _symbolic_axes(program):
        return "bucket"
    return None


def _stale_note(why: str, entries: list[LockEntry], program: Program, spec_hash: str) -> str:
    n = len(entries)
    head = f"{n} entr{'y' if n == 1 else 'ies'} for {program.name} {'was' if n == 1 else 'were'}"
    if why == "target":
        return f"{head} tuned for target {', '.join(sorted({e.target for e in entries}))}, not {program.target}"
    if why == "spec_hash":
        hashes = ", ".join(sorted({e.spec_hash[:12] for e in entries}))
        return f"{head} tuned for another version of the spec (hash {hashes}; the spec's is {spec_hash[:12]})"
    axes = ", ".join(sorted({k for e in entries for k in e.bucket} - _symbolic_axes(program)))
    return f"{head} tuned over axes the spec does not have as symbolic axes ({axes})"


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [""])[0]


def _first_error(exc: ValidationError) -> str:
    """The first validation error with its location, e.g. ``entries[2].bucket: ...``."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    msg = first["msg"].removeprefix("Value error, ")
    where = format_path(tuple(first["loc"]))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return (f"{where}: {msg}" if where else msg) + more
