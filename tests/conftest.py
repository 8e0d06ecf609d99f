"""Shared fixtures: the offline data root, and small datasets in real formats."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from flwr.supercore.task_identity import TaskIdentity

from fake_data import write_fake_mnist


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """The real offline datasets (``$FEDRDSKD_DATA``); skip with a reason if unset."""
    root = os.environ.get("FEDRDSKD_DATA")
    if not root:
        pytest.skip("FEDRDSKD_DATA is not set: point it at the offline datasets "
                    "(e.g. ../shared/data) to run the real-data tests")
    return Path(root)


@pytest.fixture(scope="session")
def fake_mnist_root(tmp_path_factory) -> Path:
    """A 600/200-image dataset in MNIST's IDX format (learnable class patterns)."""
    return write_fake_mnist(tmp_path_factory.mktemp("fake-data"))


@pytest.fixture
def server_task_identity(monkeypatch):
    """What a ServerApp runtime sets before strategies build messages (node 0 = server)."""
    for attribute, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, attribute, value)


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: tiny models run faster without thread hand-offs on a busy CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
