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


SMALL = "name: {name}\ntarget: cortex-m4\naxes: {{M: 4}}\ntensors: {{{tensor}: {{shape: [M], dtype: int8}}}}\n" \
        "stages: [{{name: {stage}, kind: memory, op: load, reads: [{tensor}]}}]\n"


@pytest.mark.parametrize("fields, expected", [
    ({"name": "class"}, "s.yaml:1:1: name: 'class' is a Python keyword; generated code could not use it as a name"),
    ({"tensor": "int"}, "s.yaml:4:11: tensors.int: 'int' is a C keyword; generated code could not use it as a name"),
    ({"stage": "_Foo"}, "s.yaml:5:11: stages[0].name: '_Foo' is reserved in C (it starts with _ and an uppercase "
                        "letter); generated code could not use it as a name"),
    ({"stage": "while"}, "s.yaml:5:11: stages[0].name: 'while' is a Python and C keyword"),
    ({"name": "__init"}, "s.yaml:1:1: name: '__init' is reserved in C (it starts with __)"),
])
def test_reserved_names_are_refused_where_they_are_written(fields, expected):
    text = SMALL.format(**({"name": "ok", "tensor": "x", "stage": "s"} | fields))
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "s.yaml")
    assert str(info.value.diagnostics[0]).startswith(expected)


@pytest.mark.parametrize("name", ["match", "type", "_", "_x", "x__y", "int8", "Int", "classes", "intermediate"])
def test_soft_keywords_and_near_misses_are_names(name):
    load_spec_text(SMALL.format(name=name, tensor=name, stage=name), "s.yaml")


def test_a_form_error_under_a_name_like_a_pydantic_tag_keeps_its_path():
    # pydantic names union members `int`, `str`, ...; a tensor called `int_acc` is still a real path part
    text = SMALL.format(name="ok", tensor="int_acc", stage="s").replace("int8", "int9")
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "s.yaml")
    assert str(info.value.diagnostics[0]).startswith("s.yaml:4:33: tensors.int_acc.dtype: Input should be")
