"""Every spec README.md shows runs as README says.

A YAML block whose first line is `# tilesched run FILE ...` is written to FILE and run with that
command: generated for its target and checked against the semantics oracle (the Triton
interpreter here). Every block that is a whole spec (it has `name:` and `target:`) must carry
such a line, so a spec added to README without one fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tilesched.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
TEN_LINES = re.search(r"## A spec in ten lines\n\n```yaml\n(.*?)```", README.read_text(), re.S).group(1)


def _whole_specs() -> list[str]:
    return [b for b in BLOCKS if re.search(r"^name:", b, re.M) and re.search(r"^target:", b, re.M)]


def _run_line(block: str) -> list[str] | None:
    first = block.splitlines()[0]
    m = re.match(r"# tilesched run (.*)$", first)
    return shlex.split(m.group(1)) if m else None


def test_every_whole_spec_in_readme_says_how_it_runs():
    specs = _whole_specs()
    assert len(specs) >= 2
    missing = [b.splitlines()[0] for b in specs if b != TEN_LINES and _run_line(b) is None]
    assert not missing, f"README specs without a '# tilesched run' line: {missing}"


@pytest.mark.parametrize("block", [b for b in _whole_specs() if _run_line(b)],
                         ids=lambda b: re.search(r"^name: *(\S+)", b, re.M).group(1))
def test_readme_spec_validates_and_runs_against_the_oracle(block, tmp_path, monkeypatch, capsys):
    args = _run_line(block)
    spec = tmp_path / args[0]
    spec.write_text(block)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", args[0]]) == 0
    assert main(["plan", args[0], "--dump-ir"]) == 0
    capsys.readouterr()
    assert main(["run", *args]) == 0
    assert "-> OK" in capsys.readouterr().out
