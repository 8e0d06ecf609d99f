"""A ServerApp run's bookkeeping: test set, node wait, checkpoints, round log, results files.

:class:`ServerRun` gives Flower's round loop (:func:`fedrdskd.rounds.run_rounds`) its
centralised evaluation and its after-round hook, and writes the run's files:
``checkpoint.pt`` after every round (see :mod:`fedrdskd.checkpoint`; with
``resume_from`` the run continues from one), and at the end ``results.json``,
``accuracy.png`` and ``final_model.pt``.
"""

from __future__ import annotations

import math
import time
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from fedrdskd.checkpoint import (
    CHECKPOINT_NAME,
    Checkpoint,
    capture_rng_states,
    check_compatible,
    experiment_fingerprint,
    load_checkpoint,
    load_strategy_state,
    restore_rng_states,
    save_checkpoint,
    strategy_state,
)
from fedrdskd.clients.training import evaluate
from fedrdskd.data import ImageDataset, load_dataset
from fedrdskd.diagnostics import make_ensemble_evaluate_fn
from fedrdskd.experiment import ExperimentConfig
from fedrdskd.models import model_factory
from fedrdskd.partitions import (
    format_label_summary,
    label_count_matrix,
    partition_labels,
    plot_partition,
)
from fedrdskd.results import (
    RoundLog,
    centralised_metrics,
    machine_record,
    plot_accuracy,
    round_rows,
    snake,
    summarise,
    write_results,
)
from fedrdskd.sampling import (
    SAMPLING_SUMMARY_KEY,
    PartitionOrderedGrid,
    SamplingError,
    partition_ordered_grid,
)
from fedrdskd.strategies.client_ensemble import EnsembleEvaluateFn

PARTITION_PLOT = "partition.png"


def load_test_set(experiment: ExperimentConfig) -> ImageDataset:
    """The real test split used for centralised evaluation."""
    data = experiment.client.data
    return load_dataset(data.dataset, data.root, train=False, download=data.download,
                        cache_dir=data.cache_dir)


def write_partition_summary(experiment: ExperimentConfig, output_dir: Path) -> None:
    """Log the label counts of every client's partition and save ``partition.png``.

    The clients compute the same partition from the same seed; this copy of it is only
    for the summary and the plot.
    """
    data, partition = experiment.client.data, experiment.client.partition
    train = load_dataset(data.dataset, data.root, train=True, download=data.download,
                         cache_dir=data.cache_dir)
    labels = train.labels.numpy()
    partitions = partition_labels(
        labels, experiment.num_clients, partition.scheme, alpha=partition.alpha,
        classes_per_client=partition.classes_per_client,
        min_partition_size=partition.min_partition_size, seed=experiment.seed)
    counts = label_count_matrix(labels, partitions, train.info.num_classes)
    log(INFO, "Partition (%s, %d clients), label counts per client:\n%s",
        partition.scheme, experiment.num_clients, format_label_summary(counts))
    plot_partition(counts, output_dir / PARTITION_PLOT,
                   title=f"{data.dataset}: {partition.scheme} partition")


def round_diagnostics(experiment: ExperimentConfig, test: ImageDataset,
                      output_dir: Path | None) -> EnsembleEvaluateFn:
    """The strategy's ``ensemble_evaluate_fn``: the client ensemble on the test set."""
    server = experiment.server
    save_dir = (Path(output_dir) / "client_models"
                if server.save_client_models and output_dir is not None else None)
    return make_ensemble_evaluate_fn(
        model_factory(experiment.client.model, experiment.client.data.dataset), test,
        batch_size=server.eval_batch_size, device=torch.device(server.device),
        num_samples=server.ensemble_eval_samples, seed=experiment.seed,
        evaluate_ensemble=server.evaluate_ensemble, save_dir=save_dir)


def initial_arrays(experiment: ExperimentConfig) -> ArrayRecord:
    """The seeded initial global model."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(experiment.seed)
        model = model_factory(experiment.client.model, experiment.client.data.dataset)()
    return ArrayRecord(model.state_dict())


def wait_for_nodes(grid: Grid, wanted: int, timeout: float, *, allow_fewer: bool,
                   poll_seconds: float = 1.0) -> None:
    """Before the first round, wait up to ``timeout`` s for ``wanted`` nodes to connect.

    Raises
    ------
    SamplingError
        If fewer connect in time and not ``allow_fewer`` (then the run goes on with the
        nodes there are, and Flower's sampling waits for ``min_train_nodes``).
    """
    deadline = time.monotonic() + timeout
    last_log = -math.inf
    while (connected := len(list(grid.get_node_ids()))) < wanted:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if time.monotonic() - last_log >= 10.0:
            log(INFO, "Waiting for nodes to connect: %d of %d (num_clients); %.0f s left "
                "(connect_timeout).", connected, wanted, left)
            last_log = time.monotonic()
        time.sleep(min(poll_seconds, left))
    else:
        return
    advice = (f"Start as many SuperNodes as num-clients (the local simulation federation: "
              f"flwr run . --federation-config \"num-supernodes={wanted}\"), lower "
              "num_clients, or raise connect_timeout")
    if not allow_fewer:
        raise SamplingError(f"Only {connected} of num_clients={wanted} nodes connected within "
                            f"connect_timeout={timeout:g} s. {advice}; or set "
                            "allow_unseeded_sampling=true to start with the nodes there are "
                            "(client sampling then does not follow the seed).")
    log(WARNING, "%d of %d nodes connected after %.0f s; starting anyway "
        "(allow_unseeded_sampling=true). %s.", connected, wanted, timeout, advice)


class ServerRun:
    """One ServerApp run: its history, round times, checkpoints and result files.

    Parameters
    ----------
    experiment : ExperimentConfig
        Validated settings.
    strategy : Strategy
        The run's strategy (its state goes into the checkpoints).
    test : ImageDataset
        The test split of the centralised evaluation.
    output_dir : Path
        Where results and ``checkpoint.pt`` go.
    """

    def __init__(self, experiment: ExperimentConfig, strategy: Strategy, test: ImageDataset,
                 output_dir: Path) -> None:
        self.experiment, self.strategy, self.test = experiment, strategy, test
        self.output_dir = output_dir
        self.model_fn = model_factory(experiment.client.model, experiment.client.data.dataset)
        self.history = Result()
        self.wall_seconds: dict[int, float] = {}
        self.setup_seconds = self.unbilled_setup = 0.0
        self.round_log = RoundLog(experiment.num_rounds)
        self.started = time.perf_counter()

    # ---- the loop's callbacks ----------------------------------------------------------
    def evaluate(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        """Centralised evaluation: ``test-loss`` and ``test-accuracy`` on the test set."""
        model = self.model_fn()
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, accuracy = evaluate(model, self.test,
                                  batch_size=self.experiment.server.eval_batch_size,
                                  device=torch.device(self.experiment.server.device))
        return centralised_metrics(loss, accuracy)

    def after_round(self, server_round: int, arrays: ArrayRecord, seconds: float) -> None:
        """Log the round and write ``checkpoint.pt``.

        The first round the process runs also counts the run's set-up
        (:meth:`connect`), as in every run recorded so far (see :mod:`fedrdskd.results`).
        """
        seconds, self.unbilled_setup = seconds + self.unbilled_setup, 0.0
        self.wall_seconds[server_round] = seconds
        self.round_log.round_done(server_round,
                                  self.history.evaluate_metrics_serverapp[server_round],
                                  seconds, sum(self.wall_seconds.values()))
        save_checkpoint(self.output_dir / CHECKPOINT_NAME,
                        self.checkpoint(server_round, arrays))

    # ---- before and after the rounds ------------------------------------------------
    def begin(self) -> tuple[ArrayRecord, int]:
        """The global model and the first round: fresh (evaluated), or from a checkpoint."""
        if self.experiment.resume_from:
            return self.restore(self.experiment.resume_from)
        arrays = initial_arrays(self.experiment)
        self.history.evaluate_metrics_serverapp[0] = self.evaluate(0, arrays)
        return arrays, 1

    def connect(self, grid: Grid) -> PartitionOrderedGrid:
        """Wait for the nodes, then the grid in partition order (seeded sampling)."""
        started = time.perf_counter()
        experiment = self.experiment
        wait_for_nodes(grid, experiment.num_clients, experiment.connect_timeout,
                       allow_fewer=experiment.allow_unseeded_sampling)
        ordered = partition_ordered_grid(grid, experiment.round_timeout,
                                         expected=experiment.num_clients,
                                         allow_unseeded=experiment.allow_unseeded_sampling)
        self.setup_seconds = self.unbilled_setup = time.perf_counter() - started
        return ordered

    def finish(self, final: ArrayRecord, sampling: dict[str, Any]) -> dict[str, Any]:
        """Write ``results.json``, ``final_model.pt`` and ``accuracy.png``; the summary."""
        experiment, output_dir = self.experiment, self.output_dir
        rows = round_rows(self.history, self.wall_seconds)
        summary = summarise(self.history, rows)
        summary["wall_seconds_including_evaluation"] = time.perf_counter() - self.started
        summary["setup_seconds"] = self.setup_seconds
        summary[SAMPLING_SUMMARY_KEY] = sampling
        summary["machine"] = machine_record(experiment.server.num_threads)
        config = {**experiment.resolved, "output_dir": str(output_dir)}
        write_results(output_dir / "results.json", config, rows, summary)
        torch.save(final.to_torch_state_dict(), output_dir / "final_model.pt")
        title = f"{experiment.strategy.name} on {experiment.client.data.dataset}"
        plot_accuracy(output_dir / "accuracy.png", rows, title)
        log(INFO, "Final test accuracy %.4f (best %.4f) in %.1f s; results in %s",
            summary["final_test_accuracy"], summary["best_test_accuracy"],
            summary["total_seconds"], output_dir)
        return summary

    def close(self) -> None:
        """Close the progress bar."""
        self.round_log.close()

    # ---- checkpoints ------------------------------------------------------------------
    def checkpoint(self, server_round: int, arrays: ArrayRecord) -> Checkpoint:
        """The run's state after ``server_round``."""
        history = self.history
        return Checkpoint(
            round=server_round,
            arrays={k: v.detach().cpu().clone()
                    for k, v in arrays.to_torch_state_dict().items()},
            strategy=strategy_state(self.strategy),
            train_metrics={r: dict(m) for r, m in history.train_metrics_clientapp.items()},
            evaluate_metrics={r: dict(m)
                              for r, m in history.evaluate_metrics_clientapp.items()},
            recorder={"evaluations": {r: {snake(k): v for k, v in m.items()} for r, m
                                      in history.evaluate_metrics_serverapp.items()},
                      "wall-seconds": dict(self.wall_seconds)},
            rng=capture_rng_states(), fingerprint=experiment_fingerprint(self.experiment))

    def restore(self, resume_from: str) -> tuple[ArrayRecord, int]:
        """Load a checkpoint into this run; returns the arrays and the next round."""
        checkpoint, path = load_checkpoint(resume_from)
        check_compatible(checkpoint, self.experiment, path)
        load_strategy_state(self.strategy, checkpoint.strategy)
        history = self.history
        history.train_metrics_clientapp.update(
            {int(r): MetricRecord(m) for r, m in checkpoint.train_metrics.items()})
        history.evaluate_metrics_clientapp.update(
            {int(r): MetricRecord(m) for r, m in checkpoint.evaluate_metrics.items()})
        evaluations = checkpoint.recorder["evaluations"]
        history.evaluate_metrics_serverapp.update(
            {int(r): centralised_metrics(v["test_loss"], v["test_accuracy"])
             for r, v in evaluations.items()})
        self.wall_seconds = {int(r): float(v)
                             for r, v in checkpoint.recorder["wall-seconds"].items()}
        self.round_log.skip(len(self.wall_seconds))
        restore_rng_states(checkpoint.rng)
        log(INFO, "Resuming from %s at round %d of %d", path, checkpoint.round + 1,
            self.experiment.num_rounds)
        return checkpoint.array_record(), checkpoint.round + 1
