"""Replace a folder as a whole: build the new tree beside it, then swap it in atomically.

On Linux the swap is one `renameat2(RENAME_EXCHANGE)`: at every instant the folder's path
holds either the complete old tree or the complete new one. Elsewhere (or on a file system
without exchange) the old tree is first renamed aside and then the new one into place; a kill
between the two renames leaves the old tree aside, and `recover` puts it back. Hidden work
folders are named `.<folder>.tilesched-<new|old>-<pid>` and `recover` removes those whose
process is gone, so a killed run leaves nothing behind once the next one has started.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from tilesched.fsutil import current_umask

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_TEMP_FILE = re.compile(r"^\..+\.tmp$")  # what an interrupted write_atomic leaves


def work_dir_name(target: Path, kind: str, pid: int | None = None) -> str:
    return f".{target.name}.tilesched-{kind}-{pid if pid is not None else os.getpid()}"


def _work_dirs(target: Path):
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.tilesched-(new|old)-(\d+)$")
    parent = target.parent
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        m = pattern.match(entry.name)
        if m:
            yield entry, m.group(1), int(m.group(2))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_tree(path: Path) -> None:
    """rmtree that also removes read-only folders (a library checked out read-only)."""

    def make_writable(func, p, _exc):
        parent = os.path.dirname(p)
        for q in (parent, p):
            try:
                os.chmod(q, stat.S_IMODE(os.lstat(q).st_mode) | stat.S_IWUSR | stat.S_IXUSR | stat.S_IRUSR)
            except OSError:
                pass
        func(p)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=make_writable)
    else:  # pragma: no cover - Python 3.11
        shutil.rmtree(path, onerror=make_writable)


def recover(target: Path) -> None:
    """Undo what a killed replacement left beside `target`: put an old tree back when the
    target is missing, remove every other work folder whose process is gone."""
    for entry, kind, pid in sorted(_work_dirs(target), key=lambda x: x[1] == "new"):
        if _alive(pid):
            continue
        if kind == "old" and not target.exists() and not target.is_symlink():
            os.rename(entry, target)
        else:
            remove_tree(entry)


def exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _write_tree(root: Path, files: Mapping[str, str]) -> None:
    mode = 0o666 & ~current_umask()
    for rel, text in sorted(files.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))


def _carry_over(old: Path, new: Path, keep: Callable[[str], bool]) -> None:
    """Hard-link (else copy) into `new` the files of `old` that `keep` accepts and that the new
    tree does not already hold; stray temp files of an interrupted write are dropped."""
    for dirpath, dirnames, filenames in os.walk(old):
        rel_dir = Path(dirpath).relative_to(old)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rel = (rel_dir / name).as_posix()
            if _TEMP_FILE.match(name) or not keep(rel):
                continue
            src, dst = Path(dirpath) / name, new / rel
            if dst.exists() or dst.is_symlink() or any(p.is_file() for p in dst.parents if p != new and
                                                        p.is_relative_to(new)):
                continue  # a generated path takes that name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
                continue
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)


def replace_tree(target: Path, files: Mapping[str, str], keep: Callable[[str], bool] = lambda rel: False) -> None:
    """Make `target` a folder holding exactly `files` (plus the old files `keep` accepts)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / work_dir_name(target, "new")
    if staging.exists():
        remove_tree(staging)
    staging.mkdir(mode=0o777 & ~current_umask())
    try:
        _write_tree(staging, files)
        if target.is_dir():
            _carry_over(target, staging, keep)
            if exchange(staging, target):
                remove_tree(staging)  # it holds the old tree now
                return
            aside = target.parent / work_dir_name(target, "old")
            os.rename(target, aside)
            os.rename(staging, target)
            remove_tree(aside)
        else:
            os.rename(staging, target)
    except BaseException:
        if staging.exists():
            remove_tree(staging)
        raise
