"""Diagnostics that point at the spec text: file, line, column and field path."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a spec. `path` is the field path, e.g. ``stages[2].reads``."""

    message: str
    path: str = ""
    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based

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


def format_path(loc: tuple) -> str:
    """('stages', 2, 'reads') -> 'stages[2].reads'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


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
