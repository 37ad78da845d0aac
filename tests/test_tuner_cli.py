"""`tilesched tune` and `tilesched studies` end to end with the model objective."""

import json

import pytest

from tests.conftest import ROOT
from tests.tuner_helpers import MCU_SMALL
from tilesched import load_program
from tilesched.cli import main
from tilesched.tuner.lockfile import LockFile

GEMM = ROOT / "configs" / "gemm_bf16.yaml"


def test_tune_then_studies(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["tune", str(GEMM), "--trials", "8", "--objective", "model", "--set", "M=1000", "--set", "N=512",
            "--set", "K=512", "--seed", "0", "--quiet", "--plot", "plots"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "evaluated 8 trials (0 failed)" in out and "best " in out
    assert (tmp_path / ".tilesched" / "studies.db").exists()  # default storage
    lock = LockFile.read(tmp_path / "tilesched.lock.json")
    prog = load_program(GEMM)
    entry = lock.select(prog, {"M": 1000, "N": 512, "K": 512})
    assert entry is not None and entry.bucket == {"M": 1024, "N": 512, "K": 512} and entry.trials == 8
    assert entry.objective == "model" and entry.value > 0
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "gemm_bf16_K_512_M_1024_N_512_-model-history.png"]
    # running again resumes: the 8 done trials count toward 10
    assert main(argv[:3] + ["10"] + argv[4:]) == 0
    assert "evaluated 10 trials" in capsys.readouterr().out
    # a pinned parameter and an MCU spec in another storage and lock file
    db = f"sqlite:///{tmp_path}/other.db"
    assert main(["tune", str(MCU_SMALL), "--trials", "6", "--objective", "model", "--storage", db,
                 "--lock", "mcu.lock.json", "--quiet", "--study", "mcu-study"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" in out
    data = json.loads((tmp_path / "mcu.lock.json").read_text())
    assert data["entries"][0]["metrics"]["peak_sram_bytes"] <= 131072
    assert main(["studies"]) == 0
    out = capsys.readouterr().out
    assert "gemm_bf16[K=512,M=1024,N=512]-model" in out and " 10 " in out
    assert main(["studies", "--storage", db, "--plot", "p2"]) == 0
    out = capsys.readouterr().out
    assert "mcu-study" in out and "mcu_ib_small" in out
    assert sorted(p.name for p in (tmp_path / "p2").iterdir()) == ["mcu-study-history.png", "mcu-study-pareto.png"]


def test_tune_rejects_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["tune", str(GEMM), "--trials", "2", "--objective", "model", "--set", "BLOCK_M=7"]) == 1
    assert "BLOCK_M=7" in capsys.readouterr().err
    # another spec version under an existing study name is refused, not mixed in
    assert main(["tune", str(GEMM), "--trials", "2", "--objective", "model", "--study", "s", "--quiet"]) == 0
    assert main(["tune", str(MCU_SMALL), "--trials", "2", "--objective", "model", "--study", "s",
                 "--quiet"]) == 2
    assert "tuned for another" in capsys.readouterr().err


# ---------------------------------------------------------------- bad input: one line, no traceback
SMALL_GEMM = [str(GEMM), "--objective", "model", "--set", "M=1000", "--set", "N=512", "--set", "K=512", "--quiet"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", ["tune", "studies"])
@pytest.mark.parametrize("url, code, message", [
    ("notaurl", 1, "--storage notaurl: not a database URL (e.g. sqlite:///studies.db or "
                   "postgresql+psycopg2://user@host/db)"),
    ("foo://", 1, "--storage foo://: unknown database dialect 'foo'"),
    ("sqlite:///", 1, "--storage sqlite:///: refused: an in-memory study cannot be resumed"),
    ("sqlite://", 1, "--storage sqlite://: refused: an in-memory study cannot be resumed"),
    ("sqlite:///missing/folder/x.db", 1, "the folder missing/folder does not exist"),
    ("postgresql+psycopg2://u:secret@127.0.0.1:1/db", 2,
     "cannot connect to postgresql+psycopg2://u:***@127.0.0.1:1/db: connection to server at"),
    ("u:secret@nowhere", 1, "--storage u:***@nowhere: not a database URL"),
], ids=["not-a-url", "unknown-dialect", "sqlite-memory-3", "sqlite-memory-2", "missing-folder", "server-down",
        "password-unparsed"])
def test_a_bad_storage_is_one_line_with_the_password_masked(tmp_path, monkeypatch, capsys, command, url, code,
                                                           message):
    monkeypatch.chdir(tmp_path)
    argv = ["tune", *SMALL_GEMM, "--trials", "2"] if command == "tune" else ["studies"]
    assert main([*argv, "--storage", url]) == code
    err = _one_line_error(capsys)
    assert err.startswith(f"tilesched {command}: ") and message in err and "secret" not in err
    assert not (tmp_path / "tilesched.lock.json").exists()


@pytest.mark.parametrize("content, message", [
    ("{not json", "tilesched.lock.json: invalid lock file: Expecting property name"),
    ('{"version": 7, "entries": []}', "tilesched.lock.json: lock file version 7, but this tilesched"),
    ('{"version": 1, "entries": [{"spec": "g", "spec_hash": "h", "target": "cuda", "bucket": {"H": 0}, '
     '"params": {}, "objective": "model"}]}', "tilesched.lock.json: invalid lock file: entries[0].bucket: "),
], ids=["syntax", "version", "bucket"])
def test_tune_checks_the_lock_file_before_the_campaign(tmp_path, monkeypatch, capsys, content, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tilesched.lock.json").write_text(content)
    db = tmp_path / "s.db"
    assert main(["tune", *SMALL_GEMM, "--trials", "2", "--storage", f"sqlite:///{db}"]) == 1
    assert message in _one_line_error(capsys)
    assert not db.exists()  # no study was started
    assert (tmp_path / "tilesched.lock.json").read_text() == content


@pytest.mark.parametrize("option", [["--trials", "0"], ["--trials", "-3"], ["--trials", "2", "--timeout", "0"],
                                    ["--trials", "2", "--warm-k", "-1"]])
def test_tune_refuses_numbers_a_campaign_cannot_use(tmp_path, monkeypatch, capsys, option):
    monkeypatch.chdir(tmp_path)
    assert main(["tune", *SMALL_GEMM, *option]) == 1
    err = _one_line_error(capsys)
    assert f"{option[-2]} {option[-1]}: must be" in err
    assert not (tmp_path / ".tilesched").exists()


def test_tune_says_when_the_space_is_exhausted(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["tune", str(MCU_SMALL), "--trials", "30", "--objective", "model", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "evaluated 6 trials" in out
    assert "the search space has 6 legal points: all evaluated (asked for 30)" in out
    assert main(["tune", str(MCU_SMALL), "--trials", "6", "--objective", "model", "--quiet"]) == 0
    assert "all evaluated" not in capsys.readouterr().out  # asked for exactly what there is


def test_tune_refuses_a_point_the_spec_cannot_satisfy_and_writes_no_lock(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # ROWS=40 is in the domain but breaks the spec's row-buffer constraint
    assert main(["tune", str(MCU_SMALL), "--trials", "3", "--objective", "model", "--set", "ROWS=40",
                 "--quiet"]) == 1
    assert "constraint" in _one_line_error(capsys)
    # no point fits a 1 KiB SRAM budget (the input alone is larger): refused before any trial, nothing to lock
    spec = tmp_path / "tiny_sram.yaml"
    spec.write_text(MCU_SMALL.read_text().replace("sram_bytes: 131072", "sram_bytes: 1024"))
    assert main(["tune", str(spec), "--trials", "6", "--objective", "model", "--quiet"]) == 1
    err = _one_line_error(capsys)
    assert "no legal point" in err and "more than sram_bytes 1,024 B" in err
    assert not (tmp_path / "tilesched.lock.json").exists()


def test_a_server_that_never_answers_times_out_in_one_line(tmp_path, monkeypatch, capsys):
    """A PostgreSQL address whose socket accepts the connection but never speaks (a hung server, a
    wrong port behind a proxy): the connect timeout ends it in one line instead of a hang."""
    import socket
    import time

    from tilesched.tuner import campaign

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(campaign, "CONNECT_TIMEOUT_S", 2)
    with socket.socket() as server:  # listens, never accepts: the kernel completes the handshake
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        t0 = time.monotonic()
        assert main(["studies", "--storage", f"postgresql+psycopg2://u:secret@127.0.0.1:{port}/db"]) == 2
        elapsed = time.monotonic() - t0
    err = _one_line_error(capsys)
    assert f"cannot connect to postgresql+psycopg2://u:***@127.0.0.1:{port}/db" in err and "secret" not in err
    assert elapsed < 30, elapsed
