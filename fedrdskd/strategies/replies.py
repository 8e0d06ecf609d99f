"""What is wrong with one client's training reply, if anything, and what the server keeps of it.

A reply is *usable* when Flower's base strategy can aggregate it without raising and
without being taken over by it: no error, the current round's group id, exactly one
ArrayRecord holding the model's arrays (names, shapes and dtypes of the global model,
finite values) and exactly one MetricRecord whose weight (``num-examples``) is a positive
integer. :func:`reply_problem` says in words what a reply lacks; the round-level checks
(metric keys that match the round's majority, outliers) are in
:mod:`fedrdskd.strategies.screening`. Label counts travel in a separate ``ConfigRecord``
(:data:`~fedrdskd.protocol.LABEL_COUNTS_FORMAT`) and are optional; so is the client's
local training time (``"train-seconds"`` in the metrics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord

from fedrdskd.protocol import LABEL_COUNTS_KEY, NUM_EXAMPLES_KEY, TRAIN_SECONDS_KEY

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


@dataclass(frozen=True)
class ModelLayout:
    """Names, shapes and dtypes of the global model's arrays as they travel in an ArrayRecord.

    Attributes
    ----------
    shapes : Mapping[str, tuple[int, ...]]
        Array name -> shape.
    dtypes : Mapping[str, str]
        Array name -> NumPy dtype name (``"float32"``, ``"int64"`` ...).
    """

    shapes: Mapping[str, tuple[int, ...]]
    dtypes: Mapping[str, str]

    @classmethod
    def of(cls, model: torch.nn.Module) -> ModelLayout:
        """The layout of ``model``'s state dict, as Flower serialises it."""
        record = ArrayRecord(model.state_dict())
        return cls(shapes={name: tuple(array.shape) for name, array in record.items()},
                   dtypes={name: array.dtype for name, array in record.items()})


def single_record(records: Mapping[str, R]) -> R | None:
    """The only record of ``records``, or ``None`` if there are none or several."""
    return next(iter(records.values())) if len(records) == 1 else None


def stacked_label_counts(members: Sequence[ClientModel]) -> np.ndarray | None:
    """The members' label counts as a ``[K, C]`` matrix, or ``None`` if one sent none."""
    counts = [member.label_counts for member in members]
    if any(row is None for row in counts):
        return None
    return np.stack(cast(list[np.ndarray], counts))


def weight_problem(value: object, weighted_by_key: str) -> str | None:
    """Why ``value`` cannot weight the average (``num-examples`` must be a positive integer)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not np.isfinite(value) or value <= 0):
        return f"metric '{weighted_by_key}' must be a positive number, got {value!r}"
    if weighted_by_key == NUM_EXAMPLES_KEY and not float(value).is_integer():
        return (f"metric '{weighted_by_key}' must be a whole number of training examples, "
                f"got {value!r}")
    return None


def _array_problem(name: str, array: Array, layout: ModelLayout) -> str | None:
    expected_shape, expected_dtype = tuple(layout.shapes[name]), layout.dtypes[name]
    if tuple(array.shape) != expected_shape:
        return (f"array '{name}' has shape {tuple(array.shape)}, the model expects "
                f"{expected_shape}")
    if array.dtype != expected_dtype:
        return f"array '{name}' has dtype {array.dtype}, the model expects {expected_dtype}"
    try:
        values = array.numpy()
    except Exception as error:  # noqa: BLE001 - any undecodable payload is the client's fault
        return f"array '{name}' cannot be read ({error})"
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        return f"array '{name}' contains NaN or Inf values"
    return None


def arrays_problem(arrays: ArrayRecord, layout: ModelLayout) -> str | None:
    """Why ``arrays`` are not the model's (names, shapes, dtypes, finite values), or None."""
    if set(arrays.keys()) != set(layout.shapes):
        missing = sorted(set(layout.shapes) - set(arrays.keys()))
        extra = sorted(set(arrays.keys()) - set(layout.shapes))
        return f"array names differ from the model (missing {missing}, unexpected {extra})"
    for name, array in arrays.items():
        problem = _array_problem(name, array, layout)
        if problem is not None:
            return problem
    return None


def reply_problem(message: Message, layout: ModelLayout, weighted_by_key: str,
                  server_round: int) -> str | None:
    """Say what is wrong with a training reply, or return ``None`` if it is usable.

    Parameters
    ----------
    message : Message
        A training reply.
    layout : ModelLayout
        The global model's array names, shapes and dtypes.
    weighted_by_key : str
        The metric that weights the average (``"num-examples"``).
    server_round : int
        The current round: the reply must carry it as its group id.

    Returns
    -------
    str | None
        A human-readable reason, or ``None``.
    """
    if message.has_error():
        return f"it carries an error (code {message.error.code}: {message.error.reason})"
    if message.metadata.group_id != str(server_round):
        return (f"it belongs to round {message.metadata.group_id!r} (its group id), not to "
                f"round {server_round}")
    array_records, metric_records = message.content.array_records, message.content.metric_records
    arrays, metrics = single_record(array_records), single_record(metric_records)
    if not isinstance(arrays, ArrayRecord):
        return f"expected exactly one ArrayRecord, got {len(array_records)}"
    if not isinstance(metrics, MetricRecord):
        return f"expected exactly one MetricRecord, got {len(metric_records)}"
    return (weight_problem(metrics.get(weighted_by_key), weighted_by_key)
            or arrays_problem(arrays, layout))


def read_label_counts(message: Message,
                      num_classes: int) -> tuple[np.ndarray | None, str | None]:
    """The reply's per-class label counts, and what is wrong with them if they are malformed.

    Returns
    -------
    tuple[np.ndarray | None, str | None]
        ``(counts, None)`` for valid counts (int64, length ``num_classes``, whole numbers
        >= 0, not all zero), ``(None, None)`` if the reply sends none, ``(None, reason)``
        if it sends malformed ones.
    """
    if LABEL_COUNTS_KEY not in message.content:
        return None, None
    record = message.content[LABEL_COUNTS_KEY]
    counts = record.get(LABEL_COUNTS_KEY) if isinstance(record, ConfigRecord) else None
    if not isinstance(counts, list) or len(counts) != num_classes:
        return None, (f"its label counts must be a list of {num_classes} counts in a "
                      f"ConfigRecord, got {str(counts)[:80]}")
    if any(isinstance(count, bool) or not isinstance(count, (int, float)) for count in counts):
        return None, f"its label counts must be numbers, got {str(counts)[:80]}"
    values = np.asarray(counts, dtype=np.float64)
    if not (np.isfinite(values).all() and (values >= 0).all()
            and (values == np.round(values)).all()):
        return None, f"its label counts must be whole numbers >= 0, got {str(counts)[:80]}"
    if not values.any():
        return None, "its label counts are all zero"
    return values.astype(np.int64), None


def read_train_seconds(metrics: MetricRecord) -> float | None:
    """The reply's ``train-seconds`` if it is a finite number >= 0, else ``None``."""
    seconds = metrics.get(TRAIN_SECONDS_KEY)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return None
    return float(seconds) if np.isfinite(seconds) and seconds >= 0 else None
