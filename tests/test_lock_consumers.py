"""What reads the lock file besides the tuner: `tilesched emit` / `check`, the Cortex-M library
renderer and the CUDA launcher. Bad or stale lock files are said in one line, never a traceback."""

import pytest

from tests.conftest import ROOT
from tilesched import load_program
from tilesched.cli import main
from tilesched.ir.hashing import content_hash
from tilesched.tuner.lockfile import LockEntry, LockFile, bucket_of

CUDA_SPEC = ROOT / "configs" / "gemm_bias_gelu.yaml"
MCU_SPEC = ROOT / "configs" / "mcu_inverted_bottleneck.yaml"
CUDA_PARAMS = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 1, "NUM_WARPS": 4, "NUM_STAGES": 2}


@pytest.fixture(autouse=True)
def _spec_in_the_repo(tmp_path, monkeypatch):
    """The spec beside the library, as in a downstream repository (emit notes specs outside it)."""
    import shutil

    local = tmp_path / CUDA_SPEC.name
    shutil.copy(CUDA_SPEC, local)
    monkeypatch.setitem(globals(), "CUDA_SPEC", local)


def _entry(prog, bucket, params) -> LockEntry:
    return LockEntry(spec=prog.name, spec_hash=content_hash(prog), target=prog.target, bucket=bucket,
                     params=params, objective="model")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_emit_with_a_lock_path_that_does_not_exist_fails_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "lib"
    assert main(["emit", str(CUDA_SPEC), "--out", str(out), "--lock", str(tmp_path / "typo.lock.json")]) == 1
    assert _one_line_error(capsys) == f"tilesched emit: {tmp_path / 'typo.lock.json'}: no such lock file\n"
    assert not out.exists()


def test_emit_with_a_corrupt_lock_file_fails_in_one_line(tmp_path, capsys):
    lock = tmp_path / "tilesched.lock.json"
    lock.write_text('{"version": 1, "entries": [{"spec": "gemm_bias_gelu"}]}')
    assert main(["emit", str(CUDA_SPEC), "--out", str(tmp_path / "lib"), "--lock", str(lock)]) == 1
    assert "tilesched.lock.json: invalid lock file: entries[0].spec_hash: Field required" in _one_line_error(capsys)


def test_emit_says_when_the_lock_was_tuned_for_another_version_of_the_spec(tmp_path, capsys):
    prog = load_program(CUDA_SPEC)
    stale = _entry(prog, {"M": 64, "N": 64, "K": 64}, CUDA_PARAMS).model_copy(update={"spec_hash": "ab" * 32})
    other_spec = stale.model_copy(update={"spec": "some_other_kernel"})  # a lock file holds many specs
    lock = tmp_path / "tilesched.lock.json"
    LockFile(entries=(stale, other_spec)).write(lock)
    out = tmp_path / "lib"
    assert main(["emit", str(CUDA_SPEC), "--out", str(out), "--lock", str(lock)]) == 0
    err = _one_line_error(capsys)
    assert err.startswith(f"{lock}: 1 entry for gemm_bias_gelu was tuned for another version of the spec "
                          f"(hash abababababab; the spec's is {content_hash(prog)[:12]}); using defaults")
    assert '"BLOCK_M": 64' not in (out / "gemm_bias_gelu.py").read_text()  # the stale entry is not used


def test_check_is_an_error_not_stale_when_the_lock_file_is_gone(tmp_path, capsys):
    prog = load_program(CUDA_SPEC)
    lock = tmp_path / "tilesched.lock.json"
    LockFile(entries=(_entry(prog, {"M": 64, "N": 64, "K": 64}, CUDA_PARAMS),)).write(lock)
    out = tmp_path / "lib"
    assert main(["emit", str(CUDA_SPEC), "--out", str(out), "--lock", str(lock)]) == 0
    lock.unlink()
    capsys.readouterr()
    assert main(["check", str(out)]) == 2
    assert "tilesched.lock.json: no such lock file" in _one_line_error(capsys)


def test_the_cortex_m_library_takes_the_entry_of_its_shape_among_several_buckets():
    from tilesched.backends.cortexm.library import library_binding
    from tilesched.library.emit import LibraryUnit

    prog = load_program(MCU_SPEC)
    hints = {a.name: a.hint for a in prog.axes if a.symbolic}  # the library's shape: H = W = 80
    mine = _entry(prog, bucket_of(prog, hints), {"ROWS": 8})
    # sorts first by bucket (H=32 before H=128): the entry the renderer used to take
    smaller = _entry(prog, bucket_of(prog, {**hints, "H": 32, "W": 32}), {"ROWS": 2})
    lock = LockFile(entries=(mine, smaller))
    for entries in (lock.entries, lock.entries[::-1]):
        unit = LibraryUnit(program=prog, spec_path="spec.yaml", lock_entries=tuple(entries))
        assert library_binding(unit).params == {"ROWS": 8}
    # only the other bucket: its entry is the nearest, and legal at 80x80
    unit = LibraryUnit(program=prog, spec_path="spec.yaml", lock_entries=(smaller,))
    assert library_binding(unit).params == {"ROWS": 2}


def test_the_cuda_launcher_warns_about_lock_entries_it_cannot_use():
    from tilesched.backends.cuda.kernel import Kernel

    prog = load_program(CUDA_SPEC)
    stale = _entry(prog, {"M": 64, "N": 64, "K": 64}, CUDA_PARAMS).model_copy(update={"target": "cortex-m7"})
    with pytest.warns(UserWarning, match="1 entry for gemm_bias_gelu was tuned for target cortex-m7, not cuda"):
        Kernel(prog, LockFile(entries=(stale,)), module=object())
