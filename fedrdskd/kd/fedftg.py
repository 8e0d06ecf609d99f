"""FedFTG's synthesizer: customised label sampling and hard-sample-mining generator steps.

Zhang, Shen, Ding, Tao, Duan, "Fine-tuning Global Model via Data-Free Knowledge
Distillation for Non-IID Federated Learning", CVPR 2022 (arXiv 2203.09249). One server
round as in the authors' released code (``train_global_model_cgan_bs_weight_iloop_fz_dis``
in ``methods/local_fn_gan.py`` of github.com/ZhangLin-PKU/FedFTG), run by
:func:`fedrdskd.kd.distill.run_distillation` with ``iterations = I`` (10),
``generator_steps = I_g`` (1), ``student_steps = I_d`` (5):

1. :meth:`FedFTGSynthesizer.set_round` takes the round's label counts ``n_{k,c}`` and
   the class-level weights ``α_{c,k}`` (the teacher ensemble's) and draws a pool of
   ``I·B`` labels in proportion to the pooled counts (customised label sampling).
2. Each iteration fixes ``B`` labels from the pool and fresh latents ``z ~ N(0, I)``.
3. Generator phase: for each client ``k`` in turn, one Adam step on
   ``L_md + λ_cls·L_cls + λ_dis·L_dis/|S|`` (:mod:`fedrdskd.kd.fedftg_losses`).
4. Global phase: the global model (student) takes SGD steps on the soft cross-entropy
   against the class-level ensemble ``p_ens`` on ``G(z, y)``, the same batch each step
   (:meth:`FedFTGSynthesizer.student_target`, also what ``run_distillation``'s
   ``kl-*`` and ``ensemble-agreement`` measure against).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch import nn

from fedrdskd.kd.base import SyntheticBatch
from fedrdskd.kd.fedftg_losses import (
    SOFT_CE_REDUCTIONS,
    client_generator_loss,
    ensemble_soft_targets,
    soft_cross_entropy,
)
from fedrdskd.kd.generators import generate_unchanged


def sample_labels(
    label_counts: np.ndarray | torch.Tensor, num_samples: int, generator: torch.Generator
) -> torch.Tensor:
    """``num_samples`` labels in proportion to the (pooled) label counts, shuffled.

    Rounding, as in the released code's ``generate_labels``: with ``P_c`` the share of
    classes ``0..c`` in the pooled counts, class ``c`` gets
    ``⌊N·P_c⌋ − ⌊N·P_{c−1}⌋`` labels (``N = num_samples``, ``P_{−1} = 0``, ``P_{C−1} = 1``).
    Every class is within one label of ``N·p_c``, the total is exactly ``N``, and classes
    with no samples get none. ``N·P_c`` is computed as ``N·(Σ_{j≤c} n_j) / Σ_j n_j``,
    exact for integer counts. The labels are then shuffled with ``generator``.

    Parameters
    ----------
    label_counts : numpy.ndarray | torch.Tensor
        Per-class counts ``[C]``, or per-client counts ``[K, C]`` (summed over clients).
    num_samples : int
        ``N >= 1``.
    generator : torch.Generator
        A CPU ``torch.Generator`` for the shuffle.

    Returns
    -------
    torch.Tensor
        ``int64`` labels ``[N]`` on the CPU.
    """
    counts = torch.as_tensor(np.asarray(label_counts, dtype=np.float64))
    if counts.ndim == 2:
        counts = counts.sum(dim=0)
    if counts.ndim != 1 or not torch.isfinite(counts).all() or (counts < 0).any() \
            or counts.sum() <= 0:
        raise ValueError(f"label_counts must be finite, non-negative counts of shape [C] or "
                         f"[K, C] with a positive sum, got shape {tuple(counts.shape)} and "
                         f"sum {float(counts.sum())!r}.")
    if int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}.")
    boundaries = torch.floor(num_samples * torch.cumsum(counts, dim=0) / counts.sum()).long()
    boundaries[-1] = num_samples
    per_class = torch.diff(boundaries, prepend=boundaries.new_zeros(1))
    labels = torch.repeat_interleave(torch.arange(counts.numel()), per_class)
    return labels[torch.randperm(int(num_samples), generator=generator)]


def client_logits(teacher: Any, client: int, images: torch.Tensor) -> torch.Tensor:
    """Member ``client``'s logits on ``images`` ``[B, C]``, running that member only.

    ``teacher.member_logits(images)[client]`` would run (and backpropagate through) all
    ``K`` members to use one, ``K`` times per generator step; a
    :class:`~fedrdskd.kd.ensemble.TeacherEnsemble` runs one member with
    ``one_member_logits``. Other teachers fall back to indexing ``member_logits``.
    """
    one_member_logits = getattr(teacher, "one_member_logits", None)
    if one_member_logits is not None:
        return one_member_logits(client, images)
    return teacher.member_logits(images)[client]


class FedFTGSynthesizer:
    """Train a conditional generator against each client in turn; sample it for the student.

    Implements :class:`fedrdskd.kd.base.Synthesizer`. Call :meth:`set_round` with the
    round's label counts and class-level weights before each round's distillation. The
    generator, the RNGs and (with ``persist_optimizer_state``) Adam's moments persist
    across rounds.

    The teacher passed to :meth:`generator_step` and :meth:`student_loss` must have
    ``member_logits(x) -> [K, B, C]`` (a :class:`~fedrdskd.kd.ensemble.TeacherEnsemble`)
    with its members in the order of the label counts' rows. FedFTG weighs clients per
    sample by the class-level ``α`` given to :meth:`set_round` (the teacher's own
    weights when it was built with ``ensemble_weights("class", ...)``).

    Modes, as in the released code: clients in eval mode (the ensemble's); the global
    model in eval mode during generator steps (set and restored here; pass
    ``student_train_mode=True`` to ``run_distillation`` for the released code's train
    mode during the global phase); the generator in train mode during its steps and,
    unless ``sample_batch_statistics``, in eval mode when sampling.

    Parameters
    ----------
    generator : torch.nn.Module
        ``G(z, y)``, e.g. :class:`~fedrdskd.kd.conditional_generator.ConditionalGenerator`.
    num_classes : int
        ``C``.
    latent_dim : int
        Size of ``z``.
    lr : float (default: 0.01)
        Adam learning rate of the generator; :meth:`set_lr` changes it (the released
        code decays it by 0.998 per round).
    betas : tuple[float, float] (default: (0.9, 0.999))
        Adam betas (the released code: Adam's defaults).
    batch_size : int (default: 50)
        ``B``, labels and latents per iteration (the released code: the clients' batch, 50).
    iterations_per_round : int (default: 10)
        ``I``: labels for this many iterations are drawn together at :meth:`set_round`
        (and again if a round runs more iterations).
    lambda_md, lambda_cls, lambda_dis : float (default: 1.0)
        Term weights (FedFTG: 1; 0 switches a term off).
    student_loss_reduction : str (default: "mean")
        :func:`~fedrdskd.kd.fedftg_losses.soft_cross_entropy` reduction: ``"mean"``
        (over ``B·C``, as released) or ``"batchmean"`` (``C`` times larger).
    persist_optimizer_state : bool (default: False)
        Keep Adam's moments across rounds. The released code builds a new Adam every
        round, so by default :meth:`set_round` clears them (the weights always persist).
    sample_batch_statistics : bool (default: False)
        Sample with the generator's BatchNorm in batch-statistics mode (running
        statistics restored afterwards) instead of eval mode as released.
    device : torch.device (default: cpu)
        Where the generator runs.
    seed : int (default: 0)
        Seeds the label shuffles and latents (a CPU ``torch.Generator``), and, as
        ``seed + 1``, the extra draws of :meth:`sample` for other batch sizes.
    """

    def __init__(self, generator: nn.Module, *, num_classes: int, latent_dim: int,
                 lr: float = 0.01, betas: tuple[float, float] = (0.9, 0.999),
                 batch_size: int = 50, iterations_per_round: int = 10,
                 lambda_md: float = 1.0, lambda_cls: float = 1.0, lambda_dis: float = 1.0,
                 student_loss_reduction: str = "mean", persist_optimizer_state: bool = False,
                 sample_batch_statistics: bool = False,
                 device: torch.device = torch.device("cpu"), seed: int = 0) -> None:
        _check_settings(num_classes=num_classes, latent_dim=latent_dim, lr=lr,
                        batch_size=batch_size, iterations_per_round=iterations_per_round,
                        lambdas=(lambda_md, lambda_cls, lambda_dis),
                        student_loss_reduction=student_loss_reduction)
        self.device = torch.device(device)
        self.generator = generator.to(self.device)
        self.num_classes, self.latent_dim = int(num_classes), int(latent_dim)
        self.batch_size, self.iterations_per_round = int(batch_size), int(iterations_per_round)
        self.lambdas = {"lambda_md": float(lambda_md), "lambda_cls": float(lambda_cls),
                        "lambda_dis": float(lambda_dis)}
        self.student_loss_reduction = student_loss_reduction
        self.persist_optimizer_state = persist_optimizer_state
        self.sample_batch_statistics = sample_batch_statistics
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas)
        self.rng = torch.Generator().manual_seed(int(seed))
        self.eval_rng = torch.Generator().manual_seed(int(seed) + 1)
        self.label_counts: torch.Tensor | None = None
        self.class_weights: torch.Tensor | None = None
        self._pool = torch.empty(0, dtype=torch.long)
        self._latents: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def lr(self) -> float:
        """The generator's current Adam learning rate."""
        return float(self.optimizer.param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        """Set the generator's learning rate (the strategy's per-round decay)."""
        if not lr > 0:
            raise ValueError(f"generator lr must be > 0, got {lr!r}.")
        for group in self.optimizer.param_groups:
            group["lr"] = float(lr)

    def set_round(self, label_counts: np.ndarray | torch.Tensor, class_weights: torch.Tensor,
                  *, lr: float | None = None) -> None:
        """Start a round: the label pool from ``n_{k,c}`` ``[K, C]``, and ``α`` ``[K, C]``.

        ``class_weights`` are FedFTG's class-level weights ``α_{c,k} = n_{k,c} / Σ_k
        n_{k,c}`` (:func:`~fedrdskd.kd.ensemble.ensemble_weights` ``"class"``; the
        strategy passes its teacher's). Also sets the generator's ``lr`` if given, and
        clears Adam's moments unless ``persist_optimizer_state``.
        """
        counts = torch.as_tensor(np.asarray(label_counts, dtype=np.float64))
        if counts.ndim != 2 or counts.shape[1] != self.num_classes:
            raise ValueError(f"label_counts must have shape [K, {self.num_classes}] "
                             f"(clients x classes), got {tuple(counts.shape)}.")
        if tuple(class_weights.shape) != tuple(counts.shape):
            raise ValueError(f"class_weights must have the label counts' shape "
                             f"{tuple(counts.shape)}, got {tuple(class_weights.shape)}.")
        self._pool = sample_labels(counts, self.iterations_per_round * self.batch_size,
                                   self.rng)
        self.label_counts = counts
        self.class_weights = class_weights.to(device=self.device, dtype=torch.float32)
        self._latents = self._labels = None
        self._cache = {}
        if lr is not None:
            self.set_lr(lr)
        if not self.persist_optimizer_state:
            self.optimizer.state.clear()

    def begin_iteration(self) -> None:
        """Fix this iteration's ``B`` labels (next from the pool) and latents ``z``."""
        label_counts, _ = self._require_round()
        if self._pool.numel() < self.batch_size:
            self._pool = sample_labels(label_counts,
                                       self.iterations_per_round * self.batch_size, self.rng)
        self._labels = self._pool[:self.batch_size].to(self.device)
        self._pool = self._pool[self.batch_size:]
        self._latents = torch.randn(self.batch_size, self.latent_dim,
                                    generator=self.rng).to(self.device)
        self._cache = {}

    def generator_step(self, teacher: Any, student: nn.Module) -> dict[str, float]:
        """One Adam step per client ``k`` (in turn) on its objective; ``student`` not updated.

        Returns
        -------
        dict[str, float]
            The terms averaged over the clients: ``{"model-discrepancy", "fidelity",
            "diversity", "total"}``.
        """
        latents, labels = self._require_iteration()
        num_clients = self._check_teacher(teacher)
        _, class_weights = self._require_round()
        parameters = [p for p in self.generator.parameters() if p.requires_grad]
        was_training = student.training
        student.eval()
        self.generator.train()
        means: dict[str, float] = defaultdict(float)
        for client in range(num_clients):
            images = self.generator(latents, labels)
            total, values = client_generator_loss(
                global_logits=student(images), client_logits=client_logits(teacher, client, images),
                labels=labels, sample_weights=class_weights[client, labels],
                latents=latents, images=images, num_clients=num_clients, **self.lambdas)
            self.optimizer.zero_grad(set_to_none=True)
            if total.requires_grad:  # all weights 0: nothing to optimise
                total.backward(inputs=parameters)
                self.optimizer.step()
            for name, value in values.items():
                means[name] += value / num_clients
        student.train(was_training)
        self._cache = {}
        return dict(means)

    def sample(self, batch_size: int) -> SyntheticBatch:
        """``G(z, y)`` for this iteration's ``z, y`` (detached), labels included.

        A ``batch_size`` other than the iteration's ``B`` (e.g. ``run_distillation``'s
        evaluation batch), or a call outside an iteration, draws fresh labels (in
        proportion to the round's counts) and latents from a separate RNG, so such
        draws never change the training stream.
        """
        latents, labels = self._latents, self._labels
        if latents is not None and labels is not None and batch_size == self.batch_size:
            if "images" not in self._cache:
                self._cache["images"] = self._generate(latents, labels)
            return SyntheticBatch(images=self._cache["images"], labels=labels)
        label_counts, _ = self._require_round()
        labels = sample_labels(label_counts, batch_size, self.eval_rng).to(self.device)
        latents = torch.randn(batch_size, self.latent_dim, generator=self.eval_rng)
        return SyntheticBatch(images=self._generate(latents.to(self.device), labels),
                              labels=labels)

    def student_loss(self, student_logits: torch.Tensor, teacher: Any,
                     batch: SyntheticBatch) -> torch.Tensor:
        """Soft cross-entropy of the student against ``p_ens`` (teacher without gradients)."""
        return soft_cross_entropy(student_logits, self._ensemble_probabilities(teacher, batch),
                                  reduction=self.student_loss_reduction)

    def student_target(self, teacher: Any, batch: SyntheticBatch) -> torch.Tensor:
        """``log p_ens`` on ``batch``: the label-conditioned class-level ensemble."""
        probabilities = self._ensemble_probabilities(teacher, batch)
        return torch.log(probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny))

    @torch.no_grad()
    def _ensemble_probabilities(self, teacher: Any, batch: SyntheticBatch) -> torch.Tensor:
        """``p_ens(x_i) = Σ_k α_{y_i,k} softmax(t^k_i)`` (computed once per iteration batch)."""
        if batch.labels is None:
            raise ValueError("FedFTG's student target needs the batch's conditioning labels "
                             "(SyntheticBatch.labels is None).")
        _, class_weights = self._require_round()
        self._check_teacher(teacher)
        cached = batch.images is self._cache.get("images")
        targets = self._cache.get("targets") if cached else None
        if targets is None:
            targets = ensemble_soft_targets(teacher.member_logits(batch.images),
                                            class_weights, batch.labels)
            if cached:
                self._cache["targets"] = targets
        return targets

    def state_dict(self) -> dict[str, Any]:
        """A copy of the generator, Adam, RNG and current round/iteration states."""
        return copy.deepcopy({
            "generator": self.generator.state_dict(), "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.get_state(), "eval-rng": self.eval_rng.get_state(),
            "label-counts": self.label_counts, "class-weights": self.class_weights,
            "pool": self._pool, "latents": self._latents, "labels": self._labels})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; later steps continue identically."""
        state = copy.deepcopy(state)
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.set_state(state["rng"])
        self.eval_rng.set_state(state["eval-rng"])
        self.label_counts, self.class_weights = state["label-counts"], state["class-weights"]
        self._pool, self._latents, self._labels = state["pool"], state["latents"], state["labels"]
        self._cache = {}

    # ---- helpers -----------------------------------------------------------------
    def _generate(self, latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return generate_unchanged(self.generator, latents, labels,
                                  batch_statistics=self.sample_batch_statistics)

    def _require_round(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The round's label counts and class weights (set by :meth:`set_round`)."""
        if self.label_counts is None or self.class_weights is None:
            raise RuntimeError("FedFTGSynthesizer: call set_round(label_counts) before "
                               "distilling (FedFTG needs the clients' label counts).")
        return self.label_counts, self.class_weights

    def _require_iteration(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._latents is None or self._labels is None:
            raise RuntimeError("FedFTGSynthesizer: call begin_iteration() before "
                               "generator_step() (run_distillation does).")
        return self._latents, self._labels

    def _check_teacher(self, teacher: Any) -> int:
        num_clients = self._require_round()[1].shape[0]
        if not hasattr(teacher, "member_logits") or teacher.num_members != num_clients:
            raise ValueError(f"FedFTG needs a teacher with member_logits() and "
                             f"{num_clients} members (one per label-count row), got "
                             f"{type(teacher).__name__} with "
                             f"{getattr(teacher, 'num_members', 'no')} members.")
        return num_clients


def _check_settings(*, num_classes: int, latent_dim: int, lr: float, batch_size: int,
                    iterations_per_round: int, lambdas: tuple[float, float, float],
                    student_loss_reduction: str) -> None:
    """Raise ``ValueError`` naming the first setting out of range."""
    for name, value, low in (("num_classes", num_classes, 2), ("latent_dim", latent_dim, 1),
                             ("batch_size", batch_size, 2),
                             ("iterations_per_round", iterations_per_round, 1)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}.")
    for name, weight in zip(("lambda_md", "lambda_cls", "lambda_dis"), lambdas):
        if not weight >= 0:
            raise ValueError(f"{name} must be >= 0, got {weight!r}.")
    if student_loss_reduction not in SOFT_CE_REDUCTIONS:
        raise ValueError(f"student_loss_reduction must be one of {SOFT_CE_REDUCTIONS}, "
                         f"got {student_loss_reduction!r}.")
