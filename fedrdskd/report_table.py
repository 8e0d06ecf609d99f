"""The numbers of ``fedrdskd-report``: per-strategy statistics over seeds, and the writer.

Conventions (also stated in ``report.md``): accuracies are test accuracies of the
global model; "mean ± std" is over seeds with the sample standard deviation
(``ddof=1``; no std for one seed). Rounds and seconds to a target accuracy are the
first round whose accuracy is >= the target, averaged over the seeds that reached it
(their count is shown). Times are the runs' own recorded timings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from logging import WARNING
from pathlib import Path
from typing import Any

from flwr.common import log

from fedrdskd.report import DEFAULT_IGNORED_KEYS
from fedrdskd.report_cost import summarise_cost, summarise_gain
from fedrdskd.report_measures import (
    ENSEMBLE_KEYS,
    at_round,
    best_accuracy,
    describe,
    first_reaching,
    mean_accuracy_to_round,
    number,
    server_seconds_per_round,
    total_seconds,
)
from fedrdskd.report_paired import DEFAULT_BASELINE, summarise_paired
from fedrdskd.report_render import NOTE, render_table, slug, table_labels, title
from fedrdskd.report_runs import Run, StrategyRow, Table


def ensemble_combination(runs: Sequence[Run]) -> str:
    """Which class-weighted ensemble a table shows: one kind per table.

    ``"probabilities"`` if every run recorded it, else ``"logits"`` (runs recorded
    before it existed).
    """
    key = ENSEMBLE_KEYS["probabilities"]
    every_run = all(any(key in row for row in run.rounds) for run in runs)
    return "probabilities" if every_run else "logits"


def mean_curve(runs: Sequence[Run],
               ensemble_key: str = ENSEMBLE_KEYS["logits"]) -> dict[str, list[Any]]:
    """Accuracy mean/min/max, mean elapsed seconds and ensemble mean per round.

    Only rounds recorded by every seed are kept; round 0 (the initial model, at 0 s)
    is prepended when every run records ``summary.initial_test_accuracy``.
    """
    common = sorted(set.intersection(*({row["round"] for row in run.rounds} for run in runs)))
    if any(len(run.rounds) > len(common) for run in runs):
        log(WARNING, "Curves of %s cut to the %d rounds all its seeds recorded.",
            runs[0].run_dir, len(common))
    columns: dict[str, list[Any]] = {"round": [], "accuracy_mean": [], "accuracy_min": [],
                                     "accuracy_max": [], "elapsed_seconds_mean": [],
                                     "ensemble_accuracy_mean": []}

    def add(server_round: int, accuracies: list[Any], elapsed: list[Any],
            ensemble: list[Any]) -> None:
        finite = [a for a in map(number, accuracies) if a is not None]
        columns["round"].append(server_round)
        columns["accuracy_mean"].append(describe(accuracies)["mean"])
        columns["accuracy_min"].append(min(finite) if finite else None)
        columns["accuracy_max"].append(max(finite) if finite else None)
        columns["elapsed_seconds_mean"].append(describe(elapsed)["mean"])
        columns["ensemble_accuracy_mean"].append(describe(ensemble)["mean"])

    initial = [run.summary.get("initial_test_accuracy") for run in runs]
    if all(number(value) is not None for value in initial):
        add(0, initial, [0.0] * len(runs), [])
    for server_round in common:
        add(server_round, [at_round(run, server_round) for run in runs],
            [at_round(run, server_round, "elapsed_seconds") for run in runs],
            [at_round(run, server_round, ensemble_key) for run in runs])
    return columns


def summarise_row(row: StrategyRow, at_rounds: Sequence[int],
                  mean_to_round: int | None = None,
                  ensemble_key: str = ENSEMBLE_KEYS["logits"]) -> dict[str, Any]:
    """The statistics over seeds of one strategy row (targets are added later).

    ``mean_to_round`` = N adds the mean accuracy over rounds 1..N of each seed (the area
    under its accuracy curve, divided by N): one number for "faster all along", which the
    accuracy at single rounds under label skew, swinging by many points from round to
    round, does not give.
    """
    runs = row.runs
    summary = {
        "strategy": row.label, "name": row.name, "options": row.options,
        "num_seeds": len(runs), "seeds": [run.seed for run in runs],
        "run_dirs": [str(run.run_dir) for run in runs],
        "final_test_accuracy": describe([run.rounds[-1].get("test_accuracy") for run in runs]),
        "best_test_accuracy": describe([best_accuracy(run) for run in runs]),
        "accuracy_at_round": {str(server_round): describe([at_round(run, server_round)
                                                           for run in runs])
                              for server_round in at_rounds},
        "final_ensemble_accuracy": describe([run.rounds[-1].get(ensemble_key)
                                             for run in runs]),
        "total_seconds": describe([total_seconds(run) for run in runs]),
        "server_seconds_per_round": describe([server_seconds_per_round(run)
                                              for run in runs]),
        "curve": mean_curve(runs, ensemble_key),
    }
    if mean_to_round is not None:
        summary["mean_accuracy_to_round"] = describe(
            [mean_accuracy_to_round(run, mean_to_round) for run in runs])
    return summary


def reach_target(runs: Sequence[Run], target: float) -> dict[str, Any]:
    """Rounds and seconds to ``target`` over the seeds that reached it."""
    reached = [hit for hit in (first_reaching(run, target) for run in runs) if hit]
    return {"reached": len(reached), "num_seeds": len(runs),
            "rounds": describe([server_round for server_round, _ in reached]),
            "seconds": describe([seconds for _, seconds in reached])}


def resolve_targets(targets: Sequence[float | str],
                    rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turn ``0.95`` / ``"fedavg"`` into ``{"target", "label"}`` for one table."""
    resolved = []
    for target in targets:
        if target != "fedavg":
            resolved.append({"target": float(target), "label": f"{100 * target:g}%"})
            continue
        fedavg = next((row for row in rows if row["name"] == "fedavg"), None)
        mean = fedavg["final_test_accuracy"]["mean"] if fedavg else None
        if mean is None:
            log(WARNING, "No FedAvg final accuracy in this table: no 'fedavg' target.")
            continue
        resolved.append({"target": mean, "label": f"FedAvg final {100 * mean:.2f}%"})
    return resolved


def summarise_table(table: Table, *, targets: Sequence[float | str],
                    at_rounds: Sequence[int], mean_to_round: int | None = None,
                    baseline: str = DEFAULT_BASELINE,
                    ignore_keys: Sequence[str] = DEFAULT_IGNORED_KEYS,
                    heading: str = "", mean_last_rounds: int = 0) -> dict[str, Any]:
    """All numbers of one table, JSON-ready (plot paths are added by the writer).

    ``at_rounds`` beyond the last round any run of the table recorded are left out;
    ``mean_to_round`` is cut to that last round. The paired comparison with
    ``baseline`` (:mod:`fedrdskd.report_paired`) uses ``mean_to_round``, or all rounds
    when it is ``None``, and the mean over the table's last ``mean_last_rounds`` rounds
    (when it is fewer than all of them).
    """
    last = max(run.rounds[-1]["round"] for row in table.rows for run in row.runs)
    at_rounds = [server_round for server_round in at_rounds if server_round <= last]
    if mean_to_round is not None:
        mean_to_round = min(mean_to_round, last)
    combination = ensemble_combination([run for row in table.rows for run in row.runs])
    rows = [summarise_row(row, at_rounds, mean_to_round, ENSEMBLE_KEYS[combination])
            for row in table.rows]
    if len({json.dumps(sorted(map(str, row["seeds"]))) for row in rows}) > 1:
        log(WARNING, "Table %s: the strategies ran different seeds: %s", table.identity,
            {row["strategy"]: row["seeds"] for row in rows})
    resolved = resolve_targets(targets, rows)
    for summary, row in zip(rows, table.rows):
        summary["targets"] = [{**target, **reach_target(row.runs, target["target"])}
                              for target in resolved]
    cost = summarise_cost(table.rows)
    paired = summarise_paired(
        table, heading or str(table.identity), baseline=baseline, ignore_keys=ignore_keys,
        mean_to_round=mean_to_round or last, at_rounds=at_rounds, targets=resolved,
        compute_span=cost["compute_span_seconds"],
        last_rounds=(last - mean_last_rounds + 1, last) if 0 < mean_last_rounds < last else None)
    return {"identity": table.identity, "settings": table.settings, "paired": paired,
            "targets": resolved, "at_rounds": list(at_rounds),
            "mean_to_round": mean_to_round, "ensemble_combination": combination,
            "rows": rows, "cost": cost, "distillation_gain": summarise_gain(table.rows)}


def write_report(tables: Sequence[Table], out_dir: Path, *, targets: Sequence[float | str],
                 at_rounds: Sequence[int], y_min: float | None = None,
                 mean_to_round: int | None = None, baseline: str = DEFAULT_BASELINE,
                 ignore_keys: Sequence[str] = DEFAULT_IGNORED_KEYS,
                 mean_last_rounds: int = 0) -> list[Path]:
    """Write ``report.md``, ``report.json`` and the plots of each table into ``out_dir``.

    Per table: the paired comparison with ``baseline`` first (and its plot of the
    per-round difference), then the table over seeds with accuracy per round and per
    second, the cost and, where recorded, the distillation gain.

    Parameters
    ----------
    tables : Sequence[Table]
        From :func:`fedrdskd.report.group_runs`.
    out_dir : Path
        Created if missing; plots are linked from ``report.md`` by relative name.
    targets : Sequence[float | str]
        Target accuracies in (0, 1], or ``"fedavg"`` for the table's FedAvg final mean.
    at_rounds : Sequence[int]
        Rounds at which the accuracy is reported.
    y_min : float | None (default: None)
        Lower end of the plots' accuracy axis (``None``: matplotlib's choice).
    mean_to_round : int | None (default: None)
        Also report each strategy's mean accuracy over rounds 1..N (N cut to the
        table's last round); ``None``: no such column (the paired comparison then
        takes the mean over all rounds).
    baseline : str (default: "fedavg")
        The row every other row is paired with: a strategy name, or a row's exact
        label when several rows share the name.
    ignore_keys : Sequence[str] (default: DEFAULT_IGNORED_KEYS)
        Keys allowed to differ within a pair (as within a table).
    mean_last_rounds : int (default: 0)
        Also compare, paired, the mean accuracy over each table's last N rounds (where
        the runs end up; less noisy than the final round); 0 = off.

    Returns
    -------
    list[Path]
        The files written.
    """
    from fedrdskd.report_plots import plot_paired, plot_table

    if y_min is not None and not 0.0 <= y_min < 1.0:
        raise ValueError(f"y_min={y_min} is outside [0, 1): give the accuracy (a fraction) "
                         "where the plots' axis should start, e.g. 0.9.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries: list[dict[str, Any]] = []
    written: list[Path] = []
    for table, label in zip(tables, table_labels(tables)):
        summary: dict[str, Any] = {"id": slug(label), "title": title(label)}
        summary.update(summarise_table(table, targets=targets, at_rounds=at_rounds,
                                       mean_to_round=mean_to_round, baseline=baseline,
                                       ignore_keys=ignore_keys, heading=summary["title"],
                                       mean_last_rounds=mean_last_rounds))
        plots = plot_table(summary, out_dir / summary["id"], summary["title"],
                           y_min=y_min)
        paired_plot = plot_paired(summary["paired"], out_dir / f"{summary['id']}-paired.png",
                                  summary["title"])
        if paired_plot is not None:
            plots["paired"] = paired_plot
        summary["plots"] = {name: path.name for name, path in plots.items()}
        summaries.append(summary)
        written += plots.values()
    num_runs = sum(row["num_seeds"] for summary in summaries for row in summary["rows"])
    markdown = ["# fedrdskd comparison report", "",
                f"{num_runs} runs in {len(summaries)} table(s). {NOTE}", ""]
    for summary in summaries:
        markdown += render_table(summary)
    (out_dir / "report.md").write_text("\n".join(markdown).rstrip() + "\n")
    (out_dir / "report.json").write_text(json.dumps(
        {"note": NOTE, "tables": summaries}, indent=2, allow_nan=False))
    return [out_dir / "report.md", out_dir / "report.json", *written]
