"""Kernel libraries: deterministic emission, manifest, do-not-edit headers, and `check`."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tilesched.cli import main
from tilesched.library.manifest import Manifest

EXAMPLE = ROOT / "examples" / "downstream"
CUDA_SPECS = [ROOT / "configs" / "gemm_bias_gelu.yaml", ROOT / "configs" / "gemm_silu_residual.yaml"]


def _snapshot(d: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(d).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*"))
            if p.is_file()}


def test_emission_is_byte_identical_and_untouched_when_nothing_changed(tmp_path):
    a, b = tmp_path / "lib_a", tmp_path / "lib_b"
    assert main(["emit", *map(str, CUDA_SPECS), "--out", str(a), "--name", "kernels"]) == 0
    assert main(["emit", *map(str, CUDA_SPECS), "--out", str(b), "--name", "kernels"]) == 0
    snap_a = _snapshot(a)
    assert {k: v[0] for k, v in snap_a.items()} == {k: v[0] for k, v in _snapshot(b).items()}
    assert main(["emit", *map(str, CUDA_SPECS), "--out", str(a), "--name", "kernels"]) == 0
    assert _snapshot(a) == snap_a  # same bytes, same mtimes: nothing rewritten


def test_every_generated_file_has_the_header_and_the_manifest_hashes(tmp_path):
    out = tmp_path / "lib"
    assert main(["emit", *map(str, CUDA_SPECS), "--out", str(out)]) == 0
    manifest = Manifest.read(out)
    assert manifest.target == "cuda" and manifest.package == "lib"
    assert {s.name for s in manifest.specs} == {"gemm_bias_gelu", "gemm_silu_residual"}
    assert all(len(s.spec_hash) == 64 for s in manifest.specs) and len(manifest.templates_hash) == 64
    for path, digest in manifest.files.items():
        text = (out / path).read_text()
        assert "DO NOT EDIT" in text.splitlines()[0], path
        assert hashlib.sha256(text.encode()).hexdigest() == digest


def test_check_exit_codes(tmp_path, capsys):
    specs = tmp_path / "specs"
    specs.mkdir()
    spec = specs / "gemm.yaml"
    shutil.copy(CUDA_SPECS[0], spec)
    out = tmp_path / "lib"
    assert main(["emit", str(spec), "--out", str(out)]) == 0
    assert main(["check", str(out)]) == 0

    kernel = out / "_gemm_bias_gelu_triton.py"
    kernel.write_text(kernel.read_text() + "# local tweak\n")
    capsys.readouterr()
    assert main(["check", str(out)]) == 1
    assert "_gemm_bias_gelu_triton.py: edited by hand" in capsys.readouterr().err
    assert main(["emit", str(spec), "--out", str(out)]) == 0 and main(["check", str(out)]) == 0

    spec.write_text(spec.read_text().replace("GROUP_M: {choices: [1, 8], default: 8}",
                                             "GROUP_M: {choices: [1, 4, 8], default: 8}"))
    capsys.readouterr()
    assert main(["check", str(out)]) == 1
    assert "spec gemm_bias_gelu changed" in capsys.readouterr().err

    (out / "gemm_bias_gelu.py").unlink()
    assert main(["check", str(out)]) == 1

    spec.write_text("name: [broken")
    assert main(["check", str(out)]) == 2
    (out / "manifest.json").unlink()
    assert main(["check", str(out)]) == 2


def test_lock_entries_reach_the_launcher_and_a_lock_change_is_stale(tmp_path, capsys):
    from tilesched import load_program
    from tilesched.ir.hashing import content_hash
    from tilesched.tuner.lockfile import LockEntry, LockFile

    spec = tmp_path / "gemm_bias_gelu.yaml"
    shutil.copy(CUDA_SPECS[0], spec)
    prog = load_program(spec)
    lock = tmp_path / "lock.json"
    entry = LockEntry(spec=prog.name, spec_hash=content_hash(prog), target="cuda", bucket={"M": 64, "N": 64, "K": 64},
                      params={"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 1, "NUM_WARPS": 4,
                              "NUM_STAGES": 2}, objective="model")
    LockFile(entries=(entry,)).write(lock)
    out = tmp_path / "lib"
    assert main(["emit", str(spec), "--out", str(out), "--lock", str(lock)]) == 0
    assert "'BLOCK_M': 64" in (out / "gemm_bias_gelu.py").read_text()
    LockFile(entries=(entry.model_copy(update={"params": {**entry.params, "NUM_STAGES": 3}}),)).write(lock)
    capsys.readouterr()
    assert main(["check", str(out)]) == 1
    assert "tuned parameters of gemm_bias_gelu changed" in capsys.readouterr().err


def test_bad_input_writes_nothing(tmp_path):
    out = tmp_path / "lib"
    mixed = [str(CUDA_SPECS[0]), str(ROOT / "configs" / "mcu_inverted_bottleneck.yaml")]
    assert main(["emit", *mixed, "--out", str(out)]) == 1
    broken = ROOT / "tests" / "specs" / "broken" / "unknown_tensor.yaml"
    assert main(["emit", str(CUDA_SPECS[0]), str(broken), "--out", str(out)]) == 1
    assert not out.exists()


def test_committed_example_libraries_are_up_to_date():
    for lib in ("cuda_kernels", "mcu_kernels"):
        assert main(["check", str(EXAMPLE / "generated" / lib)]) == 0


def test_example_app_runs_the_emitted_cuda_library_under_the_interpreter():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "app.py"], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "relative error" in r.stdout


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                    reason="needs the Arm cross toolchain and QEMU (scripts/setup.sh installs them)")
def test_emitted_c_library_builds_and_passes_its_selftest_under_qemu(tmp_path):
    from tilesched.backends.cortexm.build import cmsisdsp_root

    lib = tmp_path / "mcu_kernels"
    shutil.copytree(EXAMPLE / "generated" / "mcu_kernels", lib)
    r = subprocess.run(["make", "-s", "test", f"CMSISDSP={cmsisdsp_root()}"], cwd=lib, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TS_SELFTEST PASS" in r.stdout
    header = (lib / "ib_block" / "ib_block.h").read_text()
    arena = json.loads((EXAMPLE / "generated" / "mcu_kernels" / "manifest.json").read_text())
    assert "IB_BLOCK_ARENA_BYTES" in header and arena["target"] == "cortex-m"


def test_c_selftest_fails_on_a_wrong_expected_output(tmp_path):
    """The self-test compares every output byte: corrupt one expected value and it must fail."""
    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None:
        pytest.skip("needs the Arm cross toolchain and QEMU")
    from tilesched.backends.cortexm.build import cmsisdsp_root

    lib = tmp_path / "mcu_kernels"
    shutil.copytree(EXAMPLE / "generated" / "mcu_kernels", lib)
    data = lib / "ib_block" / "ts_data.h"
    text = data.read_text()
    start = text.index("ts_expected")
    brace = text.index("{", start) + 2
    first = text[brace:].split(",", 1)[0]
    flipped = str((int(first) + 1) if int(first) < 127 else 126)
    data.write_text(text[:brace] + flipped + text[brace + len(first):])
    r = subprocess.run(["make", "-s", "test", f"CMSISDSP={cmsisdsp_root()}"], cwd=lib, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode != 0
    assert "TS_SELFTEST FAIL" in r.stdout


def test_the_cuda_templates_hash_covers_every_module_the_rendering_imports():
    """A change to any module of the lowering or the renderers must make emitted CUDA libraries
    stale: every tilesched.passes / tilesched.backends.cuda module that triton_emit and the pass
    pipeline import (transitively, within those two packages) is in TEMPLATE_DIRS."""
    import ast

    from tilesched.backends.cuda import library

    root = library.HERE.parent.parent
    listed = {p.resolve() for p in library.TEMPLATE_DIRS}
    todo, seen = [root / "backends" / "cuda" / "triton_emit.py", root / "passes" / "gpu.py"], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                for name in names:
                    for pkg in ("tilesched.passes.", "tilesched.backends.cuda."):
                        if name.startswith(pkg):
                            mod = root.joinpath(*name.split(".")[1:]).with_suffix(".py")
                            if mod.exists():
                                todo.append(mod.resolve())
    missing = sorted(str(p.relative_to(root)) for p in seen - listed)
    assert not missing, missing
