"""One tuning campaign: an Optuna study over the legal points of a spec at one shape.

Design (the why):
- Storage is an Optuna RDB (SQLite file by default, any SQLAlchemy URL such as PostgreSQL
  for several workers on several machines); the study is created with `load_if_exists`,
  so running the same command again resumes it. The budget `n_trials` is the campaign's
  total of *evaluated* points across all workers and runs: a resumed or parallel worker
  only adds what is missing, and waits for trials in flight elsewhere before it stops.
  Workers check the count before each trial, so parallel workers that start their last
  trial at the same moment may overshoot by at most (workers - 1) trials.
- Illegal points: the sampler proposes per-parameter categorical values (keeping the
  structure TPE learns from and the parameters optuna-dashboard shows); a proposal that
  breaks a constraint or a tile rule is told as PRUNED with user attr reason="illegal"
  before anything is compiled. TPE ranks pruned trials below completed ones, so it learns
  to avoid the illegal region; they do not count toward the budget.
- Duplicates: a proposal equal to a point already evaluated in the study is answered from
  the study (same values or failure, user attr duplicate_of) without evaluating again.
  After many non-evaluating proposals in a row, a random unevaluated legal point is
  enqueued so the campaign always progresses.
- Failures (compile error, out of resources, wrong result, timeout, an exception in the
  evaluator) are trials in state FAIL with user attrs reason/detail; they count toward the
  budget (they cost an evaluation) and never abort the campaign. A measurement's time
  counts only when Measurement.ok (its correctness check passed).
- Resume after a crash / SIGKILL: a RUNNING trial whose heartbeat (user attr updated while
  it evaluates) is older than the grace period is a zombie: it is marked FAIL with reason
  "interrupted" (evaluated=False, so it does not count) and its point is enqueued again.
- Sampler: TPE (multivariate, constant liar for parallel workers) for one objective and for
  the MCU's two (cycles, peak SRAM), where points over `sram_bytes` are infeasible through
  trial constraints; TPE copes with small budgets better than NSGA-II's generations.
- Warm start: on a fresh study the cost model predicts every legal point and its top-k are
  enqueued first (user attr source="cost-model").
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import random
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from tilesched import __version__
from tilesched.backends.base import Measurement
from tilesched.errors import InvalidInput, ToolFailure
from tilesched.ir.hashing import content_hash
from tilesched.tuner.costmodel import predict
from tilesched.tuner.evaluators import Evaluator, get_evaluator, is_mcu, objective_values
from tilesched.tuner.lockfile import LockEntry, bucket_key, bucket_of
from tilesched.tuner.space import Space, point_key

DEFAULT_STORAGE_DIR = Path(".tilesched")
WARM_CAP = 20000
HAS_SET_CONSTRAINT = hasattr(optuna.trial.Trial, "set_constraint")
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # points the cost model ranks for the warm start (sampled beyond this)


def default_storage_url() -> str:
    DEFAULT_STORAGE_DIR.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(DEFAULT_STORAGE_DIR / 'studies.db').as_posix()}"


STORAGE_EXAMPLES = "e.g. sqlite:///studies.db or postgresql+psycopg2://user@host/db"


def make_storage(url: str | None) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at `url` (default: the SQLite file under .tilesched). A URL that is
    not usable is InvalidInput, a database that cannot be reached ToolFailure: one line each,
    naming the URL with its password masked."""
    import sqlalchemy.exc

    url = url or default_storage_url()
    parsed = check_storage_url(url)
    shown = _shown(url, parsed)
    kwargs = server_engine_kwargs(parsed) if parsed.get_backend_name() != "sqlite" else {"connect_args": {"timeout": 60}}
    _connect_once(url, shown, parsed.password, kwargs)
    for attempt in range(6):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as exc:
            # workers starting together on a fresh database race to create Optuna's tables
            if attempt == 5:
                raise ToolFailure(f"cannot set up the study tables in {shown}: "
                                  f"{_driver_error(exc, parsed.password)}") from None
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


CONNECT_TIMEOUT_S = 10  # a server that accepts the connection but never answers fails in words, not a hang


def server_engine_kwargs(parsed) -> dict:
    """Engine options for a database server: connections checked before use, and a connect timeout
    (PostgreSQL and MySQL drivers take `connect_timeout` in seconds) unless the URL sets one."""
    kwargs: dict = {"pool_pre_ping": True}
    if parsed.get_backend_name() in ("postgresql", "mysql") and "connect_timeout" not in parsed.query:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return kwargs


def check_storage_url(url: str):
    """The parsed URL (a sqlalchemy URL) when it names an installed dialect and, for SQLite, a file
    in an existing folder; InvalidInput (ToolFailure for a missing driver) otherwise."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise InvalidInput(f"--storage {_mask_password(url)}: not a database URL ({STORAGE_EXAMPLES})") from None
    shown = _shown(url, parsed)
    try:
        dialect = parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise InvalidInput(f"--storage {shown}: unknown database dialect {parsed.drivername!r} "
                           f"({STORAGE_EXAMPLES})") from None
    try:
        (getattr(dialect, "import_dbapi", None) or dialect.dbapi)()  # SQLAlchemy 2 / 1.4
    except ImportError as exc:
        raise ToolFailure(f"--storage {shown}: the {parsed.get_backend_name()} driver {dialect.driver} is not "
                          f"installed ({exc}); install it or name an installed one as dialect+driver://") from None
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_file(parsed, shown)
    return parsed


def _check_sqlite_file(parsed, shown: str) -> None:
    db = parsed.database
    if not db or db == ":memory:" or parsed.query.get("mode") == "memory":
        # sqlite:// and sqlite:/// are valid SQLAlchemy URLs of an in-memory database: a
        # campaign there vanishes with the process, which defeats resuming
        raise InvalidInput(f"--storage {shown}: refused: an in-memory study cannot be resumed; "
                           "name a file, e.g. sqlite:///studies.db")
    folder = Path(db).parent
    if not folder.is_dir():
        raise InvalidInput(f"--storage {shown}: the folder {folder} does not exist")


def _connect_once(url: str, shown: str, password: str | None, kwargs: dict) -> None:
    """Fail at once, in words, when the database cannot be reached (the retries in make_storage
    are for workers racing on a fresh database, not for a server that is down)."""
    import sqlalchemy
    import sqlalchemy.exc

    engine = sqlalchemy.create_engine(url, **kwargs)
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise ToolFailure(f"cannot connect to {shown}: {_driver_error(exc, password)}") from None
    finally:
        engine.dispose()


def _shown(url: str, parsed) -> str:
    """The URL as typed, or with its password masked when it has one."""
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def _driver_error(exc: Exception, password: str | None) -> str:
    """The first line of the driver's own message (SQLAlchemy's wrapper adds a URL to its docs)."""
    line = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
    return line.replace(password, "***") if password else line


def _mask_password(text: str) -> str:
    """`user:secret@host` -> `user:***@host` in text SQLAlchemy could not parse."""
    return re.sub(r":[^:@/]*@", ":***@", text)


def default_study_name(space: Space, objective: str) -> str:
    b = bucket_of(space.program, space.sizes)
    return f"{space.program.name}[{bucket_key(b)}]-{objective}"


def metric_names(target: str) -> list[str]:
    return ["cycles", "peak_sram_bytes"] if is_mcu(target) else ["time_ms"]


@dataclass
class Event:
    """Progress report after each trial (for the CLI's progress bar)."""

    kind: str  # "evaluated", "failed", "illegal", "duplicate", "skipped"
    trial: int
    evaluated: int  # evaluated trials in the study so far
    target: int
    best: float | None


@dataclass
class CampaignResult:
    study_name: str
    storage_url: str
    evaluated: int
    failed: int
    best_params: dict | None
    best_values: tuple[float, ...] | None
    measurement_attrs: dict = field(default_factory=dict)
    pareto: list[dict] = field(default_factory=list)


def _now() -> float:
    return time.time()


def _evaluated(t: FrozenTrial) -> bool:
    return bool(t.user_attrs.get("evaluated")) and t.state in (TrialState.COMPLETE, TrialState.FAIL)


def _feasible(t: FrozenTrial) -> bool:
    return all(c <= 0 for c in t.user_attrs.get("constraint", [0.0]))


class Campaign:
    def __init__(self, space: Space, objective: str = "model", *, storage: str | None = None,
                 study_name: str | None = None, seed: int | None = None, evaluator: Evaluator | None = None,
                 warm_k: int | None = None, timeout_s: float = 300.0, heartbeat_s: float = 5.0,
                 grace_s: float | None = None, spec_path: str = ""):
        self.space = space
        self.program = space.program
        self.objective = objective
        self.storage_url = storage or default_storage_url()
        self.study_name = study_name or default_study_name(space, objective)
        self.seed = seed
        self.evaluator = evaluator or get_evaluator(self.program.target, objective, timeout_s)
        self.warm_k = warm_k
        self.timeout_s = timeout_s
        self.heartbeat_s = heartbeat_s
        self.grace_s = grace_s if grace_s is not None else max(4 * heartbeat_s, 20.0)
        self.spec_path = spec_path
        self.mcu = is_mcu(self.program.target)
        self.budget = self.program.limits.sram_bytes if self.mcu else None
        self.rng = random.Random(seed)
        self.distributions = {p.name: CategoricalDistribution(list(p.values)) for p in space.free}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # MCU constraints (peak SRAM - budget <= 0) reach TPE through Trial.set_constraint
            # (Optuna >= 5), else through the older constraints_func
            cf = None
            if self.mcu and not HAS_SET_CONSTRAINT:
                cf = lambda t: list(t.user_attrs.get("constraint", [0.0]))  # noqa: E731
            sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8,
                                                 constraints_func=cf)
        self.storage = make_storage(self.storage_url)
        self.study = optuna.create_study(
            study_name=self.study_name, storage=self.storage, sampler=sampler, load_if_exists=True,
            directions=["minimize"] * len(metric_names(self.program.target)))
        self._describe()

    # ------------------------------------------------------------------ setup
    def _describe(self) -> None:
        attrs = self.study.user_attrs
        h = content_hash(self.program)
        if "spec_hash" in attrs and attrs["spec_hash"] != h:
            raise ValueError(f"study {self.study_name!r} was tuned for another version of {self.program.name} "
                             f"(spec hash {attrs['spec_hash'][:12]} != {h[:12]}); use --study NAME for a new one")
        if "spec_hash" in attrs:
            return
        info = {
            "spec": self.program.name, "spec_path": str(self.spec_path), "spec_hash": h,
            "target": self.program.target, "objective": self.objective, "sizes": self.space.sizes,
            "bucket": bucket_of(self.program, self.space.sizes), "pinned": self.space.pinned,
            "legal_points": len(self.space.legal_points), "sram_budget": self.budget,
            "tilesched_version": __version__, "optuna_version": optuna.__version__,
        }
        for k, v in info.items():
            self.study.set_user_attr(k, v)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.set_metric_names(metric_names(self.program.target))

    def _trials(self, states=None) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)

    # ------------------------------------------------------------------ resume and warm start
    def recover_zombies(self) -> int:
        """Mark RUNNING trials whose heartbeat is stale as FAIL(interrupted) and re-enqueue their points."""
        n = 0
        for t in self._trials(states=(TrialState.RUNNING,)):
            beat = t.user_attrs.get("heartbeat")
            if beat is None:
                start = t.datetime_start or _dt.datetime.now()
                beat = start.timestamp()
            if _now() - beat < self.grace_s:
                continue  # another worker is on it
            try:
                self.storage.set_trial_user_attr(t._trial_id, "reason", "interrupted")
                self.storage.set_trial_user_attr(t._trial_id, "evaluated", False)
                self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # finished (or recovered by another worker) meanwhile
            if t.params and self.space.check(self._full(t.params)) is None:
                # (Optuna's skip_if_exists would match the zombie itself)
                key = point_key(t.params)
                known = {point_key(o.params) for o in self._trials(states=(TrialState.WAITING,))}
                known |= {point_key(o.params) for o in self._trials() if _evaluated(o)}
                if key not in known:
                    self.study.enqueue_trial(dict(t.params), user_attrs={"source": "resumed"})
            n += 1
        return n

    def warm_start(self, n_trials: int) -> list[dict]:
        """Enqueue the cost model's top-k legal points (once per study)."""
        if self.study.user_attrs.get("warm_started"):
            return []
        self.study.set_user_attr("warm_started", True)
        k = self.warm_k if self.warm_k is not None else max(1, min(8, n_trials // 4))
        top = self.model_top_k(k)
        for rank, params in enumerate(top):
            free = {p.name: params[p.name] for p in self.space.free}
            self.study.enqueue_trial(free, user_attrs={"source": "cost-model", "model_rank": rank},
                                     skip_if_exists=True)
        return top

    def model_top_k(self, k: int) -> list[dict]:
        pts = self.space.legal_points
        if len(pts) > WARM_CAP:
            pts = random.Random(0).sample(pts, WARM_CAP)
        scored = []
        for p in pts:
            pr = predict(self.space.bind(p))
            over = self.budget is not None and pr.peak_sram_bytes is not None and pr.peak_sram_bytes > self.budget
            scored.append(((over, pr.latency, point_key(p)), p))
        scored.sort(key=lambda x: x[0])
        return [p for _, p in scored[:k]]

    # ------------------------------------------------------------------ the loop
    def run(self, n_trials: int, progress: Callable[[Event], None] | None = None) -> CampaignResult:
        self.recover_zombies()
        self.warm_start(n_trials)
        idle = 0
        legal = {point_key(p) for p in self.space.legal_points}
        while True:
            trials = self._trials()
            evaluated = [t for t in trials if _evaluated(t)]
            others = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("evaluating")
                      and _now() - t.user_attrs.get("heartbeat", 0) < self.grace_s]
            seen = {point_key(self._full(t.params)): t for t in evaluated}
            if len(evaluated) >= n_trials or legal <= seen.keys():
                break
            if len(evaluated) + len(others) >= n_trials:
                # the rest is in flight on other workers: wait until it finishes, or its
                # heartbeat goes stale (then it is recovered and re-run here)
                time.sleep(min(self.heartbeat_s, 1.0))
                self.recover_zombies()
                continue
            if idle >= 30:  # the sampler keeps proposing known or illegal points
                want = self.rng.choice(sorted(legal - seen.keys()))
                pick = next(p for p in self.space.legal_points if point_key(p) == want)
                self.study.enqueue_trial({p.name: pick[p.name] for p in self.space.free},
                                         user_attrs={"source": "random-unexplored"})
                idle = 0
            kind, number = self._one_trial(seen)
            idle = 0 if kind in ("evaluated", "failed") else idle + 1
            if progress:
                n_eval = len(evaluated) + (kind in ("evaluated", "failed"))
                progress(Event(kind, number, n_eval, n_trials, self.best_value()))
        return self.result()

    def _full(self, params: Mapping[str, object]) -> dict:
        return {**self.space.pinned, **dict(params)}

    def _one_trial(self, seen: dict[str, FrozenTrial]) -> tuple[str, int]:
        trial = self.study.ask(self.distributions)
        params = self._full(trial.params)
        why = self.space.check(params)
        if why is not None:
            trial.set_user_attr("reason", "illegal")
            trial.set_user_attr("detail", why)
            trial.set_user_attr("evaluated", False)
            self.study.tell(trial, state=TrialState.PRUNED)
            return "illegal", trial.number
        prev = seen.get(point_key(params))
        if prev is not None:  # answer from the study: no duplicate work
            trial.set_user_attr("duplicate_of", prev.number)
            trial.set_user_attr("evaluated", False)
            for k in ("reason", "constraint"):
                if k in prev.user_attrs:
                    trial.set_user_attr(k, prev.user_attrs[k])
            if "constraint" in prev.user_attrs and HAS_SET_CONSTRAINT:
                trial.set_constraint("sram_over_budget", prev.user_attrs["constraint"][0])
            if prev.state == TrialState.COMPLETE:
                self.study.tell(trial, prev.values)
            else:
                self.study.tell(trial, state=TrialState.FAIL)
            return "duplicate", trial.number
        trial.set_user_attr("evaluating", True)
        trial.set_user_attr("heartbeat", _now())
        trial.set_user_attr("worker", WORKER)
        b = self.space.bind(params)
        m = self._evaluate_with_timeout(trial, b)
        trial.set_user_attr("evaluated", True)
        trial.set_user_attr("device", m.device)
        trial.set_user_attr("versions", dict(m.versions))
        for k in ("time_ms", "cycles", "counter", "peak_sram_bytes", "max_rel_error"):
            v = getattr(m, k)
            if v is not None:
                trial.set_user_attr(k, v)
        values = None
        if m.ok:
            try:
                values = objective_values(self.program.target, m, b)
            except ValueError as exc:
                m = m.model_copy(update={"ok": False, "reason": "runtime_error", "detail": str(exc)})
        if not m.ok or values is None or not all(math.isfinite(v) for v in values):
            trial.set_user_attr("reason", m.reason or "runtime_error")
            trial.set_user_attr("detail", (m.detail or "non-finite objective")[:2000])
            self.study.tell(trial, state=TrialState.FAIL)
            return "failed", trial.number
        if self.mcu:
            cons = [values[1] - self.budget] if self.budget else [0.0]
            trial.set_user_attr("constraint", cons)  # read by studies/plots
            if HAS_SET_CONSTRAINT:
                trial.set_constraint("sram_over_budget", cons[0])  # read by the sampler
        self.study.tell(trial, values)
        return "evaluated", trial.number

    def _evaluate_with_timeout(self, trial, b) -> Measurement:
        """Run the evaluator in a worker thread; the heartbeat is refreshed while it runs. On
        timeout the trial fails with reason "timeout" and the thread is abandoned (a daemon:
        backends also enforce their own timeouts on compile and launch)."""
        box: dict = {}

        def work():
            try:
                box["m"] = self.evaluator(b)
            except Exception as exc:  # an evaluator bug must not abort the campaign
                box["m"] = Measurement(ok=False, reason="runtime_error", detail=f"{type(exc).__name__}: {exc}")

        th = threading.Thread(target=work, daemon=True)
        start = _now()
        th.start()
        while th.is_alive():
            th.join(min(self.heartbeat_s, max(0.01, self.timeout_s - (_now() - start))))
            if th.is_alive():
                if _now() - start >= self.timeout_s:
                    return Measurement(ok=False, reason="timeout", detail=f"no result after {self.timeout_s:g} s")
                trial.set_user_attr("heartbeat", _now())
        return box["m"]

    # ------------------------------------------------------------------ results
    def completed(self) -> list[FrozenTrial]:
        return [t for t in self._trials(states=(TrialState.COMPLETE,)) if t.user_attrs.get("evaluated")]

    def best_trial(self) -> FrozenTrial | None:
        """The winner: the fastest (feasible, for MCUs: within the SRAM budget) evaluated point."""
        done = [t for t in self.completed() if _feasible(t)]
        return min(done, key=lambda t: (t.values[0], t.number), default=None)

    def best_value(self) -> float | None:
        t = self.best_trial()
        return t.values[0] if t else None

    def pareto(self) -> list[FrozenTrial]:
        """Feasible non-dominated evaluated trials (MCU: latency vs peak SRAM)."""
        pts = [t for t in self.completed() if _feasible(t)]
        front = [t for t in pts if not any(
            all(a <= b for a, b in zip(o.values, t.values)) and any(a < b for a, b in zip(o.values, t.values))
            for o in pts)]
        uniq = {}
        for t in sorted(front, key=lambda t: (tuple(t.values), t.number)):
            uniq.setdefault(point_key(t.params), t)
        return list(uniq.values())

    def result(self) -> CampaignResult:
        trials = self._trials()
        ev = [t for t in trials if _evaluated(t)]
        best = self.best_trial()
        return CampaignResult(
            study_name=self.study_name, storage_url=self.storage_url, evaluated=len(ev),
            failed=sum(t.state == TrialState.FAIL for t in ev),
            best_params=self._full(best.params) if best else None,
            best_values=tuple(best.values) if best else None,
            measurement_attrs=dict(best.user_attrs) if best else {},
            pareto=[{"params": self._full(t.params), "values": list(t.values)} for t in self.pareto()] if self.mcu
            else [])

    def lock_entry(self) -> LockEntry | None:
        best = self.best_trial()
        if best is None:
            return None
        return LockEntry(
            spec=self.program.name, spec_hash=content_hash(self.program), target=self.program.target,
            bucket=bucket_of(self.program, self.space.sizes), params=self._full(best.params),
            objective=self.objective, value=best.values[0], device=best.user_attrs.get("device", ""),
            versions={**best.user_attrs.get("versions", {}), "tilesched": __version__, "optuna": optuna.__version__},
            study=self.study_name, trials=len(self.completed()),
            sizes=dict(self.space.sizes), metrics=dict(zip(metric_names(self.program.target), best.values)))
