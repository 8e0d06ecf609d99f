"""Markdown of ``report.md``: the note, table headings and settings, the order of sections.

Each table's heading and settings, the table over seeds, and the order of a table's
sections (paired first; their Markdown is in :mod:`fedrdskd.report_markdown`). Sections
are marked for inclusion in other documents (:mod:`fedrdskd.report_sections`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from fedrdskd.report_markdown import (
    render_cost,
    render_gain,
    render_paired,
    render_paired_details,
)
from fedrdskd.report_runs import Table
from fedrdskd.report_sections import section

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
    "re-measured here: compare them only between runs made on the same machine and load. "
    "Paired: each strategy's run with seed s minus the baseline's run with seed s (the "
    "same partitions, client sampling and initial model; runs whose sampling did not "
    "follow the seed are refused), over the seeds both ran; 95 % Student t interval over "
    "those seeds (from 5 seeds also a seeded paired bootstrap); the verdict is better or "
    "worse only when the t interval excludes 0. Cost: the clients' own training seconds "
    "(slowest client per round, and summed over the round's clients) and the server's "
    "seconds; the mean accuracy over compute "
    "seconds holds each round's accuracy from the end of its compute time "
    "(client max + server) and averages it up to the table's shortest run.")

def table_labels(tables: Sequence[Table]) -> list[list[tuple[str, Any]]]:
    """What tells each table apart: dataset, partition, its main parameter, and so on.

    Every other identity key whose value is not the same in all tables is included too.
    """
    keys = sorted(set().union(*(table.identity for table in tables)))
    varying = [key for key in keys if len({json.dumps(table.identity.get(key))
                                            for table in tables}) > 1]
    labels = []
    for table in tables:
        scheme = str(table.identity.get("partition.name"))
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
    return ("rows ran different seeds (so their means below are over different "
            "partitions and initial models; the paired comparison uses the seeds both "
            "ran): " + "; ".join(f"{name} {seeds}" for name, seeds in per_row.items()))


def render_main_table(table: dict[str, Any]) -> list[str]:
    """The table over seeds (mean ± std per strategy), as a ``table`` section."""
    header = ["strategy", "seeds", "final acc. %", "best acc. %",
              *(f"acc. @{r} %" for r in table["at_rounds"]),
              *([f"mean acc. r1-{table['mean_to_round']} %"] if table["mean_to_round"] else []),
              "client ensemble final %",
              *(cell for target in table["targets"]
                for cell in (f"rounds to {target['label']}", f"s to {target['label']}")),
              "total s", "server s/round"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
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
    return section("table", table["id"], lines)


def render_table(table: dict[str, Any]) -> list[str]:
    """Markdown lines of one summarised table.

    Heading and settings, the paired comparison first, then the table over seeds with
    its plots, cost and gain.
    """
    settings = ", ".join(f"{key.removesuffix('.name')}={table['settings'][key]}"
                         for key in HEADLINE_SETTINGS if key in table["settings"])
    paired, plots = table["paired"], table.get("plots", {})
    lines = [f"## {table['title']}", "", f"Settings: {settings}; {_seeds_text(table)}. "
             f"Client ensemble: members' {table['ensemble_combination']} combined.", "",
             f"### Paired with {paired['baseline'] or paired['requested_baseline']}", "",
             *render_paired(paired, table["id"]), ""]
    details = render_paired_details(paired, table["id"])
    if details:
        lines += [*details, ""]
    if "paired" in plots:
        lines += [f"![paired difference to {paired['baseline']}]({plots['paired']})", ""]
    lines += ["### Over seeds", "", *render_main_table(table), ""]
    for row in table["rows"]:
        options = {k: v for k, v in row["options"].items() if k != "name"}
        if options:
            lines.append(f"- {row['strategy']}: " + ", ".join(
                f"{key}={value}" for key, value in sorted(options.items())))
    lines += ["", " ".join(f"![accuracy vs {name}]({path})" for name, path in plots.items()
                           if name != "paired"), "",
              "### Cost", "", *render_cost(table["cost"], table["id"]), ""]
    gain = render_gain(table["distillation_gain"], table["cost"]["lead_threshold"],
                       table["id"])
    if gain:
        lines += ["### Distillation gain", "", *gain, ""]
    return lines
