"""Server-side data-free distillation as a mixin for any Flower Message-API strategy.

``DistillationMixin`` refines the aggregated global model after each round: it builds
the teacher ensemble from the round's valid client models, lets a synthesizer
(:mod:`fedrdskd.kd`) train its generator against that ensemble, and fine-tunes the
aggregate (the student) on generated samples. Method-specific parts (which
synthesizer, the student optimiser, how the strength changes over rounds) are small
hooks that :class:`~fedrdskd.strategies.FedRDSKD` and
:class:`~fedrdskd.strategies.FedFTG` implement.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from logging import INFO, WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.common import log
from flwr.serverapp import Grid

from fedrdskd.checks import check_choice, check_device, check_number
from fedrdskd.kd.base import Synthesizer
from fedrdskd.kd.distill import DistillationSchedule, run_distillation
from fedrdskd.kd.ensemble import (
    ENSEMBLE_COMBINATIONS,
    ENSEMBLE_WEIGHTINGS,
    TeacherEnsemble,
    ensemble_weights,
)
from fedrdskd.kd.interpolation import interpolate_states
from fedrdskd.protocol import LABEL_COUNTS_FORMAT
from fedrdskd.strategies.client_ensemble import ClientEnsembleMixin
from fedrdskd.strategies.replies import ClientModel, stacked_label_counts
from fedrdskd.strategies.validation import StepSizeSelector

MAX_STUDENT_NORM_RATIO = 10.0
"""A distilled model whose parameter norm is above this many times the aggregate's has
exploded (an honest distillation moves the aggregate by a small step); the round then
keeps the aggregate. Measured: 1.004 and 1.005 in rounds 1 and 2 of the ``fedrdskd``
preset on MNIST (Dirichlet 0.1, 20 clients, seed 0); each round records it as
``student-norm-ratio``."""


def member_weights(
    kind: str, members: Sequence[ClientModel], num_classes: int
) -> tuple[torch.Tensor, str]:
    """Ensemble weights ``[K, C]`` for the round, falling back if label counts are missing.

    Returns
    -------
    tuple[torch.Tensor, str]
        The weights and the weighting actually used (``"num-examples"`` for a
        ``"class"`` round in which some client sent no label counts).
    """
    used = kind
    counts = stacked_label_counts(members) if kind == "class" else None
    if kind == "class" and counts is None:
        used = "num-examples"
    weights = ensemble_weights(used, num_examples=[m.num_examples for m in members],
                               label_counts=counts, num_classes=num_classes)
    return weights, used


def student_problem(student: dict[str, torch.Tensor],
                    aggregate: dict[str, torch.Tensor]) -> tuple[str | None, float]:
    """What is wrong with a distilled model, and its parameter norm over the aggregate's.

    Returns
    -------
    tuple[str | None, float]
        A reason (non-finite values, or a norm ratio above
        :data:`MAX_STUDENT_NORM_RATIO`) or ``None``, and the norm ratio.
    """
    def norm(state: dict[str, torch.Tensor]) -> float:
        return math.sqrt(sum(float(torch.sum(value.to(torch.float64) ** 2))
                             for value in state.values() if value.is_floating_point()))

    if not all(torch.isfinite(value).all() for value in student.values()
               if value.is_floating_point()):
        return "has NaN or Inf values", math.nan
    student_norm, aggregate_norm = norm(student), norm(aggregate)
    ratio = student_norm / aggregate_norm if aggregate_norm > 0 else math.inf
    if ratio > MAX_STUDENT_NORM_RATIO:
        return (f"has a parameter norm {ratio:.3g} times the aggregate's (above "
                f"{MAX_STUDENT_NORM_RATIO:g})"), ratio
    return None, ratio


class DistillationMixin(ClientEnsembleMixin, ABC):
    """Fine-tune the aggregate on synthetic data to match the client ensemble.

    A round whose ensemble has fewer than two client models is not distilled (the
    aggregate would learn to copy itself), and a distilled model that is not finite, or
    whose parameter norm is more than :data:`MAX_STUDENT_NORM_RATIO` times the
    aggregate's, is dropped for the aggregate; both with a warning.

    Parameters
    ----------
    model_fn : Callable[[], torch.nn.Module]
        Returns a freshly constructed model of the federation's architecture.
    num_classes : int
        Number of classes (the model's logits).
    input_shape : tuple[int, int, int]
        ``(C, H, W)`` of the model's input; the generator produces this shape. The
        model is checked on a batch of it at construction.
    ensemble_weighting : str (default: "class")
        How client models are weighted in the teacher: ``"uniform"``,
        ``"num-examples"`` or ``"class"`` (per-class weights ``n_kc / sum_k n_kc``,
        which needs the clients' label counts; a round in which some client sent
        none is weighted by ``"num-examples"``, with one warning per run).
    ensemble_combine : str (default: "probabilities")
        How the weighted members make the teacher: ``"probabilities"`` (the per-class
        weighted mixture of their softmax outputs) or ``"logits"`` (the weighted sum of
        their logits). Under strong label skew a single-class client's huge logits can
        take over the logit combination (measured: 10.1 % test accuracy where the
        probability mixture had 84.0 %, ``benchmarks/teacher_collapse.py``), see
        :func:`fedrdskd.kd.ensemble.combine_member_logits`.
    batched_ensemble : bool (default: False)
        Evaluate the K teachers in one vectorised call (``torch.func``) instead of a
        Python loop over models. On this project's 2-core CPU the loop measured faster
        for LeNet-5 teachers (``benchmarks/profile_distillation.py``); try it on GPUs
        and for larger teachers.
    device : str (default: "cpu")
        Device for the server-side distillation.
    seed : int (default: 0)
        Seeds the generator's initialisation and the synthesizer's sampling.
    student_interpolation : float (default: 1.0)
        ``β`` of the trust region ``w = w_avg + β (w_distilled − w_avg)`` that the round
        returns (1 = the distilled model, 0 = the aggregate; see
        :func:`~fedrdskd.kd.interpolation.interpolate_states`); with validation, the
        fallback when no client answers.
    validation_betas : Sequence[float] (default: ())
        Candidate ``β`` s in (0, 4] that clients validate, besides 0 (the aggregate; above
        1 the round extrapolates along the distillation's direction);
        the round returns the one of lowest pooled held-out loss
        (:mod:`fedrdskd.strategies.validation`). Empty: no validation, ``β`` =
        ``student_interpolation``. Needs ClientApps that answer
        ``evaluate.candidates`` messages (this package's does).
    validation_clients : str (default: "others")
        ``"others"`` (as many clients as trained, from those that did not) or
        ``"round"`` (the round's own clients, biased towards distillation).
    validation_timeout : float (default: 600.0)
        Seconds to wait for the validation replies.
    carry_over : float (default: 1.0)
        ``γ`` in [0, 1]: the next round's clients train from
        ``w_avg + γ (w_round − w_avg)``, where ``w_round`` is the model the round
        returns (evaluated and served). 1: from the distilled model, as FedDF and FedFTG
        do; 0: from the aggregate, so the federation follows its base strategy's
        trajectory and distillation only refines the model it serves (see
        ``docs/results.md``, "Where the clients start").
    carry_over_decay : float (default: 1.0)
        Per-round factor on ``carry_over``: after round ``r`` the clients start from
        ``γ_r = carry_over · carry_over_decay^(r−1)`` (1 = constant): what distillation
        adds feeds the federation in the early rounds, when the ensemble is far ahead,
        and only the served model later.
    **kwargs
        ``ensemble_evaluate_fn`` and the other arguments of
        :class:`~fedrdskd.strategies.client_ensemble.ClientEnsembleMixin`, and everything
        the base Flower strategy takes.
    """

    input_shape: tuple[int, int, int]  # required here (the generator's output)

    def __init__(
        self,
        *,
        model_fn: Callable[[], torch.nn.Module],
        num_classes: int,
        input_shape: tuple[int, int, int],
        ensemble_weighting: str = "class",
        ensemble_combine: str = "probabilities",
        batched_ensemble: bool = False,
        device: str = "cpu",
        seed: int = 0,
        student_interpolation: float = 1.0,
        validation_betas: Sequence[float] = (),
        validation_clients: str = "others",
        validation_timeout: float = 600.0,
        carry_over: float = 1.0,
        carry_over_decay: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_fn=model_fn, num_classes=num_classes, input_shape=input_shape,
                         **kwargs)
        self.step_size = StepSizeSelector(
            fixed_beta=student_interpolation, betas=tuple(validation_betas),
            clients=validation_clients, timeout=validation_timeout, seed=seed)
        check_choice("ensemble_weighting", ensemble_weighting, ENSEMBLE_WEIGHTINGS)
        check_choice("ensemble_combine", ensemble_combine, ENSEMBLE_COMBINATIONS)
        self.ensemble_weighting = ensemble_weighting
        self.ensemble_combine = ensemble_combine
        self.batched_ensemble = batched_ensemble
        self.device = torch.device(check_device("device", device))
        self.seed = seed
        self._synthesizer: Synthesizer | None = None
        self.round_weighting = ensemble_weighting
        self.carry_over = float(check_number("carry_over", carry_over, 0.0, 1.0))
        self.carry_over_decay = float(check_number("carry_over_decay", carry_over_decay,
                                                   0.0, 1.0))
        self.train_start: dict[str, torch.Tensor] | None = None
        """Where the next round's clients start, when it is not the returned model."""

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The base strategy's messages, from :attr:`train_start` if the last round set one.

        The grid is kept for candidate validation.
        """
        self.step_size.grid = grid
        if self.train_start is not None:
            arrays = ArrayRecord(self.train_start)
        return super().configure_train(server_round, arrays, config, grid)

    @property
    def weighting_summary(self) -> str:
        """The ensemble weighting as the summary states it (with the class fallback)."""
        if self.ensemble_weighting == "class":
            return "class (num-examples in rounds where a client sends no label counts)"
        return self.ensemble_weighting

    @property
    def carry_over_summary(self) -> str:
        """Where the clients start, as the summary states it."""
        decay = (f", x {self.carry_over_decay:g} per round" if self.carry_over_decay != 1.0
                 else "")
        if self.carry_over == 1.0 and not decay:
            return "the returned (distilled) model"
        if self.carry_over == 0.0:
            return "the aggregate (distillation refines the served model only)"
        return f"aggregate + {self.carry_over:g} x (returned model - aggregate){decay}"

    def round_carry_over(self, server_round: int) -> float:
        """``γ`` after ``server_round``: ``carry_over · carry_over_decay^(round − 1)``."""
        return self.carry_over * self.carry_over_decay ** (server_round - 1)

    # ---- hooks for the concrete methods ------------------------------------------
    @abstractmethod
    def build_synthesizer(self) -> Synthesizer:
        """Create the method's synthesizer (called once; it persists across rounds)."""

    @abstractmethod
    def round_schedule(self, server_round: int) -> DistillationSchedule:
        """How many generator/student steps to take this round."""

    @abstractmethod
    def student_optimizer(
        self, student: torch.nn.Module, server_round: int
    ) -> torch.optim.Optimizer:
        """The optimiser that fine-tunes the aggregate this round."""

    def prepare_round(
        self, server_round: int, members: Sequence[ClientModel], teacher: TeacherEnsemble
    ) -> None:
        """Per-round set-up of the synthesizer (default: nothing)."""

    # ---- the shared round -----------------------------------------------------------
    @property
    def synthesizer(self) -> Synthesizer:
        """The persistent synthesizer (generator and its optimiser), built on first use."""
        if self._synthesizer is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                self._synthesizer = self.build_synthesizer()
        return self._synthesizer

    def build_teacher(self, members: Sequence[ClientModel]) -> TeacherEnsemble:
        """The round's frozen teacher: the valid client models, weighted.

        ``round_weighting`` records the weighting used (``"num-examples"`` in a
        ``"class"`` round in which some client sent no label counts; warned once).
        """
        weights, self.round_weighting = member_weights(self.ensemble_weighting, members,
                                                       self.num_classes)
        if self.round_weighting != self.ensemble_weighting:
            self.warn_once(
                "ensemble-weighting", "ensemble_weighting='class' needs label counts from "
                "every client and some sent none: such rounds weight the ensemble by "
                "'num-examples' (each round's distillation line says which). Set "
                "ensemble_weighting=\"num-examples\" to choose that, or let every client "
                "reply with %s.", LABEL_COUNTS_FORMAT)
        return TeacherEnsemble(self.model_fn, [m.state_dict for m in members], weights,
                               device=self.device, batched=self.batched_ensemble,
                               combine=self.ensemble_combine)

    def refine_global_model(
        self, server_round: int, arrays: ArrayRecord, members: Sequence[ClientModel]
    ) -> tuple[ArrayRecord, dict[str, float]]:
        """Distil the client ensemble into the aggregate; keep where clients start next.

        See the class docstring and ``carry_over``.
        """
        refined, metrics = self.distil_and_step(server_round, arrays, members)
        self.train_start = None
        carry_over = self.round_carry_over(server_round)
        if refined is not arrays and carry_over != 1.0:
            self.train_start = interpolate_states(arrays.to_torch_state_dict(),
                                                  refined.to_torch_state_dict(), carry_over)
        return refined, metrics

    def distil_and_step(
        self, server_round: int, arrays: ArrayRecord, members: Sequence[ClientModel]
    ) -> tuple[ArrayRecord, dict[str, float]]:
        """The round's model: the distilled one, moved by the step size, or the aggregate."""
        schedule = self.round_schedule(server_round)
        if schedule.generator_steps == 0 and schedule.student_steps == 0:
            return arrays, {}
        if len(members) < 2:
            log(WARNING, "Round %d: the ensemble has %d client model; distilling it would "
                "teach the aggregate to copy itself, so the round keeps the aggregate "
                "(sample more clients per round: fraction_train, min_train_nodes).",
                server_round, len(members))
            return arrays, {}
        state, metrics = self.distil(server_round, arrays, members, schedule)
        if state is None:
            return arrays, metrics
        started = time.perf_counter()
        beta, validation = self.step_size.select(server_round, arrays, ArrayRecord(state),
                                                 [member.node_id for member in members])
        if beta != 1.0:
            state = interpolate_states(arrays.to_torch_state_dict(), state, beta)
        metrics.update(validation)
        if self.step_size.validates:
            log(INFO, "Round %d step size %g from %d validating clients (loss %.4f -> %.4f)",
                server_round, beta, validation.get("validation-replies", 0),
                validation.get("validation-loss-aggregate", float("nan")),
                validation.get("validation-loss-chosen", float("nan")))
            metrics.update({"step-size": beta,
                            "validation-seconds": time.perf_counter() - started})
        return ArrayRecord(state), metrics

    def distil(self, server_round: int, arrays: ArrayRecord, members: Sequence[ClientModel],
               schedule: DistillationSchedule
               ) -> tuple[dict[str, torch.Tensor] | None, dict[str, float]]:
        """The distilled model (``None`` if it is not usable) and the distillation's metrics."""
        teacher = self.build_teacher(members)
        aggregate = arrays.to_torch_state_dict()
        student = self.model_fn().to(self.device)
        student.load_state_dict(aggregate)
        self.prepare_round(server_round, members, teacher)
        optimizer = self.student_optimizer(student, server_round)
        metrics = run_distillation(student, teacher, self.synthesizer, optimizer, schedule)
        log(INFO, "Round %d distillation (ensemble weighted by %s): %s", server_round,
            self.round_weighting, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        state = {k: v.detach().cpu() for k, v in student.state_dict().items()}
        problem, metrics["student-norm-ratio"] = student_problem(state, aggregate)
        if problem is None:
            return state, metrics
        log(WARNING, "Round %d: the distilled model %s; the round keeps the aggregate.",
            server_round, problem)
        if not all(torch.isfinite(value).all()
                   for value in self.synthesizer.generator.state_dict().values()):
            log(WARNING, "Round %d: the generator has NaN or Inf weights; it starts afresh "
                "next round.", server_round)
            self._synthesizer = None
        return None, metrics

    # ---- checkpointing --------------------------------------------------------------
    def distillation_state(self) -> dict[str, Any]:
        """The synthesizer's state (generator, optimiser, RNG) and :attr:`train_start`."""
        return {"synthesizer": self.synthesizer.state_dict(), "train-start": self.train_start}

    def load_distillation_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`distillation_state` returned."""
        self.synthesizer.load_state_dict(state["synthesizer"])
        self.train_start = state.get("train-start")
