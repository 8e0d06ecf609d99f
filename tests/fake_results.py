"""Synthetic ``results.json`` files for the report tests (no training, no Ray)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedrdskd.report import find_results, group_runs, load_run
from fedrdskd.report_sections import find_section
from fedrdskd.report_table import write_report

SEEDED = {"seeded": True, "nodes_reported": 20, "nodes": 20}


def write_run(run_dir: Path, accuracies: list[float], *, strategy: str = "fedavg",
              seed: int = 0, round_seconds: float = 10.0, server_seconds: float | None = 1.0,
              ensemble: list[float] | None = None, strategy_options: dict | None = None,
              ensemble_key: str = "ensemble_accuracy_class_weighted",
              sampling: dict | None = SEEDED, extra_rows: list[dict] | None = None,
              **config_overrides: Any) -> Path:
    """Write a results.json like the one every run writes; return its folder.

    ``sampling`` is ``summary.sampling`` (``None``: left out, as in old runs);
    ``extra_rows`` adds keys to each round's row.
    """
    config: dict[str, Any] = {
        "dataset": {"name": "mnist"},
        "partition": {"name": "dirichlet", "alpha": 0.1, "min_partition_size": 10},
        "model": {"name": "lenet5"},
        "strategy": {"name": strategy, **(strategy_options or {})},
        "num_rounds": len(accuracies), "num_clients": 20, "fraction_train": 0.5,
        "local_epochs": 1, "batch_size": 32, "lr": 0.01, "seed": seed,
        "data": {"root": f"/data/{seed}"}, "client": {"num_cpus": 1},
        "server": {"device": "cpu"}, "output_dir": str(run_dir),
    }
    for key, value in config_overrides.items():
        section, _, name = key.partition("__")
        if name:
            config[section][name] = value
        else:
            config[section] = value
    rounds = []
    for index, accuracy in enumerate(accuracies):
        row = {"round": index + 1, "test_accuracy": accuracy, "test_loss": 1.0,
               "round_seconds": round_seconds, "elapsed_seconds": round_seconds * (index + 1)}
        if server_seconds is not None:
            row["server_seconds"] = server_seconds
        if ensemble is not None:
            row[ensemble_key] = ensemble[index]
        row.update((extra_rows or [{}] * len(accuracies))[index])
        rounds.append(row)
    summary = {"initial_test_accuracy": 0.1, "final_test_accuracy": accuracies[-1],
               "best_test_accuracy": max(accuracies),
               "total_seconds": round_seconds * len(accuracies)}
    if sampling is not None:
        summary["sampling"] = sampling
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(
        {"config": config, "rounds": rounds, "summary": summary}))
    return run_dir


def main_table(report_md: Path) -> str:
    """The one table-over-seeds section of a report.md."""
    return find_section(report_md.read_text(), "table")


def tables_of(*paths: Path, **grouping: Any):
    """Load the runs below ``paths`` and group them into tables."""
    runs = [load_run(path) for path in find_results(paths)]
    return group_runs(runs, **grouping)


def report_of(tmp_path: Path, *paths: Path, targets=("fedavg",), at_rounds=(2,),
              **grouping: Any) -> dict[str, Any]:
    """Write the report of ``paths`` to ``tmp_path/out``; return its report.json."""
    out = tmp_path / "out"
    write_report(tables_of(*paths, **grouping), out, targets=targets, at_rounds=at_rounds)
    return json.loads((out / "report.json").read_text())
