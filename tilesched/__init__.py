"""tilesched: a declarative tile-schedule language with an autotuner."""

__version__ = "0.1.0"

from tilesched.errors import Diagnostic, SpecError  # noqa: E402
from tilesched.ir import Program, lower  # noqa: E402
from tilesched.ir.bind import Binding, bind  # noqa: E402
from tilesched.spec import Spec, SpecBuilder, load_spec, load_spec_text  # noqa: E402


def load_program(path) -> Program:
    """Load a YAML spec file and lower it to the IR (raises SpecError with file:line:col)."""
    return load_with_source(path)[0]


def load_with_source(path):
    """(Program, SourceInfo) for a YAML spec file; the source lets later errors point at the text."""
    spec, source = load_spec(path)
    return lower(spec, source), source


__all__ = [
    "Binding", "Diagnostic", "Program", "Spec", "SpecBuilder", "SpecError", "bind", "load_program", "load_spec",
    "load_spec_text", "load_with_source", "lower", "__version__",
]
