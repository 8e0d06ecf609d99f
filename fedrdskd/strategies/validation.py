"""Client-validated step size: how far the round moves from the aggregate towards distillation.

After distillation the server has two models, the aggregate ``w_avg`` and the distilled
``w_kd``. It sends both to some clients (an ``evaluate.candidates`` message, see
:mod:`fedrdskd.protocol`); each evaluates ``w_avg + β (w_kd − w_avg)`` for a few ``β`` on
its own held-out local split and replies with the losses and accuracies only. The
server pools them (weighted by the clients' held-out sizes) and returns the ``β`` with
the lowest pooled loss, 0 included: a round whose distillation does not help on the
clients' data costs nothing. This is the FL counterpart of FedDF's validation-based
fallback to the FedAvg model (Lin et al., NeurIPS 2020), with data that never leaves the
clients, as in Flower's federated evaluation.

Which clients: ``"others"`` (default) samples as many clients as the round trained,
from those that did *not* train this round, seeded by ``(seed, round)``; ``"round"``
asks the round's own clients. On the round's own clients both candidates are biased
towards those clients' distributions, and the class-weighted ensemble is most accurate
exactly there (each class's expert answers), so they favour distillation even where it
lowers global accuracy (measured with ``benchmarks/distillation_gain.py``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from logging import WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from fedrdskd.checks import check_choice, check_number
from fedrdskd.protocol import (
    ACCURACIES_KEY,
    BETAS_KEY,
    CANDIDATE_CONFIG_KEY,
    CANDIDATE_END_KEY,
    CANDIDATE_REPLY_KEY,
    CANDIDATE_START_KEY,
    CANDIDATES_MESSAGE_TYPE,
    LOSSES_KEY,
    NUM_EXAMPLES_KEY,
)

VALIDATION_CLIENTS = ("others", "round")
MAX_BETA = 4.0
"""Largest candidate ``β``: beyond 1 the round extrapolates along the distillation's
direction (``β = 2`` is about twice the fine-tune's learning rate, without training
twice), which the clients' held-out loss then has to confirm."""


@dataclass(frozen=True)
class CandidateScores:
    """Pooled held-out loss and accuracy of each candidate ``β`` over the replies."""

    betas: tuple[float, ...]
    losses: tuple[float, ...]
    accuracies: tuple[float, ...]
    num_examples: int
    num_replies: int

    def best_beta(self) -> float:
        """The ``β`` of lowest pooled loss (the smallest ``β`` among equal losses)."""
        order = sorted(range(len(self.betas)), key=lambda i: (self.losses[i], self.betas[i]))
        return self.betas[order[0]]


def validation_nodes(node_ids: Sequence[int], round_nodes: Sequence[int], kind: str,
                     seed: int, server_round: int) -> list[int]:
    """The nodes asked to validate: the round's, or as many others (seeded by round)."""
    if kind == "round":
        return list(round_nodes)
    others = [node for node in node_ids if node not in set(round_nodes)]
    sampler = random.Random(f"fedrdskd-validation-{seed}-{server_round}")
    return sampler.sample(others, min(len(round_nodes), len(others)))


def candidate_messages(start: ArrayRecord, end: ArrayRecord, betas: Sequence[float],
                       node_ids: Iterable[int], server_round: int) -> list[Message]:
    """One ``evaluate.candidates`` message per node."""
    content = RecordDict({CANDIDATE_START_KEY: start, CANDIDATE_END_KEY: end,
                          CANDIDATE_CONFIG_KEY: ConfigRecord({BETAS_KEY: list(betas)})})
    return [Message(content=content, dst_node_id=node, message_type=CANDIDATES_MESSAGE_TYPE,
                    group_id=str(server_round)) for node in node_ids]


def pooled_scores(replies: Iterable[Message], betas: Sequence[float]) -> CandidateScores:
    """Pool the valid replies' losses and accuracies, weighted by their held-out sizes.

    Replies with an error, without the record, with lists of the wrong length, with
    non-finite values or without held-out examples are left out (with a warning for
    the malformed ones).
    """
    losses, accuracies, weights = [], [], []
    for reply in replies:
        record = reply.content.get(CANDIDATE_REPLY_KEY) if reply.has_content() else None
        if record is None:
            continue
        try:
            loss = np.asarray(record[LOSSES_KEY], dtype=float)
            accuracy = np.asarray(record[ACCURACIES_KEY], dtype=float)
            examples = float(record[NUM_EXAMPLES_KEY])  # type: ignore[arg-type]  # caught
        except (KeyError, TypeError, ValueError):
            loss = accuracy = np.empty(0)
            examples = 0.0
        if loss.shape != (len(betas),) or accuracy.shape != (len(betas),) \
                or not np.isfinite(loss).all() or not np.isfinite(accuracy).all():
            log(WARNING, "Ignoring a malformed candidate-validation reply of node %d.",
                reply.metadata.src_node_id)
            continue
        if examples > 0:
            losses.append(loss)
            accuracies.append(accuracy)
            weights.append(examples)
    if not weights:
        return CandidateScores(tuple(betas), (), (), 0, 0)
    weight = np.asarray(weights)[:, None] / sum(weights)
    return CandidateScores(tuple(betas), tuple((np.stack(losses) * weight).sum(0).tolist()),
                           tuple((np.stack(accuracies) * weight).sum(0).tolist()),
                           int(sum(weights)), len(weights))


class StepSizeSelector:
    """Picks the round's ``β`` by client validation, or returns a fixed one.

    Parameters
    ----------
    fixed_beta : float
        The ``β`` used without validation, and when no client answers.
    betas : Sequence[float]
        Candidate ``β`` s in (0, :data:`MAX_BETA`] besides 0 (the aggregate, always a
        candidate); empty switches validation off.
    clients : str
        ``"others"`` or ``"round"`` (see the module docstring).
    timeout : float
        Seconds to wait for the validation replies.
    seed : int
        Seeds the choice of ``"others"``.
    """

    def __init__(self, *, fixed_beta: float, betas: Sequence[float], clients: str,
                 timeout: float, seed: int) -> None:
        check_number("student_interpolation", fixed_beta, 0.0, 1.0)
        for beta in betas:  # 0, the aggregate, is always a candidate
            check_number("validation_betas", beta, 0.0, MAX_BETA, low_open=True)
        check_choice("validation_clients", clients, VALIDATION_CLIENTS)
        check_number("validation_timeout", timeout, 0.0, low_open=True)
        self.fixed_beta = float(fixed_beta)
        self.betas = (0.0, *sorted(float(beta) for beta in betas)) if betas else ()
        self.clients, self.timeout, self.seed = clients, float(timeout), seed
        self.grid: Grid | None = None
        self._warned_no_nodes = False

    @property
    def validates(self) -> bool:
        """Whether clients choose ``β``."""
        return bool(self.betas)

    def select(self, server_round: int, start: ArrayRecord, end: ArrayRecord,
               round_nodes: Sequence[int]) -> tuple[float, dict[str, float]]:
        """The round's ``β`` and what the validation measured."""
        if not self.validates:
            return self.fixed_beta, {}
        if self.grid is None:
            log(WARNING, "Round %d: no grid to ask for validation (configure_train was not "
                "called); using student_interpolation=%g.", server_round, self.fixed_beta)
            return self.fixed_beta, {"validation-replies": 0}
        nodes = validation_nodes(list(self.grid.get_node_ids()), round_nodes, self.clients,
                                 self.seed, server_round)
        if not nodes:
            if not self._warned_no_nodes:
                log(WARNING, "Round %d: every connected node trained this round, so "
                    "validation_clients='%s' leaves none to validate; using "
                    "student_interpolation=%g in such rounds (train fewer nodes per round, "
                    "or set validation_clients='round').", server_round, self.clients,
                    self.fixed_beta)
                self._warned_no_nodes = True
            return self.fixed_beta, {"validation-replies": 0}
        replies = self.grid.send_and_receive(
            candidate_messages(start, end, self.betas, nodes, server_round),
            timeout=self.timeout)
        scores = pooled_scores(replies, self.betas)
        if scores.num_replies == 0:
            log(WARNING, "Round %d: no client answered the candidate validation (%d asked; "
                "a ClientApp must handle '%s' messages); using student_interpolation=%g.",
                server_round, len(nodes), CANDIDATES_MESSAGE_TYPE, self.fixed_beta)
            return self.fixed_beta, {"validation-replies": 0}
        beta = scores.best_beta()
        chosen = scores.betas.index(beta)
        return beta, {"validation-replies": scores.num_replies,
                      "validation-examples": scores.num_examples,
                      "validation-loss-aggregate": scores.losses[0],
                      "validation-loss-chosen": scores.losses[chosen],
                      "validation-accuracy-aggregate": scores.accuracies[0],
                      "validation-accuracy-chosen": scores.accuracies[chosen]}
