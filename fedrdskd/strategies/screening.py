"""Screening a round's training replies so that no single client can stop or take over it.

:func:`screen_replies` keeps the replies that Flower's base strategy can aggregate and
that look like the round's other replies, and copies their models for the ensemble.
Every reply it leaves out is counted and logged at WARNING with the node and the reason:

1. the reply itself is unusable (:func:`~fedrdskd.strategies.replies.reply_problem`:
   an error, another round's group id, not exactly one ArrayRecord and one
   MetricRecord, a weight that is not a positive integer, arrays that are not the
   model's), or its label counts are malformed or missing where the strategy needs them;
2. its records are laid out differently from the round's majority (another ArrayRecord
   or MetricRecord name, other metric keys, a list metric of another length): Flower's
   ``FedAvg`` would refuse the whole round (``InconsistentMessageReplies``);
3. it is an outlier (:class:`~fedrdskd.strategies.outliers.OutlierScreen`): it claims far
   more training examples than the round's median, its update is far larger than the
   round's median update, or its parameters far smaller than the round's (all zero).

:func:`screen_evaluate_replies` does the same for evaluation replies (1 and 2 without
the model: one MetricRecord with a positive weight and finite values, laid out as the
round's majority).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from logging import WARNING

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.common import log

from fedrdskd.protocol import LABEL_COUNTS_FORMAT
from fedrdskd.strategies.outliers import OutlierScreen
from fedrdskd.strategies.replies import (
    ClientModel,
    ModelLayout,
    read_label_counts,
    read_train_seconds,
    reply_problem,
    single_record,
    weight_problem,
)


@dataclass
class Screening:
    """What :func:`screen_replies` kept of a round's replies.

    Attributes
    ----------
    passed : list[Message]
        The replies for the base strategy.
    members : list[ClientModel]
        Copies of their models, for the ensemble (same order).
    excluded : int
        Replies left out (each logged at WARNING with the reason).
    metrics : dict[str, float]
        The kept replies' largest ratios to the round's median (see :class:`OutlierScreen`).
    """

    passed: list[Message] = field(default_factory=list)
    members: list[ClientModel] = field(default_factory=list)
    excluded: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


def metric_layout(message: Message) -> tuple:
    """The MetricRecord's name and keys (with list lengths): equal across replies."""
    name, metrics = next(iter(message.content.metric_records.items()))
    return name, tuple(sorted((key, len(value) if isinstance(value, list) else -1)
                              for key, value in metrics.items()))


def record_layout(message: Message) -> tuple:
    """What Flower requires to be equal across a round's replies: record names, metric keys."""
    return (next(iter(message.content.array_records)), *metric_layout(message))


def describe_layout(layout: tuple) -> str:
    """A layout of :func:`record_layout` in words."""
    array_name, metric_name, kinds = layout
    keys = ", ".join(key if length < 0 else f"{key}[{length}]" for key, length in kinds)
    return f"ArrayRecord '{array_name}', MetricRecord '{metric_name}' with keys {{{keys}}}"


def _exclude(server_round: int, message: Message, reason: str) -> None:
    log(WARNING, "Round %d: excluding the reply of node %d: %s.", server_round,
        message.metadata.src_node_id, reason)


def _label_counts(message: Message, num_classes: int, required: bool,
                  server_round: int) -> tuple[np.ndarray | None, str | None]:
    """The reply's label counts, or why the reply is left out for them."""
    counts, problem = read_label_counts(message, num_classes)
    if problem is not None and not required:
        log(WARNING, "Round %d: ignoring the label counts of node %d: %s.", server_round,
            message.metadata.src_node_id, problem)
        problem = None
    if required and counts is None and problem is None:
        problem = ("it sends no label counts, which this strategy needs "
                   f"(a ClientApp adds them as {LABEL_COUNTS_FORMAT})")
    return counts, problem


def screen_replies(server_round: int, replies: Sequence[Message], layout: ModelLayout,
                   weighted_by_key: str, num_classes: int, *, outliers: OutlierScreen,
                   reference: Mapping[str, torch.Tensor] | None = None,
                   label_counts_required: bool = False) -> Screening:
    """Keep the round's usable replies (see the module docstring) and copy their models.

    Parameters
    ----------
    server_round : int
        The round (replies must carry it as their group id).
    replies : Sequence[Message]
        The round's training replies, in partition order.
    layout : ModelLayout
        The global model's array names, shapes and dtypes.
    weighted_by_key : str
        The metric that weights the average.
    num_classes : int
        Length of valid label counts.
    outliers : OutlierScreen
        The round's outlier screen.
    reference : Mapping[str, torch.Tensor] | None (default: None)
        The global model the clients started from (for the update norms).
    label_counts_required : bool (default: False)
        Leave out replies without valid label counts (else malformed ones are ignored).
    """
    screening = Screening()
    usable: list[tuple[Message, np.ndarray | None]] = []
    for message in replies:
        problem = reply_problem(message, layout, weighted_by_key, server_round)
        counts = None
        if problem is None:
            counts, problem = _label_counts(message, num_classes, label_counts_required,
                                            server_round)
        if problem is not None:
            _exclude(server_round, message, problem)
            continue
        usable.append((message, counts))
    layouts = [record_layout(message) for message, _ in usable]
    majority = Counter(layouts).most_common(1)[0][0] if layouts else None
    candidates: list[tuple[Message, ClientModel]] = []
    for (message, counts), reply_layout in zip(usable, layouts):
        if majority is not None and reply_layout != majority:
            _exclude(server_round, message, f"its records ({describe_layout(reply_layout)}) "
                     f"differ from the round's majority ({describe_layout(majority)})")
            continue
        candidates.append((message, _client_model(message, weighted_by_key, counts)))
    found, screening.metrics = outliers.problems([model for _, model in candidates],
                                                 reference)
    for index, (message, model) in enumerate(candidates):
        if index in found:
            _exclude(server_round, message, f"it is an outlier: {found[index]}")
            continue
        screening.passed.append(message)
        screening.members.append(model)
    screening.excluded = len(replies) - len(screening.passed)
    return screening


def evaluate_reply_problem(message: Message, weighted_by_key: str) -> str | None:
    """Say what is wrong with an evaluation reply, or return ``None`` if it is usable."""
    if message.has_error():
        return f"it carries an error (code {message.error.code}: {message.error.reason})"
    metrics = single_record(message.content.metric_records)
    if not isinstance(metrics, MetricRecord):
        return f"expected exactly one MetricRecord, got {len(message.content.metric_records)}"
    for key, value in metrics.items():
        if not np.all(np.isfinite(np.asarray(value, dtype=float))):
            return f"metric '{key}' is not finite ({value!r})"
    return weight_problem(metrics.get(weighted_by_key), weighted_by_key)


def screen_evaluate_replies(server_round: int, replies: Sequence[Message],
                            weighted_by_key: str) -> list[Message]:
    """The evaluation replies Flower's base strategy can aggregate.

    Each one left out is logged at WARNING with the node and the reason.
    """
    usable = []
    for message in replies:
        problem = evaluate_reply_problem(message, weighted_by_key)
        if problem is None:
            usable.append(message)
        else:
            _exclude(server_round, message, problem)
    layouts = [metric_layout(message) for message in usable]
    majority = Counter(layouts).most_common(1)[0][0] if layouts else None
    passed = []
    for message, layout in zip(usable, layouts):
        if layout == majority:
            passed.append(message)
        else:
            _exclude(server_round, message, f"its MetricRecord {layout} differs from the "
                     f"round's majority {majority}")
    return passed


def _client_model(message: Message, weighted_by_key: str,
                  counts: np.ndarray | None) -> ClientModel:
    """A private copy of a usable reply's model and numbers."""
    arrays = single_record(message.content.array_records)
    metrics = single_record(message.content.metric_records)
    assert isinstance(arrays, ArrayRecord) and isinstance(metrics, MetricRecord)
    return ClientModel(
        node_id=message.metadata.src_node_id,
        state_dict={k: v.clone() for k, v in arrays.to_torch_state_dict().items()},
        num_examples=int(float(metrics[weighted_by_key])),  # type: ignore[arg-type]
        label_counts=counts, train_seconds=read_train_seconds(metrics))
