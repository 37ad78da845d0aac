"""Load a spec from YAML, keeping the line and column of every node.

PyYAML's composer gives nodes with marks; we build plain Python data from them and
record a source map from field path to (line, column), so that form errors from
pydantic and semantic errors from the IR checks can both point at the text.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from tilesched.errors import Diagnostic, SpecError, format_path
from tilesched.spec.models import Spec

SourceMap = dict[tuple, tuple[int, int]]


class SourceInfo:
    """Where a spec came from; resolves a field path to the nearest known position."""

    def __init__(self, file: str | None, positions: SourceMap | None = None):
        self.file = file
        self.positions = positions or {}

    def locate(self, loc: tuple) -> tuple[int | None, int | None]:
        loc = tuple(loc)
        while loc:
            if loc in self.positions:
                return self.positions[loc]
            loc = loc[:-1]
        return self.positions.get((), (None, None))

    def diagnostic(self, loc: tuple, message: str, path: tuple | None = None) -> Diagnostic:
        """A diagnostic at `loc`; `path` (default: `loc`) is the field path printed."""
        line, col = self.locate(loc)
        return Diagnostic(message, format_path(path if path is not None else loc), self.file, line, col)


def _compose(text: str, file: str | None) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise SpecError([Diagnostic(f"YAML syntax error: {msg}", "", file, line, col)]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Diagnostic(f"YAML error: {exc}", "", file)]) from None


def _to_data(node: yaml.Node, path: tuple, positions: SourceMap, file: str | None, active: set[int]):
    """Plain data from a composed node; records each node's position under its path."""
    positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)

    def fail(message: str):
        line, col = positions[path]
        raise SpecError([Diagnostic(message, format_path(path), file, line, col)])

    if id(node) in active:
        fail("recursive YAML alias")
    if isinstance(node, yaml.ScalarNode):
        try:
            return yaml.SafeLoader("").construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            fail(f"cannot read scalar: {exc}".splitlines()[0])
    active.add(id(node))
    try:
        if isinstance(node, yaml.SequenceNode):
            return [_to_data(v, path + (i,), positions, file, active) for i, v in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            out = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    fail("YAML merge keys (<<) are not supported in specs")
                if not isinstance(key_node, yaml.ScalarNode):
                    fail("mapping keys must be plain names")
                key = str(_to_data(key_node, path + ("<key>",), positions, file, active))
                if key in out:
                    line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                    raise SpecError([Diagnostic(f"duplicate key {key!r}", format_path(path + (key,)), file, line, col)])
                out[key] = _to_data(value_node, path + (key,), positions, file, active)
                # point a field at its key, which is where a reader looks for it
                positions[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            return out
    finally:
        active.discard(id(node))
    fail(f"unsupported YAML node {type(node).__name__}")  # pragma: no cover


def _pydantic_diagnostics(exc: ValidationError, source: SourceInfo, data) -> list[Diagnostic]:
    out = []
    for err in exc.errors(include_url=False):
        loc = _field_path(err["loc"], data)
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        out.append(source.diagnostic(loc, msg))
    return out


def _field_path(loc: tuple, data) -> tuple:
    """The field path of a pydantic error location. Pydantic adds union-member and validator
    names, and `[key]` for a bad mapping key; a part that is a key of the data (a tensor named
    `int_acc`) is always kept."""
    out = []
    node = data
    for part in loc:
        is_key = isinstance(node, dict) and part in node
        if part == "[key]" or not (is_key or isinstance(part, int) or not _is_internal(part)):
            continue
        out.append(part)
        if is_key:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


def _is_internal(part: str) -> bool:
    return part.startswith(("function-", "int", "str", "bool", "float", "list[", "dict[", "tuple[", "literal[")) or part in (
        "Placement", "Axis", "TileOrder", "Constraint", "none", "union_tag",
    )


def parse_data(data, source: SourceInfo) -> Spec:
    if not isinstance(data, dict):
        raise SpecError([source.diagnostic((), "a spec is a YAML mapping with name, target, axes, tensors, stages")])
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_pydantic_diagnostics(exc, source, data)) from None
    except RecursionError:
        raise SpecError([source.diagnostic((), "spec nests too deeply")]) from None
    return spec


def load_spec_text(text: str, file: str | None = None) -> tuple[Spec, SourceInfo]:
    """Parse YAML text into a `Spec`, or raise `SpecError` with file:line:col diagnostics."""
    node = _compose(text, file)
    source = SourceInfo(file)
    if node is None:
        raise SpecError([Diagnostic("empty spec", "", file, 1, 1)])
    try:
        data = _to_data(node, (), source.positions, file, set())
    except RecursionError:
        raise SpecError([Diagnostic("spec nests too deeply", "", file, 1, 1)]) from None
    return parse_data(data, source), source


def load_spec(path: str | Path) -> tuple[Spec, SourceInfo]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([Diagnostic(f"cannot read spec: {exc}", "", str(path))]) from None
    return load_spec_text(text, str(path))
