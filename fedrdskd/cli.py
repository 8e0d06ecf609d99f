"""The ``fedrdskd`` command: Hydra config -> validated experiment -> Flower simulation.

Only this module imports Hydra/OmegaConf. Example::

    fedrdskd dataset=mnist partition=dirichlet partition.alpha=0.1 strategy=fedavg \
        num_rounds=30 num_clients=20
    fedrdskd -m strategy=fedavg,fedrdskd seed=0,1
"""

from __future__ import annotations

from logging import INFO
from pathlib import Path
from typing import Any, cast

import hydra
from flwr.common import log
from flwr.serverapp.strategy import Strategy
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fedrdskd.data import load_dataset
from fedrdskd.experiment import ExperimentConfig, experiment_from_dict
from fedrdskd.partitions import (
    format_label_summary,
    label_count_matrix,
    partition_labels,
    plot_partition,
)


def preflight(experiment: ExperimentConfig, output_dir: Path) -> None:
    """Load the data and partition it before Ray starts: fail early, log, plot.

    The clients compute the same partition from the same seed; this copy is only for
    the label-count summary and ``partition.png``.
    """
    data, partition = experiment.client.data, experiment.client.partition
    train = load_dataset(data.dataset, data.root, train=True, download=data.download,
                         cache_dir=data.cache_dir)
    load_dataset(data.dataset, data.root, train=False, download=data.download,
                 cache_dir=data.cache_dir)
    labels = train.labels.numpy()
    partitions = partition_labels(
        labels, experiment.num_clients, partition.scheme, alpha=partition.alpha,
        classes_per_client=partition.classes_per_client,
        min_partition_size=partition.min_partition_size, seed=experiment.seed)
    counts = label_count_matrix(labels, partitions, train.info.num_classes)
    log(INFO, "Partition (%s, %d clients), label counts per client:\n%s",
        partition.scheme, experiment.num_clients, format_label_summary(counts))
    plot_partition(counts, output_dir / "partition.png",
                   title=f"{data.dataset}: {partition.scheme} partition")


def check_strategy_options(experiment: ExperimentConfig) -> Strategy:
    """Build the strategy once, so that a bad ``strategy.*`` option fails before Ray starts."""
    from fedrdskd.server_app import build_run_strategy

    return build_run_strategy(experiment)


def run(config: DictConfig) -> None:
    """Validate the config, check the data, then run the simulation."""
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    raw = cast(dict[str, Any], OmegaConf.to_container(config, resolve=True))
    raw["output_dir"] = str(output_dir)
    experiment = experiment_from_dict(raw)
    check_strategy_options(experiment)
    preflight(experiment, output_dir)
    from fedrdskd.simulation import run_simulated_experiment

    run_simulated_experiment(experiment, output_dir)


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(config: DictConfig) -> None:
    """Entry point of the ``fedrdskd`` console script."""
    run(config)


if __name__ == "__main__":
    main()
