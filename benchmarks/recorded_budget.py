"""Machine time spent on the recorded runs.

Sums ``summary.wall_seconds_including_evaluation`` (the ServerApp's run from its start
to the end of the last round, evaluation and diagnostics included; the Hydra launch, Ray
start-up and data loading before it, ~20 s per run, are not) over every ``results.json``
below a results folder, per setting folder (dataset/partition) and run, and prints the
totals.

Usage: ``python benchmarks/recorded_budget.py [RESULTS_ROOT] [--exclude GLOB ...]``
(default ``results``, excluding ``archive-*``); a pattern matches a setting folder
or a ``SETTING/RUN`` path, e.g. ``--exclude 'archive-*' --exclude '*/fedrdskd-logits-*'``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
from collections import defaultdict
from pathlib import Path


def run_seconds(results_path: Path) -> float:
    """Wall seconds of one recorded run (0 if the summary lacks the figure)."""
    summary = json.loads(results_path.read_text())["summary"]
    return float(summary.get("wall_seconds_including_evaluation", 0.0))


def setting_and_run(root: Path, results_path: Path) -> tuple[str, str]:
    """``("mnist/dirichlet-0.1-e1", "fedavg-seed0")`` for a run's results file."""
    relative = results_path.parent.relative_to(root)
    return str(relative.parent), relative.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="results", type=Path)
    parser.add_argument("--exclude", action="append", default=None,
                        help="glob on a setting folder or SETTING/RUN path to leave out "
                             "(default archive-*)")
    args = parser.parse_args()
    excluded = args.exclude or ["archive-*"]
    per_setting: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for path in sorted(args.root.rglob("results.json")):
        setting, run = setting_and_run(args.root, path)
        if any(fnmatch.fnmatch(setting, pattern) or fnmatch.fnmatch(f"{setting}/{run}", pattern)
               for pattern in excluded):
            continue
        per_setting[setting].append((run, run_seconds(path)))
    total = 0.0
    for setting, runs in per_setting.items():
        seconds = sum(s for _, s in runs)
        total += seconds
        print(f"{setting}: {len(runs)} runs, {seconds / 60:.1f} min")
        for run, run_wall in runs:
            print(f"  {run}: {run_wall / 60:.1f} min")
    count = sum(len(runs) for runs in per_setting.values())
    print(f"total: {count} runs, {total / 3600:.2f} h")


if __name__ == "__main__":
    main()
