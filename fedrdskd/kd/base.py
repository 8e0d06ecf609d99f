"""The interface every server-side synthesizer implements.

A *synthesizer* owns a generator and knows how to (1) take one optimisation step on
that generator against a frozen teacher ensemble, and (2) draw a batch of synthetic
samples together with the student's training loss on them. The distillation loop in
:mod:`fedrdskd.kd.distill` only talks to this interface, so RDSKD and FedFTG share one
loop (no branching on the method's name).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

Teacher = Callable[[torch.Tensor], torch.Tensor]
"""A frozen teacher: images ``[B, C, H, W]`` -> logits ``[B, classes]`` (e.g. a
:class:`~fedrdskd.kd.ensemble.TeacherEnsemble`)."""


@dataclass
class SyntheticBatch:
    """A batch of generated inputs.

    Attributes
    ----------
    images : torch.Tensor
        Generated inputs, shape ``[B, C, H, W]``, in the models' (normalised) input space.
    labels : torch.Tensor | None
        The class labels the batch was conditioned on (conditional generators such as
        FedFTG's), shape ``[B]``; ``None`` for unconditional generators (RDSKD).
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None


@runtime_checkable
class Synthesizer(Protocol):
    """Two verbs, a target and a loss: train the generator, sample, score the student."""

    generator: nn.Module

    def begin_iteration(self) -> None:
        """Start an outer iteration (FedFTG fixes its latents and labels here)."""

    def generator_step(self, teacher: Any, student: nn.Module) -> dict[str, float]:
        """Take one optimiser step on the generator; return the named loss terms."""

    def sample(self, batch_size: int) -> SyntheticBatch:
        """Draw a batch of synthetic samples without tracking generator gradients."""

    def student_loss(
        self, student_logits: torch.Tensor, teacher: Any, batch: SyntheticBatch
    ) -> torch.Tensor:
        """Loss that pulls the student towards :meth:`student_target` on ``batch``."""

    def student_target(self, teacher: Any, batch: SyntheticBatch) -> torch.Tensor:
        """What the student is trained towards on ``batch``, as logits ``[B, C]``.

        Its softmax is the target distribution at temperature 1 (RDSKD: the teacher's
        output; FedFTG: the label-conditioned class-level ensemble). The loss and the
        distillation loop's metrics both use it, so the metrics describe the target the
        student is actually trained towards.
        """

    def state_dict(self) -> dict[str, Any]:
        """Generator and optimiser state, for warm starts and checkpoints."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
