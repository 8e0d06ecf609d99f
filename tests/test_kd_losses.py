"""Golden values for RDSKD's loss terms, the KD loss and the exponential penalty."""

from __future__ import annotations

import math

import pytest
import torch

from fedrdskd.kd.losses import (
    RDSKDGeneratorLoss,
    authenticity_loss,
    class_diversity_loss,
    inter_sample_diversity_loss,
    kd_loss,
)

LN4 = math.log(4.0)
# Row 0: p = (1/3, 1/3, 1/3); row 1: p = (4/6, 1/6, 1/6).
UNIFORM_AND_PEAKED = torch.tensor([[0.0, 0.0, 0.0], [LN4, 0.0, 0.0]])


def test_authenticity_is_cross_entropy_against_own_argmax() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    # -log softmax at the argmax: log(1 + 2 e^-2) and log(1 + 2 e^-1).
    expected = (math.log(1 + 2 * math.exp(-2)) + math.log(1 + 2 * math.exp(-1))) / 2
    assert authenticity_loss(logits).item() == pytest.approx(expected, rel=1e-6)


def test_authenticity_pseudo_labels_carry_no_gradient() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0]], requires_grad=True)
    authenticity_loss(logits).backward()
    probabilities = torch.softmax(logits.detach(), dim=1)
    expected = probabilities - torch.tensor([[1.0, 0.0, 0.0]])  # d CE / d logits
    torch.testing.assert_close(logits.grad, expected)


def test_class_diversity_is_negative_entropy_of_batch_mean() -> None:
    # p̄ = (1/2, 1/4, 1/4): Σ p̄ log p̄ = -1/2 ln 2 - 2 · 1/4 ln 4 = -1.5 ln 2.
    value = class_diversity_loss(UNIFORM_AND_PEAKED)
    assert value.item() == pytest.approx(-1.5 * math.log(2.0), rel=1e-6)


def test_class_diversity_bounds() -> None:
    collapsed = torch.tensor([[30.0, 0.0, 0.0], [30.0, 0.0, 0.0]])
    assert class_diversity_loss(collapsed).item() == pytest.approx(0.0, abs=1e-6)
    assert class_diversity_loss(torch.zeros(4, 3)).item() == pytest.approx(-math.log(3), rel=1e-6)


def test_inter_sample_diversity_golden_value() -> None:
    images = torch.tensor([[[[0.0, 0.0]]], [[[3.0, 4.0]]]])  # distance 5
    # softmax difference (1/3, -1/6, -1/6): norm sqrt(1/6); l = 5 sqrt(6).
    expected = 1.0 / (5.0 * math.sqrt(6.0) + 0.5)
    value = inter_sample_diversity_loss(images, UNIFORM_AND_PEAKED, eps=0.5)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_inter_sample_diversity_pairs_halves_and_ignores_odd_sample() -> None:
    images = torch.tensor([[0.0], [0.0], [3.0], [4.0], [100.0]])
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0],
                           [LN4, 0.0, 0.0], [0.0, LN4, 0.0], [0.0, 0.0, 9.0]])
    # Pairs (0, 2) and (1, 3): image distance 5, output distance sqrt(2/6).
    expected = math.sqrt(2.0 / 6.0) / 5.0
    assert inter_sample_diversity_loss(images, logits).item() == pytest.approx(expected, rel=1e-6)


def test_inter_sample_diversity_degenerate_cases_are_finite() -> None:
    same_outputs = torch.zeros(2, 3)
    images = torch.tensor([[0.0], [1.0]], requires_grad=True)
    value = inter_sample_diversity_loss(images, same_outputs)
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(images.grad).all()
    identical = inter_sample_diversity_loss(torch.zeros(2, 1), torch.zeros(2, 3))
    assert identical.item() == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        inter_sample_diversity_loss(torch.zeros(1, 1), torch.zeros(1, 3))


def test_kd_loss_zero_for_identical_logits() -> None:
    logits = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    assert kd_loss(logits, logits.clone(), 10.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_golden_value_with_temperature() -> None:
    # At tau = 2: teacher [2 ln 3, 0] -> p_t = (3/4, 1/4); student [0, 0] -> p_s = (1/2, 1/2).
    teacher = torch.tensor([[2 * math.log(3.0), 0.0]])
    student = torch.zeros(1, 2)
    divergence = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kd_loss(student, teacher, 2.0).item() == pytest.approx(4.0 * divergence, rel=1e-6)
    # Batch mean: a second, identical row leaves the value unchanged.
    doubled = kd_loss(student.repeat(2, 1), teacher.repeat(2, 1), 2.0)
    assert doubled.item() == pytest.approx(4.0 * divergence, rel=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(student, teacher, 0.0)


def _penalty_gradient(loss: RDSKDGeneratorLoss, logits: torch.Tensor) -> tuple[float, torch.Tensor]:
    leaf = logits.clone().requires_grad_(True)
    total, _ = loss(torch.zeros(len(logits), 1), leaf)
    total.backward()
    return total.item(), leaf.grad


def test_exponential_penalty_scales_gradient_by_exp_of_increment() -> None:
    confident = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    unsure = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    loss = RDSKDGeneratorLoss(reference_interval=100, weight_class_diversity=0.0,
                              weight_inter_sample_diversity=0.0)
    total, _ = _penalty_gradient(loss, confident)  # refresh: reference = L_oh(confident)
    assert total == pytest.approx(1.0)
    increment = authenticity_loss(unsure).item() - authenticity_loss(confident).item()
    assert increment > 0
    total, gradient = _penalty_gradient(loss, unsure)
    plain = unsure.clone().requires_grad_(True)
    authenticity_loss(plain).backward()
    assert total == pytest.approx(math.exp(increment), rel=1e-5)
    torch.testing.assert_close(gradient, math.exp(increment) * plain.grad)
    # A term that fell below its reference is weighted by exp(negative) < 1.
    loss.reset_references()
    _penalty_gradient(loss, unsure)
    total, _ = _penalty_gradient(loss, confident)
    assert total == pytest.approx(math.exp(-increment), rel=1e-5)


def test_total_combines_terms_with_weights() -> None:
    images = torch.tensor([[[[0.0, 0.0]]], [[[3.0, 4.0]]]])
    loss = RDSKDGeneratorLoss(reference_interval=120, weight_authenticity=2.0,
                              weight_class_diversity=3.0, weight_inter_sample_diversity=5.0,
                              eps=0.5)
    total, values = loss(images, UNIFORM_AND_PEAKED)
    diversity = 1.0 / (5.0 * math.sqrt(6.0) + 0.5)
    # First call refreshes the references: both exponentials are exp(0) = 1.
    assert total.item() == pytest.approx(2.0 + 3.0 + 5.0 * diversity, rel=1e-6)
    assert set(values) == {"authenticity", "class-diversity", "inter-sample-diversity", "total"}
    assert values["class-diversity"] == pytest.approx(-1.5 * math.log(2.0), rel=1e-6)
    assert values["total"] == pytest.approx(total.item())


def test_references_refresh_exactly_every_interval() -> None:
    loss = RDSKDGeneratorLoss(reference_interval=3)
    images = torch.randn(4, 1)
    snapshots = []
    for step in range(8):
        logits = torch.tensor([[float(step + 1), 0.0, 0.0]] * 2 + [[0.0, 0.5, 0.0]] * 2)
        _, values = loss(images, logits)
        snapshots.append((values["authenticity"], loss.references["authenticity"].item()))
    for step, (_, reference) in enumerate(snapshots):
        refreshed_at = step - step % 3
        assert reference == pytest.approx(snapshots[refreshed_at][0], rel=1e-6)
    assert len({reference for _, reference in snapshots}) == 3  # steps 0, 3, 6
    assert loss.steps == 8


@pytest.mark.parametrize("weights", [(0.0, 1.0, 1.0), (1.0, 0.0, 1.0), (1.0, 1.0, 0.0),
                                     (0.0, 0.0, 1.0), (0.0, 0.0, 0.0)])
def test_zero_weight_paths_run(weights: tuple[float, float, float]) -> None:
    loss = RDSKDGeneratorLoss(reference_interval=120, weight_authenticity=weights[0],
                              weight_class_diversity=weights[1],
                              weight_inter_sample_diversity=weights[2])
    images = torch.randn(4, 1, 2, 2, requires_grad=True)
    logits = (images.flatten(1) @ torch.randn(4, 3))
    for _ in range(2):
        total, values = loss(images, logits)
    assert math.isfinite(values["total"]) and len(values) == 4
    expected = sum(w * (1.0 if name != "inter-sample-diversity" else values[name])
                   for w, name in zip(weights, ("authenticity", "class-diversity",
                                                "inter-sample-diversity")))
    assert values["total"] == pytest.approx(expected, rel=1e-5)
    assert total.requires_grad == any(weights)


def test_invalid_settings_raise() -> None:
    with pytest.raises(ValueError, match="reference_interval"):
        RDSKDGeneratorLoss(reference_interval=0)
    with pytest.raises(ValueError, match="class-diversity"):
        RDSKDGeneratorLoss(reference_interval=120, weight_class_diversity=-1.0)


def test_loss_state_round_trip() -> None:
    loss = RDSKDGeneratorLoss(reference_interval=5)
    images, logits = torch.randn(4, 1), torch.randn(4, 3)
    loss(images, logits)
    restored = RDSKDGeneratorLoss(reference_interval=5)
    restored.load_state_dict(loss.state_dict())
    later = torch.randn(4, 3)
    assert restored(images, later)[1] == loss(images, later)[1]
    assert restored.steps == loss.steps == 2
