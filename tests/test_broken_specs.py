"""Every class of spec error gives its documented message at file:line:col.

Each file under specs/broken/ starts with `# expect: LINE:COL: PATH: MESSAGE` and is
otherwise a spec with exactly that mistake.
"""

from pathlib import Path

import pytest

from tilesched import SpecError, load_program

BROKEN = sorted((Path(__file__).parent / "specs" / "broken").glob("*.yaml"))


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_broken_spec_reports_location(path):
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(SpecError) as info:
        load_program(path)
    first = str(info.value.diagnostics[0])
    assert first.startswith(f"{path}:"), first
    assert first[len(f"{path}:"):].startswith(expected), first


def test_every_error_class_has_a_broken_spec():
    names = {p.stem for p in BROKEN}
    assert {
        "unknown_tensor", "unknown_axis", "unknown_param", "unknown_stage", "shape_mismatch", "dtype_mismatch",
        "dependency_cycle", "tile_not_pow2", "tile_too_large", "comm_without_placement", "unsatisfiable",
        "yaml_syntax", "bad_dtype", "duplicate_key", "missing_field", "keyword_name", "alias_bomb", "deep_nesting",
        "constraint_error", "option_not_a_param",
    } <= names


def test_all_problems_are_reported_together(tmp_path):
    text = (Path(__file__).parent / "specs" / "broken" / "unknown_tensor.yaml").read_text()
    text = text.replace("{axis: N, tile: 64}", "{axis: N, tile: 48}")
    p = tmp_path / "two.yaml"
    p.write_text(text)
    with pytest.raises(SpecError) as info:
        load_program(p)
    messages = [d.message for d in info.value.diagnostics]
    assert any("unknown tensor 'Q'" in m for m in messages)
    assert any("not a power of two" in m for m in messages)
