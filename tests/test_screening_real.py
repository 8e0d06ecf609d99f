"""The outlier screen's default margins against the honest replies of a real MNIST run.

Two rounds of FedAvg on real MNIST (``$FEDRDSKD_DATA``; skipped when unset), 20 clients,
10 per round, Dirichlet 0.05 (the recorded setting of strongest skew), with the real
ClientApp handlers in this process: no honest reply may be excluded. One local epoch
keeps it to about half a minute; ``benchmarks/outlier_margins.py`` measures the margins
with the recorded 5 epochs.
"""

from __future__ import annotations

import json

import pytest
from hydra_config import hydra_dict
from test_checkpoint import InProcessGrid

from fedrdskd.experiment import experiment_from_dict
from fedrdskd.server_app import run_server
from fedrdskd.strategies.outliers import DEFAULT_MAX_NORM_RATIO, DEFAULT_MAX_NUM_EXAMPLES_RATIO

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _server_identity(server_task_identity):
    """Strategies build messages as a ServerApp would."""


def test_no_honest_reply_of_a_real_skewed_run_is_excluded(shared_data_root, tmp_path):
    experiment = experiment_from_dict(hydra_dict(
        f"data.root={shared_data_root}", "dataset=mnist", "model=lenet5",
        "partition=dirichlet", "partition.alpha=0.05", "num_clients=20",
        "fraction_train=0.5", "local_epochs=1", "num_rounds=2", "seed=0",
        "strategy=fedavg", "server.evaluate_ensemble=false", "server.num_threads=1"))
    run_server(InProcessGrid(experiment), experiment, tmp_path)
    rounds = json.loads((tmp_path / "results.json").read_text())["rounds"]
    for row in rounds:
        assert (row["num_replies"], row["num_excluded"]) == (10, 0), row
        assert row["num_examples_ratio_max"] < DEFAULT_MAX_NUM_EXAMPLES_RATIO / 3
        assert row["update_norm_ratio_max"] < DEFAULT_MAX_NORM_RATIO / 3
        assert row["model_norm_ratio_min"] > 3 / DEFAULT_MAX_NORM_RATIO
    print({key: [round(row[key], 2) for row in rounds] for key in (
        "num_examples_ratio_max", "update_norm_ratio_max", "model_norm_ratio_min")})
