"""The DAFL generator, RDSKD's synthesizer and the shared distillation loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedrdskd.kd.base import Synthesizer
from fedrdskd.kd.distill import DistillationSchedule, run_distillation
from fedrdskd.kd.ensemble import TeacherEnsemble
from fedrdskd.kd.generators import DAFLGenerator
from fedrdskd.kd.rdskd import RDSKDSynthesizer

CPU = torch.device("cpu")
IMAGE_SHAPE = (1, 8, 8)
LATENT = 8


def tiny_classifier() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def make_teacher(members: int = 3) -> TeacherEnsemble:
    states = []
    for seed in range(members):
        torch.manual_seed(100 + seed)
        states.append(tiny_classifier().state_dict())
    return TeacherEnsemble(tiny_classifier, states, torch.full((members, 10), 1.0 / members),
                           device=CPU)


def make_synthesizer(seed: int = 0, **kwargs) -> RDSKDSynthesizer:
    torch.manual_seed(seed)
    generator = DAFLGenerator(LATENT, IMAGE_SHAPE, channels=8)
    return RDSKDSynthesizer(generator, latent_dim=LATENT, batch_size=16, reference_interval=4,
                            device=CPU, seed=seed, **kwargs)


def make_student() -> nn.Module:
    torch.manual_seed(7)
    return tiny_classifier()


def parameters_of(module: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in module.state_dict().values()]


def assert_bitwise_equal(before: list[torch.Tensor], module: nn.Module) -> None:
    after = list(module.state_dict().values())
    assert all(torch.equal(a, b) for a, b in zip(before, after))


# ---- generator ----------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 32, 32)])
def test_generator_output_shape_follows_dataset(shape: tuple[int, int, int]) -> None:
    generator = DAFLGenerator(100, shape, channels=16)
    images = generator(torch.randn(4, 100))
    assert images.shape == (4, *shape)
    # The final affine-free BatchNorm standardises each channel (train mode).
    assert images.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert generator.initial_size == (shape[1] // 4, shape[2] // 4)


def test_generator_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="multiples of 4"):
        DAFLGenerator(10, (1, 30, 30))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        DAFLGenerator(10, (28, 28))


# ---- synthesizer --------------------------------------------------------------------
def test_synthesizer_implements_protocol_and_reports_terms() -> None:
    synthesizer = make_synthesizer()
    assert isinstance(synthesizer, Synthesizer)
    values = synthesizer.generator_step(make_teacher(), make_student())
    assert set(values) == {"authenticity", "class-diversity", "inter-sample-diversity", "total"}
    batch = synthesizer.sample(5)
    assert batch.images.shape == (5, *IMAGE_SHAPE) and batch.labels is None
    assert not batch.images.requires_grad


def test_generator_step_trains_generator_only() -> None:
    synthesizer, teacher, student = make_synthesizer(), make_teacher(), make_student()
    generator_before, student_before = parameters_of(synthesizer.generator), parameters_of(student)
    synthesizer.generator_step(teacher, student)
    assert_bitwise_equal(student_before, student)
    changed = [not torch.equal(a, b) for a, b in
               zip(generator_before, synthesizer.generator.state_dict().values())]
    assert any(changed)


def test_all_zero_weights_leave_generator_untouched() -> None:
    synthesizer = make_synthesizer(weight_authenticity=0.0, weight_class_diversity=0.0,
                                   weight_inter_sample_diversity=0.0)
    before = [p.detach().clone() for p in synthesizer.generator.parameters()]
    values = synthesizer.generator_step(make_teacher(), make_student())
    assert values["total"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, synthesizer.generator.parameters()))


def test_seeded_synthesizer_is_reproducible() -> None:
    teacher = make_teacher()
    runs = []
    for _ in range(2):
        synthesizer = make_synthesizer(seed=3)
        losses = [synthesizer.generator_step(teacher, make_student()) for _ in range(3)]
        runs.append((losses, synthesizer.sample(4).images))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])
    other = make_synthesizer(seed=4)
    assert not torch.equal(other.sample(4).images, runs[0][1])


def test_state_dict_round_trip_continues_identically() -> None:
    teacher, student = make_teacher(), make_student()
    original = make_synthesizer(seed=1)
    for _ in range(3):  # crosses the step-0 refresh; the next refresh is at step 4
        original.generator_step(teacher, student)
    state = original.state_dict()
    restored = make_synthesizer(seed=99)
    restored.load_state_dict(state)
    for _ in range(3):  # steps 3..5, including the refresh at 4
        assert restored.generator_step(teacher, student) == original.generator_step(teacher,
                                                                                    student)
    assert torch.equal(restored.sample(4).images, original.sample(4).images)
    # The saved state is a copy: training on did not change it.
    again = make_synthesizer(seed=5)
    again.load_state_dict(state)
    assert again.loss.steps == 3


def test_sampling_does_not_change_generator() -> None:
    synthesizer = make_synthesizer()
    synthesizer.generator_step(make_teacher(), make_student())
    before = parameters_of(synthesizer.generator)
    synthesizer.sample(8)
    assert_bitwise_equal(before, synthesizer.generator)
    assert synthesizer.generator.training


def test_sample_uses_batch_statistics_or_running_statistics() -> None:
    synthesizer = make_synthesizer()
    images = synthesizer.sample(64).images
    # Batch statistics: the final affine-free BatchNorm standardises the batch.
    assert images.mean().abs() < 1e-4 and abs(images.std().item() - 1.0) < 0.05
    running = make_synthesizer(sample_batch_statistics=False)
    latents = running.latents(16)
    running.rng.manual_seed(0)
    with torch.no_grad():
        expected = running.generator.eval()(latents)
    running.generator.train()
    torch.testing.assert_close(running.sample(16).images, expected)
    assert running.generator.training


def test_synthesizer_rejects_odd_batch() -> None:
    with pytest.raises(ValueError, match="even"):
        RDSKDSynthesizer(DAFLGenerator(LATENT, IMAGE_SHAPE, channels=8), latent_dim=LATENT,
                         reference_interval=120, batch_size=15)


# ---- distillation loop --------------------------------------------------------------
def test_zero_steps_leave_student_and_generator_bitwise_unchanged() -> None:
    synthesizer, teacher, student = make_synthesizer(), make_teacher(), make_student()
    student_before, generator_before = parameters_of(student), parameters_of(synthesizer.generator)
    optimizer = torch.optim.Adam(student.parameters(), lr=0.1)
    schedule = DistillationSchedule(generator_steps=0, student_steps=0, batch_size=8)
    metrics = run_distillation(student, teacher, synthesizer, optimizer, schedule,
                               eval_batch_size=32)
    assert_bitwise_equal(student_before, student)
    assert_bitwise_equal(generator_before, synthesizer.generator)
    assert metrics["kl-before"] == metrics["kl-after"]
    assert "kd-loss" not in metrics and "generator-total" not in metrics
    assert 0.0 <= metrics["ensemble-agreement"] <= 1.0


def test_only_generator_steps_leave_student_unchanged() -> None:
    synthesizer, teacher, student = make_synthesizer(), make_teacher(), make_student()
    before = parameters_of(student)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    schedule = DistillationSchedule(generator_steps=2, student_steps=0, batch_size=8)
    metrics = run_distillation(student, teacher, synthesizer, optimizer, schedule)
    assert_bitwise_equal(before, student)
    assert metrics["generator-total"] > 0 and "kd-loss" not in metrics


def test_distillation_brings_student_towards_ensemble() -> None:
    synthesizer, teacher, student = make_synthesizer(), make_teacher(), make_student()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    schedule = DistillationSchedule(iterations=2, generator_steps=3, student_steps=20,
                                    batch_size=32)
    fresh = make_synthesizer(seed=11).sample(256).images  # a batch the loop never saw
    untrained = make_student()
    metrics = run_distillation(student, teacher, synthesizer, optimizer, schedule,
                               eval_batch_size=256)
    assert metrics["kl-after"] < 0.5 * metrics["kl-before"]
    with torch.no_grad():
        target = torch.log_softmax(teacher(fresh), dim=1)
        kl = [torch.nn.functional.kl_div(torch.log_softmax(m(fresh), dim=1), target,
                                         reduction="batchmean", log_target=True).item()
              for m in (untrained, student)]
    assert kl[1] < kl[0]
    assert set(metrics) == {
        "generator-authenticity", "generator-class-diversity", "generator-inter-sample-diversity",
        "generator-total", "kd-loss", "generator-seconds", "student-seconds", "distill-seconds",
        "ensemble-agreement", "kl-before", "kl-after"}
    assert metrics["distill-seconds"] >= metrics["generator-seconds"] + metrics["student-seconds"]
    assert synthesizer.loss.steps == 6  # 2 iterations x 3 generator steps


def test_student_mode_restored_and_eval_by_default() -> None:
    synthesizer, teacher = make_synthesizer(), make_teacher()
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.BatchNorm1d(10))
    student.train()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01)
    schedule = DistillationSchedule(generator_steps=0, student_steps=2, batch_size=8)
    run_distillation(student, teacher, synthesizer, optimizer, schedule)
    assert student.training
    assert torch.equal(student[2].running_mean, torch.zeros(10))  # statistics kept
    run_distillation(student, teacher, synthesizer, optimizer, schedule, student_train_mode=True)
    assert not torch.equal(student[2].running_mean, torch.zeros(10))


def test_schedule_validates() -> None:
    with pytest.raises(ValueError, match="iterations"):
        DistillationSchedule(iterations=0, generator_steps=1, student_steps=1, batch_size=8)
    with pytest.raises(ValueError, match="student_steps"):
        DistillationSchedule(generator_steps=1, student_steps=-1, batch_size=8)
