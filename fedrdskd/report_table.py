"""The numbers of ``fedrdskd-report``: per-strategy statistics over seeds, Markdown, JSON.

Conventions (also stated in ``report.md``): accuracies are test accuracies of the
global model; "mean ± std" is over seeds with the sample standard deviation
(``ddof=1``; no std for one seed). Rounds and seconds to a target accuracy are the
first round whose accuracy is >= the target, averaged over the seeds that reached it
(their count is shown). Times are the runs' own recorded timings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from logging import WARNING
from pathlib import Path
from typing import Any

from flwr.common import log

from fedrdskd.report import Run, StrategyRow, Table
from fedrdskd.report_measures import (at_round, best_accuracy, describe, first_reaching,
                                      mean_accuracy_to_round, number,
                                      server_seconds_per_round, total_seconds)

ENSEMBLE_KEYS = {"probabilities": "ensemble_accuracy_class_weighted_probabilities",
                 "logits": "ensemble_accuracy_class_weighted"}
MAIN_PARTITION_PARAMETER = {"dirichlet": "partition.alpha",
                            "pathological": "partition.classes_per_client"}
HEADLINE_SETTINGS = ("model.name", "num_clients", "fraction_train", "local_epochs",
                     "num_rounds", "batch_size", "lr")
NOTE = (
    "Accuracy: test accuracy of the global model in %, mean ± sample std (ddof=1) over "
    "seeds. Rounds / seconds to a target: first round with accuracy >= target, mean over "
    "the seeds that reached it (reached/seeds in parentheses). Client ensemble: the "
    "class-weighted ensemble of the last round's client models (members' logits or "
    "probabilities combined, as each table says), where "
    "recorded. Times (total, per round, to target) are the runs' own recorded timings "
    "(round time without the centralised evaluation and ensemble diagnostics), not "
    "re-measured here: compare them only between runs made on the same machine and load.")


def ensemble_combination(runs: Sequence[Run]) -> str:
    """``"probabilities"`` if every run recorded that class-weighted ensemble, else
    ``"logits"`` (runs recorded before it existed): one kind per table."""
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
                    at_rounds: Sequence[int],
                    mean_to_round: int | None = None) -> dict[str, Any]:
    """All numbers of one table, JSON-ready (plot paths are added by the writer).

    ``at_rounds`` beyond the last round any run of the table recorded are left out;
    ``mean_to_round`` is cut to that last round.
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
    return {"identity": table.identity, "settings": table.settings,
            "targets": resolved, "at_rounds": list(at_rounds),
            "mean_to_round": mean_to_round, "ensemble_combination": combination,
            "rows": rows}


def table_labels(tables: Sequence[Table]) -> list[list[tuple[str, Any]]]:
    """What tells each table apart: dataset, partition, its main parameter, and every
    other identity key whose value is not the same in all tables."""
    keys = sorted(set().union(*(table.identity for table in tables)))
    varying = [key for key in keys if len({json.dumps(table.identity.get(key))
                                            for table in tables}) > 1]
    labels = []
    for table in tables:
        scheme = table.identity.get("partition.name")
        chosen = ["dataset.name", "partition.name", MAIN_PARTITION_PARAMETER.get(scheme, "")]
        chosen += [key for key in varying if key not in chosen]
        labels.append([(key, table.identity[key]) for key in chosen if key in table.identity])
    return labels


def slug(label: list[tuple[str, Any]]) -> str:
    """File-name stem from a table label: ``mnist-dirichlet-alpha0.1``."""
    parts = [str(value) if key.endswith(".name") else f"{key.split('.')[-1]}{value}"
             for key, value in label]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))


def title(label: list[tuple[str, Any]]) -> str:
    """Heading from a table label: ``mnist · dirichlet · alpha=0.1``."""
    return " · ".join(str(value) if key.endswith(".name") else
                      f"{key.split('.')[-1]}={value}" for key, value in label)


def _stat(stat: dict[str, Any], num_seeds: int, scale: float = 100.0,
          digits: int = 2) -> str:
    """``"98.12 ± 0.05"``; ``"—"`` if unrecorded; ``"(n/seeds)"`` if partly recorded."""
    if stat["mean"] is None:
        return "—"
    text = f"{scale * stat['mean']:.{digits}f}"
    if stat["std"] is not None:
        text += f" ± {scale * stat['std']:.{digits}f}"
    return text + (f" ({stat['n']}/{num_seeds})" if stat["n"] < num_seeds else "")


def _target_cells(entry: dict[str, Any]) -> list[str]:
    counted = f"({entry['reached']}/{entry['num_seeds']})"
    if not entry["reached"]:
        return [f"not reached {counted}", "—"]
    rounds = f"{entry['rounds']['mean']:.1f}".removesuffix(".0")
    return [f"{rounds} {counted}", _stat(entry["seconds"], entry["reached"], 1.0, 0)]


def _seeds_text(table: dict[str, Any]) -> str:
    """``"seeds 0, 1"``, or each row's seeds when the rows do not share them."""
    per_row = {row["strategy"]: ", ".join(str(seed) for seed in sorted(
        row["seeds"], key=lambda seed: str(seed).zfill(12))) for row in table["rows"]}
    if len(set(per_row.values())) == 1:
        return f"seeds {next(iter(per_row.values()))}"
    return ("rows ran different seeds (partitions and initial models differ, so the rows "
            "are not paired): " + "; ".join(f"{name} {seeds}"
                                             for name, seeds in per_row.items()))


def render_table(table: dict[str, Any]) -> list[str]:
    """Markdown lines of one summarised table (heading, settings, table, plots)."""
    settings = ", ".join(f"{key.removesuffix('.name')}={table['settings'][key]}"
                         for key in HEADLINE_SETTINGS if key in table["settings"])
    header = ["strategy", "seeds", "final acc. %", "best acc. %",
              *(f"acc. @{r} %" for r in table["at_rounds"]),
              *([f"mean acc. r1-{table['mean_to_round']} %"] if table["mean_to_round"] else []),
              "client ensemble final %",
              *(cell for target in table["targets"]
                for cell in (f"rounds to {target['label']}", f"s to {target['label']}")),
              "total s", "server s/round"]
    lines = [f"## {table['title']}", "", f"Settings: {settings}; {_seeds_text(table)}. "
             f"Client ensemble: members' {table['ensemble_combination']} combined.",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table["rows"]:
        seeds_count = row["num_seeds"]
        cells = [row["strategy"], str(seeds_count),
                 _stat(row["final_test_accuracy"], seeds_count),
                 _stat(row["best_test_accuracy"], seeds_count),
                 *(_stat(row["accuracy_at_round"][str(r)], seeds_count)
                   for r in table["at_rounds"]),
                 *([_stat(row["mean_accuracy_to_round"], seeds_count)]
                   if table["mean_to_round"] else []),
                 _stat(row["final_ensemble_accuracy"], seeds_count),
                 *(cell for entry in row["targets"] for cell in _target_cells(entry)),
                 _stat(row["total_seconds"], seeds_count, 1.0, 0),
                 _stat(row["server_seconds_per_round"], seeds_count, 1.0, 2)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for row in table["rows"]:
        options = {k: v for k, v in row["options"].items() if k != "name"}
        if options:
            lines.append(f"- {row['strategy']}: " + ", ".join(
                f"{key}={value}" for key, value in sorted(options.items())))
    plots = table.get("plots", {})
    lines += ["", " ".join(f"![accuracy vs {name}]({path})" for name, path in plots.items()),
              ""]
    return lines


def write_report(tables: Sequence[Table], out_dir: Path, *, targets: Sequence[float | str],
                 at_rounds: Sequence[int], y_min: float | None = None,
                 mean_to_round: int | None = None) -> list[Path]:
    """Write ``report.md``, ``report.json`` and two plots per table into ``out_dir``.

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
        table's last round); ``None``: no such column.

    Returns
    -------
    list[Path]
        The files written.
    """
    from fedrdskd.report_plots import plot_table

    if y_min is not None and not 0.0 <= y_min < 1.0:
        raise ValueError(f"y_min={y_min} is outside [0, 1): give the accuracy (a fraction) "
                         "where the plots' axis should start, e.g. 0.9.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries, written = [], []
    for table, label in zip(tables, table_labels(tables)):
        summary = summarise_table(table, targets=targets, at_rounds=at_rounds,
                                  mean_to_round=mean_to_round)
        summary.update(id=slug(label), title=title(label))
        plots = plot_table(summary, out_dir / summary["id"], summary["title"],
                           y_min=y_min)
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
