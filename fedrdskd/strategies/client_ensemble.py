"""A mixin that keeps each round's client models as an ensemble, on top of any strategy.

``ClientEnsembleMixin`` goes *before* a Flower Message-API strategy in the bases
(``class MyStrategy(ClientEnsembleMixin, FedProx)``). Its ``aggregate_train``:

1. materialises the replies (``replies = list(replies)``) and screens them: replies
   with NaN/Inf values or wrong shapes are excluded, with a warning naming the node;
2. copies the valid clients' models (before the base strategy runs, because some
   strategies such as ``FedTrimmedAvg`` pop the arrays out of the replies);
3. calls the base strategy's ``aggregate_train`` on the valid replies;
4. hands the aggregate and the client models to :meth:`refine_global_model` (a no-op
   here; the distillation strategies override it);
5. optionally evaluates the client ensemble with ``ensemble_evaluate_fn`` (a
   diagnostic the simulation passes in; timed separately from the server's work). It
   also receives the aggregate *before* refinement, so the harness can measure what
   the refinement added.

Besides the base strategy's metrics, a round reports ``num-replies``,
``num-excluded``, ``server-seconds`` (screening, aggregation and refinement) and, over
the valid replies that carry ``train-seconds``, ``client-train-seconds-sum`` and
``client-train-seconds-max`` (the clients' own timings: with clients training in
parallel, the max is the round's client time, whatever load the server is under).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from logging import INFO, WARNING

import torch
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.common import log

from fedrdskd.strategies.replies import ClientModel, screen_replies

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


class ClientEnsembleMixin:
    """Screen replies and expose the round's client models to a refinement hook.

    Parameters
    ----------
    model_fn : Callable[[], torch.nn.Module]
        Returns a freshly constructed model of the federation's architecture.
    num_classes : int
        Number of classes (length of the clients' label counts).
    ensemble_evaluate_fn : Callable[[int, Sequence[ClientModel], ArrayRecord], dict] | None
        (default: None) Diagnostic called every round with the valid client models
        and the aggregate before refinement; its metrics (e.g. the ensemble's test accuracy) are added to the
        round's train metrics. Its time is reported as ``diagnostics-seconds``, not as
        ``server-seconds``.
    **kwargs
        Passed on to the next strategy in the MRO (e.g. Flower's ``FedAvg``).
    """

    def __init__(
        self,
        *,
        model_fn: Callable[[], torch.nn.Module],
        num_classes: int,
        ensemble_evaluate_fn: EnsembleEvaluateFn | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        self.model_fn = model_fn
        self.num_classes = num_classes
        self.ensemble_evaluate_fn = ensemble_evaluate_fn
        self.expected_shapes = {
            name: tuple(tensor.shape) for name, tensor in model_fn().state_dict().items()
        }

    def summary(self) -> None:
        """Log the base strategy's summary, then the ensemble settings."""
        super().summary()
        log(INFO, "\t└──> Client ensemble: %d classes, diagnostics %s",
            self.num_classes, "on" if self.ensemble_evaluate_fn else "off")

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
        """Screen replies, aggregate with the base strategy, then refine."""
        started = time.perf_counter()
        replies = list(replies)
        passed, members = screen_replies(
            server_round, replies, self.expected_shapes, self.weighted_by_key,
            self.num_classes)
        excluded = len(replies) - len(passed)
        if not members:
            log(WARNING, "Round %d: no valid client replies (%d excluded); the global "
                "model is left unchanged.", server_round, excluded)
            return None, MetricRecord({"num-replies": 0, "num-excluded": excluded})
        arrays, metrics = super().aggregate_train(server_round, passed)
        if arrays is None:
            return None, metrics
        refined, extra = self.refine_global_model(server_round, arrays, members)
        server_seconds = time.perf_counter() - started
        diagnostics = self._diagnose(server_round, members, arrays)
        arrays = refined
        merged = dict(metrics or {})
        merged.update(_float_metrics(extra))
        merged.update(diagnostics)
        merged.update(client_train_seconds(members))
        merged.update({"num-replies": len(members), "num-excluded": excluded,
                       "server-seconds": server_seconds})
        return arrays, MetricRecord(merged)

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
