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

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from logging import INFO, WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.common import log
from flwr.serverapp import Grid

from fedrdskd.checks import check_choice, invalid
from fedrdskd.kd.base import Synthesizer
from fedrdskd.kd.distill import DistillationSchedule, run_distillation
from fedrdskd.kd.ensemble import (
    ENSEMBLE_COMBINATIONS,
    ENSEMBLE_WEIGHTINGS,
    TeacherEnsemble,
    ensemble_weights,
)
from fedrdskd.kd.interpolation import interpolate_states
from fedrdskd.strategies.client_ensemble import ClientEnsembleMixin
from fedrdskd.strategies.replies import ClientModel, stacked_label_counts
from fedrdskd.strategies.validation import StepSizeSelector


def member_weights(
    kind: str, members: Sequence[ClientModel], num_classes: int
) -> tuple[torch.Tensor, str]:
    """Ensemble weights ``[K, C]`` for the round, falling back if label counts are missing.

    Returns
    -------
    tuple[torch.Tensor, str]
        The weights and the weighting actually used.
    """
    used = kind
    counts = stacked_label_counts(members) if kind == "class" else None
    if kind == "class" and counts is None:
        log(WARNING, "ensemble_weighting='class' needs label counts from every client; "
            "some did not send them, using 'num-examples' this round.")
        used = "num-examples"
    weights = ensemble_weights(used, num_examples=[m.num_examples for m in members],
                               label_counts=counts, num_classes=num_classes)
    return weights, used


class DistillationMixin(ClientEnsembleMixin, ABC):
    """Fine-tune the aggregate on synthetic data to match the client ensemble.

    Parameters
    ----------
    input_shape : tuple[int, int, int]
        ``(C, H, W)`` of the model's input; the generator produces this shape.
    ensemble_weighting : str (default: "class")
        How client models are weighted in the teacher: ``"uniform"``,
        ``"num-examples"`` or ``"class"`` (per-class weights ``n_kc / sum_k n_kc``,
        which needs the clients' label counts; falls back to ``"num-examples"``
        with a warning when they are missing).
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
        Candidate ``β`` s in (0, 1] that clients validate, besides 0 (the aggregate);
        the round returns the one of lowest pooled held-out loss
        (:mod:`fedrdskd.strategies.validation`). Empty: no validation, ``β`` =
        ``student_interpolation``. Needs ClientApps that answer
        ``evaluate.candidates`` messages (this package's does).
    validation_clients : str (default: "others")
        ``"others"`` (as many clients as trained, from those that did not) or
        ``"round"`` (the round's own clients, biased towards distillation).
    validation_timeout : float (default: 600.0)
        Seconds to wait for the validation replies.
    **kwargs
        ``model_fn``, ``num_classes``, ``ensemble_evaluate_fn`` and everything the base
        Flower strategy takes.
    """

    def __init__(
        self,
        *,
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.step_size = StepSizeSelector(
            fixed_beta=student_interpolation, betas=tuple(validation_betas),
            clients=validation_clients, timeout=validation_timeout, seed=seed)
        check_choice("ensemble_weighting", ensemble_weighting, ENSEMBLE_WEIGHTINGS)
        check_choice("ensemble_combine", ensemble_combine, ENSEMBLE_COMBINATIONS)
        if len(tuple(input_shape)) != 3:
            raise invalid("input_shape", input_shape, "must be (C, H, W)")
        channels, height, width = (int(size) for size in input_shape)
        self.input_shape = (channels, height, width)
        self.ensemble_weighting = ensemble_weighting
        self.ensemble_combine = ensemble_combine
        self.batched_ensemble = batched_ensemble
        self.device = torch.device(device)
        self.seed = seed
        self._synthesizer: Synthesizer | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The base strategy's messages; the grid is kept for candidate validation."""
        self.step_size.grid = grid
        return super().configure_train(server_round, arrays, config, grid)

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
        """The round's frozen teacher: the valid client models, weighted."""
        weights, _ = member_weights(self.ensemble_weighting, members, self.num_classes)
        return TeacherEnsemble(self.model_fn, [m.state_dict for m in members], weights,
                               device=self.device, batched=self.batched_ensemble,
                               combine=self.ensemble_combine)

    def refine_global_model(
        self, server_round: int, arrays: ArrayRecord, members: Sequence[ClientModel]
    ) -> tuple[ArrayRecord, dict[str, float]]:
        """Distil the client ensemble into the aggregated model."""
        schedule = self.round_schedule(server_round)
        if schedule.generator_steps == 0 and schedule.student_steps == 0:
            return arrays, {}
        teacher = self.build_teacher(members)
        student = self.model_fn().to(self.device)
        student.load_state_dict(arrays.to_torch_state_dict())
        self.prepare_round(server_round, members, teacher)
        optimizer = self.student_optimizer(student, server_round)
        metrics = run_distillation(student, teacher, self.synthesizer, optimizer, schedule)
        log(INFO, "Round %d distillation: %s", server_round,
            ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        state = {k: v.detach().cpu() for k, v in student.state_dict().items()}
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

    # ---- checkpointing --------------------------------------------------------------
    def distillation_state(self) -> dict[str, Any]:
        """The synthesizer's state (generator, optimiser, RNG), for checkpoints."""
        return {"synthesizer": self.synthesizer.state_dict()}

    def load_distillation_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`distillation_state` returned."""
        self.synthesizer.load_state_dict(state["synthesizer"])
