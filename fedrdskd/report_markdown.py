"""Markdown of a table's paired, cost and distillation-gain sections.

Accuracy differences are in accuracy points (``+2.35`` = 2.35 points better), rounds
in rounds; each section says which interval it shows.
"""

from __future__ import annotations

from typing import Any

from fedrdskd.paired import (
    ACCURACY_TIE_TOLERANCE,
    BOOTSTRAP_MIN_SEEDS,
    ROUNDS_TIE_TOLERANCE,
)
from fedrdskd.report_sections import section

NOT_AVAILABLE = "n/a"


def _signed(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{100 * value:+.2f}" if unit == "accuracy" else f"{value:+.1f}"


def _interval(interval: dict[str, Any] | None, n: int, unit: str) -> str:
    if interval is None:
        return "—" if n == 0 else f"— ({n} seed{'' if n == 1 else 's'})"
    return f"[{_signed(interval['low'], unit)}, {_signed(interval['high'], unit)}]"


def _has_bootstrap(paired: dict[str, Any]) -> bool:
    return any(measure["bootstrap"] for strategy in paired["strategies"]
               for measure in strategy["measures"])


def _interval_note(paired: dict[str, Any]) -> str:
    note = ("95 % CI: Student t over the paired seeds (mean ± t·s/√n); the verdict and "
            "the per-round column use it")
    if _has_bootstrap(paired):
        note += (f"; with ≥ {BOOTSTRAP_MIN_SEEDS} seeds also a paired bootstrap "
                 f"(percentile, {paired['bootstrap']['resamples']} resamples, seed "
                 f"{paired['bootstrap']['seed']})")
    return note + (". W/T/L: seeds won / tied / lost (tie: within "
                   f"{100 * ACCURACY_TIE_TOLERANCE:g} points or "
                   f"{ROUNDS_TIE_TOLERANCE:g} rounds). Per round: each round's own "
                   "interval, not corrected for testing many rounds (at 95 %, about 1 "
                   "round in 20 excludes 0 by chance), so isolated rounds may be noise.")


def _left_out_lines(paired: dict[str, Any]) -> list[str]:
    lines = []
    for strategy in paired["strategies"]:
        left_out = strategy["left_out"]
        for key, what in (("strategy_only", f"no {paired['baseline']} run"),
                          ("baseline_only", f"no {strategy['strategy']} run"),
                          ("refused", "a run refused below")):
            if left_out[key]:
                seeds = ", ".join(map(str, left_out[key]))
                lines.append(f"- {strategy['strategy']}: seed(s) {seeds} not paired "
                             f"({what}).")
    lines += [f"- Pairing refused for {entry['run_dir']}: {entry['reason']}."
              for entry in paired["refused"]]
    return lines


def render_paired(paired: dict[str, Any], table_id: str) -> list[str]:
    """The headline ``paired`` section: mean accuracy over rounds 1..N per strategy."""
    baseline = paired["baseline"]
    if baseline is None:
        body = [f"No paired comparison: this table has no '{paired['requested_baseline']}' "
                "row (choose the baseline with --baseline)."]
        return section("paired", table_id, body + [""] + _left_out_lines(paired))
    if not paired["strategies"]:
        body = [f"No paired comparison: no strategy other than {baseline} in this table."]
        return section("paired", table_id, body + [""] + _left_out_lines(paired))
    bootstrap = _has_bootstrap(paired)
    header = ["strategy", "paired seeds", "mean diff. (points)", "95 % CI (Student t)",
              *(["95 % CI (bootstrap)"] if bootstrap else []), "W/T/L", "verdict",
              "per round (Student t)"]
    lines = [f"Paired with **{baseline}** by seed: mean accuracy over rounds "
             f"1-{paired['mean_to_round']}, difference in accuracy points. "
             + _interval_note(paired), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for strategy in paired["strategies"]:
        headline = strategy["measures"][0]
        cells = [strategy["strategy"], str(headline["n"]),
                 _signed(headline["mean"], "accuracy"),
                 _interval(headline["interval"], headline["n"], "accuracy"),
                 *([_interval(headline["bootstrap"], headline["n"], "accuracy")]
                   if bootstrap else []),
                 f"{headline['wins']}/{headline['ties']}/{headline['losses']}",
                 headline["verdict"], strategy["per_round"]["text"]]
        lines.append("| " + " | ".join(cells) + " |")
    left_out = _left_out_lines(paired)
    return section("paired", table_id, lines + ([""] + left_out if left_out else []))


def render_paired_details(paired: dict[str, Any], table_id: str) -> list[str]:
    """Every paired measure of every strategy (``paired-details`` section)."""
    if not paired["strategies"]:
        return []
    bootstrap = _has_bootstrap(paired)
    header = ["strategy", "measure", "paired seeds", "mean diff.", "95 % CI (Student t)",
              *(["95 % CI (bootstrap)"] if bootstrap else []), "W/T/L", "verdict"]
    lines = [f"All paired differences to {paired['baseline']} (accuracy in points, "
             "rounds in rounds; fewer rounds is better). Rounds to a target: difference "
             "over the seeds where both reached it; in W/T/L reaching it beats not "
             "reaching it.", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for strategy in paired["strategies"]:
        for measure in strategy["measures"]:
            unit = measure["unit"]
            shown_unit = "points" if unit == "accuracy" else "rounds"
            cells = [strategy["strategy"], f"{measure['label']} ({shown_unit})",
                     str(measure["n"]), _signed(measure["mean"], unit),
                     _interval(measure["interval"], measure["n"], unit),
                     *([_interval(measure["bootstrap"], measure["n"], unit)]
                       if bootstrap else []),
                     f"{measure['wins']}/{measure['ties']}/{measure['losses']}",
                     measure["verdict"]]
            lines.append("| " + " | ".join(cells) + " |")
    return section("paired-details", table_id, lines)


def _mean_std(stat: dict[str, Any], scale: float = 1.0, digits: int = 2) -> str:
    if stat["mean"] is None:
        return NOT_AVAILABLE
    text = f"{scale * stat['mean']:.{digits}f}"
    return text + (f" ± {scale * stat['std']:.{digits}f}" if stat["std"] is not None else "")


def render_cost(cost: dict[str, Any], table_id: str) -> list[str]:
    """The ``cost`` section: server cost against the clients' own training time."""
    span = cost["compute_span_seconds"]
    accuracy_header = (f"mean acc. over compute s 0-{span:.0f} %" if span is not None
                       else "mean acc. over compute s %")
    header = ["strategy", "seeds", "client train s/round (max)", "server s / client s",
              "server s / summed client s", "total compute s", accuracy_header]
    lines = ["Clients' own training seconds (the slowest client of a round, as they train "
             "in parallel) against the server's seconds. server s / client s: mean over "
             "rounds of server_seconds / client_train_seconds_max; server s / summed client "
             "s: the same over client_train_seconds_sum (all the round's clients' training "
             "compute). Compute seconds of a "
             "round: client_train_seconds_max + server_seconds; the accuracy column is the "
             "mean over compute time 0..T* of the accuracy held (the last finished round's, "
             "the initial model's before round 1), T* = the table's shortest run. "
             f"{NOT_AVAILABLE}: runs recorded before clients reported train-seconds.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in cost["rows"]:
        cells = [row["strategy"], str(row["num_seeds"]),
                 _mean_std(row["client_train_seconds_max_per_round"]),
                 _mean_std(row["server_to_client_seconds"]),
                 _mean_std(row["server_to_summed_client_seconds"]),
                 _mean_std(row["total_compute_seconds"], digits=0),
                 _mean_std(row["mean_accuracy_over_compute_seconds"], 100.0)]
        lines.append("| " + " | ".join(cells) + " |")
    return section("cost", table_id, lines)


def render_gain(gains: list[dict[str, Any]], lead_threshold: float,
                table_id: str) -> list[str]:
    """The ``distillation-gain`` section (rows recording ``aggregate_accuracy`` only)."""
    if not gains:
        return []
    points = f"{100 * lead_threshold:g}"
    header = ["strategy", "seeds", "mean gain (points)",
              f"rounds with ensemble lead ≥ {points} points", "share of the lead captured",
              "other rounds", "mean gain there (points)"]
    lines = ["Distillation gain: test accuracy after minus the aggregate's before the "
             "server-side distillation (aggregate_accuracy), per seed over rounds, mean ± "
             "std over seeds. Lead: class-weighted probability ensemble minus the aggregate; "
             "share captured: gain / lead, pooled over those rounds and seeds.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for gain in gains:
        share = gain["lead_share_captured"]
        other = gain["other_rounds_gain"]
        cells = [gain["strategy"], str(gain["num_seeds"]), _mean_std(gain["gain"], 100.0),
                 str(gain["lead_rounds"]), "—" if share is None else f"{share:.2f}",
                 str(gain["other_rounds"]), "—" if other is None else f"{100 * other:+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return section("distillation-gain", table_id, lines)
