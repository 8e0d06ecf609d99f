"""Checkpoints, resuming, and rounds with missing replies, without Ray.

The ServerApp's ``run_server`` is driven with an in-process Grid that hands every
message to the real ClientApp handlers on fake MNIST, so whole runs take seconds.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import MessageType

from fedrdskd.checkpoint import (
    CHECKPOINT_NAME,
    Checkpoint,
    capture_rng_states,
    load_checkpoint,
    restore_rng_states,
    save_checkpoint,
)
from fedrdskd.experiment import ExperimentConfig, experiment_from_dict
from fedrdskd.inprocess import handle_message
from fedrdskd.sampling import SamplingError
from fedrdskd.server_app import run_server

FAST_RDSKD = {"name": "fedrdskd", "generator_steps": 3, "student_steps": 3,
              "batch_size": 8, "generator_channels": 8, "latent_dim": 16,
              "reference_interval": 2}


@pytest.fixture(autouse=True)
def _server_identity(server_task_identity):
    """Strategies build messages as a ServerApp would."""


class InProcessGrid:
    """A Grid whose nodes are the real ClientApp handlers, called in this process.

    Parameters
    ----------
    experiment : ExperimentConfig
        Gives the client settings and the number of nodes (one per partition).
    silent : set[int]
        Partition ids whose nodes never answer (as if their SuperNode had died).
    """

    def __init__(self, experiment: ExperimentConfig, silent: frozenset = frozenset()):
        self.settings = experiment.client
        self.node_ids = [1001 + index for index in range(experiment.num_clients)]
        self.silent = silent
        self.sent: list[tuple[str, int]] = []

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for message in messages:
            node_id = message.metadata.dst_node_id
            partition_id = self.node_ids.index(node_id)
            self.sent.append((message.metadata.message_type, partition_id))
            if partition_id not in self.silent:
                replies.append(handle_message(message, self.settings, partition_id,
                                              len(self.node_ids)))
        return replies


def make_experiment(root: Path, **overrides) -> ExperimentConfig:
    raw = {"dataset": {"name": "mnist"}, "model": {"name": "lenet5"},
           "partition": {"name": "dirichlet", "alpha": 1.0},
           "strategy": dict(FAST_RDSKD), "data": {"root": str(root)},
           "server": {"evaluate_ensemble": False, "eval_batch_size": 200,
                      "num_threads": 1},
           "num_rounds": 3, "num_clients": 3, "fraction_train": 0.67, "seed": 3,
           "batch_size": 32, "round_timeout": 5}
    raw.update(overrides)
    return experiment_from_dict(raw)


def run(experiment: ExperimentConfig, output_dir: Path, *,
        grid: InProcessGrid | None = None, **grid_options) -> dict:
    run_server(grid or InProcessGrid(experiment, **grid_options), experiment, output_dir)
    return json.loads((output_dir / "results.json").read_text())


def final_model(output_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(output_dir / "final_model.pt", weights_only=True)


# ---- the checkpoint file ---------------------------------------------------------------
def test_checkpoint_round_trip_and_rng_restore(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    states = capture_rng_states()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    checkpoint = Checkpoint(
        round=4, arrays={"w": torch.arange(6.0).reshape(2, 3)},
        strategy={"server-optimizer": {"m_t": {"w": np.ones(2)}, "v_t": None}},
        train_metrics={4: {"num-replies": 2, "train-loss": 0.5}},
        recorder={"evaluations": {0: {"test_accuracy": 0.1}}, "wall-seconds": {}},
        rng=states, fingerprint={"seed": 3})
    save_checkpoint(tmp_path / CHECKPOINT_NAME, checkpoint)
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # no temp file left

    loaded, path = load_checkpoint(tmp_path)  # a run directory works too
    assert path == tmp_path / CHECKPOINT_NAME
    assert loaded.round == 4
    assert torch.equal(loaded.arrays["w"], checkpoint.arrays["w"])
    assert loaded.train_metrics == {4: {"num-replies": 2, "train-loss": 0.5}}
    np.testing.assert_array_equal(loaded.strategy["server-optimizer"]["m_t"]["w"],
                                  np.ones(2))
    random.random(), np.random.rand(), torch.rand(1)  # move every generator on
    restore_rng_states(loaded.rng)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_save_replaces_the_previous_checkpoint(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, Checkpoint(round=1, arrays={"w": torch.zeros(1)}))
    save_checkpoint(path, Checkpoint(round=2, arrays={"w": torch.ones(1)}))
    loaded, _ = load_checkpoint(path)
    assert loaded.round == 2 and loaded.arrays["w"].item() == 1.0


@pytest.mark.parametrize("make_path, message", [
    (lambda d: d / "missing" / CHECKPOINT_NAME, "no checkpoint at"),
    (lambda d: d, "no checkpoint at"),  # a directory without checkpoint.pt
])
def test_missing_checkpoint_names_resume_from(tmp_path, make_path, message):
    with pytest.raises(ValueError, match=rf"resume_from=.*{message}"):
        load_checkpoint(make_path(tmp_path))


def test_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="resume_from=.*not a readable checkpoint"):
        load_checkpoint(garbage)
    other = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not a fedrdskd checkpoint.*missing"):
        load_checkpoint(other)


# ---- settings ------------------------------------------------------------------------
@pytest.mark.parametrize("key, value, message", [
    ("min_train_nodes", 0, r"min_train_nodes=0.*\[1, 3\]"),
    ("min_train_nodes", 4, r"min_train_nodes=4.*\[1, 3\]"),
    ("min_train_nodes", 1.5, "min_train_nodes=1.5.*integer"),
    ("round_timeout", 0, r"round_timeout=0.*\(0.0, "),
    ("round_timeout", "long", "round_timeout='long'.*number"),
])
def test_fault_tolerance_settings_are_validated(tmp_path, key, value, message):
    with pytest.raises(ValueError, match=message):
        make_experiment(tmp_path, **{key: value})


def test_fault_tolerance_defaults(tmp_path):
    experiment = make_experiment(tmp_path)
    defaults = experiment_from_dict({"dataset": {"name": "mnist"},
                                     "model": {"name": "lenet5"}})
    assert (defaults.min_train_nodes, defaults.round_timeout) == (1, 3600.0)
    assert defaults.resume_from is None
    assert experiment.round_timeout == 5.0


# ---- whole runs ---------------------------------------------------------------------
def test_resume_gives_the_uninterrupted_results(tmp_path, fake_mnist_root):
    settings = {"num_clients": 4, "fraction_train": 0.5}
    full_grid = InProcessGrid(make_experiment(fake_mnist_root, **settings))
    full = run(make_experiment(fake_mnist_root, **settings), tmp_path / "full",
               grid=full_grid)
    first = run(make_experiment(fake_mnist_root, num_rounds=2, **settings),
                tmp_path / "first")
    random.seed(7)  # whatever the process did meanwhile must not matter
    torch.manual_seed(12345)
    resumed_grid = InProcessGrid(make_experiment(fake_mnist_root, **settings))
    resumed = run(make_experiment(fake_mnist_root, resume_from=str(tmp_path / "first"),
                                  **settings),
                  tmp_path / "resumed", grid=resumed_grid)

    # the same clients, in the same order, trained in round 3 (sampling seeded per round)
    def trained(grid):
        return [sent for sent in grid.sent if sent[0] == MessageType.TRAIN]

    assert trained(resumed_grid) == trained(full_grid)[-2:]
    assert [row["round"] for row in first["rounds"]] == [1, 2]
    assert [row["round"] for row in resumed["rounds"]] == [1, 2, 3]
    for key in ("test_accuracy", "test_loss", "train_loss", "num_replies",
                "num_sampled", "num_answered", "kd_loss", "generator_total",
                "kl_after"):
        expected = [row[key] for row in full["rounds"]]
        assert [row[key] for row in resumed["rounds"]] == pytest.approx(expected), key
    assert [row["num_sampled"] for row in full["rounds"]] == [2, 2, 2]
    sampling = full["summary"]["sampling"]
    assert sampling.pop("query_seconds") >= 0
    assert sampling == {"seeded": True, "nodes_reported": 4, "nodes": 4, "nodes_expected": 4}
    assert (tmp_path / "full" / "partition.png").stat().st_size > 0  # the ServerApp's own
    machine = full["summary"]["machine"]  # what the last digits depend on
    assert machine["torch"] == torch.__version__ and machine["server_threads"] >= 1
    assert machine["cpu"] and machine["cpus"] >= 1
    full_model, resumed_model = final_model(tmp_path / "full"), final_model(
        tmp_path / "resumed")
    assert full_model.keys() == resumed_model.keys()
    for name, tensor in full_model.items():
        torch.testing.assert_close(resumed_model[name], tensor, rtol=1e-5, atol=1e-6)
    # round 3 changed the model, so the comparison above is not of round-2 models
    after_two = final_model(tmp_path / "first")
    assert any(not torch.equal(after_two[k], v) for k, v in full_model.items())
    checkpoint, _ = load_checkpoint(tmp_path / "resumed")
    assert checkpoint.round == 3 and "distillation" in checkpoint.strategy


def test_resume_refuses_other_settings_and_done_rounds(tmp_path, fake_mnist_root):
    run(make_experiment(fake_mnist_root, num_rounds=1, strategy={"name": "fedavg"}),
        tmp_path / "first")
    other_seed = make_experiment(fake_mnist_root, seed=4, strategy={"name": "fedavg"},
                                 resume_from=str(tmp_path / "first"))
    with pytest.raises(ValueError, match="other settings.*seed: checkpoint 3, config 4"):
        run(other_seed, tmp_path / "again")
    distilling = make_experiment(fake_mnist_root, resume_from=str(tmp_path / "first"))
    with pytest.raises(ValueError, match="strategy: checkpoint 'fedavg'"):
        run(distilling, tmp_path / "again")


def test_round_below_min_train_nodes_keeps_the_model(tmp_path, fake_mnist_root):
    experiment = make_experiment(fake_mnist_root, num_rounds=2, fraction_train=1.0,
                                 min_train_nodes=2, strategy={"name": "fedavg"},
                                 allow_unseeded_sampling=True)
    # partitions 1 and 2 never answer: one reply per round, fewer than 2
    results = run(experiment, tmp_path / "run", silent=frozenset({1, 2}))
    rows = results["rounds"]
    assert [(r["num_sampled"], r["num_answered"], r["num_replies"]) for r in rows] == [
        (3, 1, 0), (3, 1, 0)]
    initial = results["summary"]["initial_test_accuracy"]
    assert [r["test_accuracy"] for r in rows] == [initial, initial]


def test_round_with_missing_replies_proceeds_and_counts_them(tmp_path, fake_mnist_root):
    experiment = make_experiment(fake_mnist_root, num_rounds=1, fraction_train=1.0,
                                 min_train_nodes=2, strategy={"name": "fedavg"})
    # node 0 never answers the partition-id query either: sampling cannot follow the seed
    with pytest.raises(SamplingError, match="1 of 3 nodes did not report their partition id"):
        run(experiment, tmp_path / "refused", silent=frozenset({0}))
    assert not (tmp_path / "refused" / "results.json").exists()
    experiment = dataclasses.replace(experiment, allow_unseeded_sampling=True)
    results = run(experiment, tmp_path / "run", silent=frozenset({0}))
    (row,) = results["rounds"]
    assert (row["num_sampled"], row["num_answered"], row["num_replies"]) == (3, 2, 2)
    sampling = results["summary"]["sampling"]  # the outcome is recorded
    assert sampling.pop("query_seconds") >= 0
    assert sampling == {"seeded": False, "nodes_reported": 2, "nodes": 3, "nodes_expected": 3}
    checkpoint, _ = load_checkpoint(tmp_path / "run")
    assert row["test_loss"] != checkpoint.recorder["evaluations"][0]["test_loss"]
    assert checkpoint.round == 1
    assert checkpoint.train_metrics[1]["num-answered"] == 2
    final = final_model(tmp_path / "run")
    assert all(torch.equal(final[k], v) for k, v in checkpoint.arrays.items())


def test_fewer_nodes_than_num_clients_stop_the_run_with_the_fix(tmp_path, fake_mnist_root):
    experiment = make_experiment(fake_mnist_root, connect_timeout=0.05)
    grid = InProcessGrid(experiment)
    grid.node_ids = grid.node_ids[:2]  # a federation of 2 SuperNodes for num_clients=3
    with pytest.raises(SamplingError, match=r"Only 2 of num_clients=3 nodes connected within "
                                            r"connect_timeout=0.05 s.*num-supernodes=3"):
        run(experiment, tmp_path / "run", grid=grid)
