"""Render an emitted Cortex-M C library: per spec a kernel translation unit with a
`<name>_run(input, output)` entry and a self-test, plus the support files and a Makefile.

The memory scheduler decides every offset; this module only lays out files. The self-test
data (weights, quantisation, input and the exact expected output) is drawn from a seed
derived from the spec's hash, so it is reproducible and emission stays byte-identical.
"""

from __future__ import annotations

from pathlib import Path

from tilesched.backends.cortexm import build, session
from tilesched.errors import SpecError, located
from tilesched.ir.bind import Binding, bind
from tilesched.schedules.limits import check_arena, check_limits
from tilesched.schedules.memory import plan_memory
from tilesched.tuner.lockfile import LockFile

HERE = Path(__file__).resolve().parent
# what the generated C depends on besides the spec: the lowering, the rules that render it, the support files
TEMPLATE_DIRS = [HERE / "support", HERE / "c_rules.py", HERE / "render.py", HERE.parent.parent / "passes" / "mcu.py",
                 HERE.parent.parent / "passes" / "mcu_ir.py", HERE.parent.parent / "ir" / "looptree.py",
                 HERE.parent.parent / "schedules" / "memory.py"]
SUPPORT_FILES = ("ts_runtime.h", "ts_kernels.h", "cmsis_compiler.h", "startup.c", "link.ld")


def library_binding(unit) -> Binding:
    """The spec at its default sizes, with the lock file's parameters for that shape (its bucket's
    entry, else the nearest bucket's, as the CUDA launcher picks them) when they are legal there."""
    program = unit.program
    sizes = {a.name: a.hint for a in program.axes if a.symbolic and a.hint is not None}
    entry = LockFile(entries=unit.lock_entries).select(program, sizes)
    if entry is not None:
        try:
            return bind(program, {**sizes, **entry.params})
        except SpecError:
            pass  # tuned for a bucket whose tiles do not fit this shape: the defaults, as on CUDA
    return bind(program, sizes)


def _seed(unit) -> int:
    from tilesched.ir.hashing import content_hash

    return int(content_hash(unit.program)[:8], 16)


def _header(name: str, plan, wl) -> str:
    guard = f"{name.upper()}_H"
    return (
        f"#ifndef {guard}\n#define {guard}\n#include <stdint.h>\n\n"
        f"/* SRAM arena this layer needs (activations, input and output included). */\n"
        f"#define {name.upper()}_ARENA_BYTES {plan.peak_bytes}\n"
        f"#define {name.upper()}_INPUT_BYTES {wl.x.size}\n"
        f"#define {name.upper()}_OUTPUT_BYTES {wl.expected.size}\n\n"
        f"int {name}_run(const int8_t *input, int8_t *output);\n\n#endif\n"
    )


def _makefile(units_info: list[tuple[str, str]]) -> str:
    lines = [
        "# Build and run the self-tests under QEMU: `make test`.",
        "# CMSIS-DSP: point CMSISDSP at an unpacked `cmsisdsp==" + build.CMSISDSP_VERSION + "` sdist",
        "# (pip download --no-deps --no-binary :all: cmsisdsp==" + build.CMSISDSP_VERSION + ").",
        "CMSISDSP ?= $(HOME)/.cache/tilesched/cmsisdsp-" + build.CMSISDSP_VERSION,
        "CC = arm-none-eabi-gcc",
        "CFLAGS = -O2 -std=gnu11 -Wall -ffunction-sections -fdata-sections -ffp-contract=off -DARM_MATH_LOOPUNROLL \\",
        "\t-Isupport -I$(CMSISDSP)/Include -I$(CMSISDSP)/PrivateInclude",
        "LDFLAGS = --specs=rdimon.specs -nostartfiles -Wl,--gc-sections -Tsupport/link.ld -lm",
        "CMSIS_SRCS = " + " ".join(f"$(CMSISDSP)/{s}" for s in build.CMSIS_SOURCES),
    ]
    for target, t in sorted(build.TARGETS.items()):
        var = target.replace("-", "_").upper()
        lines.append(f"ARCH_{var} = {' '.join(t['cflags'])}")
        lines.append(f"QEMU_{var} = qemu-system-arm -machine {t['machine']} -cpu {t['cpu']} -nographic "
                     "-monitor none -serial none -semihosting-config enable=on,target=native")
    elfs = " ".join(f"{n}.elf" for n, _ in units_info)
    lines += ["", f"all: {elfs}", ""]
    for name, target in units_info:
        var = target.replace("-", "_").upper()
        lines += [
            f"{name}.elf: {name}/{name}.c {name}/{name}.h {name}/ts_data.h support/startup.c",
            f"\t$(CC) $(CFLAGS) $(ARCH_{var}) -DTS_SELFTEST -I{name} support/startup.c {name}/{name}.c "
            f"$(CMSIS_SRCS) $(LDFLAGS) $(ARCH_{var}) -o $@",
            "",
        ]
    lines.append("test: all")
    for name, target in units_info:
        var = target.replace("-", "_").upper()
        lines.append(f"\tcd {name} && $(QEMU_{var}) -kernel ../{name}.elf")
    lines += ["", "clean:", f"\trm -f {elfs} */out.bin", "", ".PHONY: all test clean"]
    return "\n".join(lines) + "\n"


def render(units, package: str) -> dict[str, str]:
    files: dict[str, str] = {}
    info = []
    for unit in units:
        name = unit.program.name
        with located(unit.source):
            b = library_binding(unit)
            check_limits(b)
            plan = plan_memory(b)
            check_arena(b, plan.peak_bytes)
        wl = session.make_workload(b, _seed(unit))
        kernel, data = session.sources(b, wl, plan, expected=True)
        files[f"{name}/{name}.c"] = kernel.replace('#include "ts_data.h"', f'#include "{name}.h"\n#include "ts_data.h"', 1)
        files[f"{name}/{name}.h"] = _header(name, plan, wl)
        files[f"{name}/ts_data.h"] = data
        info.append((name, b.program.target))
    for f in SUPPORT_FILES:
        files[f"support/{f}"] = (build.SUPPORT / f).read_text()
    files["Makefile"] = _makefile(info)
    return files
