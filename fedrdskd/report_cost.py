"""Cost beside accuracy, and what distillation added, per strategy row of a table.

Cost, from the clients' own timings (``client_train_seconds_max``/``_sum``: the
clients' ``train-seconds``, measured by each client around its local training) and
the server's ``server_seconds`` (screening, aggregation, distillation and, with
client validation, its round trip):

- **server s / client s**: per run, the mean over rounds of
  ``server_seconds / client_train_seconds_max`` (clients train in parallel, so the
  slowest client is the round's client time); then mean ± std over seeds;
- **server s / summed client s**: the same with ``client_train_seconds_sum`` (the
  round's training compute of all its clients);
- **compute seconds** of round r: ``c_r = client_train_seconds_max_r + server_seconds_r``
  (evaluation, diagnostics and Ray overhead are not counted); ``T_r = c_1 + ... + c_r``;
- **mean accuracy over compute seconds** to ``T*``: the accuracy a user holds at
  compute time t is the last finished round's (the initial model's before ``T_1``); its
  mean over ``[0, T*]``, where ``T*`` is the shortest run's total ``T_N`` in the table,
  so every method is measured on the same time span. Runs without client seconds: n/a.

Distillation gain, where rows record ``aggregate_accuracy`` (the aggregate's test
accuracy before the server-side distillation, a harness diagnostic):
``gain_r = test_accuracy_r - aggregate_accuracy_r`` and the client ensemble's lead
``lead_r = ensemble_r - aggregate_accuracy_r`` (class-weighted probability ensemble).
Per strategy: the mean gain (per seed over rounds, then over seeds); over the rounds
with ``lead_r >= LEAD_THRESHOLD`` the mean share of the lead captured
(``gain_r / lead_r``, pooled over rounds and seeds); over the other rounds the mean gain
(pooled); and the number of rounds of each kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from fedrdskd.report_measures import ENSEMBLE_KEYS, describe, number
from fedrdskd.report_runs import Run, StrategyRow
from fedrdskd.results import snake
from fedrdskd.strategies.client_ensemble import (
    CLIENT_TRAIN_SECONDS_MAX_KEY,
    CLIENT_TRAIN_SECONDS_SUM_KEY,
)

CLIENT_MAX = snake(CLIENT_TRAIN_SECONDS_MAX_KEY)
CLIENT_SUM = snake(CLIENT_TRAIN_SECONDS_SUM_KEY)
SERVER = "server_seconds"
AGGREGATE = "aggregate_accuracy"
LEAD_THRESHOLD = 0.03
"""Rounds where the client ensemble leads the aggregate by >= 3 accuracy points."""


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _round_mean(run: Run, key: str) -> float | None:
    """Mean of ``key`` over the rounds of ``run`` that record it."""
    return _mean([value for value in (number(row.get(key)) for row in run.rounds)
                  if value is not None])


def compute_seconds(run: Run) -> list[float] | None:
    """``c_r`` of every round, or ``None`` if a round lacks client or server seconds."""
    seconds = []
    for row in run.rounds:
        client, server = number(row.get(CLIENT_MAX)), number(row.get(SERVER))
        if client is None or server is None:
            return None
        seconds.append(client + server)
    return seconds


def server_client_ratio(run: Run, client_key: str = CLIENT_MAX) -> float | None:
    """Mean over rounds of ``server_seconds`` over the clients' seconds ``client_key``."""
    ratios = []
    for row in run.rounds:
        server, client = number(row.get(SERVER)), number(row.get(client_key))
        if server is not None and client is not None and client > 0:
            ratios.append(server / client)
    return _mean(ratios)


def compute_span(runs: Sequence[Run]) -> float | None:
    """``T*``: the shortest total compute time among ``runs`` that record it."""
    totals = [sum(seconds) for seconds in map(compute_seconds, runs) if seconds]
    positive = [total for total in totals if total > 0]
    return min(positive) if positive else None


def mean_accuracy_over_compute(run: Run, span: float | None) -> float | None:
    """Mean over compute time ``[0, span]`` of the accuracy held (see the module)."""
    seconds = compute_seconds(run)
    initial = number(run.summary.get("initial_test_accuracy"))
    accuracies = [number(row.get("test_accuracy")) for row in run.rounds]
    if span is None or not seconds or initial is None or None in accuracies:
        return None
    held, start, area = initial, 0.0, 0.0
    for accuracy, duration in zip(cast(list[float], accuracies), seconds):
        end = min(start + duration, span)
        area += held * max(end - start, 0.0)
        start, held = start + duration, accuracy
        if start >= span:
            break
    area += held * max(span - start, 0.0)
    return area / span


def summarise_cost(rows: Sequence[StrategyRow]) -> dict[str, Any]:
    """Cost columns per row (JSON-ready) and the common time span ``T*``."""
    span = compute_span([run for row in rows for run in row.runs])
    summaries = []
    for row in rows:
        runs = row.runs
        summaries.append({
            "strategy": row.label, "num_seeds": len(runs),
            "client_train_seconds_max_per_round": describe(
                [_round_mean(run, CLIENT_MAX) for run in runs]),
            "client_train_seconds_sum_per_round": describe(
                [_round_mean(run, CLIENT_SUM) for run in runs]),
            "server_to_client_seconds": describe([server_client_ratio(run) for run in runs]),
            "server_to_summed_client_seconds": describe(
                [server_client_ratio(run, CLIENT_SUM) for run in runs]),
            "total_compute_seconds": describe(
                [sum(seconds) if seconds else None for seconds in map(compute_seconds, runs)]),
            "mean_accuracy_over_compute_seconds": describe(
                [mean_accuracy_over_compute(run, span) for run in runs])})
    return {"compute_span_seconds": span, "lead_threshold": LEAD_THRESHOLD, "rows": summaries}


def distillation_gain(row: StrategyRow) -> dict[str, Any] | None:
    """Gain and share of the ensemble's lead captured (``None`` without aggregate rows)."""
    ensemble_key = ENSEMBLE_KEYS["probabilities"]
    per_seed, shares, other_gains = [], [], []
    for run in row.runs:
        gains = []
        for round_row in run.rounds:
            after, before = (number(round_row.get("test_accuracy")),
                             number(round_row.get(AGGREGATE)))
            if after is None or before is None:
                continue
            gains.append(after - before)
            ensemble = number(round_row.get(ensemble_key))
            lead = None if ensemble is None else ensemble - before
            if lead is not None and lead >= LEAD_THRESHOLD:
                shares.append((after - before) / lead)
            else:
                other_gains.append(after - before)
        per_seed.append(_mean(gains))
    if all(value is None for value in per_seed):
        return None
    return {"strategy": row.label, "num_seeds": len(row.runs), "gain": describe(per_seed),
            "lead_rounds": len(shares), "lead_share_captured": _mean(shares),
            "other_rounds": len(other_gains), "other_rounds_gain": _mean(other_gains)}


def summarise_gain(rows: Sequence[StrategyRow]) -> list[dict[str, Any]]:
    """:func:`distillation_gain` of the rows that record ``aggregate_accuracy``."""
    return [gain for gain in map(distillation_gain, rows) if gain is not None]
