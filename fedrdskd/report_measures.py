"""Numbers of one run that the report's tables, pairs and costs are made of.

Plain functions of a :class:`~fedrdskd.report_runs.Run` (no plotting); missing,
null and non-finite values read as ``None`` and are left out, never counted as 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedrdskd.report_runs import Run

ENSEMBLE_KEYS = {"probabilities": "ensemble_accuracy_class_weighted_probabilities",
                 "logits": "ensemble_accuracy_class_weighted"}
"""Results keys of the class-weighted client ensemble's test accuracy, by how the
members are combined (``probabilities``: the default teacher)."""


def number(value: Any) -> float | None:
    """A finite float, or ``None`` for missing/null/NaN values."""
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def describe(values: Sequence[Any]) -> dict[str, Any]:
    """``{"mean", "std", "n", "values"}`` over the finite values (std with ddof=1)."""
    present = [number for number in map(number, values) if number is not None]
    return {"mean": float(np.mean(present)) if present else None,
            "std": float(np.std(present, ddof=1)) if len(present) > 1 else None,
            "n": len(present), "values": [number(value) for value in values]}


def at_round(run: Run, server_round: int, key: str = "test_accuracy") -> Any:
    """The value of ``key`` in the run's row of ``server_round`` (``None`` if absent)."""
    return next((row.get(key) for row in run.rounds if row["round"] == server_round), None)


def first_reaching(run: Run, target: float) -> tuple[int, Any] | None:
    """``(round, elapsed_seconds)`` of the first round with accuracy >= ``target``."""
    for row in run.rounds:
        accuracy = number(row.get("test_accuracy"))
        if accuracy is not None and accuracy >= target:
            return row["round"], row.get("elapsed_seconds")
    return None


def mean_accuracy_to_round(run: Run, last_round: int, first_round: int = 1) -> float | None:
    """Mean test accuracy over rounds ``first_round``..``last_round``.

    ``None`` unless every one of those rounds is recorded.
    """
    accuracies = [number(at_round(run, server_round))
                  for server_round in range(first_round, last_round + 1)]
    recorded = [accuracy for accuracy in accuracies if accuracy is not None]
    return float(np.mean(recorded)) if len(recorded) == len(accuracies) else None


def best_accuracy(run: Run) -> float | None:
    """The highest recorded test accuracy (``None`` if none is recorded)."""
    accuracies = [number(row.get("test_accuracy")) for row in run.rounds]
    return max((accuracy for accuracy in accuracies if accuracy is not None), default=None)


def total_seconds(run: Run) -> Any:
    """``summary.total_seconds``, else the last row's ``elapsed_seconds``."""
    total = run.summary.get("total_seconds")
    return total if total is not None else run.rounds[-1].get("elapsed_seconds")


def server_seconds_per_round(run: Run) -> float | None:
    """Mean ``server_seconds`` over the rounds that record it."""
    return describe([row["server_seconds"] for row in run.rounds
                     if "server_seconds" in row])["mean"]
