"""RDSKD's synthesizer: a generator trained with the RDSKD loss against the teacher.

Han, Park, Wang, Liu, "Robustness and Diversity Seeking Data-Free Knowledge Distillation",
ICASSP 2021, arXiv 2011.03749; settings follow the authors' released code (see
:mod:`fedrdskd.kd.losses`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from fedrdskd.kd.base import SyntheticBatch, Teacher
from fedrdskd.kd.generators import generate_unchanged
from fedrdskd.kd.losses import RDSKDGeneratorLoss, kd_loss
from fedrdskd.kd.synthetic_pool import SyntheticPool, augmenter


def batch_options_problem(batch_size: int, student_uses_generator_batch: bool,
                          replay_pool_size: int, augmentation: str) -> tuple[str, Any, str] | None:
    """``(key, value, what is allowed)`` for batch options that cannot work together, or None.

    Shared by :class:`RDSKDSynthesizer` and the strategies that build it, so that a
    strategy refuses them at construction with the same rule.
    """
    if batch_size < 2 or batch_size % 2:
        return ("batch_size", batch_size, "must be even and >= 2 (RDSKD's inter-sample "
                "diversity term pairs the batch's two halves)")
    if student_uses_generator_batch and (replay_pool_size or augmentation != "none"):
        return ("student_uses_generator_batch", student_uses_generator_batch,
                f"needs replay_pool_size=0 and no augmentation, got {replay_pool_size} and "
                f"{augmentation!r} (set it to False to use them)")
    return None


class RDSKDSynthesizer:
    """Train an unconditional generator with the RDSKD loss; sample it for the student.

    Implements :class:`fedrdskd.kd.base.Synthesizer`. The generator, its Adam state,
    the loss references and the latent RNG persist across calls, so in federated
    learning the generator is warm-started from round to round.

    References across rounds: the references are *not* tied to the teacher. They are
    refreshed every ``reference_interval`` generator steps, counted over the whole run
    (and on request, :meth:`reset_references`). With ``reference_interval`` dividing the
    generator steps per round, every round starts with a refresh, i.e. the references
    effectively reset when the teacher changes; otherwise an increment caused by the new
    teacher is penalised like any other, which is bounded (factor at most ``C``).
    Keeping this a function of the step counter keeps checkpoints exact.

    Parameters
    ----------
    generator : torch.nn.Module
        Maps ``[B, latent_dim]`` latents to model inputs (e.g.
        :class:`~fedrdskd.kd.generators.DAFLGenerator`); moved to ``device``.
    latent_dim : int
        Size of ``z ~ N(0, I)``.
    lr : float (default: 1e-3)
        Adam learning rate of the generator (released code: 1e-3).
    betas : tuple[float, float] (default: (0.9, 0.999))
        Adam betas (the released code uses Adam's defaults).
    batch_size : int (default: 64)
        Latents per generator step (even: the inter-sample term pairs two halves;
        released code: 512).
    reference_interval : int
        Generator steps between refreshes of the loss references (released code: 120;
        the strategy's ``reference_interval`` sets it).
    temperature : float (default: 10.0)
        ``τ`` of the student's KD loss (released code: 10).
    weight_authenticity, weight_class_diversity, weight_inter_sample_diversity : float
        (default: 1.0) Term weights for ablations (RDSKD: all 1; 0 switches a term off).
    weight_hard_sample : float (default: 0.0)
        Weight of the student-aware hard-sample term
        (:func:`~fedrdskd.kd.losses.hard_sample_loss`; 0 = RDSKD, the student is then
        not run in generator steps).
    penalise_hard_sample : bool (default: True)
        Put the hard-sample term under RDSKD's exponential increment penalty.
    batch_reuse : int (default: 1)
        Student batches of ``batch_size`` are drawn afresh every ``batch_reuse`` calls of
        :meth:`sample` and reused in between, with the teacher's outputs on them cached,
        so ``k`` student steps on one batch cost one teacher pass (FedFTG takes its 5
        global steps per iteration on one batch). 1 = a fresh batch every step (RDSKD).
    replay_pool_size : int (default: 0)
        Keep the last this many student images (across rounds) in a
        :class:`~fedrdskd.kd.synthetic_pool.SyntheticPool` and lend ``replay_fraction``
        of every student batch to them, labelled by the current teacher. 0 = off.
    replay_fraction : float (default: 0.5)
        Share of a student batch drawn from the pool, in [0, 1).
    augmentation : str (default: "none")
        Applied to student batches (after pooling): ``"none"``, ``"shift"`` (random
        shifts of up to 4 pixels) or ``"shift-flip"`` (also left-right flips, for
        natural images). Generator steps always see the generator's raw output.
    student_uses_generator_batch : bool (default: False)
        Each generator step leaves its own batch (the images it generated and the
        teacher's logits on them, detached) as the next student batch, served
        ``batch_reuse`` times, instead of a fresh batch from the updated generator. It
        saves one generator pass and one teacher pass per iteration: with a CNN
        ensemble the teacher's forward pass is most of a student phase's cost
        (``benchmarks/profile_distillation.py``). The student then learns on the
        samples the generator has just made hard for it. Needs ``replay_pool_size=0``
        and ``augmentation="none"`` (their images would need new teacher outputs).
    device : torch.device (default: cpu)
        Where the generator runs and latents are drawn.
    seed : int (default: 0)
        Seeds the latent RNG (``torch.Generator``); the generator's initial weights are
        whatever the caller built.
    sample_batch_statistics : bool (default: True)
        Sample with BatchNorm in batch-statistics mode (as the generator is trained).
        The released code samples in eval mode after 2,400 generator steps; with the few
        steps per FL round the running statistics lag far behind (measured: a fresh
        DAFL generator's eval-mode samples have std 0.02 after 0 steps and 0.3 after 20,
        against 1.0 in batch-statistics mode), so eval-mode samples would be nearly
        constant images in early rounds.
    """

    def __init__(
        self,
        generator: nn.Module,
        *,
        latent_dim: int,
        reference_interval: int,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        batch_size: int = 64,
        temperature: float = 10.0,
        weight_authenticity: float = 1.0,
        weight_class_diversity: float = 1.0,
        weight_inter_sample_diversity: float = 1.0,
        weight_hard_sample: float = 0.0,
        penalise_hard_sample: bool = True,
        device: torch.device = torch.device("cpu"),
        seed: int = 0,
        sample_batch_statistics: bool = True,
        batch_reuse: int = 1,
        replay_pool_size: int = 0,
        replay_fraction: float = 0.5,
        augmentation: str = "none",
        student_uses_generator_batch: bool = False,
    ) -> None:
        problem = batch_options_problem(batch_size, student_uses_generator_batch,
                                        replay_pool_size, augmentation)
        if problem is not None:
            key, value, allowed = problem
            raise ValueError(f"{key}={value!r}: {allowed}.")
        if latent_dim < 1 or lr <= 0 or temperature <= 0:
            raise ValueError(f"latent_dim must be >= 1, lr > 0 and temperature > 0, got "
                             f"latent_dim={latent_dim!r}, lr={lr!r}, temperature={temperature!r}.")
        self.device = torch.device(device)
        self.generator = generator.to(self.device)
        self.latent_dim = int(latent_dim)
        self.batch_size = int(batch_size)
        self.temperature = float(temperature)
        self.sample_batch_statistics = sample_batch_statistics
        if int(batch_reuse) != batch_reuse or batch_reuse < 1:
            raise ValueError(f"batch_reuse must be an int >= 1, got {batch_reuse!r}.")
        self.batch_reuse = int(batch_reuse)
        self._cached: SyntheticBatch | None = None
        self._cached_teacher: torch.Tensor | None = None
        self._uses_left = 0
        self.student_uses_generator_batch = bool(student_uses_generator_batch)
        self.pool = SyntheticPool(replay_pool_size, replay_fraction)
        self.augmentation = augmentation
        self._augment = augmenter(augmentation)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas)
        self.loss = RDSKDGeneratorLoss(
            reference_interval=reference_interval,
            weight_authenticity=weight_authenticity,
            weight_class_diversity=weight_class_diversity,
            weight_inter_sample_diversity=weight_inter_sample_diversity,
            weight_hard_sample=weight_hard_sample, penalise_hard_sample=penalise_hard_sample)
        self.rng = torch.Generator(device=self.device)
        self.rng.manual_seed(int(seed))

    def latents(self, batch_size: int) -> torch.Tensor:
        """``z ~ N(0, I)``, ``[batch_size, latent_dim]``, from the synthesizer's own RNG."""
        return torch.randn(batch_size, self.latent_dim, generator=self.rng, device=self.device)

    def begin_iteration(self) -> None:
        """Start the iteration's student phase on a fresh batch (drops a reused one)."""
        self._drop_cached()

    def _drop_cached(self) -> None:
        self._cached, self._cached_teacher, self._uses_left = None, None, 0

    def reset_references(self) -> None:
        """Refresh the loss references at the next generator step."""
        self.loss.reset_references()

    def set_class_prior(self, prior: torch.Tensor | None) -> None:
        """Target class distribution of the class-diversity term (``None``: uniform)."""
        self.loss.set_class_prior(prior)

    def generator_step(self, teacher: Teacher, student: nn.Module) -> dict[str, float]:
        """One Adam step on ``L_G``; the student is run only for the hard-sample term.

        Only the generator's parameters receive gradients (the student and the teacher
        are read, not trained, here).

        Returns
        -------
        dict[str, float]
            ``{"authenticity", "class-diversity", "inter-sample-diversity", "total"}``
            and ``"hard-sample"`` when that term is on.
        """
        self.generator.train()
        images = self.generator(self.latents(self.batch_size))
        student_logits = student(images) if self.loss.uses_student else None
        teacher_logits = teacher(images)
        total, values = self.loss(images, teacher_logits, student_logits)
        self.optimizer.zero_grad(set_to_none=True)
        if total.requires_grad:  # all weights 0: nothing to optimise
            total.backward(inputs=list(self.generator.parameters()))
            self.optimizer.step()
        if self.student_uses_generator_batch:
            self._cached = SyntheticBatch(images=images.detach())
            self._cached_teacher = teacher_logits.detach()
            self._uses_left = self.batch_reuse
        else:
            self._drop_cached()  # the generator changed
        return values

    def sample(self, batch_size: int) -> SyntheticBatch:
        """Generated images, without gradients; sampling never changes the generator.

        A batch of the synthesizer's ``batch_size`` is reused for ``batch_reuse`` calls
        (see the class docstring), and with ``student_uses_generator_batch`` the last
        generator step's batch is served first; other sizes are always drawn afresh and
        are neither pooled nor augmented (they serve the metrics).

        With ``sample_batch_statistics`` (default) the generator's BatchNorm layers
        normalise with the batch's statistics, as in its training steps, and their
        running statistics are restored afterwards. Otherwise the generator runs in eval
        mode (running statistics), as in the released code's student phase.
        """
        if batch_size != self.batch_size:
            return self._generate(batch_size)
        if self.batch_reuse == 1 and self._uses_left == 0:
            return self._student_batch()
        if self._uses_left == 0:
            self._cached, self._cached_teacher = self._student_batch(), None
            self._uses_left = self.batch_reuse
        self._uses_left -= 1
        assert self._cached is not None  # drawn above when the last batch was used up
        return self._cached

    def _student_batch(self) -> SyntheticBatch:
        """A fresh batch, partly lent to the pool's images, then augmented."""
        images = self._generate(self.batch_size).images
        images = self._augment(self.pool.mix(images, self.rng), self.rng)
        return SyntheticBatch(images=images)

    @torch.no_grad()
    def _generate(self, batch_size: int) -> SyntheticBatch:
        return SyntheticBatch(images=generate_unchanged(
            self.generator, self.latents(batch_size),
            batch_statistics=self.sample_batch_statistics))

    def student_loss(
        self, student_logits: torch.Tensor, teacher: Teacher, batch: SyntheticBatch
    ) -> torch.Tensor:
        """``τ² · KL(softmax(T(x)/τ) ‖ softmax(S(x)/τ))`` against :meth:`student_target`."""
        return kd_loss(student_logits, self.student_target(teacher, batch), self.temperature)

    @torch.no_grad()
    def student_target(self, teacher: Teacher, batch: SyntheticBatch) -> torch.Tensor:
        """The teacher's logits ``T(x)`` (computed once for a reused batch)."""
        reused = self._cached is not None and batch is self._cached
        teacher_logits = self._cached_teacher if reused else None
        if teacher_logits is None:
            teacher_logits = teacher(batch.images)
            if reused:
                self._cached_teacher = teacher_logits
        return teacher_logits

    def state_dict(self) -> dict[str, Any]:
        """A copy of the generator, Adam, loss-reference, pool and RNG states."""
        return copy.deepcopy({"generator": self.generator.state_dict(),
                              "optimizer": self.optimizer.state_dict(),
                              "loss": self.loss.state_dict(),
                              "pool": self.pool.state_dict(),
                              "rng": self.rng.get_state()})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; later steps continue identically."""
        state = copy.deepcopy(state)
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.loss.load_state_dict(state["loss"])
        if "pool" in state:  # checkpoints from before the pool have none
            self.pool.load_state_dict(state["pool"])
        self.rng.set_state(state["rng"])
