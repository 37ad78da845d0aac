"""The `tilesched` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tilesched import __version__
from tilesched.errors import SpecError, UserError, located
from tilesched.fsutil import write_atomic

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def schema_text() -> str:
    from tilesched.spec.models import Spec

    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "tilesched spec"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def cmd_schema(args) -> int:
    text = schema_text()
    if args.output:
        write_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _generation_line(prog, source) -> str:
    """What `validate` and `plan` say about generating a valid spec for its target."""
    from tilesched.targets import generation_problem

    problem = generation_problem(prog)
    if problem is None:
        return f"  {prog.target}: generates it"
    return f"  {prog.target}: cannot generate it yet: {str(problem.located(source)).splitlines()[0]}"


def cmd_validate(args) -> int:
    from tilesched import load_with_source

    status = EXIT_OK
    for path in args.specs:
        try:
            prog, source = load_with_source(path)
        except SpecError as exc:
            print(exc, file=sys.stderr)
            status = EXIT_INVALID
            continue
        print(f"{path}: ok ({prog.name}, {prog.target}, {len(prog.stages)} stages, {len(prog.params)} params)")
        print(_generation_line(prog, source))
    return status


def _materialized_plan(prog, binding) -> str | None:
    """A point of the materialising schedule runs two kernels: both schedules (else None)."""
    from tilesched.passes.materialize import bind_parts, split
    from tilesched.schedules.plan import derive_schedule, format_schedule

    if prog.target != "cuda" or not binding.option("materialize", False):
        return None
    sp = split(prog)
    if sp is None:
        return None
    out = [f"materialized: {sp.operand} computed once per call into workspace {sp.workspace} "
           f"({', '.join(prog.tensor(sp.operand).shape)}), then the rest of the spec on it"]
    out += [format_schedule(derive_schedule(part)) for part in bind_parts(sp, binding)]
    return "\n".join(out)


def _factored_lines(binding) -> list[str]:
    """Dots whose operand chain leaves the sum at this point (tilesched/passes/factor.py)."""
    if binding.program.target != "cuda":
        return []
    from tilesched.passes.factor import factored_at

    prog = binding.program
    red = next((lp.axis for lp in prog.loops if lp.kind == "reduction"), None)
    lines = []
    for operand, stage in factored_at(binding):
        chain = next(s for s in prog.stages if operand in s.writes)
        lines.append(f"factored: {stage} multiplies {chain.reads[0]} as loaded and applies {chain.name}'s factors once "
                     f"per {red} tile and column (CUDA cores, one multiply-add per element)")
    return lines


def _scheduled(binding, option: str, why_not):
    """The kernel IR of a CUDA point that takes the optional schedule `option`, else None (a point
    that sets it on a kernel without the schedule's shape is refused by the launcher, which says why)."""
    if binding.program.target != "cuda" or not binding.option(option, False):
        return None
    from tilesched.passes.gpu import lower_kernel

    k = lower_kernel(binding.program)
    return k if why_not(k) is None else None


def _register_operand_lines(binding) -> list[str]:
    """A point of the register-operand schedule (tilesched/passes/register_operand.py) says so, and
    on which instruction (the row tile picks it, or the option's value)."""
    from tilesched.passes.kernel import producer
    from tilesched.passes.register_operand import (
        WGMMA_COLUMNS,
        byte_weights,
        takes_wgmma,
        ten_weights,
        the_dot,
        why_not,
    )

    k = _scheduled(binding, "register_operand", why_not)
    if k is None:
        return []
    dot = the_dot(k)
    w = producer(k, dot.args[2]).tensor
    x = producer(k, next(n for n in dot.args[:2] if n != dot.via)).tensor
    chain = next(s.name for s in binding.program.stages if dot.via in s.writes)
    rows = k.value(dot.out).axes[0]
    if not takes_wgmma(binding.option("register_operand", False), binding.tile(rows)):
        return [f"register operand: {dot.stage} runs on mma.sync with {w}'s words loaded straight into its register "
                f"operand and {chain}'s factors applied once per {k.reduction} tile (a Gluon kernel: GPU only)"]
    stored = "bytes" if byte_weights(k) else "words"
    split = int(binding.option("split_k", 1) or 1)
    return [f"register operand: {dot.stage} runs on wgmma; a loader warp brings {x}'s tiles and {w}'s {stored} by TMA "
            f"into {binding.option('num_stages', 3)} slots, a consumer warpgroup per {WGMMA_COLUMNS} columns runs "
            f"{chain} on the {stored} in registers as wgmma's first operand"
            + (" (ten values a word: each K tile decoded by its offset in its first word, five tiles a step)"
               if ten_weights(k) else "")
            + (f"; {split} shares of {k.reduction} meet through a counter per consumer thread" if split > 1 else "")
            + " (a Gluon kernel: Hopper GPUs only)"]


def _launch_order_lines(binding) -> list[str]:
    """A CUDA kernel whose grid launches its tiles last first (tilesched/passes/heavy_first.py) says so."""
    if binding.program.target != "cuda" or any(s.kind == "comm" for s in binding.program.stages):
        return []
    from tilesched.passes.gpu import lower_kernel

    try:
        k = lower_kernel(binding.program)
    except SpecError:  # the generation line below says why
        return []
    if not k.descending:
        return []
    return [f"launch order: {k.grid[0]} tiles last first (the mask keeps more of {k.reduction} for later ones: "
            "the heaviest run first, the last wave ends on light tiles)"]


def _warp_specialize_lines(binding) -> list[str]:
    """A point of the warp-specialised schedule (tilesched/passes/warp_specialize.py) says so."""
    from tilesched.passes.warp_specialize import why_not

    k = _scheduled(binding, "warp_specialize", why_not)
    if k is None:
        return []
    load_k, scores, softmax, load_v, context = k.loop
    return [f"warp specialised: a loader warp brings {load_k.tensor} and {load_v.tensor} tiles by TMA into "
            f"{binding.option('num_stages', 3)} slots; two consumer warpgroups of 64 {k.grid[0]} rows run {softmax.stage} "
            f"while {context.stage}'s MMA is in flight (a Gluon kernel: Hopper GPUs only)"
            + (f"; persistent: one CTA an SM {'claims' if k.claim_tiles else 'walks'} the {k.grid[0]} tiles of every "
               f"{' and '.join(k.points) or 'point'}{' from a counter, heaviest first' if k.claim_tiles else ''}"
               + (f" (across groups of {' and '.join(k.points)} whose {load_k.tensor} and {load_v.tensor} fit "
                  f"{k.claim_span >> 20} MiB where each CTA takes {k.claim_rounds} tiles or fewer)"
                  if k.claim_tiles and k.claim_span else "")
               + ", "
               "loading the next tile's while it finishes one" if binding.option("persistent", False) else "")]


def _bind_cli(prog, values: dict, source):
    """The point `--set` names; where the defaults of the parameters it leaves free do not fit its
    sizes, the nearest legal point (as the launcher picks), said in one line."""
    from tilesched.ir.fit import bind_fitting

    binding = bind_fitting(prog, values, source)
    moved = {p.name: binding.params[p.name] for p in prog.params
             if p.name not in values and binding.params[p.name] != p.default}
    if moved:
        print("note: the spec's defaults do not fit these sizes; nearest legal point: "
              + " ".join(f"{k}={v}" for k, v in moved.items()))
    return binding


def cmd_plan(args) -> int:
    from tilesched import load_with_source
    from tilesched.ir.bind import parse_assignments
    from tilesched.schedules.limits import limit_problem
    from tilesched.schedules.plan import derive_schedule, format_schedule

    try:
        prog, source = load_with_source(args.spec)
        binding = _bind_cli(prog, parse_assignments(args.set or []), source)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    over = limit_problem(binding)
    if over is not None:  # nothing below is worth doing for a point that cannot fit the hardware
        print(over.located(source), file=sys.stderr)
        return EXIT_INVALID
    schedule = derive_schedule(binding)
    print(_materialized_plan(prog, binding) or format_schedule(schedule))
    for line in (_factored_lines(binding) + _register_operand_lines(binding) + _warp_specialize_lines(binding)
                 + _launch_order_lines(binding)):
        print(line)
    print(_generation_line(prog, source).strip())
    if getattr(args, "dump_ir", False):
        from tilesched.ir.looptree import build_tree, dump_tree

        if prog.target == "cuda" and not any(s.kind == "comm" for s in prog.stages):
            from tilesched.passes.gpu import dump_passes

            with located(source):
                print(dump_passes(prog), end="")
        else:
            print("=== looptree\n" + dump_tree(build_tree(prog)), end="")
    if prog.target.startswith("cortex-m"):  # MCU specs: the SRAM arena plan and its timeline
        from tilesched.schedules.memory import format_memory_plan, plan_memory

        try:
            mplan = plan_memory(binding)
            print(format_memory_plan(mplan))
        except SpecError as exc:
            print(f"memory plan: none ({exc.located(source)})")
        else:
            from tilesched.backends.cortexm.session import kernel_macs, once_macs

            done, once = kernel_macs(mplan), once_macs(mplan)
            print(f"MACs the C executes: {done} ({once} computing every point once, {done - once} "
                  "recomputing halo rows)")
    if args.json:
        write_atomic(args.json, json.dumps(schedule.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
        print(f"wrote {args.json}")
    if getattr(args, "trace", None):
        from tilesched.schedules.overlap import OverlapError, chrome_trace, predicted_makespan_us, timeline_for

        try:
            events = timeline_for(binding)
        except OverlapError as exc:
            print(f"{args.spec}: {exc}", file=sys.stderr)
            return EXIT_INVALID
        write_atomic(args.trace, chrome_trace(events, prog.name))
        print(f"wrote {args.trace} (predicted timeline, {predicted_makespan_us(events):.1f} us)")
    return EXIT_OK


def cmd_run(args) -> int:
    """Execute a spec on random inputs and check it against the spec's semantics (the oracle).

    Dispatches on the spec's target to the backend module's `run_cli(binding, args)`."""
    from tilesched import load_with_source
    from tilesched.ir.bind import parse_assignments
    from tilesched.schedules.limits import check_limits
    from tilesched.targets import check_generatable, runner

    prog, source = load_with_source(args.spec)
    with located(source):
        check_generatable(prog)
        binding = _bind_cli(prog, parse_assignments(args.set or []), source)
        check_limits(binding)
        try:
            backend = runner(prog.target)
        except ImportError as exc:
            print(f"{args.spec}: the {prog.target} backend cannot be loaded: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return backend.run_cli(binding, args)


def cmd_emit(args) -> int:
    from tilesched.library.emit import emit, outside_project, project_root

    changed = emit(list(args.specs), args.out, args.lock, args.name, force=args.force)
    for path in outside_project(args.out, [*args.specs, *([args.lock] if args.lock else [])]):
        print(f"note: {path} lies outside {project_root(args.out)}: `tilesched check` reads a library's "
              "inputs only from its own repository and will refuse this one", file=sys.stderr)
    print(f"{args.out}: {len(changed)} file(s) written" + (": " + ", ".join(changed) if changed else " (up to date)"))
    return EXIT_OK


def cmd_check(args) -> int:
    """Exit 0 when the library is up to date, 1 when stale, 2 on error (for downstream CI)."""
    from tilesched.library.emit import check

    try:
        result = check(args.dir)
    except (SpecError, UserError, OSError) as exc:  # check's contract: 2 for every error (a broken lock too)
        if args.debug:
            raise
        print(exc if isinstance(exc, SpecError) else f"tilesched check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if result.up_to_date:
        print(f"{args.dir}: up to date")
        return EXIT_OK
    print(f"{args.dir}: stale; run the `tilesched emit` command named in the file headers", file=sys.stderr)
    for path, why in result.stale:
        print(f"  {path}: {why}", file=sys.stderr)
    return 1


def examples_dir() -> Path:
    """The example specs shipped with the source tree."""
    return Path(__file__).resolve().parent.parent / "configs"


DEMO_RUNS = (
    ("gemm_bias_gelu.yaml", ["M=200", "N=300", "K=128"]),  # Triton; interpreter without a GPU
    ("mcu_inverted_bottleneck.yaml", ["H=24", "W=24"]),  # CMSIS C under QEMU
)


def cmd_demo(args) -> int:
    """The no-GPU smoke run: validate and plan every example spec, then generate, run and check
    one GEMM (Triton interpreter without a GPU) and one MCU block (QEMU)."""
    specs = sorted(examples_dir().glob("*.yaml"))
    if not specs:
        print(f"no example specs under {examples_dir()}", file=sys.stderr)
        return EXIT_USAGE
    status = cmd_validate(argparse.Namespace(specs=specs))
    for spec in specs:
        print()
        status = max(status, cmd_plan(argparse.Namespace(spec=spec, set=[], json=None, trace=None, dump_ir=False)))
    for name, sizes in DEMO_RUNS:
        print(f"\n$ tilesched run configs/{name} " + " ".join(f"--set {s}" for s in sizes))
        sys.stdout.flush()
        status = max(status, cmd_run(argparse.Namespace(spec=examples_dir() / name, set=sizes, seed=None, json=None)))
    return status


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tilesched", description="Declarative tile schedules with an autotuner.")
    p.add_argument("--version", action="version", version=f"tilesched {__version__}")
    p.add_argument("--debug", action="store_true", help="show a traceback on failure")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("schema", help="write the JSON Schema of the spec language")
    s.add_argument("-o", "--output", help="file to write (default: stdout)")
    s.set_defaults(func=cmd_schema)

    s = sub.add_parser("validate", help="check specs; prints file:line:col errors")
    s.add_argument("specs", nargs="+", type=Path)
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("demo", help="validate and plan the example specs (no GPU needed)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("plan", help="print the derived schedule of a spec")
    s.add_argument("spec", type=Path)
    s.add_argument("--set", action="append", metavar="NAME=VALUE", help="bind an axis or parameter (repeatable)")
    s.add_argument("--json", type=Path, help="also write the schedule as JSON")
    s.add_argument("--trace", type=Path, help="also write the predicted timeline as Chrome trace JSON")
    s.add_argument("--dump-ir", action="store_true", help="also print the tile IR after every lowering pass")
    s.set_defaults(func=cmd_plan)
    s = sub.add_parser("emit", help="render a kernel library (Python package or C library) from specs")
    s.add_argument("specs", nargs="+", type=Path)
    s.add_argument("--out", type=Path, required=True, help="library directory")
    s.add_argument("--lock", type=Path, help="lock file of tuned parameters (default: spec defaults)")
    s.add_argument("--name", help="package / library name (default: the directory name)")
    s.add_argument("--force", action="store_true",
                   help="write into a non-empty folder that is not a tilesched library (its other files stay)")
    s.set_defaults(func=cmd_emit)

    s = sub.add_parser("check", help="exit 0 if an emitted library is up to date, 1 if stale, 2 on error")
    s.add_argument("dir", type=Path)
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("run", help="run a spec on random inputs and check it against a numpy reference")
    s.add_argument("spec", type=Path)
    s.add_argument("--set", action="append", metavar="NAME=VALUE", help="bind an axis or parameter (repeatable)")
    s.add_argument("--seed", type=int, default=None, help="input seed (default: fresh)")
    s.add_argument("--json", type=Path, help="also write the run report as JSON")
    s.set_defaults(func=cmd_run)
    __import__("tilesched.tuner.cli", fromlist=["register"]).register(sub)  # tune, studies
    return p


def main(argv: list[str] | None = None) -> int:
    """Every failure ends as one line on stderr: exit 1 for invalid input (specs, lock files,
    manifests, values), 2 for errors (file system, toolchain, storage, internal), never a
    traceback unless `--debug` asks for one."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SpecError as exc:
        if args.debug:
            raise
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    except UserError as exc:
        if args.debug:
            raise
        print(f"tilesched {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"tilesched {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if args.debug:
            raise
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) not in str(exc) else ""
        print(f"tilesched {args.command}: {exc}{where}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, exit 2
        if args.debug:
            raise
        first = (str(exc).splitlines() or [""])[0][:300]
        print(f"tilesched {args.command}: internal error: {type(exc).__name__}: {first} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
