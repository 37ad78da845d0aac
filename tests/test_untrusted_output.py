"""Specs, lock files and manifests come from other people's repositories: nothing in them may
reach generated source unescaped, and emission touches nothing outside its output folder."""

import ast
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tilesched.cli import main
from tilesched.library.escape import comment_text, py_literal
from tilesched.library.headers import with_header
from tilesched.library.manifest import MANIFEST

GEMM = ROOT / "configs" / "gemm_bias_gelu.yaml"
IB = ROOT / "examples" / "downstream" / "specs" / "ib_block.yaml"

HOSTILE = [
    'x""" + __import__("os").system("touch PWNED") + """',
    "a\nimport os; os.system('touch PWNED')\n",
    "ends in a backslash \\",
    "*/ int pwned = 1; /*",
    "trigraph ??/",
    "\r carriage, \x00 nul, \u2028 line separator, \U0001f600",
    "'''; raise SystemExit('''",
    "\\\nsplice",
]


def _sentinel_free(d: Path) -> bool:
    return not any(p.name == "PWNED" for p in d.rglob("*"))


@pytest.mark.parametrize("text", HOSTILE)
def test_comment_text_is_one_inert_line_that_decodes_back(text):
    out = comment_text(text)
    assert "\n" not in out and "\r" not in out and "*/" not in out and "?" not in out and '"' not in out
    assert not out.endswith("\\")
    assert out.isascii() and out.isprintable()
    # inside a Python string its escapes decode back to the text
    assert ast.literal_eval('"""' + out + '"""') == text


def test_py_literal_reads_back_and_refuses_what_has_no_literal():
    data = {"s": HOSTILE, "n": [1, 2.5, None, True], "nested": {"k": ("t",)}}
    assert ast.literal_eval(py_literal(data)) == {**data, "nested": {"k": ("t",)}}
    with pytest.raises(ValueError):
        py_literal({"x": float("nan")})
    with pytest.raises(ValueError):
        py_literal({"x": object()})


@pytest.mark.parametrize("origin", HOSTILE)
def test_every_header_style_stays_a_comment(origin, tmp_path):
    body_py = "MUST_EXIST = 1\n"
    text = with_header("k.py", body_py, origin, "0.1.0")
    ns: dict = {}
    exec(compile(text, "k.py", "exec"), ns)  # noqa: S102 - the point of the test
    assert set(ns) - {"__builtins__"} == {"MUST_EXIST"}
    assert len(text.splitlines()) == 3
    for suffix in (".c", ".h"):
        src = tmp_path / f"k{suffix}"
        src.write_text(with_header(src.name, "int must_exist;\nint use(void) { return must_exist; }\n",
                                   origin, "0.1.0"))
        if shutil.which("gcc"):
            # -std=c11 turns trigraphs on: a `??/` at the end of a line comment would splice the next line
            r = subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-Wno-comment", "-fsyntax-only", "-x", "c",
                                str(src)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
    ld = with_header("link.ld", "SECTIONS {}\n", origin, "0.1.0")
    head, _, rest = ld.partition("*/")
    assert head.startswith("/*") and rest.startswith("\nSECTIONS")
    mk = with_header("Makefile", "all:\n\t@echo MUST_EXIST\n", origin, "0.1.0")
    (tmp_path / "Makefile").write_text(mk)
    if shutil.which("make"):
        r = subprocess.run(["make", "-s", "-C", str(tmp_path)], capture_output=True, text=True)
        assert r.stdout.strip() == "MUST_EXIST", r.stderr


def _hostile_spec(src: Path, dest_dir: Path, description: str, file_name: str) -> Path:
    text = src.read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("description:")]
    name_at = next(i for i, ln in enumerate(lines) if ln.startswith("name:"))
    lines.insert(name_at + 1, "description: " + json.dumps(description))
    path = dest_dir / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_hostile_cuda_library_imports_without_running_anything(tmp_path):
    repo = tmp_path / "repo"
    (repo / "specs").mkdir(parents=True)
    desc = HOSTILE[0] + " " + HOSTILE[1] + HOSTILE[2]
    spec = _hostile_spec(GEMM, repo / "specs", desc, 'x*/we"ird\nname ?? \\.yaml')  # a folder ending in * gives */
    out = repo / "kernels"
    assert main(["emit", str(spec), "--out", str(out)]) == 0
    for path in out.rglob("*.py"):
        ast.parse(path.read_text(), str(path))
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": f"{repo}{os.pathsep}{ROOT}"}
    probe = ("import sys, kernels; m = sys.modules['kernels.gemm_bias_gelu']; "
             "print(repr(m.__doc__)); print(repr(m._PROGRAM.description))")
    r = subprocess.run([sys.executable, "-c", probe], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc, description = (ast.literal_eval(line) for line in r.stdout.splitlines()[-2:])
    assert description == desc  # the IR carries the text unchanged, as data
    assert desc in doc  # the docstring shows it, escaped in the source and decoded by Python
    assert _sentinel_free(tmp_path) and not Path("PWNED").exists()


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs the Arm cross toolchain")
def test_a_hostile_c_library_compiles(tmp_path):
    from tilesched.backends.cortexm.build import TARGETS, cmsisdsp_root

    repo = tmp_path / "repo"
    (repo / "specs").mkdir(parents=True)
    spec = _hostile_spec(IB, repo / "specs", HOSTILE[3] + HOSTILE[4] + HOSTILE[2], "x\n*/ int pwned; ??\\.yaml")
    out = repo / "mcu"
    assert main(["emit", str(spec), "--out", str(out)]) == 0
    root = cmsisdsp_root()
    for c in out.rglob("*.c"):
        r = subprocess.run(["arm-none-eabi-gcc", "-std=c11", "-fsyntax-only", *TARGETS["cortex-m7"]["cflags"],
                            f"-I{out / 'support'}", f"-I{c.parent}", f"-I{root / 'Include'}",
                            f"-I{root / 'PrivateInclude'}", "-Werror=implicit-function-declaration", str(c)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    for h in out.rglob("*.h"):
        first = h.read_text().splitlines()[:3]
        assert all(line.startswith("//") for line in first[:2]) and "pwned" in first[0]


# ------------------------------------------------------------------------------------- emission

def _emit(out: Path, *extra: str, spec: Path | None = None) -> int:
    if spec is None:  # the spec lives beside the library, as in a downstream repository
        spec = out.parent / "gemm_bias_gelu.yaml"
        if not spec.exists():
            shutil.copy(GEMM, spec)
    return main(["emit", str(spec), "--out", str(out), *extra])


def _other_default(text: str) -> str:
    return text.replace("GROUP_M: {choices: [1, 8], default: 8}", "GROUP_M: {choices: [1, 8], default: 1}")


def _tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_a_manifest_naming_paths_outside_the_library_deletes_nothing(tmp_path):
    out = tmp_path / "lib"
    assert _emit(out) == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    absolute = tmp_path / "abs.txt"
    absolute.write_text("keep me too")
    manifest = json.loads((out / MANIFEST).read_text())
    for evil in ("../victim.txt", str(absolute)):
        manifest["files"] = {**manifest["files"], evil: "0" * 64}
        (out / MANIFEST).write_text(json.dumps(manifest))
        assert _emit(out) == 1  # refused: the manifest is not one emit wrote
        assert _emit(out, "--force") == 0  # replaced as a whole, nothing outside touched
        manifest = json.loads((out / MANIFEST).read_text())
    assert victim.read_text() == "keep me" and absolute.read_text() == "keep me too"
    assert main(["check", str(out)]) == 0


def test_emit_refuses_a_folder_that_is_not_a_library(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "__init__.py").write_text("# my own package\n")
    (out / "Makefile").write_text("all:\n")
    before = _tree(out)
    capsys.readouterr()
    assert _emit(out) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--force" in err
    assert _tree(out) == before
    assert _emit(out, "--force") == 0
    assert (out / "__init__.py").read_text() != before["__init__.py"].decode()  # generated now
    assert (out / "Makefile").read_text() == "all:\n"  # not generated for CUDA: kept
    assert main(["check", str(out)]) == 0


def test_emit_keeps_the_users_other_files_and_drops_only_what_it_generated(tmp_path):
    out = tmp_path / "lib"
    assert _emit(out) == 0
    (out / "NOTES.md").write_text("mine\n")
    (out / "__pycache__").mkdir()
    (out / "__pycache__" / "x.pyc").write_bytes(b"\0")
    spec = tmp_path / "g.yaml"
    spec.write_text(GEMM.read_text().replace("name: gemm_bias_gelu", "name: renamed"))
    assert _emit(out, spec=spec) == 0
    assert (out / "NOTES.md").read_text() == "mine\n" and (out / "__pycache__" / "x.pyc").exists()
    assert not (out / "gemm_bias_gelu.py").exists() and (out / "renamed.py").exists()


def test_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o002)
    try:
        assert _emit(tmp_path / "lib") == 0
        lock = tmp_path / "lock.json"
        from tilesched.tuner.lockfile import LockFile

        LockFile().write(lock)
    finally:
        os.umask(old)
    for p in [*(tmp_path / "lib").rglob("*"), lock]:
        want = 0o775 if p.is_dir() else 0o664
        assert stat.S_IMODE(p.stat().st_mode) == want, p


def test_an_unwritable_target_fails_in_one_line_and_changes_nothing(tmp_path, monkeypatch, capsys):
    from tilesched.library import swap

    out = tmp_path / "lib"
    assert _emit(out) == 0
    before = _tree(out)
    spec = tmp_path / "g.yaml"
    spec.write_text(_other_default(GEMM.read_text()))
    real_open = os.open
    calls = []

    def failing_open(path, flags, mode=0o777, **kw):
        if flags & os.O_CREAT and ".tilesched-new-" in str(path):
            calls.append(path)
            if len(calls) == 3:
                raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(swap.os, "open", failing_open)
    capsys.readouterr()
    assert _emit(out, spec=spec) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Permission denied" in err and "Traceback" not in err
    assert _tree(out) == before
    assert [p.name for p in tmp_path.iterdir() if "tilesched" in p.name] == []


_KILLER = textwrap.dedent("""
    import os, signal, sys
    from tilesched.library import swap
    step, at = 0, int(sys.argv[1])
    def maybe_die():
        global step
        step += 1
        if step == at:
            os.kill(os.getpid(), signal.SIGKILL)
    def wrap(fn):
        def inner(*a, **k):
            maybe_die()
            out = fn(*a, **k)
            maybe_die()
            return out
        return inner
    if sys.argv[2] == "no-exchange":
        swap.exchange = lambda a, b: False
    for name in ("_write_tree", "_carry_over", "exchange", "remove_tree"):
        setattr(swap, name, wrap(getattr(swap, name)))
    swap.os.rename = wrap(os.rename)
    from tilesched.cli import main
    sys.exit(main(sys.argv[3:]))
""")


@pytest.mark.parametrize("mode", ["exchange", "no-exchange"])
def test_kill_9_at_any_step_leaves_the_old_library_or_the_new_one(tmp_path, mode):
    out = tmp_path / "lib"
    old_spec = tmp_path / "old.yaml"
    new_spec = tmp_path / "new.yaml"
    old_spec.write_text(GEMM.read_text())
    new_spec.write_text(_other_default(GEMM.read_text()))
    assert _emit(out, spec=old_spec) == 0
    (out / "NOTES.md").write_text("mine\n")
    old_tree = _tree(out)
    assert _emit(out, spec=new_spec) == 0
    new_tree = _tree(out)
    assert old_tree != new_tree
    script = tmp_path / "killer.py"
    script.write_text(_KILLER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed_at = []
    for at in range(1, 40):
        shutil.rmtree(out)
        assert _emit(out, spec=old_spec) == 0
        (out / "NOTES.md").write_text("mine\n")
        r = subprocess.run([sys.executable, str(script), str(at), mode, "emit", str(new_spec), "--out", str(out)],
                           env=env, capture_output=True, text=True, timeout=120)
        if r.returncode == 0:
            break
        assert r.returncode == -signal.SIGKILL, r.stderr
        killed_at.append(at)
        # between the two renames of the fallback the folder is briefly aside: the next emit puts it back
        from tilesched.library import swap

        swap.recover(out)
        assert _tree(out) in (old_tree, new_tree), at
        assert _emit(out, spec=new_spec) == 0
        assert _tree(out) == new_tree
        leftovers = [p.name for p in tmp_path.iterdir() if ".tilesched-" in p.name]
        leftovers += [p.name for p in out.rglob("*") if p.name.endswith(".tmp")]
        assert leftovers == [], at
    assert len(killed_at) >= 6  # the killer reached every step of the swap


def test_check_reports_broken_libraries_with_exit_2_or_1(tmp_path, capsys):
    out = tmp_path / "lib"
    assert _emit(out) == 0
    kernel = out / "gemm_bias_gelu.py"
    kernel.unlink()
    kernel.mkdir()
    capsys.readouterr()
    assert main(["check", str(out)]) == 1
    assert "not a regular file" in capsys.readouterr().err
    kernel.rmdir()
    kernel.write_bytes(b"\xff\xfe not utf-8")
    assert main(["check", str(out)]) == 1
    assert "edited by hand" in capsys.readouterr().err
    manifest = out / MANIFEST
    manifest.write_bytes(b"\xff\xfe{")
    assert main(["check", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    manifest.unlink()
    manifest.mkdir()
    assert main(["check", str(out)]) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_check_refuses_a_manifest_pointing_outside_the_repository(tmp_path, capsys):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "specs").mkdir()
    spec = repo / "specs" / "g.yaml"
    shutil.copy(GEMM, spec)
    out = repo / "lib"
    assert main(["emit", str(spec), "--out", str(out)]) == 0
    outside = tmp_path / "secret.yaml"
    outside.write_text("name: [secret\n")
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["specs"][0]["path"] = "../../secret.yaml"
    (out / MANIFEST).write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["check", str(out)]) == 2
    err = capsys.readouterr().err
    assert "lies outside" in err and "secret" not in err.split("lies outside")[1].split(str(repo))[0]
    manifest["specs"][0]["path"] = "/etc/passwd.yaml"
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert main(["check", str(out)]) == 2
    assert "absolute path" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- limits

def test_run_and_emit_refuse_an_arena_over_sram_bytes(tmp_path, capsys):
    spec = ROOT / "configs" / "mcu_inverted_bottleneck.yaml"
    capsys.readouterr()
    assert main(["run", str(spec), "--set", "H=120", "--set", "W=120", "--set", "ROWS=1"]) == 1
    err = capsys.readouterr().err
    assert "sram_bytes" in err and f"{spec}:" in err and len(err.strip().splitlines()) == 1
    small = tmp_path / "ib.yaml"
    small.write_text(spec.read_text().replace("H: {size: H, hint: 80}", "H: {size: H, hint: 120}")
                     .replace("W: {size: W, hint: 80}", "W: {size: W, hint: 120}"))
    out = tmp_path / "lib"
    assert main(["emit", str(small), "--out", str(out)]) == 1
    assert "sram_bytes" in capsys.readouterr().err and not out.exists()


def test_a_huge_mcu_problem_is_refused_before_planning(capsys):
    spec = ROOT / "configs" / "mcu_inverted_bottleneck.yaml"
    capsys.readouterr()
    # H = 10^8 used to run the memory planner for minutes at 6 GB
    assert main(["plan", str(spec), "--set", "H=100000000"]) == 1
    assert "sram_bytes" in capsys.readouterr().err
    assert main(["run", str(spec), "--set", "H=100000000"]) == 1


def test_the_tuner_never_proposes_a_point_over_smem_bytes(tmp_path):
    from tilesched import load_program
    from tilesched.schedules.limits import smem_estimate
    from tilesched.tuner.space import Space

    spec = tmp_path / "g.yaml"
    # no constraint of the spec's own: the limit alone must rule the big points out
    text = GEMM.read_text().replace("smem_bytes: 232448", "smem_bytes: 100000")
    spec.write_text(text.replace('  constraints:\n    - "NUM_STAGES * (BLOCK_M + BLOCK_N) * BLOCK_K * 2 <= smem_bytes"\n', ""))
    prog = load_program(spec)
    assert not prog.constraints
    space = Space(prog, {"M": 512, "N": 512, "K": 512})
    assert space.legal_points
    for point in space.legal_points:
        assert smem_estimate(space.bind(point)) <= 100000
    big = {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 1, "NUM_WARPS": 8, "NUM_STAGES": 4}
    assert "smem_bytes" in space.check(big)


def test_spec_names_cannot_shadow_the_launchers_own_names(tmp_path):
    """A spec may be named like anything the launcher module used to define (PROGRAM, GemmKernel):
    the module's own names are reserved (`_` + capital), so the library still imports and runs."""
    repo = tmp_path / "repo"
    repo.mkdir()
    names = ["PROGRAM", "GemmKernel", "TUNED"]
    specs = []
    for n in names:
        p = repo / f"{n}.yaml"
        p.write_text(GEMM.read_text().replace("name: gemm_bias_gelu", f"name: {n}"))
        specs.append(str(p))
    assert main(["emit", *specs, "--out", str(repo / "kernels")]) == 0
    probe = ("import torch, kernels\n"
             f"for n in {names!r}:\n"
             "    f = getattr(kernels, n)\n"
             "    A = torch.randn(40, 32, dtype=torch.float16); W = torch.randn(40, 32, dtype=torch.float16).mT\n"
             "    y = f(A=A, B=W, bias=torch.randn(40))\n"
             "    assert y.shape == (40, 40) and not y.isnan().any(), n\n"
             "print('ok')\n")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": f"{repo}{os.pathsep}{ROOT}"}
    r = subprocess.run([sys.executable, "-c", probe], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_a_tensor_named_like_a_launcher_keyword_is_refused(tmp_path, capsys):
    spec = tmp_path / "g.yaml"
    spec.write_text(GEMM.read_text().replace("bias: {shape", "sizes: {shape").replace("reads: [acc, bias]",
                                                                                        "reads: [acc, sizes]"))
    capsys.readouterr()
    assert main(["emit", str(spec), "--out", str(tmp_path / "lib")]) == 1
    err = capsys.readouterr().err
    assert "tensors.sizes" in err and "rename the tensor" in err and f"{spec}:" in err


def test_python_specs_are_never_run(tmp_path, capsys):
    spec = tmp_path / "evil_spec.py"
    spec.write_text("open('PWNED', 'w').close()\n")
    capsys.readouterr()
    for cmd in (["validate", str(spec)], ["plan", str(spec)], ["run", str(spec)],
                ["emit", str(spec), "--out", str(tmp_path / "lib")]):
        assert main(cmd) == 1
        err = capsys.readouterr().err
        assert "to_yaml" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()
