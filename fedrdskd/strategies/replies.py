"""Checking client replies before they reach aggregation or the teacher ensemble.

A reply with NaN/Inf values, missing arrays or arrays whose shapes do not match the
model is *excluded* (with a warning naming the node) rather than averaged in. Label
counts travel in a separate ``ConfigRecord`` (``"label-counts"``) and are optional;
so is the client's local training time (``"train-seconds"`` in the metrics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from logging import WARNING
from typing import TypeVar, cast

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log

from fedrdskd.protocol import LABEL_COUNTS_KEY, TRAIN_SECONDS_KEY

R = TypeVar("R")


@dataclass
class ClientModel:
    """One client's trained model as the server keeps it for the round's ensemble.

    Attributes
    ----------
    node_id : int
        The replying node.
    state_dict : dict[str, torch.Tensor]
        A private copy of the client's weights (safe from strategies that pop arrays).
    num_examples : int
        The client's ``num-examples``.
    label_counts : np.ndarray | None
        Per-class training label counts if the client sent them.
    train_seconds : float | None
        The client's local training seconds if it reported them (default: None).
    """

    node_id: int
    state_dict: dict[str, torch.Tensor]
    num_examples: int
    label_counts: np.ndarray | None
    train_seconds: float | None = None


def _single_record(records: Mapping[str, R]) -> R | None:
    return next(iter(records.values())) if len(records) == 1 else None


def stacked_label_counts(members: Sequence[ClientModel]) -> np.ndarray | None:
    """The members' label counts as a ``[K, C]`` matrix, or ``None`` if one sent none."""
    counts = [member.label_counts for member in members]
    if any(row is None for row in counts):
        return None
    return np.stack(cast(list[np.ndarray], counts))


def reply_problem(
    message: Message, expected_shapes: Mapping[str, tuple[int, ...]], weighted_by_key: str
) -> str | None:
    """Say what is wrong with a training reply, or return ``None`` if it is usable.

    Parameters
    ----------
    message : Message
        A training reply (without an error).
    expected_shapes : Mapping[str, tuple[int, ...]]
        Parameter/buffer name -> shape of the global model.
    weighted_by_key : str
        The metric that weights the average (``"num-examples"``).

    Returns
    -------
    str | None
        A human-readable reason, or ``None``.
    """
    arrays = _single_record(message.content.array_records)
    metrics = _single_record(message.content.metric_records)
    if not isinstance(arrays, ArrayRecord):
        return "expected exactly one ArrayRecord"
    if not isinstance(metrics, MetricRecord):
        return "expected exactly one MetricRecord"
    weight = metrics.get(weighted_by_key)
    if not isinstance(weight, (int, float)) or not np.isfinite(weight) or weight <= 0:
        return f"metric '{weighted_by_key}' must be a positive number, got {weight!r}"
    if set(arrays.keys()) != set(expected_shapes):
        missing = sorted(set(expected_shapes) - set(arrays.keys()))
        extra = sorted(set(arrays.keys()) - set(expected_shapes))
        return f"array names differ from the model (missing {missing}, unexpected {extra})"
    for name, array in arrays.items():
        values = array.numpy()
        if tuple(values.shape) != tuple(expected_shapes[name]):
            return (f"array '{name}' has shape {tuple(values.shape)}, the model expects "
                    f"{tuple(expected_shapes[name])}")
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            return f"array '{name}' contains NaN or Inf values"
    return None


def read_label_counts(message: Message, num_classes: int) -> np.ndarray | None:
    """Return the reply's per-class label counts, or ``None`` if absent or malformed."""
    record = message.content.get(LABEL_COUNTS_KEY)
    if not isinstance(record, ConfigRecord):
        return None
    counts = record.get(LABEL_COUNTS_KEY)
    if not isinstance(counts, list) or len(counts) != num_classes:
        log(WARNING, "Node %d sent malformed label counts (%r); ignoring them.",
            message.metadata.src_node_id, counts)
        return None
    values = np.asarray(counts, dtype=np.float64)
    if not np.isfinite(values).all() or (values < 0).any():
        log(WARNING, "Node %d sent invalid label counts; ignoring them.",
            message.metadata.src_node_id)
        return None
    return values.astype(np.int64)


def read_train_seconds(metrics: MetricRecord) -> float | None:
    """The reply's ``train-seconds`` if it is a finite number >= 0, else ``None``."""
    seconds = metrics.get(TRAIN_SECONDS_KEY)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return None
    return float(seconds) if np.isfinite(seconds) and seconds >= 0 else None


def screen_replies(
    server_round: int,
    replies: Sequence[Message],
    expected_shapes: Mapping[str, tuple[int, ...]],
    weighted_by_key: str,
    num_classes: int,
) -> tuple[list[Message], list[ClientModel]]:
    """Keep the usable training replies and copy their models for the ensemble.

    Replies carrying an error are passed through untouched (the base strategy counts
    and logs them as failures); invalid replies are dropped with a warning.

    Returns
    -------
    tuple[list[Message], list[ClientModel]]
        Replies to hand to the base strategy, and the valid clients' models.
    """
    passed: list[Message] = []
    members: list[ClientModel] = []
    for message in replies:
        if message.has_error():
            passed.append(message)
            continue
        problem = reply_problem(message, expected_shapes, weighted_by_key)
        if problem is not None:
            log(WARNING, "Round %d: excluding the reply of node %d: %s.", server_round,
                message.metadata.src_node_id, problem)
            continue
        arrays = cast(ArrayRecord, _single_record(message.content.array_records))
        metrics = cast(MetricRecord, _single_record(message.content.metric_records))
        members.append(ClientModel(
            node_id=message.metadata.src_node_id,
            state_dict={k: v.clone() for k, v in arrays.to_torch_state_dict().items()},
            num_examples=int(cast(float, metrics[weighted_by_key])),  # checked above
            label_counts=read_label_counts(message, num_classes),
            train_seconds=read_train_seconds(metrics),
        ))
        passed.append(message)
    return passed, members
