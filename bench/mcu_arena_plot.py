"""The SRAM arena of a whole network over time, drawn from its memory plan: every live interval of every
buffer segment (a row, a ring slot) as a rectangle at its arena offset, one colour per buffer, the peak as a
line. Deterministic (Agg, no timestamp in the PNG). The fusion point is the one bench/mcu_networks.py
recorded for the entry (the search is re-run when the results lack it).

    python bench/mcu_arena_plot.py [--entry mobilenetv2_035_144] [--out docs/arena-mobilenetv2.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import mcu_networks  # noqa: E402

from tilesched.schedules.memory import lifetimes, plan_memory  # noqa: E402
from tilesched.tuner import mcu_fusion as mf  # noqa: E402


def best_binding(entry: str):
    name, config, sizes = next(e for e in mcu_networks.FULL + mcu_networks.QUICK if e[0] == entry)
    b = mcu_networks._bind(config, sizes)
    res = mcu_networks.OUT
    rec = json.loads(res.read_text()).get("networks", {}).get(entry) if res.exists() else None
    if rec is not None:
        best = rec["best"]
        return mf.with_options(b, best["fuse"], best["halo"], best["params"]), name
    p = mf.search(b)[0]
    return mf.with_options(b, p.fuse, p.halo, dict(p.params)), name


def plot(plan, title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    prog = plan.program
    live = lifetimes(prog)
    n = len(prog.steps)
    cmap = plt.get_cmap("tab20")
    polys, colors = [], []
    for i, pb in enumerate(sorted(plan.buffers, key=lambda x: x.name)):
        for s, ivs in enumerate(live[pb.name]):
            lo = (pb.offset + s * pb.seg_bytes) / 1024
            hi = lo + pb.seg_bytes / 1024
            for t0, t1 in ivs:
                a, z = max(t0, 0), min(t1, n - 1) + 1
                polys.append([(a, lo), (z, lo), (z, hi), (a, hi)])
                colors.append(cmap(i % 20))
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    ax.add_collection(PolyCollection(polys, facecolors=colors, edgecolors="none", linewidths=0))
    ax.axhline(plan.peak_bytes / 1024, color="black", linewidth=0.8)
    ax.text(n * 0.99, plan.peak_bytes / 1024, f"peak {plan.peak_bytes / 1024:.1f} KiB", ha="right", va="bottom",
            fontsize=8)
    ax.set_xlim(0, n)
    ax.set_ylim(0, plan.peak_bytes / 1024 * 1.08)
    ax.set_xlabel("schedule step (one row of a chain)")
    ax.set_ylabel("arena offset (KiB)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, metadata={"Software": None})
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entry", default="mobilenetv2_035_144")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "arena-mobilenetv2.png")
    args = ap.parse_args(argv)
    b, name = best_binding(args.entry)
    plan = plan_memory(b)
    sizes = ", ".join(f"{a.name}={b.sizes[a.name]}" for a in b.program.axes if a.symbolic)
    plot(plan, f"{b.program.name} ({sizes}, {b.program.target}): SRAM arena over the schedule, "
               f"one colour per buffer", args.out)
    print(f"wrote {args.out} (peak {plan.peak_bytes} B, {len(plan.program.steps)} steps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
