"""Render a kernel library from specs and a lock file, write it atomically, and check it.

Rendering is pure: (spec files, lock file) -> {relative path: text}. Emission writes
only what changed and removes files the previous manifest listed but this one does not;
nothing is written when rendering fails. `check` renders again in memory and compares.
Tuning never happens here: parameters come from the lock file or the specs' defaults.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tilesched import __version__
from tilesched.errors import Diagnostic, SpecError
from tilesched.fsutil import write_atomic
from tilesched.ir.hashing import content_hash
from tilesched.ir.nodes import Program
from tilesched.library.headers import with_header
from tilesched.library.manifest import MANIFEST, Manifest, SpecRecord
from tilesched.tuner.lockfile import LockEntry, LockFile

RENDERERS = {"cuda": "tilesched.backends.cuda.library", "cortex-m": "tilesched.backends.cortexm.library"}


def target_family(target: str) -> str:
    return "cortex-m" if target.startswith("cortex-m") else target


@dataclass(frozen=True)
class LibraryUnit:
    """One spec going into a library, with the lock entries tuned for it."""

    program: Program
    spec_path: str  # relative to the library directory (for headers and the manifest)
    lock_entries: tuple[LockEntry, ...]


@dataclass
class Rendered:
    files: dict[str, str]
    manifest: Manifest


@dataclass
class CheckResult:
    stale: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    @property
    def up_to_date(self) -> bool:
        return not self.stale


def _relpath(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _templates_hash(module) -> str:
    h = hashlib.sha256()
    for d in module.TEMPLATE_DIRS:
        for f in sorted(Path(d).rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(f.relative_to(d).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def render(spec_paths: list[Path], out_dir: Path, lock_path: Path | None, package: str | None = None) -> Rendered:
    """Everything the library holds, in memory. Raises SpecError on any bad input."""
    from tilesched import load_program

    if not spec_paths:
        raise SpecError([Diagnostic("emit needs at least one spec")])
    lock = LockFile.read(lock_path, must_exist=True) if lock_path else LockFile()
    programs = [(p, load_program(p)) for p in spec_paths]
    families = {target_family(prog.target) for _, prog in programs}
    if len(families) != 1:
        raise SpecError([Diagnostic(f"a library holds one target family; got {sorted(families)}: emit them separately")])
    family = families.pop()
    names = [prog.name for _, prog in programs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SpecError([Diagnostic(f"two specs share the name {sorted(dup)[0]!r}")])
    for note in (n for _, prog in programs for n in lock.stale_notes(prog, str(lock_path))):
        print(note, file=sys.stderr)  # entries named after a spec that cannot serve it: say why
    module = importlib.import_module(RENDERERS[family])
    package = package or out_dir.resolve().name.replace("-", "_")
    if not package.isidentifier():
        raise SpecError([Diagnostic(f"library name {package!r} is not an identifier; pass --name")])
    units = [
        LibraryUnit(program=prog, spec_path=_relpath(path, out_dir), lock_entries=tuple(lock.entries_for(prog)))
        for path, prog in sorted(programs, key=lambda x: x[1].name)
    ]
    bodies = module.render(units, package)
    origin = ", ".join(u.spec_path for u in units)
    files = {path: with_header(path, text, origin, __version__) for path, text in sorted(bodies.items())}
    manifest = Manifest(
        tool_version=__version__, target=family, package=package,
        lock=_relpath(lock_path, out_dir) if lock_path else None,
        templates_hash=_templates_hash(module),
        specs=tuple(SpecRecord(name=u.program.name, path=u.spec_path, spec_hash=content_hash(u.program),
                               lock_hash=content_hash([e.model_dump(mode="json") for e in u.lock_entries])
                               if u.lock_entries else "")
                    for u in units),
        files={p: hashlib.sha256(t.encode()).hexdigest() for p, t in files.items()},
    )
    return Rendered(files=files, manifest=manifest)


def emit(spec_paths: list[Path], out_dir: Path, lock_path: Path | None, package: str | None = None) -> list[str]:
    """Write the library; returns the paths that changed (written or removed)."""
    rendered = render(spec_paths, out_dir, lock_path, package)
    old = _read_manifest(out_dir)
    changed = [p for p, text in rendered.files.items() if write_atomic(out_dir / p, text)]
    if old is not None:
        for p in sorted(set(old.files) - set(rendered.files)):
            if (out_dir / p).exists():
                (out_dir / p).unlink()
                changed.append(p)
    if write_atomic(out_dir / MANIFEST, rendered.manifest.dumps()):
        changed.append(MANIFEST)
    return changed


def _read_manifest(out_dir: Path) -> Manifest | None:
    try:
        return Manifest.read(out_dir)
    except (OSError, ValueError):
        return None


def check(out_dir: Path) -> CheckResult:
    """Compare a library on disk with what its specs and lock file render to now."""
    manifest_path = out_dir / MANIFEST
    if not manifest_path.exists():
        raise SpecError([Diagnostic("no manifest.json: not a tilesched library", "", str(out_dir))])
    try:
        old = Manifest.read(out_dir)
    except ValueError as exc:
        raise SpecError([Diagnostic(f"unreadable manifest: {str(exc).splitlines()[0]}", "", str(manifest_path))]) from None
    specs = [out_dir / s.path for s in old.specs]
    lock = out_dir / old.lock if old.lock else None
    new = render(specs, out_dir, lock, old.package)
    result = CheckResult()
    reasons = _why(old, new.manifest)
    for path in sorted(set(old.files) | set(new.files)):
        on_disk = out_dir / path
        if path not in new.files:
            result.stale.append((path, "no longer generated"))
        elif not on_disk.exists():
            result.stale.append((path, "missing"))
        elif on_disk.read_text() != new.files[path]:
            edited = hashlib.sha256(on_disk.read_bytes()).hexdigest() != old.files.get(path)
            result.stale.append((path, "edited by hand" if edited else reasons or "content differs"))
    if not result.stale and old != new.manifest:
        result.stale.append((MANIFEST, reasons or "manifest differs"))
    return result


def _why(old: Manifest, new: Manifest) -> str:
    why = []
    if old.tool_version != new.tool_version:
        why.append(f"tilesched {old.tool_version} -> {new.tool_version}")
    if old.templates_hash != new.templates_hash:
        why.append("templates changed")
    before = {s.name: s for s in old.specs}
    for s in new.specs:
        b = before.get(s.name)
        if b is None:
            why.append(f"spec {s.name} added")
        elif b.spec_hash != s.spec_hash:
            why.append(f"spec {s.name} changed")
        elif b.lock_hash != s.lock_hash:
            why.append(f"tuned parameters of {s.name} changed")
    return "; ".join(why)
