"""The Python builder and the YAML loader produce the same spec and IR."""

from tests.conftest import ROOT
from tilesched import SpecBuilder, load_program, lower


def gemm_bias_gelu_builder() -> SpecBuilder:
    b = SpecBuilder("gemm_bias_gelu", target="cuda", description="fp16 GEMM with a fused bias + GELU epilogue")
    b.axis("M", "M", hint=4096).axis("N", "N", hint=4096).axis("K", "K", hint=4096)
    b.tensor("A", ["M", "K"], "fp16")
    b.tensor("B", ["K", "N"], "fp16", layout="col_major")
    b.tensor("bias", ["N"], "fp32")
    b.tensor("a_tile", ["M", "K"], "fp16", scope="tile")
    b.tensor("b_tile", ["K", "N"], "fp16", scope="tile")
    b.tensor("acc", ["M", "N"], "fp32", scope="tile")
    b.tensor("C", ["M", "N"], "fp16")
    b.loop("M", tile="BLOCK_M").loop("N", tile="BLOCK_N").loop("K", tile="BLOCK_K", kind="reduction")
    b.tile_order("grouped", group="GROUP_M")
    b.stage("load_a", "memory", "load", reads=["A"], writes=["a_tile"], at="K")
    b.stage("load_b", "memory", "load", reads=["B"], writes=["b_tile"], at="K")
    b.stage("mma", "compute", "dot", reads=["a_tile", "b_tile", "acc"], writes=["acc"], at="K")
    b.stage("epilogue", "compute", "elementwise", fn=["bias", "gelu"], reads=["acc", "bias"], writes=["acc"], at="N")
    b.stage("store_c", "memory", "store", reads=["acc"], writes=["C"], at="N")
    b.limits(smem_bytes=232448)
    b.option("num_warps", "NUM_WARPS").option("num_stages", "NUM_STAGES")
    b.param("BLOCK_M", choices=[64, 128], default=128)
    b.param("BLOCK_N", choices=[64, 128, 256], default=128)
    b.param("BLOCK_K", choices=[32, 64], default=64)
    b.param("GROUP_M", choices=[1, 8], default=8)
    b.param("NUM_WARPS", choices=[4, 8], default=8)
    b.param("NUM_STAGES", range=(2, 4), default=3)
    b.constraint("NUM_STAGES * (BLOCK_M + BLOCK_N) * BLOCK_K * 2 <= smem_bytes")
    return b


def test_builder_and_yaml_give_equal_ir():
    from_yaml = load_program(ROOT / "configs" / "gemm_bias_gelu.yaml")
    from_python = lower(gemm_bias_gelu_builder().build())
    assert from_python == from_yaml
    assert hash(from_python) == hash(from_yaml)


def test_a_difference_shows():
    b = gemm_bias_gelu_builder()
    b.param("GROUP_M", choices=[1, 4, 8], default=8)
    assert lower(b.build()) != load_program(ROOT / "configs" / "gemm_bias_gelu.yaml")


def test_builder_errors_carry_field_paths():
    import pytest

    from tilesched import SpecError

    b = gemm_bias_gelu_builder().stage("bad", "memory", "load", reads=["nope"], writes=["C"])
    with pytest.raises(SpecError, match=r"<spec>: stages\[5\].reads: unknown tensor 'nope'"):
        lower(b.build())


def test_to_yaml_round_trips_to_an_equal_program(tmp_path):
    from tilesched import SpecBuilder, load_program, lower

    b = SpecBuilder("gemm", target="cuda").axis("M", "M", hint=256).axis("N", 128).axis("K", 64)
    b.tensor("A", ["M", "K"], "fp16").tensor("B", ["K", "N"], "fp16").tensor("C", ["M", "N"], "fp16")
    b.tensor("acc", ["M", "N"], "fp32", scope="tile")
    b.loop("M", tile="BLOCK_M").loop("N", tile=64).loop("K", tile=32, kind="reduction")
    b.stage("mma", "compute", "dot", reads=["A", "B", "acc"], writes=["acc"], at="K")
    b.stage("act", "compute", "elementwise", fn=["gelu", {"scale": "1 / K"}], reads=["acc"], writes=["acc"], at="N")
    b.stage("store", "memory", "store", reads=["acc"], writes=["C"], at="N")
    b.param("BLOCK_M", choices=[64, 128])
    path = tmp_path / "gemm.yaml"
    path.write_text(b.to_yaml())
    assert load_program(path) == lower(b.build())
