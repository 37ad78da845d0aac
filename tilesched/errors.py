"""Diagnostics that point at the spec text: file, line, column and field path."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a spec. `path` is the field path, e.g. ``stages[2].reads``."""

    message: str
    path: str = ""
    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based
    loc: tuple = field(default=(), compare=False)  # the field path as a tuple, to place it in a file later

    def __str__(self) -> str:
        where = self.file or "<spec>"
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        head = f"{where}: {self.path}: " if self.path else f"{where}: "
        return head + self.message


@dataclass
class SpecError(Exception):
    """Raised for any invalid spec; carries every diagnostic found."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(d) for d in self.diagnostics)

    def located(self, source) -> SpecError:
        """The same errors, those raised without a file (by passes and backends, which see only
        the IR) placed at their field in `source` (a spec.loader.SourceInfo)."""
        if source is None:
            return self
        placed = [source.diagnostic(d.loc, d.message) if d.file is None and d.line is None else d
                  for d in self.diagnostics]
        return SpecError(placed)


def spec_error(loc: tuple, message: str) -> SpecError:
    """An error about the spec field at `loc` (e.g. ("stages", 2)), raised where only the IR is
    at hand; the command line places it in the file with `SpecError.located`."""
    return SpecError([Diagnostic(message, format_path(loc), loc=tuple(loc))])


def format_path(loc: tuple) -> str:
    """('stages', 2, 'reads') -> 'stages[2].reads'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@contextmanager
def located(source):
    """Place the spec errors raised inside (by passes and backends, which see only the IR) at
    their file:line:col in `source`."""
    try:
        yield
    except SpecError as exc:
        raise exc.located(source) from None


class UserError(Exception):
    """A failure the command line reports as one line (no traceback) with `exit_code`.

    Raise `InvalidInput` for bad input that is not a spec (a lock file, a manifest, a storage
    URL, a command-line value): exit 1. Raise `ToolFailure` when the environment fails (a file
    system, a toolchain, a database that is down): exit 2. The message names what and where."""

    exit_code = 2


class InvalidInput(UserError):
    exit_code = 1


class ToolFailure(UserError):
    exit_code = 2
