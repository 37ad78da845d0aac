"""Stable content hashes of IR values, for lock files and manifests."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel


def canonical_json(value) -> str:
    """Fields at their defaults are left out, so a field the IR gains later (with a default that
    keeps old meaning) does not change the hash of programs that do not use it: lock files and
    manifests stay valid across such additions."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_defaults=True)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def content_hash(value) -> str:
    """sha256 of the canonical JSON of `value` (a model or plain data), hex."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()
