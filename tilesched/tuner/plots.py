"""PNG plots of a campaign: the tuning history and (MCU) the Pareto front."""

from __future__ import annotations

from pathlib import Path

from optuna.trial import TrialState


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def plot_history(study, path: Path) -> Path:
    """Objective of every evaluated trial, failures marked, and the best so far."""
    plt = _plt()
    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("evaluated")]
    feasible = [all(c <= 0 for c in t.user_attrs.get("constraint", [0.0])) for t in trials]
    names = study.metric_names or ["objective"]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs, ys, best, cur = [], [], [], None
    for i, (t, ok) in enumerate(zip(trials, feasible)):
        if t.state == TrialState.COMPLETE:
            xs.append(i)
            ys.append(t.values[0])
            if ok:
                cur = t.values[0] if cur is None else min(cur, t.values[0])
        best.append(cur)
    ax.scatter(xs, ys, s=12, label="evaluated", color="tab:blue")
    fails = [i for i, t in enumerate(trials) if t.state == TrialState.FAIL]
    if fails and ys:
        ax.scatter(fails, [max(ys)] * len(fails), marker="x", color="tab:red", label="failed")
    ax.step(range(len(best)), [b if b is not None else float("nan") for b in best], where="post",
            color="tab:orange", label="best so far")
    ax.set_xlabel("evaluated trial")
    ax.set_ylabel(names[0])
    ax.set_title(f"{study.study_name}: history")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pareto(study, path: Path, budget: int | None, front_numbers: set[int]) -> Path:
    """Latency vs peak SRAM of every evaluated point; the feasible front and the budget line."""
    plt = _plt()
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("evaluated")]
    names = study.metric_names or ["cycles", "peak_sram_bytes"]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter([t.values[1] for t in done], [t.values[0] for t in done], s=14, color="tab:gray", label="evaluated")
    front = sorted((t for t in done if t.number in front_numbers), key=lambda t: t.values[1])
    if front:
        ax.plot([t.values[1] for t in front], [t.values[0] for t in front], "o-", color="tab:green",
                label="Pareto front (feasible)")
    if budget:
        ax.axvline(budget, color="tab:red", linestyle="--", label="SRAM budget")
    ax.set_xlabel(names[1])
    ax.set_ylabel(names[0])
    ax.set_title(f"{study.study_name}: Pareto front")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_campaign(campaign, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    name = _safe(campaign.study_name)
    paths = [plot_history(campaign.study, out_dir / f"{name}-history.png")]
    if campaign.mcu:
        paths.append(plot_pareto(campaign.study, out_dir / f"{name}-pareto.png", campaign.budget,
                                 {t.number for t in campaign.pareto()}))
    return paths


def plot_study(study, out_dir: Path) -> list[Path]:
    """Plots from a stored study alone (for `tilesched studies --plot`)."""
    out_dir = Path(out_dir)
    name = _safe(study.study_name)
    paths = [plot_history(study, out_dir / f"{name}-history.png")]
    if len(study.directions) == 2:
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get("evaluated") and all(c <= 0 for c in t.user_attrs.get("constraint", [0.0]))]
        front = {t.number for t in done if not any(
            all(a <= b for a, b in zip(o.values, t.values)) and o.values != t.values for o in done)}
        paths.append(plot_pareto(study, out_dir / f"{name}-pareto.png", study.user_attrs.get("sram_budget"), front))
    return paths
