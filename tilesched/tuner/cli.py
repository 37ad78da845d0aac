"""`tilesched tune` and `tilesched studies`."""

from __future__ import annotations

import sys
from pathlib import Path

from tilesched.errors import InvalidInput, SpecError

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.6g}"


def cmd_tune(args) -> int:
    import optuna

    from tilesched import load_with_source
    from tilesched.ir.bind import parse_assignments
    from tilesched.tuner.campaign import Campaign
    from tilesched.tuner.lockfile import LockFile

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_tune_args(args)
    # a bad lock file must stop us before the campaign, not when its winner is written
    lock_path = Path(args.lock)
    LockFile.read(lock_path)
    try:
        prog, _source = load_with_source(args.spec)
        values = parse_assignments(args.set or [])
        axes = {a.name for a in prog.axes}
        sizes = {k: v for k, v in values.items() if k in axes}
        pinned = {k: v for k, v in values.items() if k not in axes}
        from tilesched.tuner.space import Space

        space = Space(prog, sizes, pinned)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    from tilesched.targets import generation_problem

    problem = generation_problem(prog)
    if problem is not None:  # tuning a kernel that cannot be generated would only collect failures
        print(problem.located(_source), file=sys.stderr)
        return EXIT_INVALID
    if not space.legal_points:
        from tilesched.schedules.limits import limit_problem

        over = limit_problem(space.bind({}))  # the usual reason: the shape itself exceeds a limit
        why = f": {over.diagnostics[0].message}" if over is not None else ""
        print(f"{args.spec}: no legal point in the search space at {space.sizes}{why}", file=sys.stderr)
        return EXIT_INVALID
    try:
        camp = Campaign(space, args.objective, storage=args.storage, study_name=args.study, seed=args.seed,
                        timeout_s=args.timeout, spec_path=str(args.spec), warm_k=args.warm_k)
    except (ValueError, ImportError) as exc:
        print(f"tilesched tune: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from tqdm import tqdm

    print(f"study {camp.study_name} in {camp.storage_url}: {len(space.legal_points)} legal points")
    # disable=None: no bar when stderr is not a terminal (CI logs), unless --quiet asks for none at all
    bar = tqdm(total=args.trials, unit="trial", file=sys.stderr, disable=True if args.quiet else None)
    done = [len(camp.completed())]
    bar.update(min(done[0], args.trials))

    def progress(ev):
        if ev.evaluated > done[0]:
            bar.update(ev.evaluated - done[0])
            done[0] = ev.evaluated
        bar.set_postfix_str(f"best {_fmt(ev.best)}  last {ev.kind}")

    res = camp.run(args.trials, progress)
    bar.close()
    unit = "ms" if not camp.mcu else "cycles"
    print(f"evaluated {res.evaluated} trials ({res.failed} failed)")
    if res.evaluated < args.trials:  # the campaign stops early only when every legal point is done
        print(f"the search space has {len(space.legal_points)} legal points: all evaluated (asked for {args.trials})")
    if res.best_params is None:
        why = " within the SRAM budget" if camp.mcu else ""
        print(f"no successful trial{why}: lock file not written", file=sys.stderr)
        return EXIT_INVALID
    print(f"best {_fmt(res.best_values[0])} {unit}: " + " ".join(f"{k}={v}" for k, v in res.best_params.items()))
    if camp.mcu:
        print(f"Pareto front ({len(res.pareto)} feasible points, cycles vs peak SRAM, budget {camp.budget} B):")
        for p in res.pareto:
            print(f"  {_fmt(p['values'][0])} cycles  {int(p['values'][1])} B  "
                  + " ".join(f"{k}={v}" for k, v in p["params"].items()))
    # read again: other campaigns may have added their buckets meanwhile
    lock = LockFile.read(lock_path).with_entry(camp.lock_entry())
    changed = lock.write(lock_path)
    print(f"{'wrote' if changed else 'unchanged'} {lock_path}")
    if args.plot:
        from tilesched.tuner.plots import plot_campaign

        for p in plot_campaign(camp, Path(args.plot)):
            print(f"wrote {p}")
    return EXIT_OK


def check_tune_args(args) -> None:
    """Numbers argparse accepts but a campaign cannot use."""
    if args.trials < 1:
        raise InvalidInput(f"--trials {args.trials}: must be at least 1")
    if not args.timeout > 0:  # also NaN
        raise InvalidInput(f"--timeout {args.timeout:g}: must be a positive number of seconds")
    if args.warm_k is not None and args.warm_k < 0:
        raise InvalidInput(f"--warm-k {args.warm_k}: must be 0 or more")


def cmd_studies(args) -> int:
    import optuna
    from optuna.trial import TrialState

    from tilesched.tuner.campaign import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(args.storage)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    if not summaries:
        print("no studies")
        return EXIT_OK
    rows = [("study", "spec", "objective", "done", "failed", "best")]
    for s in sorted(summaries, key=lambda s: s.study_name):
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        ev = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("evaluated")]
        ok = [t for t in ev if t.state == TrialState.COMPLETE
              and all(c <= 0 for c in t.user_attrs.get("constraint", [0.0]))]
        best = min((t.values[0] for t in ok), default=None)
        rows.append((s.study_name, str(s.user_attrs.get("spec", "?")), str(s.user_attrs.get("objective", "?")),
                     str(len(ev)), str(sum(t.state == TrialState.FAIL for t in ev)), _fmt(best)))
        if args.plot:
            from tilesched.tuner.plots import plot_study

            plot_study(study, Path(args.plot))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if args.plot:
        print(f"plots in {args.plot}")
    return EXIT_OK


def cmd_tune_fusion(args) -> int:
    """Cortex-M whole networks: fusion boundaries, halo mode and loop tiles (tuner/mcu_fusion.py)."""
    import json

    from tilesched import load_with_source
    from tilesched.fsutil import write_atomic
    from tilesched.ir.bind import bind, parse_assignments
    from tilesched.tuner import mcu_fusion as mf

    try:
        prog, source = load_with_source(args.spec)
        if not prog.target.startswith("cortex-m"):
            raise InvalidInput(f"{args.spec}: tune-fusion searches Cortex-M specs, not {prog.target}")
        b = bind(prog, parse_assignments(args.set or []), source)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    points = mf.search(b, halos=tuple(args.halo), params=[dict(b.params)] if args.set_params else None, log=log)
    budget = prog.limits.sram_bytes
    fits = [p for p in points if budget is None or p.peak_bytes <= budget]
    low = points[0]
    print(f"{len(points)} points planned; lowest peak {low.peak_bytes} B ({low.macs} MACs) "
          f"fuse={low.fuse} halo={low.halo} {dict(low.params)}; {len(fits)} within sram_bytes {budget}")
    measured = mf.measure_front(b, points, k=args.measure, seed=args.seed, log=log) if args.measure else []
    front = mf.pareto(measured)
    if measured:
        print(f"Pareto front ({len(front)} of {len(measured)} measured points, peak SRAM vs QEMU instructions):")
        for p in front:
            print(f"  {p.peak_bytes:>9} B  {p.instructions:>12} instructions  {p.macs:>12} MACs  "
                  f"fuse={p.fuse} halo={p.halo} {dict(p.params)}")
        if not all(p.bit_exact for p in measured):
            print("some measured points were not bit-exact against the oracle", file=sys.stderr)
            return EXIT_INVALID
    if args.json:
        doc = {"spec": str(args.spec), "sizes": {a.name: b.sizes[a.name] for a in prog.axes if a.symbolic},
               "sram_bytes": budget, "points": [p.as_dict() for p in points],
               "measured": [p.as_dict() for p in measured], "pareto": [p.as_dict() for p in front]}
        write_atomic(args.json, json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return EXIT_OK if fits else EXIT_INVALID


def register(sub) -> None:
    """Add `tune` and `studies` to the `tilesched` sub-command parsers."""
    s = sub.add_parser("tune", help="tune a spec's parameters with Optuna (resumable) and write the lock file")
    s.add_argument("spec", type=Path)
    s.add_argument("--trials", type=int, required=True, help="evaluated trials the campaign should reach in total")
    s.add_argument("--storage", help="Optuna RDB URL (default: sqlite:///.tilesched/studies.db)")
    s.add_argument("--objective", choices=("measure", "model"), default="measure")
    s.add_argument("--set", action="append", metavar="NAME=VALUE", help="bind an axis or pin a parameter")
    s.add_argument("--lock", default="tilesched.lock.json", help="lock file to update (default: %(default)s)")
    s.add_argument("--study", help="study name (default: SPEC[bucket]-OBJECTIVE)")
    s.add_argument("--seed", type=int, default=None, help="sampler seed")
    s.add_argument("--timeout", type=float, default=300.0, help="per-trial timeout in seconds")
    s.add_argument("--warm-k", type=int, default=None, help="cost-model points enqueued first")
    s.add_argument("--plot", type=Path, help="write PNG plots of the history (and Pareto front) here")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_tune)
    s = sub.add_parser("tune-fusion", help="Cortex-M: search fusion boundaries, halo mode and loop tiles of a "
                                           "whole network under limits.sram_bytes (Pareto: peak SRAM vs instructions)")
    s.add_argument("spec", type=Path)
    s.add_argument("--set", action="append", metavar="NAME=VALUE", help="bind an axis or pin a parameter")
    s.add_argument("--set-params", action="store_true", help="keep the parameters at the bound values (no tile search)")
    s.add_argument("--halo", nargs="+", choices=("cache", "recompute"), default=["cache"], help="halo modes to search")
    s.add_argument("--measure", type=int, default=4, metavar="K",
                   help="points run under QEMU for the Pareto front (0: plan only; default %(default)s)")
    s.add_argument("--seed", type=int, default=None, help="input seed of the measured runs (default: fresh)")
    s.add_argument("--json", type=Path, help="write every point, the measured ones and the front")
    s.add_argument("--quiet", action="store_true", help="no per-point log")
    s.set_defaults(func=cmd_tune_fusion)
    s = sub.add_parser("studies", help="list tuning campaigns in a storage")
    s.add_argument("--storage", help="Optuna RDB URL (default: sqlite:///.tilesched/studies.db)")
    s.add_argument("--plot", type=Path, nargs="?", const=Path("tilesched-plots"),
                   help="also write PNG plots of every study (default dir: tilesched-plots)")
    s.set_defaults(func=cmd_studies)
