import pytest
from pydantic import ValidationError

from tilesched import SpecError, load_spec_text
from tilesched.spec.models import Axis, Param, Placement, Spec, TileOrder


def test_axis_shorthands():
    assert Axis.model_validate(4096) == Axis(size=4096)
    assert Axis.model_validate("M") == Axis(size="M")
    assert Axis.model_validate({"size": "M", "hint": 8}).hint == 8


def test_placement_shorthands():
    assert Placement.model_validate("sharded(M)") == Placement(kind="sharded", axis="M")
    assert Placement.model_validate("replicated").kind == "replicated"
    with pytest.raises(ValueError, match="names exactly one axis"):
        Placement(kind="sharded")
    with pytest.raises(ValueError, match="names exactly one axis"):
        Placement(kind="replicated", axis="M")


def test_tile_order_shorthand():
    assert TileOrder.model_validate("grouped").kind == "grouped"


def test_param_domain_is_exclusive():
    with pytest.raises(ValueError, match="exactly one of"):
        Param(choices=[1], range=(1, 2))
    with pytest.raises(ValueError, match="exactly one of"):
        Param()
    with pytest.raises(ValueError, match="empty"):
        Param(range=(4, 2))


def test_models_are_frozen():
    ax = Axis(size=3)
    with pytest.raises(ValidationError):
        ax.size = 4


def test_unknown_field_is_rejected_with_its_path():
    text = "name: x\ntarget: cuda\naxes: {M: 4}\ntensors: {}\nstages: []\nbogus: 1\n"
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "s.yaml")
    assert str(info.value) == "s.yaml:6:1: bogus: Extra inputs are not permitted"


def test_spec_round_trips_through_json():
    text = "name: x\ntarget: cortex-m4\naxes: {M: 4}\ntensors: {a: {shape: [M], dtype: int8}}\nstages: []\n"
    spec, _ = load_spec_text(text)
    assert Spec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize("text, message", [
    ("", "empty spec"),
    ("- 1\n- 2\n", "a spec is a YAML mapping"),
    ("a: &x [*x]\n", "recursive YAML alias"),
    ("name: !!python/object:os.system x\n", "cannot read scalar"),
    ("<<: {a: 1}\n", "merge keys"),
])
def test_loader_rejects_odd_yaml(text, message):
    with pytest.raises(SpecError, match=message):
        load_spec_text(text, "odd.yaml")
