from tests.conftest import ROOT
from tilesched import load_program
from tilesched.ir.hashing import content_hash
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
