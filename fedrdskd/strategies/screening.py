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
3. it is an outlier (:class:`OutlierScreen`): it claims far more training examples than
   the round's median, or its update is far larger than the round's median update.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from logging import WARNING

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.common import log

from fedrdskd.checks import check_number
from fedrdskd.protocol import LABEL_COUNTS_FORMAT
from fedrdskd.strategies.replies import (
    ClientModel,
    ModelLayout,
    read_label_counts,
    read_train_seconds,
    reply_problem,
    single_record,
)

DEFAULT_MAX_NUM_EXAMPLES_RATIO = 100.0
"""Default margin of the size screen (see :class:`OutlierScreen` for the measurements)."""
DEFAULT_MAX_NORM_RATIO = 20.0
"""Default margin of the norm screens (see :class:`OutlierScreen` for the measurements)."""
NUM_EXAMPLES_RATIO_KEY = "num-examples-ratio-max"
UPDATE_NORM_RATIO_KEY = "update-norm-ratio-max"
MODEL_NORM_RATIO_KEY = "model-norm-ratio-min"


def update_norm(state_dict: Mapping[str, torch.Tensor],
                reference: Mapping[str, torch.Tensor] | None = None) -> float:
    """``||w - w_ref||`` over the floating-point arrays (``||w||`` without a reference)."""
    squares = 0.0
    for name, tensor in state_dict.items():
        if tensor.is_floating_point():
            difference = tensor.to(torch.float64)
            if reference is not None:
                difference = difference - reference[name].to(torch.float64)
            squares += float(torch.sum(difference * difference))
    return math.sqrt(squares)


def median_ratios(values: Sequence[float]) -> np.ndarray:
    """Each value over the median of ``values`` (0 over a 0 median is 1, else inf)."""
    array = np.asarray(values, dtype=np.float64)
    median = float(np.median(array))
    if median > 0:
        return array / median
    return np.where(array > 0, math.inf, 1.0)


@dataclass(frozen=True)
class _Check:
    """One screened quantity: its values, the allowed ratio to the median, and the side."""

    metric: str
    what: str
    values: list[float]
    limit: float
    below: bool = False  # the outliers are below median / limit (else above median * limit)

    def outliers(self) -> dict[int, str]:
        relative = median_ratios(self.values)
        flagged = relative < 1 / self.limit if self.below else relative > self.limit
        median = float(np.median(self.values))
        side = "below 1/" if self.below else "above "
        return {int(index): (f"its {self.what} {self.values[index]:.4g} is {relative[index]:.3g} "
                             f"times the round's median {median:.4g}, {side}{self.limit:g}")
                for index in np.flatnonzero(flagged)}

    def extreme(self, kept: Sequence[int]) -> float:
        relative = median_ratios(self.values)[list(kept)]
        if not len(relative):
            return math.nan
        return float(relative.min() if self.below else relative.max())


class OutlierScreen:
    """A robust screen of the round's replies against the round's medians.

    A reply is an outlier when its claimed ``num-examples`` is more than
    ``max_num_examples_ratio`` times the round's median, when its update norm
    ``||w_k - w_global||`` is more than ``max_norm_ratio`` times the round's median
    update norm (e.g. a layer of 1e30), or when its parameter norm ``||w_k||`` is less
    than the round's median parameter norm divided by ``max_norm_ratio`` (e.g. an
    all-zero model, whose update, the whole global model, is only a few times the
    median update). ``None`` switches a screen off. With fewer than three replies the
    median lies between the two and no ratio exceeds 2, so the screen cannot tell which
    one is wrong.

    The defaults never trip on the honest clients of the recorded settings
    (``python benchmarks/outlier_margins.py`` measures and prints these numbers). The
    largest honest ``num-examples`` over its round's median, over the seeded client
    sampling of rounds 1-100 and seeds 0-4 (and, after the slash, over *any* sample of
    the round's size), is 15.2 / 30.6 for MNIST with 20 clients at Dirichlet 0.05,
    9.3 / 9.3 at 0.1, 2.7 / 3.3 at 0.5, and 6.3 / 12.0 for CIFAR-10 with 100 clients at
    0.3. In real 2-round MNIST runs at Dirichlet 0.05 with 5 local epochs (seeds 0 and
    1) the largest honest update norm is 2.16 times its round's median, the smallest
    honest parameter norm 0.95 times its round's median, and an all-zero model's update
    norm 3.6-4.9 times the median (so the parameter-norm side catches it). The
    defaults, 100 and 20, leave margins of 3.3x (sizes, over the worst sample), 9x
    (updates) and 19x (parameters), and still catch the claims that took a round over
    in the issue's fuzzing (1e12 examples, a layer of 1e30, an all-zero model).

    Parameters
    ----------
    max_num_examples_ratio : float | None (default: 100.0)
        Largest ``num-examples`` relative to the round's median; > 1, or None (off).
    max_norm_ratio : float | None (default: 20.0)
        Largest update norm relative to the round's median, and the inverse of the
        smallest parameter norm relative to the round's median; > 1, or None (off).
    """

    def __init__(self, max_num_examples_ratio: float | None = DEFAULT_MAX_NUM_EXAMPLES_RATIO,
                 max_norm_ratio: float | None = DEFAULT_MAX_NORM_RATIO) -> None:
        for name, value in (("max_num_examples_ratio", max_num_examples_ratio),
                            ("max_norm_ratio", max_norm_ratio)):
            if value is not None:
                check_number(name, value, 1.0, math.inf, low_open=True)
        self.max_num_examples_ratio = max_num_examples_ratio
        self.max_norm_ratio = max_norm_ratio

    def describe(self) -> str:
        """The settings in one line, for a strategy's summary."""
        def shown(value: float | None) -> str:
            return "off" if value is None else f"{value:g}x the round's median"

        return (f"num-examples {shown(self.max_num_examples_ratio)} | norms "
                f"{shown(self.max_norm_ratio)}")

    def checks(self, members: Sequence[ClientModel],
               reference: Mapping[str, torch.Tensor] | None) -> list[_Check]:
        """The quantities to screen (the update norm needs the round's global model)."""
        checks = []
        if self.max_num_examples_ratio is not None:
            checks.append(_Check(NUM_EXAMPLES_RATIO_KEY, "num-examples",
                                 [member.num_examples for member in members],
                                 self.max_num_examples_ratio))
        if self.max_norm_ratio is not None:
            if reference is not None:
                checks.append(_Check(UPDATE_NORM_RATIO_KEY, "update norm",
                                     [update_norm(m.state_dict, reference) for m in members],
                                     self.max_norm_ratio))
            checks.append(_Check(MODEL_NORM_RATIO_KEY, "parameter norm",
                                 [update_norm(m.state_dict) for m in members],
                                 self.max_norm_ratio, below=True))
        return checks

    def problems(self, members: Sequence[ClientModel],
                 reference: Mapping[str, torch.Tensor] | None
                 ) -> tuple[dict[int, str], dict[str, float]]:
        """The outliers among ``members`` (index -> reason) and the kept ones' extreme ratios.

        ``reference`` is the global model the round's clients started from (without it,
        the update norms are not screened).
        """
        if not members:
            return {}, {}
        checks = self.checks(members, reference)
        found: dict[int, str] = {}
        for check in checks:
            for index, reason in check.outliers().items():
                found.setdefault(index, reason)
        kept = [index for index in range(len(members)) if index not in found]
        return found, {check.metric: check.extreme(kept) for check in checks}


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


def record_layout(message: Message) -> tuple:
    """What Flower requires to be equal across a round's replies: record names, metric keys."""
    array_name = next(iter(message.content.array_records))
    metric_name, metrics = next(iter(message.content.metric_records.items()))
    kinds = tuple(sorted((key, len(value) if isinstance(value, list) else -1)
                         for key, value in metrics.items()))
    return array_name, metric_name, kinds


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
