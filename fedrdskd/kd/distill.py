"""The one distillation loop that every synthesizer (RDSKD, FedFTG) runs in."""

from __future__ import annotations

import copy
import numbers
import time
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedrdskd.kd.base import Synthesizer, Teacher


@dataclass(frozen=True, kw_only=True)
class DistillationSchedule:
    """How many updates of each kind one distillation run takes.

    Each of ``iterations`` iterations takes ``generator_steps`` generator updates, then
    ``student_steps`` student updates: ``iterations=1`` gives "all generator steps, then
    all student steps", larger values interleave the two (totals are per-iteration
    counts times ``iterations``).

    Parameters
    ----------
    iterations : int (default: 1)
        Outer iterations (>= 1).
    generator_steps : int
        Generator updates per iteration (>= 0).
    student_steps : int
        Student updates per iteration (>= 0).
    batch_size : int
        Synthetic samples per student update (>= 1); the synthesizer sets its own
        generator batch.
    """

    iterations: int = 1
    generator_steps: int
    student_steps: int
    batch_size: int

    def __post_init__(self) -> None:
        """Refuse counts that are not integers in range, naming the field."""
        for name, low in (("iterations", 1), ("generator_steps", 0), ("student_steps", 0),
                          ("batch_size", 1)):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"DistillationSchedule.{name} must be an int >= {low}, "
                                 f"got {value!r}.")


def run_distillation(
    student: nn.Module,
    teacher: Teacher,
    synthesizer: Synthesizer,
    student_optimizer: torch.optim.Optimizer,
    schedule: DistillationSchedule,
    *,
    eval_batch_size: int = 256,
    student_train_mode: bool = False,
) -> dict[str, float]:
    """Train the generator against ``teacher`` and pull ``student`` towards it.

    Parameters
    ----------
    student : torch.nn.Module
        The model to fine-tune (in FL: the aggregated global model), updated in place.
    teacher : Callable[[torch.Tensor], torch.Tensor]
        Frozen teacher returning logits (a :class:`~fedrdskd.kd.ensemble.TeacherEnsemble`).
    synthesizer : Synthesizer
        Owns the generator (e.g. :class:`~fedrdskd.kd.rdskd.RDSKDSynthesizer`).
    student_optimizer : torch.optim.Optimizer
        Optimiser over ``student``'s parameters.
    schedule : DistillationSchedule
        Step counts and batch size.
    eval_batch_size : int (default: 256)
        Size of the fresh synthetic batch drawn after training for the metrics below.
    student_train_mode : bool (default: False)
        Keep the student in train mode during the run (generator steps, which may use
        it, and student updates). Off by default so BatchNorm keeps the running
        statistics the clients learnt on real data (synthetic batches would overwrite
        them) and dropout stays off; parameters are trained either way. The student's
        mode is restored afterwards.

    Returns
    -------
    dict[str, float]
        ``generator-<term>``: mean of each term the synthesizer reports (absent without
        generator steps); ``kd-loss``: mean student loss (absent without student steps);
        ``generator-seconds``, ``student-seconds``, ``distill-seconds`` (wall time, the
        last includes the evaluation); on a fresh batch after training, against the
        synthesizer's :meth:`~fedrdskd.kd.base.Synthesizer.student_target`:
        ``ensemble-agreement`` (fraction of samples where the student's and the target's
        argmax agree), ``kl-before`` / ``kl-after`` (``KL(target ‖ student)`` at ``τ = 1``,
        batch mean, for the student as it was before and after this run).
    """
    start = time.perf_counter()
    was_training = student.training
    initial_student = copy.deepcopy(student) if schedule.student_steps > 0 else student
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    seconds = {"generator-seconds": 0.0, "student-seconds": 0.0}
    student.train(student_train_mode)
    for _ in range(schedule.iterations):
        synthesizer.begin_iteration()
        tick = time.perf_counter()
        for _ in range(schedule.generator_steps):
            for name, value in synthesizer.generator_step(teacher, student).items():
                sums[f"generator-{name}"] += value
                counts[f"generator-{name}"] += 1
        seconds["generator-seconds"] += time.perf_counter() - tick
        tick = time.perf_counter()
        for _ in range(schedule.student_steps):
            sums["kd-loss"] += _student_step(student, teacher, synthesizer, student_optimizer,
                                             schedule.batch_size)
            counts["kd-loss"] += 1
        seconds["student-seconds"] += time.perf_counter() - tick
    student.train(was_training)
    metrics = {name: sums[name] / counts[name] for name in sums}
    metrics.update(seconds)
    metrics.update(_agreement_metrics(initial_student, student, teacher, synthesizer,
                                      eval_batch_size))
    metrics["distill-seconds"] = time.perf_counter() - start
    return metrics


def _student_step(
    student: nn.Module,
    teacher: Teacher,
    synthesizer: Synthesizer,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
) -> float:
    """One student update on a fresh synthetic batch; returns its loss."""
    batch = synthesizer.sample(batch_size)
    loss = synthesizer.student_loss(student(batch.images), teacher, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def _agreement_metrics(
    initial_student: nn.Module,
    student: nn.Module,
    teacher: Teacher,
    synthesizer: Synthesizer,
    batch_size: int,
) -> dict[str, float]:
    """Agreement and KL to the student's target on one fresh batch, before and after."""
    batch = synthesizer.sample(batch_size)
    target_log_probabilities = F.log_softmax(synthesizer.student_target(teacher, batch), dim=1)
    results = {}
    for name, model in (("kl-before", initial_student), ("kl-after", student)):
        was_training = model.training
        model.eval()
        logits = model(batch.images)
        model.train(was_training)
        results[name] = float(F.kl_div(F.log_softmax(logits, dim=1), target_log_probabilities,
                                       reduction="batchmean", log_target=True))
        if name == "kl-after":
            agreement = logits.argmax(dim=1) == target_log_probabilities.argmax(dim=1)
            results["ensemble-agreement"] = float(agreement.float().mean())
    return results
