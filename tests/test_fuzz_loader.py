"""Fuzz the loader: any input yields a spec or a SpecError with a location, never a traceback,
and quickly, whatever aliases and nesting it holds."""

import time

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import CONFIGS
from tilesched import SpecError, load_spec_text, lower

VALID = [p.read_text() for p in CONFIGS]


def _load(text: str) -> None:
    try:
        spec, source = load_spec_text(text, "fuzz.yaml")
        lower(spec, source)
    except SpecError as exc:
        assert exc.diagnostics
        for d in exc.diagnostics:
            assert d.file == "fuzz.yaml"
            assert str(d).startswith("fuzz.yaml")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_arbitrary_text(text):
    _load(text)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_mutated_valid_specs(text, data):
    """Byte-level edits of real specs: deletions, insertions and swaps of characters."""
    chars = list(text)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, max(len(chars) - 1, 0)))
        op = data.draw(st.sampled_from(["del", "ins", "swap"]))
        if op == "del" and chars:
            del chars[i]
        elif op == "ins":
            chars.insert(i, data.draw(st.sampled_from(list(":-[]{},#&*!|>'\"\n 0aZ_9."))))
        elif chars:
            chars[i] = data.draw(st.characters())
    _load("".join(chars))


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_structural_replacements(text, data):
    """Replace one field of a real spec by an arbitrary YAML value."""
    doc = yaml.safe_load(text)
    node = doc
    path = []
    while isinstance(node, (dict, list)) and node and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
        path.append(key)
        node = node[key]
    if not path:
        return
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = data.draw(yaml_values)
    _load(yaml.safe_dump(doc, sort_keys=False))


def _load_quickly(text: str, seconds: float = 2.0) -> None:
    start = time.perf_counter()
    _load(text)
    assert time.perf_counter() - start < seconds


@st.composite
def alias_bombs(draw) -> str:
    """Anchored levels, each `width` aliases of the level below, in flow or block style, alone or
    inside a real spec."""
    levels, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    block = draw(st.booleans())
    lines = ['l0: &l0 "lol"']
    for i in range(1, levels + 1):
        if block:
            lines.append(f"l{i}: &l{i}\n" + "".join(f"  - *l{i - 1}\n" for _ in range(width)).rstrip("\n"))
        else:
            lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    lines.append(f"top: *l{levels}")
    bomb = "\n".join(lines) + "\n"
    return bomb + draw(st.sampled_from(VALID)) if draw(st.booleans()) else bomb


@st.composite
def deep_nesting(draw) -> str:
    depth = draw(st.one_of(st.integers(1, 100), st.integers(100, 100_000)))
    kind = draw(st.sampled_from(["flow_seq", "flow_map", "block_seq", "block_map", "unclosed"]))
    if kind == "flow_seq":
        body = "[" * depth + "1" + "]" * depth
    elif kind == "flow_map":
        body = "{a: " * depth + "1" + "}" * depth
    elif kind == "block_seq":
        body = "- " * depth + "1"
    elif kind == "block_map":
        depth = min(depth, 2000)  # deeper block mappings pass the file size bound instead
        body = "".join(" " * i + "a:\n" for i in range(depth)) + " " * depth + "1"
    else:
        body = "[" * depth
    anchor = draw(st.booleans())  # an alias of a deep subtree nests it again where it is used
    return f"x: &deep {body}\ny: [[[*deep]]]\n" if anchor else f"x: {body}\n"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alias_bombs())
def test_alias_bombs_are_refused_quickly(text):
    _load_quickly(text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deep_nesting())
def test_deep_nesting_is_refused_quickly(text):
    _load_quickly(text)
