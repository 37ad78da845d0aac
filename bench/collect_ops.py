"""Append the rows of the issue-16 benches (attention, low-bit, fp8; each measured beside its baselines
in its own run) to bench/results/ops-<device>.json, the one file of op rows the issues name. Each row
keeps the date of its run and the file it came from (with the candidate tables, left out here); rows
of those ops from an earlier collection are replaced, the ops' own rows are kept.

  python bench/collect_ops.py [--results DIR] [--device nvidia-h100-80gb-hbm3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("attention", "lowbit", "fp8")


def collect(results: Path, device: str) -> int:
    ops_path = results / f"ops-{device}.json"
    ops = json.loads(ops_path.read_text())
    rows = [r for r in ops["rows"] if r.get("source") not in {f"{s}-{device}.json" for s in SOURCES}]
    added = 0
    for name in SOURCES:
        path = results / f"{name}-{device}.json"
        if not path.exists():
            continue
        run = json.loads(path.read_text())
        if run.get("device") != ops.get("device"):
            raise SystemExit(f"{path}: device {run.get('device')!r} is not {ops.get('device')!r}")
        for r in run["rows"]:
            rows.append({**{k: v for k, v in r.items() if k != "candidates"}, "date": run["date"], "source": path.name,
                         "versions": run.get("versions")})
            added += 1
    ops["rows"] = rows
    note = "rows with a `source` come from that file's run (its date and versions in the row; baselines in the same run)"
    ops["notes"] = [n for n in ops.get("notes", []) if n != note] + [note]
    ops_path.write_text(json.dumps(ops, indent=2, sort_keys=True) + "\n")
    return added


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(ROOT / "bench" / "results"))
    p.add_argument("--device", default="nvidia-h100-80gb-hbm3")
    a = p.parse_args(argv)
    print(f"{collect(Path(a.results), a.device)} rows appended to ops-{a.device}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
