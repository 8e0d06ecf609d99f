"""A mixin that keeps each round's client models as an ensemble, on top of any strategy.

``ClientEnsembleMixin`` goes *before* a Flower Message-API strategy in the bases
(``class MyStrategy(ClientEnsembleMixin, FedProx)``). Its ``configure_train`` and
``configure_evaluate`` sample clients from a stream seeded by ``(sampling_seed, round)``
when given one (:class:`~fedrdskd.sampling.SeededSampling`). Its ``aggregate_train``:

1. materialises the replies (``replies = list(replies)``) and counts those with
   content; with fewer than ``min_replies`` the round keeps the global model;
2. screens them (:mod:`fedrdskd.strategies.screening`): a reply that the base strategy
   could not aggregate (an error, another round, arrays that are not the model's, a
   weight that is not a positive integer, records laid out unlike the round's
   majority) or that is an outlier (claimed size or update norm far above the round's
   median) is excluded, counted in ``num-excluded`` and logged at WARNING naming the
   node and the reason;
3. copies the valid clients' models (before the base strategy runs, because some
   strategies such as ``FedTrimmedAvg`` pop the arrays out of the replies);
4. calls the base strategy's ``aggregate_train`` on the valid replies;
5. hands the aggregate and the client models to :meth:`refine_global_model` (a no-op
   here; the distillation strategies override it);
6. optionally evaluates the client ensemble with ``ensemble_evaluate_fn`` (a
   diagnostic the simulation passes in; timed separately from the server's work). It
   also receives the aggregate *before* refinement, so the harness can measure what
   the refinement added.

Besides the base strategy's metrics, a round reports ``num-replies``,
``num-excluded``, ``server-seconds`` (screening, aggregation and refinement), over the
valid replies that carry ``train-seconds``, ``client-train-seconds-sum`` and
``client-train-seconds-max`` (the clients' own timings: with clients training in
parallel, the max is the round's client time, whatever load the server is under), and
``num-sampled`` (messages ``configure_train`` sent) and ``num-answered`` (replies with
content before the timeout), and the outlier screen's ``num-examples-ratio-max``,
``update-norm-ratio-max`` and ``model-norm-ratio-min`` (the extreme ratios to the
round's medians among the kept replies: how close honest clients come to the margins).

The model is checked at construction: ``model_fn()`` must build a ``torch.nn.Module``
and, given ``input_shape``, map a batch of that shape to ``num_classes`` logits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from logging import INFO, WARNING
from typing import TYPE_CHECKING, cast

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid

from fedrdskd.checks import check_number, invalid
from fedrdskd.sampling import SeededSampling
from fedrdskd.strategies.outliers import (
    DEFAULT_MAX_NORM_RATIO,
    DEFAULT_MAX_NUM_EXAMPLES_RATIO,
    OutlierScreen,
)
from fedrdskd.strategies.replies import ClientModel, ModelLayout
from fedrdskd.strategies.screening import Screening, screen_evaluate_replies, screen_replies

if TYPE_CHECKING:  # what the mixin goes in front of (FedAvg and its subclasses)
    from flwr.serverapp.strategy import FedAvg as _StrategyBase
else:
    _StrategyBase = object

EnsembleEvaluateFn = Callable[[int, Sequence[ClientModel], ArrayRecord], dict[str, float]]
"""``(server_round, members, aggregate)``: ``aggregate`` is the base strategy's model
before :meth:`ClientEnsembleMixin.refine_global_model`."""
CLIENT_TRAIN_SECONDS_SUM_KEY = "client-train-seconds-sum"
CLIENT_TRAIN_SECONDS_MAX_KEY = "client-train-seconds-max"


def _float_metrics(values: dict[str, float]) -> dict[str, float]:
    return {key: float(value) for key, value in values.items()}


def checked_model(model_fn: Callable[[], torch.nn.Module], num_classes: int,
                  input_shape: tuple[int, int, int] | None) -> torch.nn.Module:
    """One ``model_fn()`` model; checked to map a batch of ``input_shape`` to logits.

    Raises
    ------
    ValueError
        Naming ``model_fn``, ``input_shape`` or ``num_classes`` and what the model does.
    """
    model = model_fn() if callable(model_fn) else None
    if not isinstance(model, torch.nn.Module):
        raise invalid("model_fn", model_fn, "must be a function of no arguments that returns "
                      f"a fresh torch.nn.Module, it returned {type(model).__name__}")
    if input_shape is None:
        return model
    try:
        with torch.no_grad():
            logits = model.eval()(torch.zeros(2, *input_shape))
    except Exception as error:  # noqa: BLE001 - whatever the model raises, say which setting
        raise invalid("input_shape", input_shape, "the model of model_fn() fails on a batch "
                      f"of that shape ({type(error).__name__}: {error}); give the (C, H, W) "
                      "of the images it takes") from error
    if tuple(getattr(logits, "shape", ())) != (2, num_classes):
        raise invalid("num_classes", num_classes, "the model of model_fn() maps a batch of 2 "
                      f"inputs of shape {tuple(input_shape)} to an output of shape "
                      f"{tuple(getattr(logits, 'shape', ()))}, not (2, {num_classes}) logits")
    return model


def client_train_seconds(members: Sequence[ClientModel]) -> dict[str, float]:
    """Sum and max of the members' ``train-seconds`` (empty if none reported them)."""
    seconds = [member.train_seconds for member in members
               if member.train_seconds is not None]
    if not seconds:
        return {}
    return {CLIENT_TRAIN_SECONDS_SUM_KEY: float(sum(seconds)),
            CLIENT_TRAIN_SECONDS_MAX_KEY: float(max(seconds))}


class ClientEnsembleMixin(_StrategyBase):
    """Screen replies and expose the round's client models to a refinement hook.

    Parameters
    ----------
    model_fn : Callable[[], torch.nn.Module]
        Returns a freshly constructed model of the federation's architecture.
    num_classes : int
        Number of classes (length of the clients' label counts).
    input_shape : tuple[int, int, int] | None (default: None)
        ``(C, H, W)`` of the model's input; given, the model is checked at construction
        on a batch of that shape.
    ensemble_evaluate_fn : Callable[[int, Sequence[ClientModel], ArrayRecord], dict] | None
        (default: None) Diagnostic called every round with the valid client models
        and the aggregate before refinement; its metrics (e.g. the ensemble's test
        accuracy) are added to the round's train metrics. Its time is reported as
        ``diagnostics-seconds``, not as ``server-seconds``.
    sampling_seed : int | None (default: None)
        Sample each round's clients from a stream seeded by ``(sampling_seed, round)``
        (with a grid that lists nodes in partition order, the same partitions in every
        run of the seed, see :mod:`fedrdskd.sampling`); ``None``: Flower's sampling.
    min_replies : int (default: 1)
        Fewest replies with content that a round aggregates; with fewer, it returns no
        arrays (the global model is kept) and warns.
    **kwargs
        Passed on to the next strategy in the MRO (e.g. Flower's ``FedAvg``).
    """

    def __init__(
        self,
        *,
        model_fn: Callable[[], torch.nn.Module],
        num_classes: int,
        input_shape: tuple[int, int, int] | None = None,
        ensemble_evaluate_fn: EnsembleEvaluateFn | None = None,
        sampling_seed: int | None = None,
        min_replies: int = 1,
        max_num_examples_ratio: float | None = DEFAULT_MAX_NUM_EXAMPLES_RATIO,
        max_norm_ratio: float | None = DEFAULT_MAX_NORM_RATIO,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_number("num_classes", num_classes, 2, integer=True)
        self.min_replies = check_number("min_replies", min_replies, 1, integer=True)
        if input_shape is not None:
            if len(tuple(input_shape)) != 3:
                raise invalid("input_shape", input_shape, "must be (C, H, W)")
            input_shape = cast(tuple[int, int, int], tuple(
                check_number(f"input_shape[{index}]", size, 1, integer=True)
                for index, size in enumerate(input_shape)))
        self.model_fn = model_fn
        self.num_classes = num_classes
        self.input_shape = input_shape
        self.layout = ModelLayout.of(checked_model(model_fn, num_classes, input_shape))
        self.outliers = OutlierScreen(max_num_examples_ratio, max_norm_ratio)
        self.ensemble_evaluate_fn = ensemble_evaluate_fn
        self.sampling = SeededSampling(sampling_seed)
        self.num_sampled: int | None = None
        self.round_reference: dict[str, torch.Tensor] | None = None
        self._warned: set[str] = set()

    def summary(self) -> None:
        """Log the base strategy's summary, then the ensemble settings."""
        super().summary()
        log(INFO, "\t└──> Client ensemble: %d classes, diagnostics %s",
            self.num_classes, "on" if self.ensemble_evaluate_fn else "off")
        log(INFO, "\t└──> Outlier screen: %s", self.outliers.describe())

    def warn_once(self, topic: str, message: str, *args: object) -> None:
        """Log ``message`` at WARNING the first time ``topic`` comes up in this strategy."""
        if topic not in self._warned:
            self._warned.add(topic)
            log(WARNING, message, *args)

    def label_counts_needed(self, server_round: int) -> bool:
        """Whether this round leaves out replies without valid label counts (default: no)."""
        return False

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The base strategy's messages, its clients sampled from the round's seeded stream.

        The messages carry the round as their group id (replies of another round are
        then excluded), and the global model is kept to measure the clients' updates.
        """
        self.sampling.start_round(server_round)
        with self.sampling.active():
            messages = list(super().configure_train(server_round, arrays, config, grid))
        for message in messages:
            message.metadata.group_id = str(server_round)
        self.num_sampled = len(messages)
        self.round_reference = arrays.to_torch_state_dict()
        return messages

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord,
                           config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """The base strategy's messages, sampled from the round's stream (continued)."""
        with self.sampling.active():
            return list(super().configure_evaluate(server_round, arrays, config, grid))

    def refine_global_model(
        self, server_round: int, arrays: ArrayRecord, members: Sequence[ClientModel]
    ) -> tuple[ArrayRecord, dict[str, float]]:
        """Improve the aggregated model using the client models (default: unchanged).

        Returns
        -------
        tuple[ArrayRecord, dict[str, float]]
            The new global arrays and metrics to report for the round.
        """
        return arrays, {}

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Count and screen replies, aggregate with the base strategy, then refine."""
        started = time.perf_counter()
        replies = list(replies)
        counts = {"num-sampled": len(replies) if self.num_sampled is None else self.num_sampled,
                  "num-answered": sum(reply.has_content() for reply in replies)}
        self.num_sampled = None
        if counts["num-answered"] < self.min_replies:
            log(WARNING, "Round %d: %d of %d sampled clients answered, fewer than "
                "min_replies=%d; the global model is left unchanged.", server_round,
                counts["num-answered"], counts["num-sampled"], self.min_replies)
            return None, MetricRecord({"num-replies": 0, "num-excluded": 0, **counts})
        screening = self.screen(server_round, replies)
        members, excluded = screening.members, screening.excluded
        if not members:
            log(WARNING, "Round %d: no valid client replies (%d excluded); the global "
                "model is left unchanged.", server_round, excluded)
            return None, MetricRecord({"num-replies": 0, "num-excluded": excluded, **counts})
        arrays, metrics = super().aggregate_train(server_round, screening.passed)
        if arrays is None:
            return None, MetricRecord({**dict(metrics or {}), **counts})
        refined, extra = self.refine_global_model(server_round, arrays, members)
        server_seconds = time.perf_counter() - started
        diagnostics = self._diagnose(server_round, members, arrays)
        merged = dict(metrics or {})
        merged.update(_float_metrics(extra))
        merged.update(diagnostics)
        merged.update(client_train_seconds(members))
        merged.update(screening.metrics)
        merged.update({"num-replies": len(members), "num-excluded": excluded,
                       "server-seconds": server_seconds, **counts})
        return refined, MetricRecord(merged)

    def aggregate_evaluate(self, server_round: int,
                           replies: Iterable[Message]) -> MetricRecord | None:
        """Aggregate the usable evaluation replies with the base strategy.

        Replies it could not aggregate are left out with a warning
        (:func:`~fedrdskd.strategies.screening.screen_evaluate_replies`); ``None`` if
        none is left.
        """
        replies = list(replies)
        passed = screen_evaluate_replies(server_round, replies, self.weighted_by_key)
        if not passed:
            if replies:
                log(WARNING, "Round %d: no valid evaluation replies (%d left out).",
                    server_round, len(replies))
            return None
        return super().aggregate_evaluate(server_round, passed)

    def screen(self, server_round: int, replies: Sequence[Message]) -> Screening:
        """The round's usable replies and their models (:mod:`fedrdskd.strategies.screening`)."""
        return screen_replies(server_round, replies, self.layout, self.weighted_by_key,
                              self.num_classes, outliers=self.outliers,
                              reference=self.round_reference,
                              label_counts_required=self.label_counts_needed(server_round))

    def _diagnose(self, server_round: int, members: Sequence[ClientModel],
                  aggregate: ArrayRecord) -> dict:
        if self.ensemble_evaluate_fn is None:
            return {}
        started = time.perf_counter()
        with torch.no_grad():
            values = _float_metrics(self.ensemble_evaluate_fn(server_round, members,
                                                              aggregate))
        values["diagnostics-seconds"] = time.perf_counter() - started
        return values
