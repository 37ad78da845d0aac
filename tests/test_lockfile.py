import json

import pytest
from pydantic import ValidationError

from tests.conftest import ROOT
from tilesched import load_program
from tilesched.errors import InvalidInput
from tilesched.ir.hashing import content_hash
from tilesched.tuner import lockfile
from tilesched.tuner.lockfile import LockEntry, LockFile, bucket_of


def _entry(prog, bucket, block_m):
    return LockEntry(spec=prog.name, spec_hash=content_hash(prog), target=prog.target, bucket=bucket,
                     params={"BLOCK_M": block_m}, objective="model")


def test_buckets_round_symbolic_axes_up_to_powers_of_two():
    prog = load_program(ROOT / "configs" / "gemm_bf16.yaml")
    assert bucket_of(prog, {"M": 1000, "N": 4096, "K": 1}) == {"M": 1024, "N": 4096, "K": 1}


def test_select_exact_then_nearest(tmp_path):
    prog = load_program(ROOT / "configs" / "gemm_bf16.yaml")
    small = _entry(prog, {"M": 16, "N": 4096, "K": 4096}, 64)
    big = _entry(prog, {"M": 8192, "N": 4096, "K": 4096}, 256)
    lock = LockFile().with_entry(small).with_entry(big)
    assert lock.select(prog, {"M": 8000, "N": 4096, "K": 4096}) == big
    assert lock.select(prog, {"M": 9, "N": 4096, "K": 4096}) == small
    assert lock.select(prog, {"M": 4096, "N": 4096, "K": 4096}) == big  # nearer in log2
    path = tmp_path / "lock.json"
    assert lock.write(path)
    assert LockFile.read(path) == LockFile(entries=tuple(sorted(lock.entries, key=lambda e: e.bucket["M"])))
    assert not lock.write(path)  # identical content: untouched


def test_entries_of_another_program_version_are_ignored():
    prog = load_program(ROOT / "configs" / "gemm_bf16.yaml")
    stale = _entry(prog, {"M": 16, "N": 4096, "K": 4096}, 64).model_copy(update={"spec_hash": "0" * 64})
    assert LockFile(entries=(stale,)).select(prog, {"M": 16, "N": 4096, "K": 4096}) is None


# ---------------------------------------------------------------- reading untrusted lock files
GEMM = ROOT / "configs" / "gemm_bf16.yaml"
ENTRY = {"spec": "gemm_bf16", "spec_hash": "0" * 64, "target": "cuda", "bucket": {"M": 64, "N": 64, "K": 64},
         "params": {"BLOCK_M": 64}, "objective": "model"}


def _lock_text(*entries, version=1) -> str:
    return json.dumps({"version": version, "entries": list(entries)})


@pytest.mark.parametrize("text, message", [
    ("{", "invalid lock file: Expecting property name enclosed in double quotes: line 1 column 2"),
    ("[]", "invalid lock file: expected a JSON object, got list"),
    (_lock_text({"spec": "x"}), "invalid lock file: entries[0].spec_hash: Field required (and 4 more)"),
    (_lock_text(ENTRY, {**ENTRY, "bucket": {"H": 0}}),
     "invalid lock file: entries[1].bucket: bucket sizes must be positive powers of two, got H=0"),
    (_lock_text({**ENTRY, "bucket": {"M": 48, "N": 64}}), "entries[0].bucket: bucket sizes must be positive powers "
                                                          "of two, got M=48"),
    (_lock_text({**ENTRY, "bucket": {"M": -64}}), "entries[0].bucket: bucket sizes must be positive powers"),
    ("[" * 100_000 + "]" * 100_000, "invalid lock file: "),
    (b"\xff\xfe\x00", "invalid lock file: "),
], ids=["syntax", "not-an-object", "missing-fields", "zero-bucket", "bucket-48", "negative-bucket", "deep", "binary"])
def test_read_turns_a_bad_lock_file_into_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "tilesched.lock.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(InvalidInput) as exc:
        LockFile.read(path)
    assert str(exc.value).startswith(f"{path}: ") and message in str(exc.value)
    assert len(str(exc.value).splitlines()) == 1


def test_read_names_both_versions_of_a_lock_file_it_cannot_read(tmp_path):
    path = tmp_path / "lock.json"
    path.write_text(_lock_text(version=2))
    with pytest.raises(InvalidInput, match=r"lock file version 2, but this tilesched \(.*\) reads version 1"):
        LockFile.read(path)


def test_read_refuses_a_file_over_the_size_bound_before_parsing_it(tmp_path, monkeypatch):
    path = tmp_path / "lock.json"
    path.write_text(_lock_text(ENTRY))
    monkeypatch.setattr(lockfile, "MAX_LOCK_BYTES", path.stat().st_size - 1)
    with pytest.raises(InvalidInput, match="not a lock file"):
        LockFile.read(path)
    monkeypatch.setattr(lockfile, "MAX_LOCK_BYTES", path.stat().st_size)
    assert len(LockFile.read(path).entries) == 1


def test_a_missing_lock_file_is_empty_unless_it_must_exist(tmp_path):
    assert LockFile.read(tmp_path / "none.json") == LockFile()  # the tuner creates it
    with pytest.raises(InvalidInput, match="none.json: no such lock file"):
        LockFile.read(tmp_path / "none.json", must_exist=True)


def test_buckets_are_checked_when_entries_are_made_too():
    prog = load_program(GEMM)
    with pytest.raises(ValidationError, match="positive powers of two"):
        _entry(prog, {"M": 0, "N": 64, "K": 64}, 64)


def test_stale_entries_of_this_spec_are_ignored_and_said_so_other_specs_are_silent():
    prog = load_program(GEMM)
    good = _entry(prog, {"M": 64, "N": 64, "K": 64}, 64)
    old = [_entry(prog, {"M": m, "N": 64, "K": 64}, 32).model_copy(update={"spec_hash": "1a2b3c4d5e6f" + "0" * 52})
           for m in (16, 32)]
    other_spec = good.model_copy(update={"spec": "another", "spec_hash": "f" * 64})
    lock = LockFile(entries=(*old, other_spec))
    assert lock.entries_for(prog) == [] and lock.select(prog, {"M": 16, "N": 64, "K": 64}) is None
    assert lock.stale_notes(prog, "tilesched.lock.json") == [
        f"tilesched.lock.json: 2 entries for gemm_bf16 were tuned for another version of the spec "
        f"(hash 1a2b3c4d5e6f; the spec's is {content_hash(prog)[:12]}); using defaults (re-tune to refresh the "
        "lock file)"]
    assert "; ignored (" in LockFile(entries=(*old, good)).stale_notes(prog)[0]  # a usable entry remains
    assert LockFile(entries=(good, other_spec)).stale_notes(prog) == []
    m4 = good.model_copy(update={"target": "cortex-m4"})
    assert LockFile(entries=(m4,)).stale_notes(prog) == [
        "lock file: 1 entry for gemm_bf16 was tuned for target cortex-m4, not cuda; using defaults (re-tune to "
        "refresh the lock file)"]


def test_entries_whose_bucket_names_axes_the_program_lacks_are_ignored_with_a_note():
    prog = load_program(ROOT / "configs" / "mcu_inverted_bottleneck.yaml")  # KH is fixed at 3, not symbolic
    sizes = {"H": 80, "W": 80, "C": 16, "E": 96, "CO": 24}
    odd = _entry(prog, {**bucket_of(prog, sizes), "KH": 4}, 0).model_copy(update={"params": {"ROWS": 8}})
    assert LockFile(entries=(odd,)).entries_for(prog) == []
    assert LockFile(entries=(odd,)).select(prog, sizes) is None
    note, = LockFile(entries=(odd,)).stale_notes(prog)
    assert "tuned over axes the spec does not have as symbolic axes (KH)" in note
