"""Load a spec from YAML, keeping the line and column of every node.

PyYAML's composer gives nodes with marks; we build plain Python data from them and
record a source map from field path to (line, column), so that form errors from
pydantic and semantic errors from the IR checks can both point at the text.
"""

from __future__ import annotations

import os
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
        return Diagnostic(message, format_path(path if path is not None else loc), self.file, line, col, tuple(loc))


# Specs come from other people's repositories: bound what reading one may cost, before composing.
MAX_SPEC_BYTES = 1 << 20  # 1 MiB; real specs are a few KiB
MAX_DEPTH = 64  # nesting of YAML collections, aliases expanded
MAX_NODES = 100_000  # YAML nodes, aliases expanded (an alias counts every node it stands for)
MAX_SCALAR_CHARS = 64 * 1024
MAX_INT_DIGITS = 19
INT_BOUND = 1 << 63  # the bound of every integer in an expression (tilesched.ir.expr)
_INT_TAG = "tag:yaml.org,2002:int"
_INT_TOO_LARGE = "integer too large (integers must stay below 2**63)"




class _Open:
    """A YAML collection whose end event has not come yet."""

    def __init__(self, anchor: str | None, nodes_before: int, depth: int):
        self.anchor = anchor
        self.nodes_before = nodes_before
        self.depth = depth
        self.deepest = depth  # deepest level inside it so far, aliases expanded


def _bounded_events(text: str, file: str | None) -> list[yaml.Event]:
    """The YAML events of `text`, refused with one diagnostic at the offending node when they
    nest deeper than MAX_DEPTH, expand to more than MAX_NODES nodes, or hold a scalar longer
    than MAX_SCALAR_CHARS. Iterative, so no nesting can exhaust the stack; an alias counts
    the nodes and levels of its anchored subtree, so alias bombs stop at their first alias
    past the bound, long before anything is expanded."""
    events: list[yaml.Event] = []
    open_: list[_Open] = []
    anchored: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, height) of its subtree
    nodes = 0

    def refuse(event: yaml.Event, message: str):
        mark = event.start_mark
        raise SpecError([Diagnostic(message, "", file, mark.line + 1, mark.column + 1)])

    def add(event: yaml.Event, count: int, height: int) -> None:
        """Count a node at the current level that stands for `count` nodes `height` levels deep."""
        nonlocal nodes
        deepest = len(open_) + height
        nodes += count
        alias = f"alias *{event.anchor} expands the spec" if isinstance(event, yaml.AliasEvent) else None
        if deepest > MAX_DEPTH:
            refuse(event, f"{alias or 'the spec nests'} deeper than {MAX_DEPTH} levels")
        if nodes > MAX_NODES:
            refuse(event, f"{alias + ' to' if alias else 'the spec has'} more than {MAX_NODES} YAML nodes")
        if open_:
            open_[-1].deepest = max(open_[-1].deepest, deepest)

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        events.append(event)
        if isinstance(event, yaml.AliasEvent):
            # an alias of an anchor still open is recursive, one never seen undefined: the composer reports both
            add(event, *anchored.get(event.anchor, (1, 1)))
        elif isinstance(event, yaml.ScalarEvent):
            if len(event.value) > MAX_SCALAR_CHARS:
                refuse(event, f"a scalar of {len(event.value)} characters; at most {MAX_SCALAR_CHARS}")
            add(event, 1, 1)
            if event.anchor is not None:
                anchored[event.anchor] = (1, 1)
        elif isinstance(event, yaml.CollectionStartEvent):
            before = nodes
            add(event, 1, 1)
            open_.append(_Open(event.anchor, before, len(open_) + 1))
        elif isinstance(event, yaml.CollectionEndEvent):
            done = open_.pop()
            if done.anchor is not None:
                anchored[done.anchor] = (nodes - done.nodes_before, done.deepest - done.depth + 1)
            if open_:
                open_[-1].deepest = max(open_[-1].deepest, done.deepest)
    return events


class _EventComposer(yaml.composer.Composer, yaml.resolver.Resolver):
    """PyYAML's composer fed from events already parsed (and bounded), so the text is parsed once."""

    def __init__(self, events: list[yaml.Event]):
        yaml.composer.Composer.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._events = events
        self._next = 0

    def check_event(self, *choices) -> bool:
        if self._next >= len(self._events):
            return False
        return not choices or isinstance(self._events[self._next], choices)

    def peek_event(self) -> yaml.Event:
        return self._events[self._next]

    def get_event(self) -> yaml.Event:
        self._next += 1
        return self._events[self._next - 1]


def _compose(text: str, file: str | None) -> yaml.Node | None:
    try:
        return _EventComposer(_bounded_events(text, file)).get_single_node()
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
        # counted before int(): converting thousands of digits is slow (hex, octal and 1:30:00 need no more)
        if node.tag == _INT_TAG and sum(c.isalnum() for c in node.value) > MAX_INT_DIGITS + 2:
            fail(_INT_TOO_LARGE)
        try:
            value = yaml.constructor.SafeConstructor().construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            fail(f"cannot read scalar: {exc}".splitlines()[0])
        if isinstance(value, int) and abs(value) >= INT_BOUND:
            fail(_INT_TOO_LARGE)
        return value
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
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_SPEC_BYTES:
        raise SpecError([_too_big(size, file)])
    source = SourceInfo(file)
    try:
        node = _compose(text, file)
        if node is None:
            raise SpecError([Diagnostic("empty spec", "", file, 1, 1)])
        data = _to_data(node, (), source.positions, file, set())
    except RecursionError:  # not reached within MAX_DEPTH; kept so that no traceback can escape
        raise SpecError([Diagnostic("spec nests too deeply", "", file, 1, 1)]) from None
    return parse_data(data, source), source


def _too_big(size: int | None, file: str | None) -> Diagnostic:
    found = f"{size} bytes" if size is not None else f"more than {MAX_SPEC_BYTES} bytes"
    return Diagnostic(f"the spec is {found}; at most {MAX_SPEC_BYTES} (1 MiB)", "", file, 1, 1)


def load_spec(path: str | Path) -> tuple[Spec, SourceInfo]:
    path = Path(path)
    if path.suffix == ".py":  # specs come from other people's repositories: tilesched never runs them
        raise SpecError([Diagnostic(
            "a Python spec is not run by tilesched; write it out as YAML once: python -c \"from "
            f"{path.stem} import b; print(b.to_yaml(), end='')\" > {path.with_suffix('.yaml').name} "
            "(b: your SpecBuilder)", "", str(path))])
    try:
        with path.open(encoding="utf-8") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_SPEC_BYTES:  # refused before reading it
                raise SpecError([_too_big(size, str(path))])
            text = f.read(MAX_SPEC_BYTES + 1)  # bounded: a pipe or a device has no size
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([Diagnostic(f"cannot read spec: {exc}", "", str(path))]) from None
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError([_too_big(None, str(path))])
    return load_spec_text(text, str(path))
