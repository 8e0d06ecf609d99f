"""FedRDSKD: FedAvg (or any Flower strategy) + server-side RDSKD distillation.

After aggregation, the server trains a generator against the ensemble of this round's
client models with the RDSKD generator loss (Han et al., ICASSP 2021, arXiv
2011.03749) and fine-tunes the aggregate on generated samples with the temperature-
scaled KD loss. No client data reaches the server.

Add it to another Flower strategy with one line::

    class FedProxRDSKD(RDSKDMixin, FedProx):
        pass
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from logging import INFO, WARNING
from typing import Any, cast

import torch
from flwr.common import log
from flwr.serverapp.strategy import FedAvg

from fedrdskd.checks import check_choice, check_flag, check_number, invalid
from fedrdskd.kd.distill import DistillationSchedule
from fedrdskd.kd.ensemble import TeacherEnsemble
from fedrdskd.kd.generators import DAFLGenerator
from fedrdskd.kd.rdskd import RDSKDSynthesizer, batch_options_problem
from fedrdskd.kd.synthetic_pool import AUGMENTATIONS
from fedrdskd.strategies.distillation import DistillationMixin
from fedrdskd.strategies.replies import ClientModel, stacked_label_counts

STUDENT_OPTIMIZERS = ("adam", "sgd")
CLASS_PRIORS = ("uniform", "label-counts")


class RDSKDMixin(DistillationMixin):
    """RDSKD distillation for any Flower Message-API strategy (put it first in the bases).

    The defaults are the ``fedrdskd`` preset's (``conf/strategy/fedrdskd.yaml``) except
    ``validation_betas``, which stays off: the client-validated step size needs
    ClientApps that answer its evaluate messages, as the package's ClientApp does (the
    preset turns it on). RDSKD as published is the ``fedrdskd_paper`` preset.

    Parameters
    ----------
    model_fn : Callable[[], torch.nn.Module]
        Returns a fresh model; with ``num_classes`` and ``input_shape`` (its input
        ``(C, H, W)``) it is checked at construction.
    num_classes, input_shape
        See :class:`~fedrdskd.strategies.distillation.DistillationMixin`.
    generator_steps : int (default: 1)
        Generator updates in round 1 (per iteration), before decay.
    student_steps : int (default: 10)
        Student (global model) updates in round 1 (per iteration), before decay.
    iterations : int (default: 5)
        Outer iterations per round; ``> 1`` interleaves generator and student steps.
    warmup_iterations : int (default: 0)
        Extra iterations in round 1 only, which then takes ``iterations +
        warmup_iterations``. The generator starts untrained, and the client ensemble's
        lead over the aggregate is largest in round 1 (in the recorded MNIST runs of the
        preset, round 1 kept 4-31 % of a 21-32 point lead on average, later rounds
        46-65 % of theirs; docs/results.md, "Round 1: the untrained generator").
        0 = every round alike.
    batch_size : int (default: 64)
        Synthetic batch size for both phases.
    latent_dim : int (default: 100)
        Size of the generator's latent vector ``z``.
    generator_channels : int (default: 32)
        Width of the DAFL-style generator (the released code uses 128); it sets
        most of the server's cost at LeNet scale.
    generator_lr : float (default: 1e-3)
        Adam learning rate of the generator.
    student_lr : float (default: 0.01)
        Learning rate of the student optimiser.
    student_optimizer : str (default: "sgd")
        ``"adam"`` (as in RDSKD's released code) or ``"sgd"``.
    temperature : float (default: 10.0)
        KD temperature ``tau`` of the student loss.
    reference_interval : int (default: 20)
        Generator steps between refreshes of the loss references of RDSKD's
        exponential penalty.
    persist_student_optimizer : bool (default: False)
        Carry the student optimiser's state (Adam's moments and step count) from round
        to round, as the generator's is carried, instead of starting it afresh. A fresh
        Adam's first steps move every weight by about ``student_lr`` whatever the size
        of the gradient; carried moments scale later rounds' steps by the gradient's
        size relative to earlier rounds', so a round whose teacher agrees with the
        aggregate moves it little (see ``benchmarks/distillation_gain.py --follow``).
        No effect with ``"sgd"`` (plain SGD keeps no state).
    student_momentum : float (default: 0.0)
        Momentum of the student's SGD (``"sgd"`` only).
    student_weight_decay : float (default: 0.0)
        Weight decay of the student optimiser (FedFTG's fine-tune: 1e-3).
    weight_hard_sample : float (default: 1.0)
        Weight of the student-aware hard-sample generator term
        (:func:`fedrdskd.kd.losses.hard_sample_loss`: the generator seeks samples where
        the aggregate still disagrees with the ensemble, as FedFTG, DFAD and DFRD do);
        0 = RDSKD as published.
    penalise_hard_sample : bool (default: True)
        Put the hard-sample term under RDSKD's exponential increment penalty (no
        hand-tuned balance against the other terms) instead of adding it linearly.
    student_batch_reuse : int (default: 5)
        Student steps taken on each synthetic batch (its teacher outputs computed once);
        with ``iterations > 1`` each iteration's student phase starts on a fresh batch.
        The teacher ensemble's forward pass is most of a student step's cost.
    class_prior : str (default: "uniform")
        Target of the class-diversity term: ``"uniform"`` (RDSKD) or ``"label-counts"``
        (the pooled label counts of the round's clients, so classes almost absent from
        the round are not asked for; falls back to uniform with a warning when a client
        sends no counts).
    weight_authenticity : float (default: 1.0)
        Weight of RDSKD's authenticity term (cross-entropy of the teacher's output to
        its own argmax, under the increment penalty); it pushes samples towards
        confident, narrow regions of the teacher (TA-DFKD); 0 switches it off.
    replay_pool_size : int (default: 0)
        Student batches borrow ``replay_fraction`` of their images from the last this
        many synthetic images of earlier steps and rounds, relabelled by this round's
        teacher (:class:`fedrdskd.kd.synthetic_pool.SyntheticPool`); 0 = off.
    replay_fraction : float (default: 0.5)
        Share of each student batch from the pool, in [0, 1).
    synthetic_augmentation : str (default: "none")
        ``"none"``, ``"shift"`` or ``"shift-flip"`` (random 4-pixel shifts, and
        left-right flips for natural images) on student batches.
    student_uses_generator_batch : bool (default: True)
        The student learns on the batch each generator step made (with the teacher's
        outputs from that step) instead of a fresh batch: one generator and one teacher
        pass less per iteration (most of the student phase's cost with CNN teachers).
        Needs ``replay_pool_size=0`` and ``synthetic_augmentation="none"``.
    strength_decay : float (default: 1.0)
        Per-round factor on both step counts: round ``r`` takes
        ``round(steps * strength_decay ** (r - 1))`` generator and student steps
        (1.0 = constant). Distillation helps while the client ensemble is far ahead of
        the aggregate (the first rounds under label skew) and pulls the model down once
        the aggregate has caught up; decaying it, as FedFTG and FedGen decay their
        server-side learning, keeps the early gain and stops the cost (0 steps = no
        server work) — see ``benchmarks/distillation_gain.py``.
    carry_over_decay : float (default: 0.8)
        As in :class:`~fedrdskd.strategies.distillation.DistillationMixin` (where it
        defaults to 1): the next round's clients start ``0.8^(r-1)`` of the way from the
        aggregate to the distilled model, so the early rounds, where the client ensemble
        leads, pass the distilled knowledge on, and the late ones follow the base
        strategy (docs/results.md, "Where the clients start").
    **kwargs
        ``ensemble_weighting``, ``device``, ``seed``, the other arguments of
        :class:`~fedrdskd.strategies.distillation.DistillationMixin` and every argument
        of the base strategy.
    """

    def __init__(
        self,
        *,
        model_fn: Callable[[], torch.nn.Module],
        num_classes: int,
        input_shape: tuple[int, int, int],
        generator_steps: int = 1,
        student_steps: int = 10,
        iterations: int = 5,
        warmup_iterations: int = 0,
        batch_size: int = 64,
        latent_dim: int = 100,
        generator_channels: int = 32,
        generator_lr: float = 1e-3,
        student_lr: float = 0.01,
        student_optimizer: str = "sgd",
        temperature: float = 10.0,
        reference_interval: int = 20,
        strength_decay: float = 1.0,
        persist_student_optimizer: bool = False,
        student_momentum: float = 0.0,
        student_weight_decay: float = 0.0,
        weight_hard_sample: float = 1.0,
        penalise_hard_sample: bool = True,
        class_prior: str = "uniform",
        student_batch_reuse: int = 5,
        weight_authenticity: float = 1.0,
        replay_pool_size: int = 0,
        replay_fraction: float = 0.5,
        synthetic_augmentation: str = "none",
        student_uses_generator_batch: bool = True,
        carry_over_decay: float = 0.8,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_fn=model_fn, num_classes=num_classes, input_shape=input_shape,
                         carry_over_decay=carry_over_decay, **kwargs)
        for name, value in (("generator_steps", generator_steps),
                            ("student_steps", student_steps)):
            check_number(name, value, 0, 10**6, integer=True)
        for name, value in (("iterations", iterations), ("batch_size", batch_size),
                            ("latent_dim", latent_dim),
                            ("generator_channels", generator_channels),
                            ("reference_interval", reference_interval),
                            ("student_batch_reuse", student_batch_reuse)):
            check_number(name, value, 1, 10**6, integer=True)
        check_number("warmup_iterations", warmup_iterations, 0, 10**6, integer=True)
        check_number("replay_pool_size", replay_pool_size, 0, 10**7, integer=True)
        check_number("replay_fraction", replay_fraction, 0.0, 0.99)
        check_number("weight_authenticity", weight_authenticity, 0.0, 1e6)
        check_choice("synthetic_augmentation", synthetic_augmentation, AUGMENTATIONS)
        check_number("strength_decay", strength_decay, 0.0, 1.0)
        check_number("student_momentum", student_momentum, 0.0, 1.0)
        check_number("student_weight_decay", student_weight_decay, 0.0, 1.0)
        check_number("weight_hard_sample", weight_hard_sample, 0.0, 1e6)
        check_choice("class_prior", class_prior, CLASS_PRIORS)
        check_choice("student_optimizer", student_optimizer, STUDENT_OPTIMIZERS)
        for name, positive in (("generator_lr", generator_lr), ("student_lr", student_lr),
                               ("temperature", temperature)):
            check_number(name, positive, 0.0, low_open=True)
        for name, flag in (("persist_student_optimizer", persist_student_optimizer),
                           ("penalise_hard_sample", penalise_hard_sample),
                           ("student_uses_generator_batch", student_uses_generator_batch)):
            check_flag(name, flag)
        problem = batch_options_problem(batch_size, student_uses_generator_batch,
                                        replay_pool_size, synthetic_augmentation)
        if problem is not None:
            raise invalid(*problem)
        if generator_steps == 0 and student_steps == 0:
            log(WARNING, "FedRDSKD initialized with `generator_steps=0` and "
                "`student_steps=0`. This makes the strategy equivalent to its base strategy.")
        self.generator_steps = generator_steps
        self.student_steps = student_steps
        self.iterations = iterations
        self.warmup_iterations = warmup_iterations
        self.distill_batch_size = batch_size
        self.latent_dim = latent_dim
        self.generator_channels = generator_channels
        self.generator_lr = generator_lr
        self.student_lr = student_lr
        self.student_optimizer_name = student_optimizer
        self.temperature = temperature
        self.reference_interval = reference_interval
        self.strength_decay = strength_decay
        self.persist_student_optimizer = persist_student_optimizer
        self.student_momentum = float(student_momentum)
        self.student_weight_decay = float(student_weight_decay)
        self.weight_hard_sample = float(weight_hard_sample)
        self.penalise_hard_sample = penalise_hard_sample
        self.class_prior = class_prior
        self.student_batch_reuse = int(student_batch_reuse)
        self.weight_authenticity = float(weight_authenticity)
        self.replay_pool_size = int(replay_pool_size)
        self.replay_fraction = float(replay_fraction)
        self.synthetic_augmentation = synthetic_augmentation
        self.student_uses_generator_batch = student_uses_generator_batch
        self._last_student_optimizer: torch.optim.Optimizer | None = None

    def summary(self) -> None:
        """Log the base strategy's settings, then RDSKD's."""
        super().summary()
        log(INFO, "\t└──> RDSKD distillation:")
        log(INFO, "\t\t├── Steps per round: generator %d | student %d | iterations %d "
            "(round 1: + %d)", self.generator_steps, self.student_steps, self.iterations,
            self.warmup_iterations)
        log(INFO, "\t\t├── Generator: latent %d | channels %d | Adam lr %g | batch %d",
            self.latent_dim, self.generator_channels, self.generator_lr,
            self.distill_batch_size)
        log(INFO, "\t\t├── Student: %s lr %g (state %s) | temperature %g | "
            "strength decay %g", self.student_optimizer_name, self.student_lr,
            "persists" if self.persist_student_optimizer else "fresh each round",
            self.temperature, self.strength_decay)
        log(INFO, "\t\t├── Ensemble: %s weighting | combines %s | batched %s | device %s",
            self.weighting_summary, self.ensemble_combine, self.batched_ensemble,
            self.device)
        log(INFO, "\t\t└── Clients train from: %s", self.carry_over_summary)

    def build_synthesizer(self) -> RDSKDSynthesizer:
        """A DAFL-style generator trained with the RDSKD loss (persists across rounds)."""
        generator = DAFLGenerator(self.latent_dim, self.input_shape,
                                  channels=self.generator_channels)
        return RDSKDSynthesizer(
            generator, latent_dim=self.latent_dim, lr=self.generator_lr,
            batch_size=self.distill_batch_size,
            reference_interval=self.reference_interval,
            weight_hard_sample=self.weight_hard_sample,
            penalise_hard_sample=self.penalise_hard_sample,
            batch_reuse=self.student_batch_reuse,
            weight_authenticity=self.weight_authenticity,
            replay_pool_size=self.replay_pool_size, replay_fraction=self.replay_fraction,
            augmentation=self.synthetic_augmentation,
            student_uses_generator_batch=self.student_uses_generator_batch,
            temperature=self.temperature, device=self.device, seed=self.seed)

    def prepare_round(self, server_round: int, members: Sequence[ClientModel],
                      teacher: TeacherEnsemble) -> None:
        """Set the class-diversity target for this round's clients."""
        cast(RDSKDSynthesizer, self.synthesizer).set_class_prior(self._round_class_prior(members))

    def _round_class_prior(self, members: Sequence[ClientModel]) -> torch.Tensor | None:
        if self.class_prior == "uniform":
            return None
        counts = stacked_label_counts(members)
        if counts is None:
            self.warn_once("class-prior", "class_prior='label-counts' needs label counts from "
                           "every client and some sent none: such rounds use a uniform "
                           "class prior.")
            return None
        return torch.as_tensor(counts.sum(axis=0), dtype=torch.float32)

    def round_schedule(self, server_round: int) -> DistillationSchedule:
        """Steps scaled by ``strength_decay ** (round - 1)``; round 1 adds the warm-up."""
        scale = self.strength_decay ** max(server_round - 1, 0)
        warmup = self.warmup_iterations if server_round == 1 else 0
        return DistillationSchedule(
            iterations=self.iterations + warmup,
            generator_steps=int(math.floor(self.generator_steps * scale + 0.5)),
            student_steps=int(math.floor(self.student_steps * scale + 0.5)),
            batch_size=self.distill_batch_size)

    def student_optimizer(
        self, student: torch.nn.Module, server_round: int
    ) -> torch.optim.Optimizer:
        """Adam (RDSKD's choice) or plain SGD on the aggregate's parameters.

        With ``persist_student_optimizer`` the new optimiser continues from the state
        the previous round's optimiser ended with (read here, after its last step).
        """
        optimizer = self._new_student_optimizer(student)
        if self.persist_student_optimizer:
            if self._last_student_optimizer is not None:
                optimizer.load_state_dict(self._last_student_optimizer.state_dict())
            self._last_student_optimizer = optimizer
        return optimizer

    def _new_student_optimizer(self, student: torch.nn.Module) -> torch.optim.Optimizer:
        if self.student_optimizer_name == "sgd":
            return torch.optim.SGD(student.parameters(), lr=self.student_lr,
                                   momentum=self.student_momentum,
                                   weight_decay=self.student_weight_decay)
        return torch.optim.Adam(student.parameters(), lr=self.student_lr,
                                weight_decay=self.student_weight_decay)

    def distillation_state(self) -> dict[str, Any]:
        """The synthesizer's state and the carried student optimiser state, if any."""
        state = super().distillation_state()
        if self._last_student_optimizer is not None:
            state["student_optimizer"] = copy.deepcopy(
                self._last_student_optimizer.state_dict())
        return state

    def load_distillation_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`distillation_state` returned.

        A carried student optimiser state is loaded into an optimiser over a fresh
        ``model_fn()`` (only its state, not those parameters, is carried on).
        """
        super().load_distillation_state(state)
        self._last_student_optimizer = None
        saved = state.get("student_optimizer")
        if saved is not None and self.persist_student_optimizer:
            optimizer = self._new_student_optimizer(self.model_fn())
            optimizer.load_state_dict(copy.deepcopy(saved))
            self._last_student_optimizer = optimizer


class FedRDSKD(RDSKDMixin, FedAvg):
    """FedAvg followed by server-side RDSKD distillation of the client ensemble.

    Takes every :class:`flwr.serverapp.strategy.FedAvg` keyword argument plus those of
    :class:`RDSKDMixin`, :class:`~fedrdskd.strategies.distillation.DistillationMixin`
    and :class:`~fedrdskd.strategies.client_ensemble.ClientEnsembleMixin`.
    """
