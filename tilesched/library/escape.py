"""Escapers for text from specs, lock files and paths that generated source carries.

Such text comes from other people's repositories, so it never reaches generated source raw:
- `comment_text(s)`: one line that is inert in every comment and docstring we emit (Python `#`
  and triple-quoted strings, C `//` and `/* */`, Make `#`, linker-script `/* */`). Only a
  whitelist of printable ASCII stays as it is; everything else — newlines, backslashes, quotes,
  `*` (which could close a block comment), `?` (C trigraphs), non-ASCII — becomes a `\\xNN`,
  `\\uNNNN` or `\\UNNNNNNNN` escape. The result never ends in a backslash, so a C line comment
  cannot splice the next line, and inside a Python string its escapes decode back to the text.
- `py_literal(value)`: a Python literal (`repr` of str/int/float/bool/None and of lists, tuples
  and dicts of them), which `ast.literal_eval` reads back to the same value.
"""

from __future__ import annotations

import math
import pprint
import string

_SAFE = frozenset(string.ascii_letters + string.digits + " _-.,:;/+=@()[]{}<>!%&|~^$")
MAX_COMMENT = 300  # longer text is cut (with a marker): a header is no place for an essay


def _escape_char(ch: str) -> str:
    if ch in _SAFE:
        return ch
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def comment_text(text: str, limit: int = MAX_COMMENT) -> str:
    """`text` as one inert line for comments and docstrings (see the module docstring)."""
    text = str(text)
    cut = len(text) > limit
    out = "".join(_escape_char(ch) for ch in text[:limit])
    return out + (" [...]" if cut else "")


_LITERALS = (str, int, float, bool, type(None))


def _check_literal(value, depth: int = 0) -> None:
    if depth > 64:
        raise ValueError("value nests too deeply for a Python literal")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} has no Python literal")
    if isinstance(value, _LITERALS):
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_literal(v, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_literal(k, depth + 1)
            _check_literal(v, depth + 1)
        return
    raise ValueError(f"{type(value).__name__} has no Python literal")


def py_literal(value, width: int = 100) -> str:
    """A Python literal of plain data (dict keys sorted, so output is stable)."""
    _check_literal(value)
    return pprint.pformat(value, width=width, sort_dicts=True)
