"""Dependencies derived from reads and writes."""

import pytest

from tilesched import SpecBuilder, SpecError, lower


def _program(stages, tensors=("x", "y", "z", "w")):
    b = SpecBuilder("deps", target="cortex-m4").axis("N", 16)
    for t in tensors:
        b.tensor(t, ["N"], "fp32")
    for name, reads, writes, *after in stages:
        b.stage(name, "compute", "elementwise", reads=reads, writes=writes, fn=["relu"],
                **({"after": after[0]} if after else {}))
    return lower(b.build())


def edges(prog):
    return {(d.src, d.dst, d.tensor, d.kind) for d in prog.deps}


def test_read_after_write_and_order():
    prog = _program([("a", ["x"], ["y"]), ("b", ["y"], ["z"])])
    assert edges(prog) == {("a", "b", "y", "raw")}
    assert prog.order == ("a", "b")
    assert prog.tensor("x").role == "input"
    assert prog.tensor("y").role == "workspace"
    assert prog.tensor("z").role == "output"


def test_write_after_read_and_write_after_write():
    prog = _program([("a", ["x"], ["y"]), ("b", ["y"], ["z"]), ("c", ["w"], ["y"])])
    assert ("b", "c", "y", "war") in edges(prog)
    assert ("a", "c", "y", "waw") in edges(prog)


def test_forward_reference_is_reordered():
    prog = _program([("consume", ["y"], ["z"]), ("produce", ["x"], ["y"])])
    assert edges(prog) == {("produce", "consume", "y", "raw")}
    assert prog.order == ("produce", "consume")


def test_explicit_after():
    prog = _program([("a", ["x"], ["y"]), ("b", ["w"], ["z"], ["a"])])
    assert ("a", "b", None, "order") in edges(prog)


def test_cycle_is_reported():
    with pytest.raises(SpecError, match="dependency cycle: b -> a -> b"):
        _program([("a", ["z"], ["y"]), ("b", ["y"], ["z"])])


def test_cycle_through_after():
    with pytest.raises(SpecError, match="dependency cycle"):
        _program([("a", ["x"], ["y"], ["b"]), ("b", ["y"], ["z"])])


def test_gemm_dependencies(tmp_path):
    from tests.conftest import ROOT
    from tilesched import load_program

    prog = load_program(ROOT / "configs" / "gemm_bias_gelu.yaml")
    deps = {(d.src, d.dst) for d in prog.deps if d.kind == "raw"}
    assert deps == {("load_a", "mma"), ("load_b", "mma"), ("mma", "epilogue"), ("epilogue", "store_c")}
    assert prog.order == ("load_a", "load_b", "mma", "epilogue", "store_c")
