"""The ServerApp: build the strategy, run the rounds, evaluate centrally, save results.

Used both by ``flwr run .`` (settings from ``context.run_config``, i.e.
``[tool.flwr.app.config]`` plus ``--run-config``) and by the Hydra CLI, which passes
an :class:`~fedrdskd.experiment.ExperimentConfig` and its output directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from logging import INFO
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from fedrdskd.clients.training import evaluate
from fedrdskd.data import ImageDataset, dataset_info, load_dataset
from fedrdskd.diagnostics import make_ensemble_evaluate_fn
from fedrdskd.experiment import ExperimentConfig, experiment_from_run_config
from fedrdskd.models import build_model
from fedrdskd.results import RoundRecorder, plot_accuracy, round_rows, summarise
from fedrdskd.results import write_results
from fedrdskd.strategies.registry import build_strategy


def model_factory(experiment: ExperimentConfig) -> Callable[[], torch.nn.Module]:
    """A ``model_fn`` for the experiment's model and dataset."""
    info = dataset_info(experiment.client.data.dataset)
    name = experiment.client.model

    def model_fn() -> torch.nn.Module:
        return build_model(name, num_classes=info.num_classes, image_shape=info.image_shape)

    return model_fn


def initial_arrays(experiment: ExperimentConfig) -> ArrayRecord:
    """The seeded initial global model."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(experiment.seed)
        model = model_factory(experiment)()
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


def build_run_strategy(experiment: ExperimentConfig, test: ImageDataset):
    """The configured strategy with the simulation's ensemble diagnostics attached."""
    model_fn = model_factory(experiment)
    device = torch.device(experiment.server.device)
    diagnostics = None
    if experiment.server.evaluate_ensemble:
        diagnostics = make_ensemble_evaluate_fn(
            model_fn, test, batch_size=experiment.server.eval_batch_size, device=device)
    strategy = experiment.strategy
    return build_strategy(
        strategy.name, strategy.options, target=strategy.target, model_fn=model_fn,
        num_classes=test.info.num_classes, input_shape=test.info.image_shape,
        device=experiment.server.device, seed=experiment.seed,
        ensemble_evaluate_fn=diagnostics,
        fraction_train=experiment.fraction_train,
        fraction_evaluate=experiment.fraction_evaluate,
        min_train_nodes=1, min_evaluate_nodes=1 if experiment.fraction_evaluate else 0,
        min_available_nodes=experiment.num_clients)


def run_server(grid: Grid, experiment: ExperimentConfig, output_dir: Path) -> dict:
    """Run all rounds and write ``results.json``, ``accuracy.png``, ``final_model.pt``.

    Returns
    -------
    dict
        The run's summary (final/best accuracy, total seconds).
    """
    torch.set_num_threads(experiment.server.num_threads)
    output_dir.mkdir(parents=True, exist_ok=True)
    test = load_test_set(experiment)
    model_fn = model_factory(experiment)
    device = torch.device(experiment.server.device)
    strategy = build_run_strategy(experiment, test)

    def evaluate_model(arrays: ArrayRecord) -> tuple[float, float]:
        model = model_fn()
        model.load_state_dict(arrays.to_torch_state_dict())
        return evaluate(model, test, batch_size=experiment.server.eval_batch_size,
                        device=device)

    recorder = RoundRecorder(evaluate_model, experiment.num_rounds)
    started = time.perf_counter()
    arrays = initial_arrays(experiment)
    try:
        result = strategy.start(grid=grid, initial_arrays=arrays,
                                num_rounds=experiment.num_rounds,
                                train_config=client_train_config(experiment),
                                evaluate_fn=recorder)
    finally:
        recorder.close()
    rows = round_rows(recorder, result)
    summary = summarise(recorder, rows)
    summary["wall_seconds_including_evaluation"] = time.perf_counter() - started
    config = {**experiment.resolved, "output_dir": str(output_dir)}
    write_results(output_dir / "results.json", config, rows, summary)
    final = result.arrays if len(result.arrays) else arrays
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
