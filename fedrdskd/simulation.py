"""Running an experiment on Flower's simulation engine (Ray backend).

This is the only module that calls ``flwr.simulation.run_simulation`` (deprecated in
flwr 1.41 in favour of ``flwr run``, and it passes an empty run config, so the apps get
their settings through closures instead). Swap it here if the API changes.
"""

from __future__ import annotations

import os
from pathlib import Path

from flwr.simulation import run_simulation

from fedrdskd.clients.client_app import build_client_app
from fedrdskd.experiment import ExperimentConfig
from fedrdskd.server_app import build_server_app


def backend_config(experiment: ExperimentConfig) -> dict:
    """Ray resources per simulated client (``client.num_cpus`` / ``client.num_gpus``)."""
    return {
        "client_resources": {"num_cpus": experiment.client_num_cpus,
                             "num_gpus": experiment.client_num_gpus},
        "init_args": {"num_cpus": os.cpu_count() or 1},
    }


def run_simulated_experiment(experiment: ExperimentConfig, output_dir: Path) -> None:
    """Run the ServerApp and one ClientApp per simulated node through Ray.

    Parameters
    ----------
    experiment : ExperimentConfig
        Validated settings.
    output_dir : Path
        Where the ServerApp writes ``results.json`` and the final model.
    """
    run_simulation(
        server_app=build_server_app(experiment, output_dir),
        client_app=build_client_app(experiment.client),
        num_supernodes=experiment.num_clients,
        backend_config=backend_config(experiment),
    )
