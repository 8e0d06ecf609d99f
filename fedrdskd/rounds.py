"""Flower's round loop from any first round, with a hook after each round (for resuming).

``Strategy.start`` always runs rounds ``1..num_rounds`` and keeps the per-round metrics
to itself until it returns. Resuming needs the *true* round number in every call (it is
sent to the clients as ``server-round`` and seeds their shuffling and the strategy's
client sampling; the distillation schedule decays with it; FedAdam's moments continue
from it), and a checkpoint after each round needs the metrics so far. So
:func:`run_rounds` runs the body of ``start``'s loop (configure, send and receive,
aggregate train; the same for evaluate; the centralised evaluation) for rounds
``first_round..num_rounds`` and calls ``after_round`` after each. Uninterrupted and
resumed runs both go through it.

That is all it does. Client sampling, the order of replies, the fewest replies a round
aggregates and the counts of sampled and answering clients belong to the strategy
(:class:`~fedrdskd.strategies.client_ensemble.ClientEnsembleMixin`) and the grid
(:class:`~fedrdskd.sampling.PartitionOrderedGrid`), as they do under ``start``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from logging import INFO

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]
AfterRound = Callable[[int, ArrayRecord, float], None]
"""``(server_round, arrays, seconds)``: ``seconds`` is the round's federated wall time
(training and federated evaluation, without the centralised evaluation)."""


def run_rounds(strategy: Strategy, grid: Grid, arrays: ArrayRecord, *, first_round: int,
               num_rounds: int, timeout: float, train_config: ConfigRecord,
               history: Result, evaluate_fn: EvaluateFn, after_round: AfterRound,
               ) -> ArrayRecord:
    """Run rounds ``first_round..num_rounds`` as ``Strategy.start`` does; return the model.

    Parameters
    ----------
    strategy : Strategy
        Any Flower Message-API strategy.
    grid : Grid
        Where the messages go.
    arrays : ArrayRecord
        The global model before ``first_round``.
    first_round, num_rounds : int
        The rounds to run (``first_round > 1`` when resuming).
    timeout : float
        Seconds to wait for the replies of one phase (train, then evaluate).
    train_config : ConfigRecord
        What every training message tells the clients (copied each round).
    history : Result
        Receives the round's train, federated-evaluate and centralised metrics, and the
        global model, as in ``start``'s result.
    evaluate_fn : Callable[[int, ArrayRecord], MetricRecord | None]
        Centralised evaluation of the global model after each round (``start``'s
        ``evaluate_fn``).
    after_round : Callable[[int, ArrayRecord, float], None]
        Called last in every round with the round, the global model and the round's
        federated seconds (e.g. to write a checkpoint).
    """
    for server_round in range(first_round, num_rounds + 1):
        log(INFO, "")
        log(INFO, "[ROUND %s/%s]", server_round, num_rounds)
        started = time.perf_counter()
        replies = grid.send_and_receive(strategy.configure_train(
            server_round, arrays, ConfigRecord(dict(train_config)), grid), timeout=timeout)
        new_arrays, train_metrics = strategy.aggregate_train(server_round, replies)
        if new_arrays is not None:
            arrays = new_arrays
        if train_metrics is not None:
            history.train_metrics_clientapp[server_round] = train_metrics
        replies = grid.send_and_receive(strategy.configure_evaluate(
            server_round, arrays, ConfigRecord(), grid), timeout=timeout)
        evaluate_metrics = strategy.aggregate_evaluate(server_round, replies)
        if evaluate_metrics is not None:
            history.evaluate_metrics_clientapp[server_round] = evaluate_metrics
        seconds = time.perf_counter() - started
        server_metrics = evaluate_fn(server_round, arrays)
        if server_metrics is not None:
            history.evaluate_metrics_serverapp[server_round] = server_metrics
        history.arrays = arrays
        after_round(server_round, arrays, seconds)
    return arrays
