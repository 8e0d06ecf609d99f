"""A mixin that keeps each round's client models as an ensemble, on top of any strategy.

``ClientEnsembleMixin`` goes *before* a Flower Message-API strategy in the bases
(``class MyStrategy(ClientEnsembleMixin, FedProx)``). Its ``configure_train`` and
``configure_evaluate`` sample clients from a stream seeded by ``(sampling_seed, round)``
when given one (:class:`~fedrdskd.sampling.SeededSampling`). Its ``aggregate_train``:

1. materialises the replies (``replies = list(replies)``) and counts those with
   content; with fewer than ``min_replies`` the round keeps the global model;
2. screens them: replies with NaN/Inf values or wrong shapes are excluded, with a
   warning naming the node;
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
content before the timeout).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from logging import INFO, WARNING
from typing import TYPE_CHECKING

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid

from fedrdskd.checks import check_number
from fedrdskd.sampling import SeededSampling
from fedrdskd.strategies.replies import ClientModel, screen_replies

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
        ensemble_evaluate_fn: EnsembleEvaluateFn | None = None,
        sampling_seed: int | None = None,
        min_replies: int = 1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_number("num_classes", num_classes, 2, integer=True)
        self.min_replies = check_number("min_replies", min_replies, 1, integer=True)
        self.model_fn = model_fn
        self.num_classes = num_classes
        self.ensemble_evaluate_fn = ensemble_evaluate_fn
        self.sampling = SeededSampling(sampling_seed)
        self.num_sampled: int | None = None
        self.expected_shapes = {
            name: tuple(tensor.shape) for name, tensor in model_fn().state_dict().items()
        }

    def summary(self) -> None:
        """Log the base strategy's summary, then the ensemble settings."""
        super().summary()
        log(INFO, "\t└──> Client ensemble: %d classes, diagnostics %s",
            self.num_classes, "on" if self.ensemble_evaluate_fn else "off")

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The base strategy's messages, its clients sampled from the round's seeded stream."""
        self.sampling.start_round(server_round)
        with self.sampling.active():
            messages = list(super().configure_train(server_round, arrays, config, grid))
        self.num_sampled = len(messages)
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
        passed, members = screen_replies(
            server_round, replies, self.expected_shapes, self.weighted_by_key,
            self.num_classes)
        excluded = len(replies) - len(passed)
        if not members:
            log(WARNING, "Round %d: no valid client replies (%d excluded); the global "
                "model is left unchanged.", server_round, excluded)
            return None, MetricRecord({"num-replies": 0, "num-excluded": excluded, **counts})
        arrays, metrics = super().aggregate_train(server_round, passed)
        if arrays is None:
            return None, MetricRecord({**dict(metrics or {}), **counts})
        refined, extra = self.refine_global_model(server_round, arrays, members)
        server_seconds = time.perf_counter() - started
        diagnostics = self._diagnose(server_round, members, arrays)
        merged = dict(metrics or {})
        merged.update(_float_metrics(extra))
        merged.update(diagnostics)
        merged.update(client_train_seconds(members))
        merged.update({"num-replies": len(members), "num-excluded": excluded,
                       "server-seconds": server_seconds, **counts})
        return refined, MetricRecord(merged)

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
