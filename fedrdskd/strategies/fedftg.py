"""FedFTG: FedAvg (or any Flower strategy) + server-side fine-tuning by data-free KD.

Zhang, Shen, Ding, Tao, Duan, "Fine-tuning Global Model via Data-Free Knowledge
Distillation for Non-IID Federated Learning", CVPR 2022 (arXiv 2203.09249), as the
authors' released code runs it (github.com/ZhangLin-PKU/FedFTG). After aggregation the
server trains a conditional generator ``G(z, y)`` against each client model in turn
(hard-sample mining, fidelity, diversity), on labels drawn in proportion to the clients'
pooled label counts, and fine-tunes the aggregate on ``G(z, y)`` towards the
class-level ensemble ``p_ens = Σ_k α_{y,k} softmax(T_k)``. The fine-tuned model is the
next round's global model. The loop, the teacher ensemble and the reply screening are
the shared ones of :class:`~fedrdskd.strategies.distillation.DistillationMixin`; the
method lives in :class:`~fedrdskd.kd.fedftg.FedFTGSynthesizer`.

FedFTG needs every client's per-class label counts (``client.send_label_counts=true``;
the reply format is :data:`~fedrdskd.protocol.LABEL_COUNTS_FORMAT`): a round in which no
reply carries them stops with a message that says how to send them, and replies
without valid counts are left out of a round (with a warning) when others have them.
Add it to another Flower strategy with one line::

    class FedProxFTG(FedFTGMixin, FedProx):
        pass
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from logging import INFO, WARNING
from typing import Any, cast

import torch
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp.strategy import FedAvg

from fedrdskd.checks import check_choice, check_flag, check_number, invalid
from fedrdskd.kd.conditional_generator import ConditionalGenerator
from fedrdskd.kd.distill import DistillationSchedule
from fedrdskd.kd.ensemble import TeacherEnsemble
from fedrdskd.kd.fedftg import FedFTGSynthesizer
from fedrdskd.kd.fedftg_losses import SOFT_CE_REDUCTIONS
from fedrdskd.protocol import LABEL_COUNTS_FORMAT, LABEL_COUNTS_KEY
from fedrdskd.strategies.distillation import DistillationMixin
from fedrdskd.strategies.replies import ClientModel, stacked_label_counts


def missing_label_counts(server_round: int, nodes: Sequence[int]) -> str:
    """The error of a round in which no reply carries label counts: what to send, and how."""
    return (
        "FedFTG needs every client's per-class label counts (class-level ensemble weights "
        f"and label sampling), but no reply of round {server_round} carries them (nodes "
        f"{', '.join(str(node) for node in nodes)}). A ClientApp of your own adds them to "
        f"its training reply as {LABEL_COUNTS_FORMAT} (the counts of its training labels, "
        "one per class); this package's ClientApp does so with "
        "`client.send_label_counts=true` (Hydra) or `client.send-label-counts = true` "
        "(flwr run config). Or use a strategy that works without them (e.g. fedrdskd).")


def _warn_if_degenerate(iterations: int, generator_steps: int, student_steps: int,
                        lambdas: dict[str, float]) -> None:
    """Warn, as Flower's FedProx does on ``proximal_mu=0``, about settings that do nothing."""
    if iterations == 0 or generator_steps == student_steps == 0:
        log(WARNING, "FedFTG initialized with `iterations=0` or `generator_steps=0` and "
            "`student_steps=0`. This makes the strategy equivalent to its base strategy.")
    elif generator_steps > 0 and not any(lambdas.values()):
        log(WARNING, "FedFTG initialized with `lambda_md=lambda_cls=lambda_dis=0`. The "
            "generator's objective is then 0 and its steps do not train it.")


class FedFTGMixin(DistillationMixin):
    """FedFTG fine-tuning for any Flower Message-API strategy (put it first in the bases).

    Defaults are those of the authors' released code (CIFAR-10, ResNet-18); see
    ``fedrdskd/conf/strategy/fedftg_cpu.yaml`` for a preset sized for LeNet-5 on a CPU.

    Parameters
    ----------
    model_fn : Callable[[], torch.nn.Module]
        Returns a fresh model; with ``num_classes`` and ``input_shape`` (its input
        ``(C, H, W)``) it is checked at construction.
    num_classes, input_shape
        See :class:`~fedrdskd.strategies.distillation.DistillationMixin`.
    iterations : int (default: 10)
        ``I``, outer iterations per round, each with fresh latents and labels (0 turns
        the distillation off: the strategy is then its base strategy, and label counts
        are not needed).
    generator_steps : int (default: 1)
        ``I_g``, generator updates per iteration; each update is one Adam step per
        client, in turn.
    student_steps : int (default: 5)
        ``I_d``, SGD steps of the global model per iteration (all on the iteration's
        batch).
    batch_size : int (default: 50)
        ``B``, synthetic samples per iteration (the released code uses the clients'
        batch size, 50); >= 2 (the generator has BatchNorm).
    latent_dim : int (default: 100)
        Size of the generator's latent ``z`` (100 for CIFAR-10 in the released code).
    generator_channels : int (default: 64)
        Width of the conditional generator (``ngf`` = 64 in the released code).
    generator_lr : float (default: 0.01)
        Adam learning rate of the generator in round 1.
    student_lr : float (default: 0.1)
        SGD learning rate of the global model in round 1.
    student_momentum : float (default: 0.0)
        Momentum of the global model's SGD (plain SGD as released).
    lr_decay : float (default: 0.998)
        Per-round factor on both learning rates: round ``r`` uses ``lr · lr_decay^(r-1)``.
    lambda_md : float (default: 1.0)
        Weight of the model-discrepancy (hard-sample mining) term ``L_md``.
    lambda_cls : float (default: 1.0)
        Weight of the fidelity term ``L_cls``.
    lambda_dis : float (default: 1.0)
        Weight of the diversity term ``L_dis`` (divided by the round's client count).
    student_loss_reduction : str (default: "mean")
        ``"mean"`` (over ``B·C`` entries, as released) or ``"batchmean"`` (per sample,
        ``C`` times larger).
    persist_optimizer_state : bool (default: False)
        Keep the generator's Adam moments across rounds (the released code builds a new
        Adam each round; the generator's weights persist either way).
    ensemble_weighting : str (default: "class")
        Must be ``"class"``: FedFTG's ensemble is class-level from the label counts.
    **kwargs
        ``batched_ensemble``, ``device``, ``seed``, the other arguments of
        :class:`~fedrdskd.strategies.distillation.DistillationMixin` and every argument
        of the base strategy.
    """

    def __init__(
        self,
        *,
        model_fn: Callable[[], torch.nn.Module],
        num_classes: int,
        input_shape: tuple[int, int, int],
        iterations: int = 10,
        generator_steps: int = 1,
        student_steps: int = 5,
        batch_size: int = 50,
        latent_dim: int = 100,
        generator_channels: int = 64,
        generator_lr: float = 0.01,
        student_lr: float = 0.1,
        student_momentum: float = 0.0,
        lr_decay: float = 0.998,
        lambda_md: float = 1.0,
        lambda_cls: float = 1.0,
        lambda_dis: float = 1.0,
        student_loss_reduction: str = "mean",
        persist_optimizer_state: bool = False,
        ensemble_weighting: str = "class",
        **kwargs: Any,
    ) -> None:
        if ensemble_weighting != "class":
            raise invalid("ensemble_weighting", ensemble_weighting,
                          "FedFTG's ensemble is class-level, the only allowed value is class")
        super().__init__(model_fn=model_fn, num_classes=num_classes, input_shape=input_shape,
                         ensemble_weighting=ensemble_weighting, **kwargs)
        for name, value, low in (("iterations", iterations, 0),
                                 ("generator_steps", generator_steps, 0),
                                 ("student_steps", student_steps, 0),
                                 ("batch_size", batch_size, 2), ("latent_dim", latent_dim, 1),
                                 ("generator_channels", generator_channels, 1)):
            check_number(name, value, low, integer=True)
        for name, rate in (("generator_lr", generator_lr), ("student_lr", student_lr)):
            check_number(name, rate, 0.0, 100.0, low_open=True)
        check_number("student_momentum", student_momentum, 0.0, 1.0)
        check_number("lr_decay", lr_decay, 0.0, 1.0, low_open=True)
        lambdas = {"lambda_md": lambda_md, "lambda_cls": lambda_cls, "lambda_dis": lambda_dis}
        for name, weight in lambdas.items():
            check_number(name, weight, 0.0, 1e6)
        check_choice("student_loss_reduction", student_loss_reduction, SOFT_CE_REDUCTIONS)
        _warn_if_degenerate(iterations, generator_steps, student_steps, lambdas)
        self.iterations = int(iterations)
        self.generator_steps = int(generator_steps)
        self.student_steps = int(student_steps)
        self.distill_batch_size = int(batch_size)
        self.latent_dim = int(latent_dim)
        self.generator_channels = int(generator_channels)
        self.generator_lr = float(generator_lr)
        self.student_lr = float(student_lr)
        self.student_momentum = float(student_momentum)
        self.lr_decay = float(lr_decay)
        self.lambdas = {"lambda_md": float(lambda_md), "lambda_cls": float(lambda_cls),
                        "lambda_dis": float(lambda_dis)}
        self.student_loss_reduction = student_loss_reduction
        self.persist_optimizer_state = check_flag("persist_optimizer_state",
                                                  persist_optimizer_state)

    def summary(self) -> None:
        """Log the base strategy's settings, then FedFTG's."""
        super().summary()
        log(INFO, "\t└──> FedFTG fine-tuning:")
        log(INFO, "\t\t├── Per round: %d iterations x (generator %d x clients | "
            "global %d) steps", self.iterations, self.generator_steps, self.student_steps)
        log(INFO, "\t\t├── Generator: conditional, latent %d | channels %d | Adam lr %g | "
            "batch %d | Adam state %s", self.latent_dim, self.generator_channels,
            self.generator_lr, self.distill_batch_size,
            "kept" if self.persist_optimizer_state else "reset each round")
        log(INFO, "\t\t├── Global model: SGD lr %g momentum %g | lr decay %g per round | "
            "soft CE (%s)", self.student_lr, self.student_momentum, self.lr_decay,
            self.student_loss_reduction)
        log(INFO, "\t\t├── Loss weights: md %g | cls %g | dis %g",
            self.lambdas["lambda_md"], self.lambdas["lambda_cls"], self.lambdas["lambda_dis"])
        log(INFO, "\t\t└── Ensemble: class-level from label counts | batched %s | device %s",
            self.batched_ensemble, self.device)

    # ---- hooks ----------------------------------------------------------------------
    def round_lr(self, lr: float, server_round: int) -> float:
        """``lr · lr_decay^(round - 1)``."""
        return lr * self.lr_decay ** max(server_round - 1, 0)

    def build_synthesizer(self) -> FedFTGSynthesizer:
        """The conditional generator and FedFTG's losses (persist across rounds)."""
        generator = ConditionalGenerator(self.latent_dim, self.num_classes, self.input_shape,
                                         channels=self.generator_channels)
        return FedFTGSynthesizer(
            generator, num_classes=self.num_classes, latent_dim=self.latent_dim,
            lr=self.generator_lr, batch_size=self.distill_batch_size,
            iterations_per_round=max(self.iterations, 1),
            student_loss_reduction=self.student_loss_reduction,
            persist_optimizer_state=self.persist_optimizer_state,
            lambda_md=self.lambdas["lambda_md"], lambda_cls=self.lambdas["lambda_cls"],
            lambda_dis=self.lambdas["lambda_dis"], device=self.device, seed=self.seed)

    def round_schedule(self, server_round: int) -> DistillationSchedule:
        """``I`` iterations of ``I_g`` generator and ``I_d`` global steps (none if I = 0)."""
        if self.iterations == 0:
            return DistillationSchedule(iterations=1, generator_steps=0, student_steps=0,
                                        batch_size=self.distill_batch_size)
        return DistillationSchedule(iterations=self.iterations,
                                    generator_steps=self.generator_steps,
                                    student_steps=self.student_steps,
                                    batch_size=self.distill_batch_size)

    def student_optimizer(
        self, student: torch.nn.Module, server_round: int
    ) -> torch.optim.Optimizer:
        """SGD on the aggregate at the round's decayed learning rate."""
        return torch.optim.SGD(student.parameters(),
                               lr=self.round_lr(self.student_lr, server_round),
                               momentum=self.student_momentum)

    def prepare_round(
        self, server_round: int, members: Sequence[ClientModel], teacher: TeacherEnsemble
    ) -> None:
        """Start the synthesizer's round: label counts, the teacher's α, the decayed lr."""
        counts = stacked_label_counts(members)
        assert counts is not None  # the screening leaves out replies without them
        cast(FedFTGSynthesizer, self.synthesizer).set_round(
            counts, teacher.weights, lr=self.round_lr(self.generator_lr, server_round))

    def label_counts_needed(self, server_round: int) -> bool:
        """Label counts are needed in every round that distils."""
        schedule = self.round_schedule(server_round)
        return schedule.generator_steps > 0 or schedule.student_steps > 0

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Stop at once if no reply carries label counts; else screen, aggregate and distil.

        Raises
        ------
        ValueError
            If the round distils and none of its replies with content has label counts
            (:func:`missing_label_counts`: the reply format and the settings).
        """
        replies = list(replies)
        answered = [reply for reply in replies if reply.has_content()]
        if (self.label_counts_needed(server_round) and answered
                and not any(LABEL_COUNTS_KEY in reply.content for reply in answered)):
            raise ValueError(missing_label_counts(
                server_round, [reply.metadata.src_node_id for reply in answered]))
        return super().aggregate_train(server_round, replies)


class FedFTG(FedFTGMixin, FedAvg):
    """FedAvg followed by FedFTG's server-side fine-tuning of the global model.

    Takes every :class:`flwr.serverapp.strategy.FedAvg` keyword argument plus those of
    :class:`FedFTGMixin`, :class:`~fedrdskd.strategies.distillation.DistillationMixin`
    and :class:`~fedrdskd.strategies.client_ensemble.ClientEnsembleMixin`.
    """
