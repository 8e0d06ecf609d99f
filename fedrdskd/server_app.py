"""The ServerApp: read the config, build the strategy, run the rounds, save the results.

Used both by ``flwr run .`` (settings from ``context.run_config``, i.e.
``[tool.flwr.app.config]`` plus ``--run-config``) and by the Hydra CLI, which passes an
:class:`~fedrdskd.experiment.ExperimentConfig` and its output directory. The rounds run
through :func:`fedrdskd.rounds.run_rounds` (Flower's ``Strategy.start`` loop from any
round, so that an interrupted run can resume); the run's bookkeeping (test set, node
wait, checkpoints, results and plots) is :class:`fedrdskd.bookkeeping.ServerRun`.
"""

from __future__ import annotations

import time
from logging import INFO
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from fedrdskd import protocol as wire
from fedrdskd.bookkeeping import (
    PARTITION_PLOT,
    ServerRun,
    load_test_set,
    round_diagnostics,
    write_partition_summary,
)
from fedrdskd.checks import check_device, invalid
from fedrdskd.data import dataset_info
from fedrdskd.experiment import ExperimentConfig
from fedrdskd.models import model_factory
from fedrdskd.rounds import run_rounds
from fedrdskd.run_config import experiment_from_run_config
from fedrdskd.strategies.client_ensemble import EnsembleEvaluateFn
from fedrdskd.strategies.registry import build_strategy


def build_run_strategy(experiment: ExperimentConfig,
                       ensemble_evaluate_fn: EnsembleEvaluateFn | None = None) -> Strategy:
    """The experiment's strategy: the one place its settings become keyword arguments.

    Raises
    ------
    ValueError
        For a ``server.device`` this machine lacks, a strategy option the strategy
        refuses, or a strategy that needs label counts the clients will not send.
    """
    check_device("server.device", experiment.server.device)
    strategy = build_experiment_strategy(experiment, ensemble_evaluate_fn)
    needs_counts = getattr(strategy, "label_counts_needed", lambda server_round: False)
    if needs_counts(1) and not experiment.client.send_label_counts:
        raise invalid("client.send_label_counts", False,
                      f"strategy {experiment.strategy.name} needs the clients' label counts; "
                      "set client.send_label_counts=true (run config: "
                      "client.send-label-counts=true)")
    return strategy


def build_experiment_strategy(experiment: ExperimentConfig,
                              ensemble_evaluate_fn: EnsembleEvaluateFn | None) -> Strategy:
    """:func:`~fedrdskd.strategies.registry.build_strategy` with the experiment's settings."""
    info = dataset_info(experiment.client.data.dataset)
    strategy = experiment.strategy
    return build_strategy(
        strategy.name, strategy.options, target=strategy.target,
        model_fn=model_factory(experiment.client.model, info.name),
        num_classes=info.num_classes, input_shape=info.image_shape,
        device=experiment.server.device, seed=experiment.seed,
        ensemble_evaluate_fn=ensemble_evaluate_fn, sampling_seed=experiment.seed,
        min_replies=experiment.min_train_nodes,
        max_num_examples_ratio=experiment.screening.max_num_examples_ratio,
        max_norm_ratio=experiment.screening.max_norm_ratio,
        fraction_train=experiment.fraction_train,
        fraction_evaluate=experiment.fraction_evaluate,
        min_train_nodes=experiment.min_train_nodes,
        min_evaluate_nodes=1 if experiment.fraction_evaluate else 0,
        # Flower waits (forever) before sampling until this many nodes are connected:
        # as many as a round needs, so a dead SuperNode cannot block later rounds.
        min_available_nodes=experiment.min_train_nodes)


def client_train_config(experiment: ExperimentConfig) -> ConfigRecord:
    """What every training message tells the clients."""
    return ConfigRecord({
        wire.LR_KEY: experiment.lr, wire.MOMENTUM_KEY: experiment.momentum,
        wire.WEIGHT_DECAY_KEY: experiment.weight_decay,
        wire.LOCAL_EPOCHS_KEY: experiment.local_epochs,
        wire.BATCH_SIZE_KEY: experiment.batch_size, wire.SEED_KEY: experiment.seed,
    })


def run_server(grid: Grid, experiment: ExperimentConfig, output_dir: Path) -> dict:
    """Run all rounds and write ``results.json``, ``accuracy.png``, ``final_model.pt``.

    Also ``partition.png``, unless it is there (the CLI writes it before Ray starts).

    Returns
    -------
    dict
        The run's summary (final/best accuracy, seconds, and ``sampling``: whether
        client sampling followed the seed, see
        :meth:`~fedrdskd.sampling.PartitionOrderedGrid.sampling_record`; after a resume
        it describes the resumed part).
    """
    torch.set_num_threads(experiment.server.num_threads)
    output_dir.mkdir(parents=True, exist_ok=True)
    test = load_test_set(experiment)
    if not (output_dir / PARTITION_PLOT).exists():  # the CLI wrote it before Ray started
        write_partition_summary(experiment, output_dir)
    strategy = build_run_strategy(experiment, round_diagnostics(experiment, test, output_dir))
    run = ServerRun(experiment, strategy, test, output_dir)
    log(INFO, "Starting %s strategy:", type(strategy).__name__)
    strategy.summary()
    try:
        arrays, first_round = run.begin()
        ordered_grid = run.connect(grid)
        arrays = run_rounds(strategy, ordered_grid, arrays, first_round=first_round,
                            num_rounds=experiment.num_rounds,
                            timeout=experiment.round_timeout,
                            train_config=client_train_config(experiment),
                            history=run.history, evaluate_fn=run.evaluate,
                            after_round=run.after_round)
    finally:
        run.close()
    return run.finish(arrays, ordered_grid.sampling_record())


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
