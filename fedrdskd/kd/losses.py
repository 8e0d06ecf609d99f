"""RDSKD's loss terms as pure functions, and the combined generator loss.

Source: Han, Park, Wang, Liu, "Robustness and Diversity Seeking Data-Free Knowledge
Distillation", ICASSP 2021 (arXiv 2011.03749), Sec. 2, and the authors' released code
(``generator-train.py``, ``utils.kdloss`` in github.com/PengchaoHan/RDSKD). The paper's
printed equations could not be read here, so the formulas below follow the released code;
the paper names the three generator objectives *sample authenticity*, *class diversity*
and *inter-sample diversity*, and the robustness device *exponentially penalising loss
increments*.

Notation: ``o`` are the teacher's logits on a generated batch ``x = G(z)`` of size
``B``, ``p = softmax(o)`` and ``p̄ = (1/B) Σ_b p_b`` the batch-mean prediction.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

TERM_NAMES = ("authenticity", "class-diversity", "inter-sample-diversity", "hard-sample")
PENALISED_TERMS = ("authenticity", "class-diversity")
"""The terms whose increments RDSKD penalises exponentially (the paper's two)."""


def authenticity_loss(logits: torch.Tensor) -> torch.Tensor:
    """Sample authenticity ("one-hot" loss): ``L_oh = (1/B) Σ_b CE(o_b, argmax_c o_bc)``.

    Low when the teacher is confident on every generated sample (DAFL's one-hot loss,
    kept by RDSKD). The pseudo-labels ``argmax o`` carry no gradient.

    Parameters
    ----------
    logits : torch.Tensor
        Teacher logits ``[B, C]``.
    """
    pseudo_labels = logits.detach().argmax(dim=1)
    return F.cross_entropy(logits, pseudo_labels)


def class_diversity_loss(logits: torch.Tensor, prior: torch.Tensor | None = None
                         ) -> torch.Tensor:
    """Class diversity ("information entropy" loss): ``L_ie = Σ_c p̄_c log p̄_c = -H(p̄)``.

    Minimal (``-log C``) when the batch's predictions are spread evenly over the
    ``C`` classes, maximal (0) when every sample falls in one class.

    With a class ``prior`` ``π`` (e.g. the pooled label counts of the round's clients,
    normalised) the target is ``π`` instead of the uniform distribution:
    ``L_ie = KL(p̄ ‖ π) − log C = Σ_c p̄_c log(p̄_c / π_c) − log C``, minimal (``−log C``)
    at ``p̄ = π``. The ``− log C`` keeps the uniform prior's value equal to ``-H(p̄)``. A
    class with ``π_c = 0`` is pushed out of the batch (``π`` is floored at 1e-6). This
    label prior follows the customised label sampling of FedFTG (Zhang et al., CVPR
    2022) and FedGen's label-count-weighted generator objective.

    Parameters
    ----------
    logits : torch.Tensor
        Teacher logits ``[B, C]``.
    prior : torch.Tensor | None (default: None)
        Target class distribution ``[C]`` (non-negative, normalised here); ``None`` for
        RDSKD's uniform target.
    """
    mean_probabilities = F.softmax(logits, dim=1).mean(dim=0)
    negative_entropy = (mean_probabilities * torch.log(mean_probabilities)).sum()
    if prior is None:
        return negative_entropy
    prior = prior.to(mean_probabilities).clamp_min(0)
    prior = (prior / prior.sum()).clamp_min(1e-6)
    cross = (mean_probabilities * torch.log(prior)).sum()
    return negative_entropy - cross - math.log(logits.shape[1])


def hard_sample_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor
                     ) -> torch.Tensor:
    """Student-aware hard-sample term: ``L_hs = −(1/B) Σ_b KL(softmax(t_b) ‖ softmax(s_b))``.

    Minimising it makes the generator *maximise* the divergence between the teacher
    ensemble and the model being distilled (the student), i.e. seek samples the student
    still gets wrong; the student's KD step then minimises that divergence. This is the
    adversarial / hard-sample-mining term of DFAD (Fang et al., 2019: L1 on logits),
    FedFTG (Zhang et al., CVPR 2022: class-weighted logit L1 per client) and DFRD
    (Luo et al., NeurIPS 2023: KL where the ensemble is right and the global model
    wrong), written with the KL at ``τ = 1`` so that it applies to the probability
    mixture (whose "logits" are log-probabilities) as well as to logits. Gradients reach
    the generator through both models' inputs; neither model's weights are updated.
    ``L_hs ≤ 0``.

    Parameters
    ----------
    teacher_logits : torch.Tensor
        Teacher logits (or log-probabilities) ``[B, C]``.
    student_logits : torch.Tensor
        Student logits ``[B, C]``.
    """
    divergence = F.kl_div(F.log_softmax(student_logits, dim=1),
                          F.log_softmax(teacher_logits, dim=1),
                          reduction="batchmean", log_target=True)
    return -divergence


def inter_sample_diversity_loss(
    images: torch.Tensor, logits: torch.Tensor, *, eps: float = 1e-20
) -> torch.Tensor:
    """Inter-sample diversity: ``L_ds = 1 / (l + eps)``.

    ``l = ‖G(z²) − G(z¹)‖_F / ‖softmax(T(G(z²))) − softmax(T(G(z¹)))‖_F``.
    The batch is split into two halves ``z¹ = z[:h]`` and ``z² = z[h:2h]``,
    ``h = B // 2`` (an odd batch's last sample is not used). The loss is low when
    generated samples lie far apart compared with how far apart the teacher sees them,
    which counters mode collapse (a mode-seeking ratio, as in MSGAN). Computed as
    ``d_p / (d_x + eps · d_p)``, which equals ``1 / (l + eps)`` and is 0 in the limit
    ``d_p → 0``; ``d_x`` is floored at 1e-12 so identical images do not give 0/0.

    Parameters
    ----------
    images : torch.Tensor
        Generated samples ``[B, ...]`` (``B >= 2``).
    logits : torch.Tensor
        Teacher logits on ``images``, ``[B, C]``.
    eps : float (default: 1e-20)
        Added to ``l``; the released code uses 1e-20.
    """
    half = images.shape[0] // 2
    if half < 1:
        raise ValueError(f"inter_sample_diversity_loss needs a batch of at least 2 samples, "
                         f"got {images.shape[0]}.")
    probabilities = F.softmax(logits, dim=1)
    image_distance = torch.linalg.vector_norm(images[half:2 * half] - images[:half])
    output_distance = torch.linalg.vector_norm(
        probabilities[half:2 * half] - probabilities[:half])
    return output_distance / (image_distance.clamp_min(1e-12) + eps * output_distance)


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Temperature-scaled KD loss ``τ² · (1/B) Σ_b KL(softmax(t_b/τ) ‖ softmax(s_b/τ))``.

    Hinton et al. (2015); RDSKD's student loss with ``τ = 10`` (released
    ``utils.kdloss``, summed over classes and averaged over the batch). Pass detached
    teacher logits: this function does not detach them.

    Parameters
    ----------
    student_logits : torch.Tensor
        Student logits ``[B, C]``.
    teacher_logits : torch.Tensor
        Teacher logits ``[B, C]``.
    temperature : float
        ``τ > 0``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}.")
    student_log_probabilities = F.log_softmax(student_logits / temperature, dim=1)
    teacher_log_probabilities = F.log_softmax(teacher_logits / temperature, dim=1)
    divergence = F.kl_div(student_log_probabilities, teacher_log_probabilities,
                          reduction="batchmean", log_target=True)
    return temperature**2 * divergence


class RDSKDGeneratorLoss:
    """RDSKD's generator loss, exponentially penalising increments of the first two terms.

    ``L_G = w_oh · exp(L_oh − L_oh^ref) + w_ie · exp(L_ie − L_ie^ref) + w_ds · L_ds
    + w_hs · L_hs``

    The references are detached snapshots of ``L_oh`` and ``L_ie``. Since
    ``d exp(L − ref) = exp(L − ref) · dL``, a term that has risen above its reference
    gets its gradient scaled up by ``exp(increment)`` and one that has fallen is scaled
    down: the generator cannot trade one objective against the other (the "frequent loss
    fluctuations" the paper removes). Both terms are bounded (``L_oh ∈ [0, log C]``,
    ``L_ie ∈ [−log C, 0]`` for the uniform target), so the factor never exceeds ``C``.

    The optional student-aware term ``L_hs`` (:func:`hard_sample_loss`, not part of
    RDSKD) needs the student's logits. With ``penalise_hard_sample`` it goes under the
    same exponential penalty, ``w_hs · exp(L_hs − L_hs^ref)``, which keeps RDSKD's
    point of needing no hand-tuned balance: each term's gradient is scaled by how far
    it has moved from its reference, not by a weight. ``L_hs`` is unbounded below, so
    its factor is clamped to ``[exp(−5), exp(5)]`` (its increments are what is
    penalised; a large fall only shrinks its factor).

    Each call is one generator step. The references are refreshed with the current
    values at every step whose counter is a multiple of ``reference_interval``
    (0, k, 2k, ...) *before* the total is formed, so a refresh step weighs every
    penalised term by exactly 1. The released code refreshes once per epoch of 120
    steps (after the epoch's second step, with references 0 before the first refresh);
    refreshing at step 0 instead avoids that arbitrary zero reference.
    :meth:`reset_references` forces a refresh at the next call.

    RDSKD uses no term weights (all 1, its point is to need none); they exist for
    ablations and for the added term (``w_hs = 0``, the default, is RDSKD exactly). A
    weight of 0 removes its term from the total (the RDSKD terms are still computed and
    reported; ``L_hs`` is computed only when the student's logits are given).

    Parameters
    ----------
    reference_interval : int
        Steps between reference refreshes (the released code: 120, one epoch; the
        strategy's ``reference_interval`` sets it).
    weight_authenticity : float (default: 1.0)
        ``w_oh``, weight of the authenticity term.
    weight_class_diversity : float (default: 1.0)
        ``w_ie``, weight of the class-diversity term.
    weight_inter_sample_diversity : float (default: 1.0)
        ``w_ds``, weight of the inter-sample-diversity term.
    weight_hard_sample : float (default: 0.0)
        ``w_hs``, weight of the student-aware hard-sample term (0 = RDSKD).
    penalise_hard_sample : bool (default: True)
        Put ``L_hs`` under the exponential increment penalty.
    eps : float (default: 1e-20)
        ``eps`` of :func:`inter_sample_diversity_loss`.
    """

    def __init__(
        self,
        *,
        reference_interval: int,
        weight_authenticity: float = 1.0,
        weight_class_diversity: float = 1.0,
        weight_inter_sample_diversity: float = 1.0,
        weight_hard_sample: float = 0.0,
        penalise_hard_sample: bool = True,
        eps: float = 1e-20,
    ) -> None:
        if reference_interval < 1:
            raise ValueError(f"reference_interval must be >= 1, got {reference_interval!r}.")
        self.weights = dict(zip(TERM_NAMES, (float(weight_authenticity),
                                             float(weight_class_diversity),
                                             float(weight_inter_sample_diversity),
                                             float(weight_hard_sample))))
        for name, weight in self.weights.items():
            if not weight >= 0.0:
                raise ValueError(f"the weight of the {name!r} term must be >= 0, got {weight!r}.")
        self.penalised = PENALISED_TERMS + (("hard-sample",) if penalise_hard_sample else ())
        self.reference_interval = int(reference_interval)
        self.eps = eps
        self.class_prior: torch.Tensor | None = None
        self.steps = 0
        self.references: dict[str, torch.Tensor] = {}
        self._refresh_pending = True

    @property
    def uses_student(self) -> bool:
        """Whether the total needs the student's logits (``w_hs > 0``)."""
        return self.weights["hard-sample"] > 0.0

    def set_class_prior(self, prior: torch.Tensor | None) -> None:
        """Target of the class-diversity term (``None``: uniform, as RDSKD)."""
        self.class_prior = None if prior is None else torch.as_tensor(prior).float()

    def reset_references(self) -> None:
        """Refresh the references at the next call, whatever the step counter."""
        self._refresh_pending = True

    def terms(self, images: torch.Tensor, logits: torch.Tensor,
              student_logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The named terms of one generator step (``hard-sample`` needs the student)."""
        terms = {"authenticity": authenticity_loss(logits),
                 "class-diversity": class_diversity_loss(logits, self.class_prior),
                 "inter-sample-diversity": inter_sample_diversity_loss(images, logits,
                                                                       eps=self.eps)}
        if student_logits is not None:
            terms["hard-sample"] = hard_sample_loss(logits, student_logits)
        return terms

    def __call__(
        self, images: torch.Tensor, logits: torch.Tensor,
        student_logits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss of one generator step and its named terms.

        Parameters
        ----------
        images : torch.Tensor
            Generated samples ``[B, ...]``.
        logits : torch.Tensor
            Teacher logits on ``images``, ``[B, C]``.
        student_logits : torch.Tensor | None (default: None)
            Student logits on ``images``, for the hard-sample term.

        Returns
        -------
        tuple[torch.Tensor, dict[str, float]]
            The total (a tensor with no ``grad_fn`` if every weight is 0) and the
            values of each computed term and ``"total"``.
        """
        if self.uses_student and student_logits is None:
            raise ValueError("weight_hard_sample > 0 needs the student's logits.")
        terms = self.terms(images, logits, student_logits)
        if self._refresh_pending or self.steps % self.reference_interval == 0:
            self.references = {name: terms[name].detach().clone()
                               for name in self.penalised if name in terms}
            self._refresh_pending = False
        self.steps += 1
        total = logits.new_zeros(())
        for name, value in terms.items():
            if self.weights[name] == 0.0:
                continue
            if name in self.penalised and name in self.references:
                exponent = value - self.references[name]
                if name == "hard-sample":
                    exponent = exponent.clamp(-5.0, 5.0)
                value = torch.exp(exponent)
            total = total + self.weights[name] * value
        values = {name: float(value.detach()) for name, value in terms.items()}
        values["total"] = float(total.detach())
        return total, values

    def state_dict(self) -> dict[str, Any]:
        """Step counter, references and a pending refresh (weights are settings)."""
        return {"steps": self.steps, "refresh-pending": self._refresh_pending,
                "references": {k: v.clone() for k, v in self.references.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.steps = int(state["steps"])
        self._refresh_pending = bool(state["refresh-pending"])
        self.references = {k: v.clone() for k, v in state["references"].items()}
