"""Paired comparison of every strategy row of a table with its baseline row, by seed.

A strategy's run with seed ``s`` pairs with the baseline row's run with seed ``s``.
A pair must agree on every config key outside ``strategy.*`` and the ignored keys
(:func:`fedrdskd.report.shared_settings`, the same check as a table's), and both
runs must record seeded client sampling (``summary.sampling.seeded``); a run that
does not is refused with the reason, and seeds without a partner are listed. For each
measure (:func:`measures`) the differences ``strategy - baseline`` over the pairs go
through :func:`fedrdskd.paired.compare_paired`.

Rounds to a target: the difference is taken over the pairs where both runs reached
it; in wins/ties/losses a run that reached it beats one that did not, and pairs where
neither did are ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from logging import WARNING
from typing import Any

from flwr.common import log

from fedrdskd.paired import (
    ACCURACY_TIE_TOLERANCE,
    BOOTSTRAP_MIN_SEEDS,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    ROUNDS_TIE_TOLERANCE,
    compare_paired,
    detectable_rounds,
    t_interval,
)
from fedrdskd.report import shared_settings
from fedrdskd.report_cost import mean_accuracy_over_compute
from fedrdskd.report_measures import (
    at_round,
    best_accuracy,
    first_reaching,
    mean_accuracy_to_round,
    number,
)
from fedrdskd.report_runs import Run, StrategyRow, Table
from fedrdskd.sampling import SAMPLING_SUMMARY_KEY

DEFAULT_BASELINE = "fedavg"
ONE_SIDED_REACH = "no interval (in no pair did both runs reach it)"
PAIR_ADVICE = ("Pairs must share partitions, client sampling and the initial model: "
               "rerun one of them with the other's settings, or pass --ignore-key {key} "
               "if the difference does not matter.")


@dataclass(frozen=True)
class Pair:
    """A strategy run and the baseline run with the same seed."""

    seed: Any
    run: Run
    baseline: Run


def find_baseline(table: Table, baseline: str, title: str) -> StrategyRow | None:
    """The row named ``baseline`` (its exact label, else its strategy name).

    Raises
    ------
    ValueError
        If several rows share the strategy name (an ablation) and none has the exact
        label: the message lists the labels to choose from.
    """
    exact = [row for row in table.rows if row.label == baseline]
    if exact:
        return exact[0]
    named = [row for row in table.rows if row.name == baseline]
    if len(named) > 1:
        labels = ", ".join(f"'{row.label}'" for row in named)
        raise ValueError(
            f"--baseline {baseline} matches {len(named)} rows of table [{title}]: "
            f"{labels}. Pass --baseline with one of these labels.")
    return named[0] if named else None


def sampling_problem(run: Run) -> str | None:
    """Why ``run`` cannot be paired because of its client sampling, or ``None``."""
    record = run.summary.get(SAMPLING_SUMMARY_KEY)
    if not isinstance(record, dict):
        return ("its results.json does not record whether client sampling followed the "
                "seed (no summary.sampling; for runs recorded before it existed, "
                "scripts/backfill_sampling.py adds it from the run's cli.log)")
    if not record.get("seeded"):
        return (f"its client sampling did not follow the seed "
                f"({record.get('nodes_reported')} of {record.get('nodes')} nodes reported "
                "their partition id), so it did not train the same clients as another "
                "run with that seed")
    return None


def pair_runs(row: StrategyRow, baseline: StrategyRow, ignore_keys: Sequence[str],
              refused: dict[str, str]) -> tuple[list[Pair], dict[str, list[Any]]]:
    """Pair ``row``'s runs with ``baseline``'s by seed.

    Parameters
    ----------
    row, baseline : StrategyRow
        The strategy and the baseline rows.
    ignore_keys : Sequence[str]
        Keys allowed to differ (as for the table).
    refused : dict[str, str]
        Run dir -> reason, for runs that cannot be paired (see
        :func:`sampling_problem`); their seeds are listed, not paired.

    Returns
    -------
    tuple[list[Pair], dict[str, list[Any]]]
        The pairs, and the seeds left out: ``strategy_only``, ``baseline_only`` and
        ``refused``.

    Raises
    ------
    ConfigMismatchError
        A pair's configs differ outside ``strategy.*``: names the keys and run dirs.
    """
    by_seed = {run.seed: run for run in baseline.runs}
    pairs = []
    left_out: dict[str, list] = {"strategy_only": [], "baseline_only": [], "refused": []}
    for run in row.runs:
        partner = by_seed.get(run.seed)
        if partner is None:
            left_out["strategy_only"].append(run.seed)
        elif str(run.run_dir) in refused or str(partner.run_dir) in refused:
            left_out["refused"].append(run.seed)
        else:
            shared_settings([partner, run], ignore_keys, advice=PAIR_ADVICE,
                            refusing=f"pair {run.run_dir} with {partner.run_dir} "
                                     f"(seed {run.seed})")
            pairs.append(Pair(run.seed, run, partner))
    left_out["baseline_only"] = sorted(set(by_seed) - {run.seed for run in row.runs},
                                       key=str)
    return pairs, left_out


def measures(mean_to_round: int, at_rounds: Sequence[int],
             targets: Sequence[dict[str, Any]],
             compute_span: float | None = None,
             last_rounds: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """What is compared: ``{"measure", "label", "unit", "higher_is_better", ...}``.

    ``last_rounds`` = ``(first, last)`` adds the mean accuracy over those rounds (where
    a run ends up, less noisy than its final round alone).
    """
    accuracy = {"unit": "accuracy", "higher_is_better": True}
    chosen = [{"measure": "mean_accuracy_to_round", "label": f"mean acc. r1-{mean_to_round}",
               "round": mean_to_round, **accuracy}]
    if last_rounds is not None:
        first, last = last_rounds
        chosen.append({"measure": "mean_accuracy_to_round", "label": f"mean acc. r{first}-{last}",
                       "first_round": first, "round": last, **accuracy})
    chosen += [{"measure": "accuracy_at_round", "label": f"acc. @{server_round}",
                "round": server_round, **accuracy} for server_round in at_rounds]
    chosen += [{"measure": "final_test_accuracy", "label": "final acc.", **accuracy},
               {"measure": "best_test_accuracy", "label": "best acc.", **accuracy}]
    chosen += [{"measure": "rounds_to_target", "label": f"rounds to {target['label']}",
                "target": target["target"], "unit": "rounds", "higher_is_better": False}
               for target in targets]
    if compute_span is not None:
        chosen.append({"measure": "mean_accuracy_over_compute_seconds",
                       "label": f"mean acc. over {compute_span:.0f} compute s",
                       "span": compute_span, **accuracy})
    return chosen


def measure_value(run: Run, measure: dict[str, Any]) -> float | None:
    """One run's value of ``measure`` (``None`` if unrecorded or, for rounds, not reached)."""
    kind = measure["measure"]
    if kind == "mean_accuracy_to_round":
        return mean_accuracy_to_round(run, measure["round"], measure.get("first_round", 1))
    if kind == "accuracy_at_round":
        return number(at_round(run, measure["round"]))
    if kind == "final_test_accuracy":
        return number(run.rounds[-1].get("test_accuracy"))
    if kind == "best_test_accuracy":
        return best_accuracy(run)
    if kind == "rounds_to_target":
        hit = first_reaching(run, measure["target"])
        return float(hit[0]) if hit else None
    return mean_accuracy_over_compute(run, measure["span"])


def compare_measure(pairs: Sequence[Pair], measure: dict[str, Any]) -> dict[str, Any]:
    """The paired comparison of one measure (see the module docstring for rounds)."""
    values = [(measure_value(pair.run, measure), measure_value(pair.baseline, measure))
              for pair in pairs]
    both = [(mine, theirs) for mine, theirs in values
            if mine is not None and theirs is not None]
    rounds = measure["unit"] == "rounds"
    tolerance = ROUNDS_TIE_TOLERANCE if rounds else ACCURACY_TIE_TOLERANCE
    result = {**measure, **compare_paired([mine - theirs for mine, theirs in both],
                                          tolerance=tolerance,
                                          higher_is_better=measure["higher_is_better"])}
    result["seeds"] = [pair.seed for pair, (mine, theirs) in zip(pairs, values)
                       if mine is not None and theirs is not None]
    if rounds:
        only_mine = sum(mine is not None and theirs is None for mine, theirs in values)
        only_theirs = sum(mine is None and theirs is not None for mine, theirs in values)
        neither = sum(mine is None and theirs is None for mine, theirs in values)
        result.update(wins=result["wins"] + only_mine, losses=result["losses"] + only_theirs,
                      ties=result["ties"] + neither, only_strategy_reached=only_mine,
                      only_baseline_reached=only_theirs, neither_reached=neither)
        if not both and only_mine + only_theirs:
            result["verdict"] = ONE_SIDED_REACH
        elif not both and neither:
            result["verdict"] = f"neither reached it ({neither} of {len(values)} seeds)"
    else:
        result["missing"] = len(values) - len(both)
    return result


def per_round(pairs: Sequence[Pair]) -> dict[str, Any]:
    """Paired test-accuracy differences per round: mean, t interval, detectable rounds."""
    if not pairs:
        return {"round": [], "mean": [], "low": [], "high": [], "n": [],
                "better": [], "worse": [], "text": per_round_text({}, 0)}
    last = min(max(row["round"] for row in run.rounds)
               for pair in pairs for run in (pair.run, pair.baseline))
    columns: dict[str, list[Any]] = {"round": [], "mean": [], "low": [], "high": [], "n": []}
    differences: dict[int, list[float]] = {}
    for server_round in range(1, last + 1):
        found = [(number(at_round(pair.run, server_round)),
                  number(at_round(pair.baseline, server_round))) for pair in pairs]
        values = [mine - theirs for mine, theirs in found
                  if mine is not None and theirs is not None]
        if not values:
            continue
        differences[server_round] = values
        interval = t_interval(values)
        columns["round"].append(server_round)
        columns["mean"].append(sum(values) / len(values))
        columns["low"].append(interval.low if interval else None)
        columns["high"].append(interval.high if interval else None)
        columns["n"].append(len(values))
    detectable = detectable_rounds(differences)
    return {**columns, **detectable,
            "text": per_round_text(detectable, max(columns["n"], default=0))}


def _rounds(numbers: Sequence[int]) -> str:
    return ("round " if len(numbers) == 1 else "rounds ") + ", ".join(map(str, numbers))


def per_round_text(detectable: dict[str, list[int]], num_seeds: int) -> str:
    """``"detectably worse at rounds 4, 5"``, ``"no round detectably different"`` ..."""
    if num_seeds == 0:
        return "not paired"
    if num_seeds == 1:
        return "no per-round interval (1 seed)"
    parts = [f"detectably {kind} at {_rounds(detectable[kind])}"
             for kind in ("better", "worse") if detectable[kind]]
    return "; ".join(parts) or "no round detectably different"


def _refusals(table: Table) -> dict[str, str]:
    refused = {}
    for row in table.rows:
        for run in row.runs:
            problem = sampling_problem(run)
            if problem is not None:
                refused[str(run.run_dir)] = problem
                log(WARNING, "Not pairing %s (%s): %s.", run.run_dir, row.label, problem)
    return refused


def summarise_paired(table: Table, title: str, *, baseline: str,
                     ignore_keys: Sequence[str], mean_to_round: int,
                     at_rounds: Sequence[int], targets: Sequence[dict[str, Any]],
                     compute_span: float | None = None,
                     last_rounds: tuple[int, int] | None = None) -> dict[str, Any]:
    """The paired section of one table, JSON-ready.

    Raises
    ------
    ValueError
        An ambiguous ``baseline`` (see :func:`find_baseline`), or a pair whose configs
        differ (:class:`~fedrdskd.report.ConfigMismatchError`).
    """
    found = find_baseline(table, baseline, title)
    refused = _refusals(table)
    result: dict[str, Any] = {
        "baseline": found.label if found else None, "requested_baseline": baseline,
        "mean_to_round": mean_to_round, "interval": "student-t 95%",
        "bootstrap": {"from_seeds": BOOTSTRAP_MIN_SEEDS, "resamples": BOOTSTRAP_RESAMPLES,
                      "seed": BOOTSTRAP_SEED, "method": "percentile"},
        "tie_tolerance": {"accuracy": ACCURACY_TIE_TOLERANCE, "rounds": ROUNDS_TIE_TOLERANCE},
        "refused": [{"run_dir": run_dir, "reason": reason}
                    for run_dir, reason in refused.items()],
        "strategies": []}
    if found is None:
        log(WARNING, "Table [%s] has no '%s' row: no paired comparison.", title, baseline)
        return result
    chosen = measures(mean_to_round, at_rounds, targets, compute_span, last_rounds)
    for row in (row for row in table.rows if row is not found):
        pairs, left_out = pair_runs(row, found, ignore_keys, refused)
        result["strategies"].append({
            "strategy": row.label, "paired_seeds": [pair.seed for pair in pairs],
            "left_out": left_out,
            "measures": [compare_measure(pairs, measure) for measure in chosen],
            "per_round": per_round(pairs)})
    return result
