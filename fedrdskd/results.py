"""Recording a run: centralised evaluation per round, timings, ``results.json``, a plot.

Timing convention: ``round_seconds`` is the wall time of one round *without* the
centralised evaluation of the global model and without the client-ensemble
diagnostics (both are measurement, identical in cost for every strategy);
``elapsed_seconds`` accumulates it. ``server_seconds`` is the server's own work in the
round (screening, aggregation, distillation).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from logging import INFO
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, MetricRecord
from flwr.common import log
from flwr.serverapp.strategy import Result

EvaluateModel = Callable[[ArrayRecord], tuple[float, float]]


def snake(key: str) -> str:
    """``"server-seconds"`` -> ``"server_seconds"`` (results files use snake_case)."""
    return key.replace("-", "_")


class RoundRecorder:
    """Centralised evaluation for ``Strategy.start(evaluate_fn=...)`` that also keeps time.

    Parameters
    ----------
    evaluate_model : Callable[[ArrayRecord], tuple[float, float]]
        Returns ``(loss, accuracy)`` of the global model on the test set.
    num_rounds : int
        For the log line and the progress bar.
    show_progress : bool | None (default: None)
        Show a tqdm bar over rounds; ``None`` means "when stderr is a terminal".
    """

    def __init__(self, evaluate_model: EvaluateModel, num_rounds: int,
                 show_progress: bool | None = None) -> None:
        self.evaluate_model = evaluate_model
        self.num_rounds = num_rounds
        self.evaluations: dict[int, dict[str, float]] = {}
        self.wall_seconds: dict[int, float] = {}
        self._mark = time.perf_counter()
        if show_progress is None:
            show_progress = sys.stderr.isatty()
        self._bar = None
        if show_progress:
            from tqdm import tqdm

            self._bar = tqdm(total=num_rounds, desc="rounds", unit="round")

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        """Evaluate the global model after ``server_round`` (0 = the initial model)."""
        if server_round > 0:
            self.wall_seconds[server_round] = time.perf_counter() - self._mark
        loss, accuracy = self.evaluate_model(arrays)
        self.evaluations[server_round] = {"test_loss": loss, "test_accuracy": accuracy}
        if server_round > 0:
            elapsed = sum(self.wall_seconds.values())
            log(INFO, "Round %d/%d: test accuracy %.4f (loss %.4f), round %.1f s, "
                "elapsed %.1f s", server_round, self.num_rounds, accuracy, loss,
                self.wall_seconds[server_round], elapsed)
            if self._bar is not None:
                self._bar.update(1)
                self._bar.set_postfix(accuracy=f"{accuracy:.4f}")
        self._mark = time.perf_counter()
        return MetricRecord({"test-loss": loss, "test-accuracy": accuracy})

    def restart_clock(self) -> None:
        """Start timing the next round now (e.g. after writing a checkpoint)."""
        self._mark = time.perf_counter()

    def state(self) -> dict[str, Any]:
        """The evaluations and round times so far, for checkpoints."""
        return {"evaluations": {r: dict(v) for r, v in self.evaluations.items()},
                "wall-seconds": dict(self.wall_seconds)}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned (the progress bar skips those rounds)."""
        self.evaluations = {int(r): dict(v) for r, v in state["evaluations"].items()}
        self.wall_seconds = {int(r): float(v) for r, v in state["wall-seconds"].items()}
        if self._bar is not None:
            self._bar.update(len(self.wall_seconds))
        self.restart_clock()

    def close(self) -> None:
        """Close the progress bar, if any."""
        if self._bar is not None:
            self._bar.close()


def round_rows(recorder: RoundRecorder, result: Result) -> list[dict[str, Any]]:
    """One row per completed round: test metrics, client/strategy metrics, timings."""
    rows, elapsed = [], 0.0
    for server_round in sorted(r for r in recorder.evaluations if r > 0):
        row: dict[str, Any] = {"round": server_round, **recorder.evaluations[server_round]}
        train_metrics = result.train_metrics_clientapp.get(server_round, {})
        row.update({snake(k): v for k, v in dict(train_metrics).items()})
        client_eval = result.evaluate_metrics_clientapp.get(server_round, {})
        row.update({f"client_{snake(k)}": v for k, v in dict(client_eval).items()})
        wall = recorder.wall_seconds.get(server_round, math.nan)
        row["round_seconds"] = wall - float(row.get("diagnostics_seconds", 0.0))
        elapsed += row["round_seconds"]
        row["elapsed_seconds"] = elapsed
        rows.append(row)
    return rows


def summarise(recorder: RoundRecorder, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Initial, final and best test accuracy and the total (method) seconds."""
    accuracies = [row["test_accuracy"] for row in rows]
    initial = recorder.evaluations.get(0, {}).get("test_accuracy", math.nan)
    return {
        "initial_test_accuracy": initial,
        "final_test_accuracy": accuracies[-1] if accuracies else math.nan,
        "best_test_accuracy": max(accuracies) if accuracies else math.nan,
        "total_seconds": rows[-1]["elapsed_seconds"] if rows else 0.0,
    }


def write_results(path: Path, config: Mapping[str, Any], rows: list[dict[str, Any]],
                  summary: Mapping[str, float]) -> None:
    """Write ``{"config", "rounds", "summary"}`` as JSON (NaN written as null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    payload = {"config": clean(dict(config)), "rounds": clean(rows),
               "summary": clean(dict(summary))}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))


def plot_accuracy(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """Test accuracy per round, with the client ensembles' accuracy where recorded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    rounds = [row["round"] for row in rows]
    axis.plot(rounds, [row["test_accuracy"] for row in rows], marker="o", markersize=3,
              label="global model")
    for key, style in (("ensemble_accuracy_class_weighted_probabilities", "-."),
                       ("ensemble_accuracy_class_weighted", "--"),
                       ("ensemble_accuracy_size_weighted", ":")):
        if any(key in row for row in rows):
            axis.plot(rounds, [row.get(key, math.nan) for row in rows], style,
                      label=key.replace("_", " ").replace("accuracy ", ""))
    axis.set_xlabel("round")
    axis.set_ylabel("test accuracy")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
