"""Golden values for the mechanisms added to RDSKD: label prior, hard-sample term,
student batch reuse and the trust-region interpolation (plain PyTorch, no Flower)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fedrdskd.kd.interpolation import interpolate_states
from fedrdskd.kd.losses import (RDSKDGeneratorLoss, class_diversity_loss, hard_sample_loss,
                                kd_loss)
from test_rdskd import make_student, make_synthesizer, make_teacher

LN4 = math.log(4.0)
# Row 0: p = (1/3, 1/3, 1/3); row 1: p = (4/6, 1/6, 1/6); p̄ = (1/2, 1/4, 1/4).
UNIFORM_AND_PEAKED = torch.tensor([[0.0, 0.0, 0.0], [LN4, 0.0, 0.0]])
IMAGES = torch.tensor([[[[0.0, 0.0]]], [[[3.0, 4.0]]]])


# ---- class prior ------------------------------------------------------------------------
def test_uniform_prior_equals_rdskd_negative_entropy() -> None:
    uniform = class_diversity_loss(UNIFORM_AND_PEAKED, torch.ones(3))
    assert uniform.item() == pytest.approx(-1.5 * math.log(2.0), rel=1e-6)
    assert uniform.item() == pytest.approx(class_diversity_loss(UNIFORM_AND_PEAKED).item())


def test_label_prior_golden_value_and_minimum() -> None:
    # π = counts (2, 1, 1) / 4 = p̄: KL(p̄‖π) = 0, so the value is -log 3.
    at_prior = class_diversity_loss(UNIFORM_AND_PEAKED, torch.tensor([2.0, 1.0, 1.0]))
    assert at_prior.item() == pytest.approx(-math.log(3.0), rel=1e-6)
    # π = (1/4, 1/2, 1/4): KL = 1/2 ln 2 + 1/4 ln(1/2) + 0 = 1/4 ln 2.
    other = class_diversity_loss(UNIFORM_AND_PEAKED, torch.tensor([1.0, 2.0, 1.0]))
    assert other.item() == pytest.approx(0.25 * math.log(2.0) - math.log(3.0), rel=1e-6)
    assert other.item() > at_prior.item()


def test_absent_class_of_the_prior_is_pushed_out() -> None:
    prior = torch.tensor([1.0, 1.0, 0.0])
    with_class_2 = class_diversity_loss(torch.tensor([[0.0, 0.0, 5.0]] * 2), prior)
    without = class_diversity_loss(torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]]), prior)
    assert with_class_2.item() > without.item() + 5.0


# ---- hard-sample term ---------------------------------------------------------------------
def test_hard_sample_is_minus_batch_mean_kl_teacher_to_student() -> None:
    teacher = UNIFORM_AND_PEAKED
    student = torch.zeros(2, 3)  # uniform: KL row 0 = 0; row 1 = Σ p log(3p)
    row1 = (4 / 6) * math.log(3 * 4 / 6) + 2 * (1 / 6) * math.log(3 / 6)
    assert hard_sample_loss(teacher, student).item() == pytest.approx(-row1 / 2, rel=1e-6)
    assert hard_sample_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_hard_sample_accepts_log_probabilities_as_teacher_logits() -> None:
    student = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    log_probabilities = F.log_softmax(UNIFORM_AND_PEAKED, dim=1)
    assert hard_sample_loss(log_probabilities, student).item() == pytest.approx(
        hard_sample_loss(UNIFORM_AND_PEAKED, student).item(), rel=1e-6)


def test_hard_sample_weight_zero_is_rdskd_exactly() -> None:
    student = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    rdskd = RDSKDGeneratorLoss(reference_interval=120, eps=0.5)
    with_zero = RDSKDGeneratorLoss(reference_interval=120, eps=0.5, weight_hard_sample=0.0)
    total, values = rdskd(IMAGES, UNIFORM_AND_PEAKED)
    zero_total, zero_values = with_zero(IMAGES, UNIFORM_AND_PEAKED, student)
    assert zero_total.item() == total.item()
    assert zero_values["hard-sample"] == pytest.approx(
        hard_sample_loss(UNIFORM_AND_PEAKED, student).item())  # reported, not added


def test_hard_sample_penalised_or_linear() -> None:
    student = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    rdskd_total, _ = RDSKDGeneratorLoss(reference_interval=120, eps=0.5)(IMAGES, UNIFORM_AND_PEAKED)
    linear = RDSKDGeneratorLoss(reference_interval=120, eps=0.5, weight_hard_sample=2.0,
                                penalise_hard_sample=False)
    total, values = linear(IMAGES, UNIFORM_AND_PEAKED, student)
    assert total.item() == pytest.approx(rdskd_total.item() + 2.0 * values["hard-sample"])
    penalised = RDSKDGeneratorLoss(reference_interval=120, eps=0.5, weight_hard_sample=2.0)
    total, _ = penalised(IMAGES, UNIFORM_AND_PEAKED, student)
    assert total.item() == pytest.approx(rdskd_total.item() + 2.0)  # refresh step: exp(0)
    # A later step where the divergence rose (term fell by d) weighs it exp(-d).
    closer = UNIFORM_AND_PEAKED.clone()
    before = hard_sample_loss(UNIFORM_AND_PEAKED, student).item()
    farther = torch.tensor([[-3.0, 0.0, 3.0], [0.0, 4.0, 0.0]])
    after = hard_sample_loss(closer, farther).item()
    total, values = penalised(IMAGES, closer, farther)
    assert values["hard-sample"] == pytest.approx(after)
    assert after < before
    # Same teacher logits as the refresh step: the RDSKD part is unchanged.
    assert total.item() == pytest.approx(rdskd_total.item() + 2.0 * math.exp(after - before),
                                         rel=1e-5)


def test_hard_sample_needs_the_student() -> None:
    with pytest.raises(ValueError, match="student"):
        loss = RDSKDGeneratorLoss(reference_interval=120, weight_hard_sample=1.0)
        loss(IMAGES, UNIFORM_AND_PEAKED)


def test_hard_sample_generator_step_leaves_student_and_teacher_untouched() -> None:
    synthesizer = make_synthesizer(weight_hard_sample=1.0)
    student, teacher = make_student(), make_teacher()
    before = [p.detach().clone() for p in student.parameters()]
    generator_before = [p.detach().clone() for p in synthesizer.generator.parameters()]
    values = synthesizer.generator_step(teacher, student)
    assert values["hard-sample"] <= 0.0
    assert all(p.grad is None for p in student.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, student.parameters()))
    assert any(not torch.equal(a, b)
               for a, b in zip(generator_before, synthesizer.generator.parameters()))


# ---- batch reuse -------------------------------------------------------------------------
class CountingTeacher:
    """Wraps a teacher and counts its forward passes."""

    def __init__(self, teacher) -> None:
        self.teacher, self.calls = teacher, 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.teacher(images)


def test_batch_reuse_serves_one_batch_k_times_with_one_teacher_pass() -> None:
    synthesizer = make_synthesizer(batch_reuse=3)
    teacher, student = CountingTeacher(make_teacher()), make_student()
    batches = []
    for _ in range(4):  # as run_distillation does: sample, then the loss on it
        batches.append(synthesizer.sample(16))
        synthesizer.student_loss(student(batches[-1].images), teacher, batches[-1])
    assert batches[0] is batches[1] is batches[2] and batches[3] is not batches[0]
    assert teacher.calls == 2
    assert synthesizer.sample(5).images.shape[0] == 5  # other sizes: always fresh
    synthesizer.begin_iteration()
    assert synthesizer.sample(16) is not batches[3]


def test_batch_reuse_one_is_the_plain_stream() -> None:
    plain, reuse_one = make_synthesizer(seed=3), make_synthesizer(seed=3, batch_reuse=1)
    for _ in range(3):
        assert torch.equal(plain.sample(16).images, reuse_one.sample(16).images)


def test_generator_step_drops_the_reused_batch() -> None:
    synthesizer = make_synthesizer(batch_reuse=4)
    first = synthesizer.sample(16)
    synthesizer.generator_step(make_teacher(), make_student())
    assert synthesizer.sample(16) is not first


def test_student_learns_on_the_generator_steps_batch_without_a_teacher_pass() -> None:
    synthesizer = make_synthesizer(batch_reuse=2, student_uses_generator_batch=True)
    teacher, student = CountingTeacher(make_teacher()), make_student()
    seen = []
    counting = teacher.teacher

    def recording(images):
        logits = counting(images)
        seen.append((images.detach().clone(), logits.detach().clone()))
        return logits

    teacher.teacher = recording
    synthesizer.generator_step(teacher, student)
    assert teacher.calls == 1
    first, second = synthesizer.sample(16), synthesizer.sample(16)
    assert first is second and torch.equal(first.images, seen[0][0])
    loss = synthesizer.student_loss(student(first.images), teacher, first)
    assert teacher.calls == 1  # the generator step's teacher logits serve the student
    torch.testing.assert_close(loss, kd_loss(student(first.images), seen[0][1],
                                             synthesizer.temperature))
    assert synthesizer.sample(16) is not first  # reused batch_reuse times, then fresh


def test_generator_batch_for_the_student_is_off_by_default() -> None:
    synthesizer = make_synthesizer(batch_reuse=2)
    synthesizer.generator_step(make_teacher(), make_student())
    assert synthesizer._uses_left == 0 and synthesizer._cached is None


@pytest.mark.parametrize("options", [{"replay_pool_size": 8}, {"augmentation": "shift"}])
def test_generator_batch_for_the_student_refuses_pool_and_augmentation(options) -> None:
    with pytest.raises(ValueError, match="student_uses_generator_batch"):
        make_synthesizer(student_uses_generator_batch=True, **options)


def test_batch_reuse_validates() -> None:
    with pytest.raises(ValueError, match="batch_reuse"):
        make_synthesizer(batch_reuse=0)


# ---- interpolation -----------------------------------------------------------------------
def test_interpolation_endpoints_midpoint_and_integer_buffers() -> None:
    start = {"w": torch.tensor([0.0, 2.0]), "steps": torch.tensor(3)}
    end = {"w": torch.tensor([4.0, 0.0]), "steps": torch.tensor(7)}
    assert torch.equal(interpolate_states(start, end, 0.0)["w"], start["w"])
    assert interpolate_states(start, end, 0.0)["steps"].item() == 3
    assert torch.equal(interpolate_states(start, end, 1.0)["w"], end["w"])
    half = interpolate_states(start, end, 0.25)
    torch.testing.assert_close(half["w"], torch.tensor([1.0, 1.5]))
    assert half["steps"].item() == 7
    twice = interpolate_states(start, end, 2.0)  # extrapolation along end - start
    torch.testing.assert_close(twice["w"], torch.tensor([8.0, -2.0]))
    with pytest.raises(ValueError, match="same keys"):
        interpolate_states(start, {"w": end["w"]}, 0.5)
