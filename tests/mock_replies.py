"""Building Flower training replies in tests, without a Flower runtime or Ray."""

from __future__ import annotations

import time

import torch
from flwr.app import (ArrayRecord, ConfigRecord, Error, Message, MessageType, Metadata,
                      MetricRecord, RecordDict)
from torch import nn


class TinyNet(nn.Module):
    """A 1x8x8 -> 3-class model small enough for exact, fast strategy tests."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def tiny_model(seed: int) -> TinyNet:
    """A TinyNet with seeded weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyNet()


def reply_metadata(node_id: int, server_round: int = 1) -> Metadata:
    """The metadata of node ``node_id``'s training reply in round ``server_round``."""
    return Metadata(run_id=1, message_id=f"reply-{node_id}", src_node_id=node_id,
                    dst_node_id=0, reply_to_message_id=f"ins-{node_id}",
                    group_id=str(server_round), created_at=time.time(), ttl=3600.0,
                    message_type=MessageType.TRAIN)


def train_reply(state_dict: dict, *, node_id: int, num_examples: int,
                label_counts: list | None = None, train_loss: float = 1.0,
                server_round: int = 1, train_seconds: float | None = None,
                extra_metrics: dict | None = None, arrays_key: str = "arrays",
                metrics_key: str = "metrics") -> Message:
    """A training reply as a ClientApp of this project sends it (``train_seconds``:
    its ``train-seconds`` metric, left out when ``None``); ``extra_metrics`` are added
    to (or, with value ``None``, removed from) its metrics."""
    metrics = {"train-loss": train_loss, "num-examples": num_examples}
    if train_seconds is not None:
        metrics["train-seconds"] = train_seconds
    for key, value in (extra_metrics or {}).items():
        if value is None:
            metrics.pop(key)
        else:
            metrics[key] = value
    content = RecordDict({
        arrays_key: ArrayRecord({k: v.detach().clone() for k, v in state_dict.items()}),
        metrics_key: MetricRecord(metrics),
    })
    if label_counts is not None:
        content["label-counts"] = ConfigRecord({"label-counts": list(label_counts)})
    return Message(content=content, metadata=reply_metadata(node_id, server_round))


def error_reply(node_id: int, server_round: int = 1) -> Message:
    """A reply whose ClientApp failed (it carries an error, no content)."""
    return Message(error=Error(code=0, reason="the ClientApp raised"),
                   metadata=reply_metadata(node_id, server_round))


class FakeGrid:
    """The one thing ``configure_train`` asks of a Grid: the connected node ids."""

    def __init__(self, node_ids: list[int]) -> None:
        self.node_ids = node_ids

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)


def assert_same_arrays(left, right) -> None:
    """Two ``ArrayRecord`` s hold exactly equal tensors under the same names."""
    left, right = left.to_torch_state_dict(), right.to_torch_state_dict()
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), name
