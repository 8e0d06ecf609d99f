"""The ``fedrdskd`` command: Hydra config -> validated experiment -> Flower simulation.

Only this module imports Hydra/OmegaConf. Example::

    fedrdskd dataset=mnist partition=dirichlet partition.alpha=0.1 strategy=fedavg \
        num_rounds=30 num_clients=20
    fedrdskd -m strategy=fedavg,fedrdskd seed=0,1
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import hydra
from flwr.serverapp.strategy import Strategy
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from fedrdskd.bookkeeping import load_test_set, write_partition_summary
from fedrdskd.checkpoint import (
    check_compatible,
    existing_run_problem,
    load_checkpoint,
    load_strategy_state,
)
from fedrdskd.experiment import ExperimentConfig, experiment_from_dict


def preflight(experiment: ExperimentConfig, output_dir: Path) -> None:
    """Load the data and partition it before Ray starts: fail early, log, plot.

    The clients compute the same partition from the same seed; this copy is only for
    the label-count summary and ``partition.png``.
    """
    load_test_set(experiment)
    write_partition_summary(experiment, output_dir)


def check_strategy_options(experiment: ExperimentConfig) -> Strategy:
    """Build the strategy once, so that a bad ``strategy.*`` option fails before Ray starts.

    Building it also checks the model, ``server.device`` and that a strategy needing
    label counts gets them (:func:`~fedrdskd.server_app.build_run_strategy`).
    """
    from fedrdskd.server_app import build_run_strategy

    return build_run_strategy(experiment)


def check_resume(experiment: ExperimentConfig, strategy: Strategy | None = None) -> None:
    """Refuse a ``resume_from`` that is missing, unreadable or of other settings, now.

    With ``strategy``, its state is loaded from the checkpoint too (a strategy of other
    settings is refused there).
    """
    if experiment.resume_from:
        checkpoint, path = load_checkpoint(experiment.resume_from)
        check_compatible(checkpoint, experiment, path)
        if strategy is not None:
            load_strategy_state(strategy, checkpoint.strategy)


def experiment_of(config: DictConfig, output_dir: Path) -> ExperimentConfig:
    """The validated experiment of a Hydra config (without its ``hydra`` node)."""
    task = OmegaConf.masked_copy(config, [str(key) for key in config if key != "hydra"])
    raw = cast(dict[str, Any], OmegaConf.to_container(task, resolve=True))
    raw["output_dir"] = str(output_dir)
    return experiment_from_dict(raw)


class RunDirectoryGuard(Callback):
    """Refuse, before Hydra writes ``.hydra/*.yaml``, a run directory that holds a run.

    Registered in ``conf/config.yaml`` (``hydra.callbacks``). A single run may write into
    a folder holding a run only to resume it (and then its checkpoint must fit the
    config); a sweep only into a folder whose job folders hold no run. Hydra turns a
    callback's exceptions into warnings, so a refusal ends the process (``SystemExit``,
    exit status 1, with the message).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check ``hydra.run.dir`` and, when resuming, the checkpoint."""
        run_dir = Path(str(config.hydra.run.dir))
        try:
            problem = existing_run_problem(run_dir, config.get("resume_from"))
            if problem is None and config.get("resume_from"):
                check_resume(experiment_of(config, run_dir))
        except ValueError as error:
            problem = str(error)
        if problem is not None:
            raise SystemExit(f"Error: {problem}")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check the job folders already in ``hydra.sweep.dir``."""
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs = [path for path in sweep_dir.glob("*") if path.is_dir()]
        for job_dir in [sweep_dir, *jobs]:
            problem = existing_run_problem(job_dir, None)
            if problem is not None:
                raise SystemExit("Error: " + problem.replace("hydra.run.dir", "hydra.sweep.dir"))


def run(config: DictConfig) -> None:
    """Validate the config, check the data, then run the simulation."""
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    experiment = experiment_of(config, output_dir)
    check_resume(experiment, check_strategy_options(experiment))
    preflight(experiment, output_dir)
    from fedrdskd.simulation import run_simulated_experiment

    run_simulated_experiment(experiment, output_dir)


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(config: DictConfig) -> None:
    """Entry point of the ``fedrdskd`` console script."""
    run(config)


if __name__ == "__main__":
    main()
