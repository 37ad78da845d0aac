"""Cross-compile a rendered program with arm-none-eabi-gcc against CMSIS-DSP and run it under
QEMU's MPS2 boards with semihosting.

CMSIS-DSP comes from PyPI's `cmsisdsp` source distribution, fetched once into the cache
(`$TILESCHED_CACHE`, default ~/.cache/tilesched); only the few .c files the kernels call are
compiled. CMSIS-Core is not on PyPI: support/cmsis_compiler.h maps the intrinsics onto ACLE.

Latency proxy: QEMU runs with `-icount shift=0`, so each guest instruction advances virtual
time by exactly 1 ns; SysTick counts the 25 MHz core clock of the MPS2 boards in that
virtual time, so instructions = SysTick ticks x 40 (resolution 40 instructions). It counts
executed instructions, not cycles (QEMU models no pipeline or memory timing).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CMSISDSP_VERSION = "1.10.3"
CMSIS_SOURCES = ("Source/BasicMathFunctions/arm_dot_prod_q7.c",)
SUPPORT = Path(__file__).resolve().parent / "support"
NS_PER_TICK = 40  # MPS2 core clock 25 MHz
COUNTER = "qemu-icount-instructions"

TARGETS = {
    "cortex-m4": {"cflags": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
                  "machine": "mps2-an386", "cpu": "cortex-m4"},
    "cortex-m7": {"cflags": ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"],
                  "machine": "mps2-an500", "cpu": "cortex-m7"},
}


class BuildError(RuntimeError):
    """The toolchain, CMSIS-DSP or QEMU failed; `stage` says which."""

    def __init__(self, stage: str, msg: str):
        super().__init__(f"{stage}: {msg}")
        self.stage = stage


def cache_dir() -> Path:
    return Path(os.environ.get("TILESCHED_CACHE", Path.home() / ".cache" / "tilesched"))


def cmsisdsp_root() -> Path:
    """The unpacked cmsisdsp sdist, fetched with pip on first use."""
    root = cache_dir() / f"cmsisdsp-{CMSISDSP_VERSION}"
    if (root / "Include" / "arm_math.h").is_file():
        return root
    cache_dir().mkdir(parents=True, exist_ok=True)
    sdist = cache_dir() / f"cmsisdsp-{CMSISDSP_VERSION}.tar.gz"
    if not sdist.is_file():
        cmd = [shutil.which("python3") or "python3", "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--no-build-isolation", "-q", "-d", str(cache_dir()), f"cmsisdsp=={CMSISDSP_VERSION}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not sdist.is_file():
            raise BuildError("cmsis", f"cannot fetch the cmsisdsp=={CMSISDSP_VERSION} sdist from PyPI (offline?); "
                                      f"put {sdist.name} into {cache_dir()}\n{r.stderr[-800:]}")
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp, tarfile.open(sdist) as tf:
        members = [m for m in tf.getmembers() if re.match(rf"cmsisdsp-{CMSISDSP_VERSION}/(Include|PrivateInclude|Source)/",
                                                          m.name)]
        tf.extractall(tmp, members=members, filter="data")
        if not root.exists():
            os.replace(Path(tmp) / root.name, root)
    return root


def toolchain_problem() -> str | None:
    for tool in ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm"):
        if shutil.which(tool) is None:
            return f"{tool} not found (scripts/setup.sh installs gcc-arm-none-eabi and qemu-system-arm)"
    return None


@dataclass(frozen=True)
class RunResult:
    output: np.ndarray  # int8 bytes the program wrote
    instructions: int
    stack_bytes: int
    static_ram_bytes: int  # .data + .bss (the arena included), excluding the reserved stack
    text_bytes: int  # code + constants (flash)
    arena_bytes: int
    elf: Path


def compile_program(kernel_c: str, data_h: str, target: str, workdir: Path) -> Path:
    t = TARGETS[target]
    root = cmsisdsp_root()
    (workdir / "kernel.c").write_text(kernel_c)
    (workdir / "ts_data.h").write_text(data_h)
    cmd = ["arm-none-eabi-gcc", "-O2", "-std=gnu11", "-Wall", "-ffunction-sections", "-fdata-sections",
           "-ffp-contract=off", *t["cflags"], "-DARM_MATH_LOOPUNROLL", f"-I{SUPPORT}", f"-I{root / 'Include'}",
           f"-I{root / 'PrivateInclude'}", f"-I{workdir}", "--specs=rdimon.specs", "-nostartfiles",
           "-Wl,--gc-sections", f"-T{SUPPORT / 'link.ld'}", f"-Wl,-Map={workdir / 'prog.map'}",
           str(SUPPORT / "startup.c"), str(workdir / "kernel.c"), *(str(root / s) for s in CMSIS_SOURCES),
           "-lm", "-o", str(workdir / "prog.elf")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if r.returncode != 0:
        raise BuildError("compile", r.stderr[-3000:])
    return workdir / "prog.elf"


def section_sizes(elf: Path) -> dict[str, int]:
    r = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True, check=True)
    out = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def run_elf(elf: Path, target: str, timeout: float = 120.0) -> tuple[bytes, dict[str, int]]:
    t = TARGETS[target]
    cmd = ["qemu-system-arm", "-machine", t["machine"], "-cpu", t["cpu"], "-nographic", "-monitor", "none",
           "-serial", "none", "-semihosting-config", "enable=on,target=native", "-icount", "shift=0",
           "-kernel", str(elf)]
    out_file = elf.parent / "out.bin"
    out_file.unlink(missing_ok=True)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=elf.parent, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BuildError("timeout", f"qemu did not finish in {timeout:.0f} s") from exc
    m = re.search(r"TS_STATS ticks=(\d+):(\d+) stack=(\d+) arena=(\d+)", r.stdout)
    if r.returncode != 0 or m is None or not out_file.is_file():
        raise BuildError("run", f"qemu exit {r.returncode}: {(r.stdout + r.stderr)[-1500:]}")
    ticks = (int(m[1]) << 32) | int(m[2])
    return out_file.read_bytes(), {"instructions": ticks * NS_PER_TICK, "stack": int(m[3]), "arena": int(m[4])}


def build_and_run(kernel_c: str, data_h: str, target: str, workdir: Path | None = None) -> RunResult:
    problem = toolchain_problem()
    if problem:
        raise BuildError("toolchain", problem)
    with tempfile.TemporaryDirectory(prefix="tilesched-mcu-") as tmp:
        wd = Path(workdir or tmp)
        wd.mkdir(parents=True, exist_ok=True)
        elf = compile_program(kernel_c, data_h, target, wd)
        sizes = section_sizes(elf)
        raw, stats = run_elf(elf, target)
        return RunResult(output=np.frombuffer(raw, dtype=np.int8).copy(), instructions=stats["instructions"],
                         stack_bytes=stats["stack"], static_ram_bytes=sizes.get(".data", 0) + sizes.get(".bss", 0),
                         text_bytes=sizes.get(".text", 0), arena_bytes=stats["arena"], elf=elf)
