"""Recording a run: the per-round log line, ``results.json`` rows and summary, a plot.

Timing convention: ``round_seconds`` is the wall time of one round's federated part
(training and federated evaluation, measured by :func:`fedrdskd.rounds.run_rounds`)
*without* the client-ensemble diagnostics (measurement, identical in cost for every
strategy); the centralised evaluation of the global model and the checkpoint are
outside every round. The first round a process runs (round 1, or the first after a
resume) also counts the run's set-up (waiting for the nodes and the partition-id query,
where Ray starts its client workers), as every recorded run does;
``summary.setup_seconds`` says how long it took. ``elapsed_seconds`` accumulates
``round_seconds``. ``server_seconds`` is the server's own work in the round (screening,
aggregation, distillation).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Mapping
from logging import INFO
from pathlib import Path
from typing import Any

from flwr.app import MetricRecord
from flwr.common import log
from flwr.serverapp.strategy import Result

TEST_LOSS_KEY = "test-loss"
TEST_ACCURACY_KEY = "test-accuracy"


def snake(key: str) -> str:
    """``"server-seconds"`` -> ``"server_seconds"`` (results files use snake_case)."""
    return key.replace("-", "_")


def centralised_metrics(loss: float, accuracy: float) -> MetricRecord:
    """The centralised evaluation of the global model, as the round history keeps it."""
    return MetricRecord({TEST_LOSS_KEY: loss, TEST_ACCURACY_KEY: accuracy})


class RoundLog:
    """One log line per round (test accuracy, round and elapsed seconds), and a tqdm bar.

    Parameters
    ----------
    num_rounds : int
        For the log line and the progress bar.
    show_progress : bool | None (default: None)
        Show a tqdm bar over rounds; ``None`` means "when stderr is a terminal".
    """

    def __init__(self, num_rounds: int, show_progress: bool | None = None) -> None:
        self.num_rounds = num_rounds
        if show_progress is None:
            show_progress = sys.stderr.isatty()
        self._bar = None
        if show_progress:
            from tqdm import tqdm

            self._bar = tqdm(total=num_rounds, desc="rounds", unit="round")

    def skip(self, rounds: int) -> None:
        """Count rounds done before a resume on the progress bar."""
        if self._bar is not None:
            self._bar.update(rounds)

    def round_done(self, server_round: int, test: MetricRecord, seconds: float,
                   elapsed: float) -> None:
        """Log the round's test metrics and wall seconds (``elapsed``: all rounds so far)."""
        accuracy = float(test[TEST_ACCURACY_KEY])  # type: ignore[arg-type]
        log(INFO, "Round %d/%d: test accuracy %.4f (loss %.4f), round %.1f s, "
            "elapsed %.1f s", server_round, self.num_rounds, accuracy, test[TEST_LOSS_KEY],
            seconds, elapsed)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(accuracy=f"{accuracy:.4f}")

    def close(self) -> None:
        """Close the progress bar, if any."""
        if self._bar is not None:
            self._bar.close()


def round_rows(history: Result, wall_seconds: Mapping[int, float]) -> list[dict[str, Any]]:
    """One row per completed round: test metrics, client/strategy metrics, timings.

    Parameters
    ----------
    history : Result
        The run's per-round metrics (centralised evaluation included).
    wall_seconds : Mapping[int, float]
        Each round's federated wall seconds, diagnostics included.
    """
    rows, elapsed = [], 0.0
    for server_round in sorted(r for r in history.evaluate_metrics_serverapp if r > 0):
        test = history.evaluate_metrics_serverapp[server_round]
        row: dict[str, Any] = {"round": server_round,
                               **{snake(k): v for k, v in test.items()}}
        train_metrics = history.train_metrics_clientapp.get(server_round, MetricRecord())
        row.update({snake(k): v for k, v in train_metrics.items()})
        client_eval = history.evaluate_metrics_clientapp.get(server_round, MetricRecord())
        row.update({f"client_{snake(k)}": v for k, v in client_eval.items()})
        wall = wall_seconds.get(server_round, math.nan)
        row["round_seconds"] = wall - float(row.get("diagnostics_seconds", 0.0))
        elapsed += row["round_seconds"]
        row["elapsed_seconds"] = elapsed
        rows.append(row)
    return rows


def summarise(history: Result, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Initial, final and best test accuracy and the total (method) seconds."""
    accuracies = [row["test_accuracy"] for row in rows]
    initial = history.evaluate_metrics_serverapp.get(0, MetricRecord())
    return {
        "initial_test_accuracy": initial.get(TEST_ACCURACY_KEY, math.nan),
        "final_test_accuracy": accuracies[-1] if accuracies else math.nan,
        "best_test_accuracy": max(accuracies) if accuracies else math.nan,
        "total_seconds": rows[-1]["elapsed_seconds"] if rows else 0.0,
    }


def machine_record(num_threads: int) -> dict[str, Any]:
    """What the run's numbers depend on besides the config: CPU, library versions, threads.

    Floating-point results differ slightly between CPU models and library builds (the
    same code and seed gave FedAvg test accuracy 0.1936 on the machine that recorded the
    MNIST runs of 2026-11-23 and 0.1950 on a later one), so a run is reproducible to the
    last digit only on the machine this names.
    """
    import flwr
    import torch

    return {"cpu": _cpu_model(), "cpus": _cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "flwr": flwr.__version__,
            "server_threads": int(num_threads)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_count() -> int | None:
    return os.cpu_count()


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
