"""The ServerApp: build the strategy, run the rounds, evaluate centrally, save results.

Rounds run through :func:`run_rounds` (Flower's ``Strategy.start`` loop from any first
round) so that a checkpoint is written after every round and an interrupted run can
resume (:mod:`fedrdskd.checkpoint`). A round waits ``round_timeout`` seconds for the
clients and aggregates if at least ``min_train_nodes`` of them answered.

Used both by ``flwr run .`` (settings from ``context.run_config``, i.e.
``[tool.flwr.app.config]`` plus ``--run-config``) and by the Hydra CLI, which passes
an :class:`~fedrdskd.experiment.ExperimentConfig` and its output directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from logging import INFO, WARNING
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result, Strategy

from fedrdskd.checkpoint import (CHECKPOINT_NAME, Checkpoint, capture_rng_states,
                                 check_compatible, experiment_fingerprint,
                                 load_checkpoint, load_strategy_state,
                                 restore_rng_states, save_checkpoint, strategy_state)
from fedrdskd.clients.training import evaluate
from fedrdskd.data import ImageDataset, load_dataset
from fedrdskd.diagnostics import make_ensemble_evaluate_fn
from fedrdskd.experiment import ExperimentConfig, experiment_from_run_config
from fedrdskd.models import model_factory
from fedrdskd.results import (RoundRecorder, plot_accuracy, round_rows, summarise,
                              write_results)
from fedrdskd.sampling import (SAMPLING_SUMMARY_KEY, PartitionOrderedGrid,
                               query_partition_ids, seed_round_sampling)
from fedrdskd.strategies.registry import build_strategy


def experiment_model_fn(experiment: ExperimentConfig) -> Callable[[], torch.nn.Module]:
    """The experiment's ``model_fn`` (its model for its dataset)."""
    return model_factory(experiment.client.model, experiment.client.data.dataset)


def initial_arrays(experiment: ExperimentConfig) -> ArrayRecord:
    """The seeded initial global model."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(experiment.seed)
        model = experiment_model_fn(experiment)()
    return ArrayRecord(model.state_dict())


def client_train_config(experiment: ExperimentConfig) -> ConfigRecord:
    """What every training message tells the clients (kebab-case keys)."""
    return ConfigRecord({
        "lr": experiment.lr, "momentum": experiment.momentum,
        "weight-decay": experiment.weight_decay,
        "local-epochs": experiment.local_epochs, "batch-size": experiment.batch_size,
        "seed": experiment.seed,
    })


def load_test_set(experiment: ExperimentConfig) -> ImageDataset:
    """The real test split used for centralised evaluation."""
    data = experiment.client.data
    return load_dataset(data.dataset, data.root, train=False, download=data.download,
                        cache_dir=data.cache_dir)


def build_run_strategy(experiment: ExperimentConfig, test: ImageDataset,
                       output_dir: Path | None = None):
    """The configured strategy with the simulation's round diagnostics attached."""
    model_fn = experiment_model_fn(experiment)
    device = torch.device(experiment.server.device)
    server = experiment.server
    save_dir = (Path(output_dir) / "client_models"
                if server.save_client_models and output_dir is not None else None)
    diagnostics = make_ensemble_evaluate_fn(
        model_fn, test, batch_size=server.eval_batch_size, device=device,
        num_samples=server.ensemble_eval_samples, seed=experiment.seed,
        evaluate_ensemble=server.evaluate_ensemble, save_dir=save_dir)
    strategy = experiment.strategy
    return build_strategy(
        strategy.name, strategy.options, target=strategy.target, model_fn=model_fn,
        num_classes=test.info.num_classes, input_shape=test.info.image_shape,
        device=experiment.server.device, seed=experiment.seed,
        ensemble_evaluate_fn=diagnostics,
        fraction_train=experiment.fraction_train,
        fraction_evaluate=experiment.fraction_evaluate,
        min_train_nodes=experiment.min_train_nodes,
        min_evaluate_nodes=1 if experiment.fraction_evaluate else 0,
        # Flower waits (forever) before sampling until this many nodes are connected:
        # as many as a round needs, so a dead SuperNode cannot block later rounds.
        min_available_nodes=experiment.min_train_nodes)


@dataclass(frozen=True)
class RoundPlan:
    """Which rounds to run and how long to wait for the clients.

    Attributes
    ----------
    first_round, num_rounds : int
        Run rounds ``first_round..num_rounds`` (``first_round > 1`` when resuming).
    timeout : float
        Seconds to wait for the replies of one round (train, then evaluate).
    min_replies : int
        Fewest train replies with content for the strategy to aggregate; a round
        with fewer keeps the global model.
    seed : int | None
        Re-seeds client sampling from ``(seed, round)`` before each round (see
        :mod:`fedrdskd.sampling`); ``None`` leaves ``random`` alone.
    """

    first_round: int
    num_rounds: int
    timeout: float
    min_replies: int = 1
    seed: int | None = None


def run_rounds(strategy: Strategy, grid: Grid, arrays: ArrayRecord, plan: RoundPlan,
               train_config: ConfigRecord, history: Result,
               evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None],
               after_round: Callable[[int, ArrayRecord], None] | None = None,
               ) -> ArrayRecord:
    """The loop of Flower's ``Strategy.start``, from any round (see :mod:`fedrdskd.checkpoint`).

    Every train round also records ``num-sampled`` (messages sent) and
    ``num-answered`` (replies with content before the timeout) in the round's train
    metrics, next to the strategy's own ``num-replies``/``num-excluded``.

    Returns
    -------
    ArrayRecord
        The global model after ``plan.num_rounds``.
    """
    for server_round in range(plan.first_round, plan.num_rounds + 1):
        log(INFO, "")
        log(INFO, "[ROUND %s/%s]", server_round, plan.num_rounds)
        if plan.seed is not None:
            seed_round_sampling(plan.seed, server_round)
        messages = list(strategy.configure_train(server_round, arrays,
                                                 ConfigRecord(dict(train_config)), grid))
        replies = list(grid.send_and_receive(messages, timeout=plan.timeout))
        if isinstance(grid, PartitionOrderedGrid):
            replies = grid.in_partition_order(replies)
        answered = sum(reply.has_content() for reply in replies)
        if answered < plan.min_replies:
            log(WARNING, "Round %d: %d of %d sampled clients answered, fewer than "
                "min_train_nodes=%d; the global model is left unchanged.", server_round,
                answered, len(messages), plan.min_replies)
            new_arrays, metrics = None, MetricRecord({"num-replies": 0, "num-excluded": 0})
        else:
            new_arrays, metrics = strategy.aggregate_train(server_round, replies)
        if new_arrays is not None:
            arrays = new_arrays
        metrics = MetricRecord({**dict(metrics or {}), "num-sampled": len(messages),
                                "num-answered": answered})
        history.train_metrics_clientapp[server_round] = metrics
        evaluate_messages = strategy.configure_evaluate(server_round, arrays,
                                                        ConfigRecord(), grid)
        evaluate_replies = grid.send_and_receive(evaluate_messages, timeout=plan.timeout)
        evaluate_metrics = strategy.aggregate_evaluate(server_round, evaluate_replies)
        if evaluate_metrics is not None:
            history.evaluate_metrics_clientapp[server_round] = evaluate_metrics
        server_metrics = evaluate_fn(server_round, arrays)
        if server_metrics is not None:
            history.evaluate_metrics_serverapp[server_round] = server_metrics
        history.arrays = arrays
        if after_round is not None:
            after_round(server_round, arrays)
    return arrays


def partition_ordered(grid: Grid, timeout: float) -> PartitionOrderedGrid:
    """The grid with node ids in partition order, so sampling follows the seed.

    The log line "N nodes reported their partition id." is what
    ``scripts/backfill_sampling.py`` reads from runs recorded before
    ``summary.sampling`` existed: keep its wording.
    """
    node_ids = list(grid.get_node_ids())
    partitions = query_partition_ids(grid, node_ids, timeout=timeout)
    log(INFO, "%d nodes reported their partition id.", len(partitions))
    if len(partitions) < len(node_ids):
        log(WARNING, "%d of %d nodes did not report a partition id: client sampling "
            "does not follow the seed (summary.sampling.seeded = false), so "
            "fedrdskd-report will not pair this run with others.",
            len(node_ids) - len(partitions), len(node_ids))
    return PartitionOrderedGrid(grid, partitions, queried=node_ids)


def wait_for_nodes(grid: Grid, wanted: int, needed: int, timeout: float) -> None:
    """Before the first round, wait up to ``timeout`` s for ``wanted`` nodes to connect.

    Proceeds with fewer once the timeout has passed (Flower's sampling then waits for
    ``needed`` = ``min_train_nodes`` nodes), so a SuperNode that never comes does not
    block the run.
    """
    deadline = time.monotonic() + timeout
    while (connected := len(list(grid.get_node_ids()))) < wanted:
        if time.monotonic() >= deadline:
            log(WARNING, "%d of %d nodes connected after %.0f s; starting anyway (rounds "
                "need at least %d).", connected, wanted, timeout, needed)
            return
        log(INFO, "Waiting for nodes to connect: %d of %d.", connected, wanted)
        time.sleep(1.0)


class ServerRun:
    """One ServerApp run: strategy, recorder, history, and their checkpoints.

    Parameters
    ----------
    experiment : ExperimentConfig
        Validated settings.
    output_dir : Path
        Where results and ``checkpoint.pt`` go.
    """

    def __init__(self, experiment: ExperimentConfig, output_dir: Path) -> None:
        self.experiment = experiment
        self.output_dir = output_dir
        self.test = load_test_set(experiment)
        self.model_fn = experiment_model_fn(experiment)
        self.device = torch.device(experiment.server.device)
        self.strategy = build_run_strategy(experiment, self.test, output_dir)
        self.recorder = RoundRecorder(self.evaluate_model, experiment.num_rounds)
        self.history = Result()
        self.checkpoint_file = output_dir / CHECKPOINT_NAME

    def evaluate_model(self, arrays: ArrayRecord) -> tuple[float, float]:
        """Centralised ``(loss, accuracy)`` of ``arrays`` on the test set."""
        model = self.model_fn()
        model.load_state_dict(arrays.to_torch_state_dict())
        return evaluate(model, self.test, batch_size=self.experiment.server.eval_batch_size,
                        device=self.device)

    def checkpoint(self, server_round: int, arrays: ArrayRecord) -> Checkpoint:
        """The run's state after ``server_round``."""
        return Checkpoint(
            round=server_round,
            arrays={k: v.detach().cpu().clone()
                    for k, v in arrays.to_torch_state_dict().items()},
            strategy=strategy_state(self.strategy),
            train_metrics={r: dict(m) for r, m in
                           self.history.train_metrics_clientapp.items()},
            evaluate_metrics={r: dict(m) for r, m in
                              self.history.evaluate_metrics_clientapp.items()},
            recorder=self.recorder.state(), rng=capture_rng_states(),
            fingerprint=experiment_fingerprint(self.experiment))

    def save_after_round(self, server_round: int, arrays: ArrayRecord) -> None:
        """``after_round`` hook: write ``checkpoint.pt`` (not counted in round time)."""
        save_checkpoint(self.checkpoint_file, self.checkpoint(server_round, arrays))
        self.recorder.restart_clock()

    def restore(self, resume_from: str) -> tuple[ArrayRecord, int]:
        """Load a checkpoint into this run; returns the arrays and the next round."""
        checkpoint, path = load_checkpoint(resume_from)
        check_compatible(checkpoint, self.experiment, path)
        load_strategy_state(self.strategy, checkpoint.strategy)
        self.history.train_metrics_clientapp.update(
            {int(r): MetricRecord(m) for r, m in checkpoint.train_metrics.items()})
        self.history.evaluate_metrics_clientapp.update(
            {int(r): MetricRecord(m) for r, m in checkpoint.evaluate_metrics.items()})
        self.recorder.load_state(checkpoint.recorder)
        restore_rng_states(checkpoint.rng)
        log(INFO, "Resuming from %s at round %d of %d", path, checkpoint.round + 1,
            self.experiment.num_rounds)
        return checkpoint.array_record(), checkpoint.round + 1

    def start(self) -> tuple[ArrayRecord, int]:
        """A fresh run: the seeded initial model, evaluated."""
        arrays = initial_arrays(self.experiment)
        self.recorder(0, arrays)
        return arrays, 1


def run_server(grid: Grid, experiment: ExperimentConfig, output_dir: Path) -> dict:
    """Run all rounds and write ``results.json``, ``accuracy.png``, ``final_model.pt``.

    ``checkpoint.pt`` is rewritten after every round; with ``experiment.resume_from``
    the run continues from that checkpoint (see :mod:`fedrdskd.checkpoint`).

    Returns
    -------
    dict
        The run's summary (final/best accuracy, total seconds, and ``sampling``:
        whether client sampling followed the seed, see
        :meth:`~fedrdskd.sampling.PartitionOrderedGrid.sampling_record`; after a
        resume it describes the resumed part).
    """
    torch.set_num_threads(experiment.server.num_threads)
    output_dir.mkdir(parents=True, exist_ok=True)
    run = ServerRun(experiment, output_dir)
    started = time.perf_counter()
    log(INFO, "Starting %s strategy:", type(run.strategy).__name__)
    run.strategy.summary()
    plan = RoundPlan(first_round=1, num_rounds=experiment.num_rounds,
                     timeout=experiment.round_timeout,
                     min_replies=experiment.min_train_nodes, seed=experiment.seed)
    try:
        if experiment.resume_from:
            arrays, first_round = run.restore(experiment.resume_from)
        else:
            arrays, first_round = run.start()
        plan = replace(plan, first_round=first_round)
        wait_for_nodes(grid, experiment.num_clients, experiment.min_train_nodes,
                       experiment.round_timeout)
        ordered_grid = partition_ordered(grid, timeout=min(experiment.round_timeout, 60.0))
        final = run_rounds(run.strategy, ordered_grid, arrays, plan,
                           client_train_config(experiment), run.history, run.recorder,
                           after_round=run.save_after_round)
    finally:
        run.recorder.close()
    rows = round_rows(run.recorder, run.history)
    summary = summarise(run.recorder, rows)
    summary["wall_seconds_including_evaluation"] = time.perf_counter() - started
    summary[SAMPLING_SUMMARY_KEY] = ordered_grid.sampling_record()
    config = {**experiment.resolved, "output_dir": str(output_dir)}
    write_results(output_dir / "results.json", config, rows, summary)
    torch.save(final.to_torch_state_dict(), output_dir / "final_model.pt")
    title = f"{experiment.strategy.name} on {experiment.client.data.dataset}"
    plot_accuracy(output_dir / "accuracy.png", rows, title)
    log(INFO, "Final test accuracy %.4f (best %.4f) in %.1f s; results in %s",
        summary["final_test_accuracy"], summary["best_test_accuracy"],
        summary["total_seconds"], output_dir)
    return summary


def default_output_dir(context: Context) -> Path:
    """``output-dir`` from the run config, else ``./outputs/flwr-run-<time>``."""
    configured = context.run_config.get("output-dir")
    if configured:
        return Path(str(configured)).expanduser()
    return Path.cwd() / "outputs" / time.strftime("flwr-run-%Y%m%d-%H%M%S")


def build_server_app(experiment: ExperimentConfig | None = None,
                     output_dir: Path | None = None) -> ServerApp:
    """A ServerApp bound to ``experiment``, or reading the run config if ``None``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        settings = experiment or experiment_from_run_config(context.run_config)
        run_server(grid, settings, output_dir or default_output_dir(context))

    return app


app = build_server_app()
