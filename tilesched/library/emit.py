"""Render a kernel library from specs and a lock file, write it atomically, and check it.

Rendering is pure: (spec files, lock file) -> {relative path: text}. Emission replaces the
library as a whole (swap.py) and only when something changed; nothing is written when
rendering fails. `check` renders again in memory and compares.
Tuning never happens here: parameters come from the lock file or the specs' defaults.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tilesched import __version__
from tilesched.errors import Diagnostic, InvalidInput, SpecError, ToolFailure
from tilesched.ir.hashing import content_hash
from tilesched.ir.nodes import Program
from tilesched.library import swap
from tilesched.library.headers import with_header
from tilesched.library.manifest import MANIFEST, Manifest, SpecRecord
from tilesched.spec.loader import SourceInfo
from tilesched.targets import generation_problem
from tilesched.tuner.lockfile import LockEntry, LockFile

MAX_GENERATED_BYTES = 64 << 20  # a file larger than this was not written by emit
RENDERERS = {"cuda": "tilesched.backends.cuda.library", "cortex-m": "tilesched.backends.cortexm.library"}


def target_family(target: str) -> str:
    return "cortex-m" if target.startswith("cortex-m") else target


@dataclass(frozen=True)
class LibraryUnit:
    """One spec going into a library, with the lock entries tuned for it."""

    program: Program
    spec_path: str  # relative to the library directory (for headers and the manifest)
    lock_entries: tuple[LockEntry, ...]
    source: SourceInfo | None = None  # where the spec's errors point


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
        d = Path(d)
        files = [d] if d.is_file() else sorted(d.rglob("*"))
        for f in files:
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
                rel = f.name if f == d else f.relative_to(d).as_posix()
                h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def render(spec_paths: list[Path], out_dir: Path, lock_path: Path | None, package: str | None = None) -> Rendered:
    """Everything the library holds, in memory. Raises SpecError on any bad input."""
    from tilesched import load_with_source

    if not spec_paths:
        raise SpecError([Diagnostic("emit needs at least one spec")])
    lock = LockFile.read(lock_path, must_exist=True) if lock_path else LockFile()
    programs = [(p, *load_with_source(p)) for p in spec_paths]
    families = {target_family(prog.target) for _, prog, _ in programs}
    if len(families) != 1:
        raise SpecError([Diagnostic(f"a library holds one target family; got {sorted(families)}: emit them separately")])
    family = families.pop()
    names = [prog.name for _, prog, _ in programs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SpecError([Diagnostic(f"two specs share the name {sorted(dup)[0]!r}")])
    for note in (n for _, prog, _ in programs for n in lock.stale_notes(prog, str(lock_path))):
        print(note, file=sys.stderr)  # entries named after a spec that cannot serve it: say why
    for _, prog, source in programs:  # a spec its target cannot generate is refused, naming the stage
        problem = generation_problem(prog)
        if problem is not None:
            raise problem.located(source)
    module = importlib.import_module(RENDERERS[family])
    package = package or out_dir.resolve().name.replace("-", "_")
    if not package.isidentifier():
        raise SpecError([Diagnostic(f"library name {package!r} is not an identifier; pass --name")])
    units = [
        LibraryUnit(program=prog, spec_path=_relpath(path, out_dir), lock_entries=tuple(lock.entries_for(prog)),
                    source=source)
        for path, prog, source in sorted(programs, key=lambda x: x[1].name)
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


def emit(spec_paths: list[Path], out_dir: Path, lock_path: Path | None, package: str | None = None,
         force: bool = False) -> list[str]:
    """Write the library; returns the paths that changed (written or removed).

    The library is replaced as a whole: the new one is built in a hidden folder beside it and
    swapped in with one atomic exchange, so a kill -9 at any instant leaves the old library or
    the new one (the next emit removes what a killed one left beside it). Nothing is written
    when nothing changed, and only files the previous manifest lists are dropped; other files
    in the folder (a user's notes, __pycache__) are carried over. A non-empty folder that is
    not a tilesched library is refused unless `force`."""
    out_dir = Path(out_dir)
    rendered = render(spec_paths, out_dir, lock_path, package)
    swap.recover(out_dir)
    old = _existing_library(out_dir, force)
    files = {**rendered.files, MANIFEST: rendered.manifest.dumps()}
    changed = _changes(out_dir, old, files)
    if changed:
        previous = set(old.files) | {MANIFEST} if old is not None else set()
        swap.replace_tree(out_dir, files, keep=lambda rel: rel not in previous and rel not in files)
    return changed


def _existing_library(out_dir: Path, force: bool) -> Manifest | None:
    """The manifest of the library at `out_dir` (None: no library there yet); refuses to take
    over a folder that holds something else unless `force`."""
    if out_dir.is_symlink():
        raise InvalidInput(f"{out_dir}: is a symbolic link; name the library folder itself")
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise InvalidInput(f"{out_dir}: exists and is not a folder")
    if (out_dir / MANIFEST).exists() or (out_dir / MANIFEST).is_symlink():
        try:
            return Manifest.read(out_dir)
        except ToolFailure as exc:
            if force:
                return None
            raise InvalidInput(f"{exc}; pass --force to replace the library") from None
    if any(out_dir.iterdir()) and not force:
        raise InvalidInput(f"{out_dir}: not empty and not a tilesched library (no {MANIFEST}); "
                           "emit into a new folder, or pass --force to write into this one")
    return None


def _changes(out_dir: Path, old: Manifest | None, files: dict[str, str]) -> list[str]:
    """Paths whose bytes on disk differ from `files`, plus previously generated paths now gone."""
    changed = [p for p, text in files.items() if not same_bytes(out_dir / p, text.encode())]
    if old is not None:
        changed += sorted(p for p in set(old.files) - set(files) if (out_dir / p).exists())
    return changed


def same_bytes(path: Path, want: bytes) -> bool:
    """`path` is a regular file (not a link) holding exactly `want`."""
    try:
        st = path.lstat()
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size != len(want):
        return False
    return path.read_bytes() == want


def _file_state(path: Path, want: bytes, recorded: str | None) -> str | None:
    """None when `path` holds `want`; "edited by hand" when it is not what was emitted;
    "regenerated" when it is what was emitted but the inputs now render something else."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return "missing"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (edited by hand)"
    if st.st_size == len(want) and path.read_bytes() == want:
        return None
    if st.st_size > MAX_GENERATED_BYTES:
        return "edited by hand"
    return "edited by hand" if hashlib.sha256(path.read_bytes()).hexdigest() != recorded else "regenerated"


def outside_project(out_dir: Path, paths: list[Path]) -> list[Path]:
    """The inputs `check` will refuse to read back: those outside the library's project."""
    root = project_root(out_dir)
    return [p for p in paths if not Path(p).resolve().is_relative_to(root)]


def project_root(out_dir: Path) -> Path:
    """Where the files a manifest refers to may live: the git work tree holding the library,
    else the folder holding the library."""
    lib = out_dir.resolve()
    for d in (lib, *lib.parents):
        if (d / ".git").exists():
            return d
    return lib.parent


def referenced_file(out_dir: Path, rel: str, what: str) -> Path:
    """A spec or lock path from a manifest, resolved; ToolFailure unless it stays in the project."""
    path = (out_dir / rel).resolve()
    root = project_root(out_dir)
    if not path.is_relative_to(root):
        raise ToolFailure(f"{out_dir / MANIFEST}: {what} {rel!r} lies outside {root}")
    return path


def check(out_dir: Path) -> CheckResult:
    """Compare a library on disk with what its specs and lock file render to now."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST
    if not manifest_path.exists() and not manifest_path.is_symlink():
        raise ToolFailure(f"{out_dir}: no {MANIFEST}: not a tilesched library")
    old = Manifest.read(out_dir)
    specs = [referenced_file(out_dir, s.path, "spec") for s in old.specs]
    lock = referenced_file(out_dir, old.lock, "lock file") if old.lock else None
    new = render(specs, out_dir, lock, old.package)
    result = CheckResult()
    reasons = _why(old, new.manifest)
    for path in sorted(set(old.files) | set(new.files)):
        if path not in new.files:
            result.stale.append((path, "no longer generated"))
            continue
        why = _file_state(out_dir / path, new.files[path].encode(), old.files.get(path))
        if why is not None:
            result.stale.append((path, (reasons or "content differs") if why == "regenerated" else why))
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
