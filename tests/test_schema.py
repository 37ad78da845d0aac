from tests.conftest import ROOT
from tilesched.cli import main, schema_text

SCHEMA = ROOT / "schema" / "spec.schema.json"


def test_committed_schema_is_in_sync():
    assert SCHEMA.read_text() == schema_text(), "run: tilesched schema -o schema/spec.schema.json"


def test_schema_command_writes_file(tmp_path):
    out = tmp_path / "s.json"
    assert main(["schema", "-o", str(out)]) == 0
    assert out.read_text() == schema_text()
