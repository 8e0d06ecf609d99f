"""FedFTG's loss terms, label sampling, class weights and conditional generator (plain PyTorch)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedrdskd.kd.conditional_generator import ConditionalGenerator
from fedrdskd.kd.distill import DistillationSchedule, run_distillation
from fedrdskd.kd.ensemble import TeacherEnsemble, ensemble_weights
from fedrdskd.kd.fedftg import FedFTGSynthesizer, client_logits, sample_labels
from fedrdskd.kd.fedftg_losses import (client_generator_loss, diversity_loss,
                                       ensemble_soft_targets, fidelity_loss,
                                       model_discrepancy_loss, soft_cross_entropy)
from mock_replies import TinyNet, tiny_model

# ---- loss terms: golden values on hand-computable tensors -----------------------------


def test_model_discrepancy_golden_value():
    # gaps per sample: mean(|1-0|, |0-2|) = 1.5 and mean(|3-3|, |1-0|) = 0.5
    global_logits = torch.tensor([[1.0, 0.0], [3.0, 1.0]])
    client = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    weights = torch.tensor([0.5, 1.0])
    value = model_discrepancy_loss(global_logits, client, weights)
    assert value.item() == pytest.approx(-(0.5 * 1.5 + 1.0 * 0.5) / 2)


def test_model_discrepancy_gradient_reaches_only_the_global_logits():
    global_logits = torch.tensor([[1.0, 0.0]], requires_grad=True)
    client = torch.tensor([[0.0, 2.0]], requires_grad=True)
    model_discrepancy_loss(global_logits, client, torch.tensor([1.0])).backward()
    # d/ds of -(|s1 - 0| + |s2 - 2|)/2 = -(sign(1), sign(-2))/2
    assert global_logits.grad.tolist() == [[-0.5, 0.5]]
    assert client.grad is None


def test_fidelity_golden_value():
    # CE of logits [0, ln 3] at label 1: -log(3/4); at label 0 for [0, 0]: log 2
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    labels = torch.tensor([1, 0])
    weights = torch.tensor([0.2, 0.6])
    expected = (-math.log(0.75) + math.log(2.0)) / 2 * 0.4
    assert fidelity_loss(logits, labels, weights).item() == pytest.approx(expected)


def test_diversity_golden_value():
    # z distance (mean of squares): (1^2 + 1^2)/2 = 1; x distance (mean |.|): (2+0+1)/3 = 1
    latents = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    images = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, -1.0]])
    # mean over the 4 ordered pairs, diagonal (0) included: (0 + 1 + 1 + 0) / 4
    assert diversity_loss(latents, images).item() == pytest.approx(math.exp(-0.5))


def test_diversity_of_identical_images_is_one():
    latents = torch.randn(4, 3)
    images = torch.ones(4, 1, 2, 2)
    assert diversity_loss(latents, images).item() == pytest.approx(1.0)


def test_ensemble_soft_targets_golden_value():
    # two clients, two classes; client 0 says (1, 0)-ish, client 1 uniform
    member_logits = torch.tensor([[[0.0, -1e4], [0.0, -1e4]],
                                  [[0.0, 0.0], [0.0, 0.0]]])
    class_weights = torch.tensor([[0.75, 0.0], [0.25, 1.0]])  # columns sum to 1
    labels = torch.tensor([0, 1])
    targets = ensemble_soft_targets(member_logits, class_weights, labels)
    # sample 0 (y=0): 0.75*(1,0) + 0.25*(.5,.5); sample 1 (y=1): 1.0*(.5,.5)
    assert torch.allclose(targets, torch.tensor([[0.875, 0.125], [0.5, 0.5]]))


def test_soft_cross_entropy_reductions():
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])
    targets = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    per_sample = [math.log(2.0), -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))]
    assert soft_cross_entropy(logits, targets, reduction="batchmean").item() == \
        pytest.approx(sum(per_sample) / 2)
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(sum(per_sample) / 4)
    with pytest.raises(ValueError, match="reduction must be one of"):
        soft_cross_entropy(logits, targets, reduction="sum")


def test_client_generator_loss_combines_terms_with_weights():
    torch.manual_seed(0)
    global_logits, client, latents = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 5)
    images, labels, weights = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 2, 1]), torch.rand(4)
    total, values = client_generator_loss(
        global_logits=global_logits, client_logits=client, labels=labels,
        sample_weights=weights, latents=latents, images=images, num_clients=4,
        lambda_md=2.0, lambda_cls=0.5, lambda_dis=1.0)
    expected = (2.0 * model_discrepancy_loss(global_logits, client, weights)
                + 0.5 * fidelity_loss(client, labels, weights)
                + diversity_loss(latents, images) / 4)
    assert total.item() == pytest.approx(expected.item())
    assert values["total"] == pytest.approx(expected.item())
    assert set(values) == {"model-discrepancy", "fidelity", "diversity", "total"}


# ---- label sampling and class-level weights ---------------------------------------------


def test_label_sampling_is_proportional_to_pooled_counts():
    counts = np.array([[6, 0, 2], [2, 0, 10]])  # pooled: 8, 0, 12 -> shares .4, 0, .6
    labels = sample_labels(counts, 50, torch.Generator().manual_seed(0))
    assert labels.dtype == torch.int64 and labels.shape == (50,)
    assert torch.bincount(labels, minlength=3).tolist() == [20, 0, 30]


def test_label_sampling_rounding_keeps_total_and_is_within_one():
    counts = np.array([1, 1, 1])
    per_class = torch.bincount(sample_labels(counts, 10, torch.Generator().manual_seed(0)),
                               minlength=3)
    assert per_class.sum() == 10 and per_class.tolist() == [3, 3, 4]


def test_label_sampling_is_seeded_and_shuffled():
    counts = np.array([10, 10, 10, 10])
    first = sample_labels(counts, 40, torch.Generator().manual_seed(3))
    again = sample_labels(counts, 40, torch.Generator().manual_seed(3))
    other = sample_labels(counts, 40, torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, torch.sort(first).values)  # shuffled, not in class order


@pytest.mark.parametrize("counts", [np.zeros(3), np.array([1, -1, 2]), np.ones((2, 2, 2))])
def test_label_sampling_rejects_bad_counts(counts):
    with pytest.raises(ValueError, match="label_counts must be"):
        sample_labels(counts, 5, torch.Generator())


def test_class_level_weights_sum_to_one_per_class():
    counts = np.array([[5, 0, 2], [1, 0, 4], [4, 0, 0]])
    weights = ensemble_weights("class", num_examples=counts.sum(1), label_counts=counts,
                               num_classes=3)
    assert torch.allclose(weights.sum(dim=0), torch.ones(3))
    assert torch.allclose(weights[:, 0], torch.tensor([0.5, 0.1, 0.4]))
    assert torch.allclose(weights[:, 1], torch.full((3,), 1 / 3))  # nobody holds class 1


# ---- the conditional generator -----------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_generator_output_shape(shape):
    generator = ConditionalGenerator(6, 10, shape, channels=4)
    images = generator(torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 9]))
    assert images.shape == (5, *shape)


def test_generator_depends_on_the_label():
    torch.manual_seed(0)
    generator = ConditionalGenerator(4, 3, (1, 8, 8), channels=4).eval()
    latents = torch.randn(2, 4)
    assert not torch.allclose(generator(latents, torch.tensor([0, 0])),
                              generator(latents, torch.tensor([1, 1])))


def test_generator_rejects_bad_shape():
    with pytest.raises(ValueError, match="multiples of 4"):
        ConditionalGenerator(4, 3, (1, 30, 30))


# ---- the synthesizer ---------------------------------------------------------------------

COUNTS = np.array([[8, 1, 1], [1, 8, 1], [1, 1, 8]])
CLASS_WEIGHTS = ensemble_weights("class", num_examples=COUNTS.sum(1), label_counts=COUNTS,
                                 num_classes=3)


def teacher(batched: bool = False) -> TeacherEnsemble:
    return TeacherEnsemble(TinyNet, [tiny_model(s).state_dict() for s in (1, 2, 3)],
                           CLASS_WEIGHTS, device=torch.device("cpu"), batched=batched)


def synthesizer(seed: int = 0) -> FedFTGSynthesizer:
    torch.manual_seed(seed)
    generator = ConditionalGenerator(4, 3, (1, 8, 8), channels=4)
    return FedFTGSynthesizer(generator, num_classes=3, latent_dim=4, batch_size=6,
                             iterations_per_round=2, seed=seed)


@pytest.mark.parametrize("batched", [False, True])
def test_client_logits_runs_one_member_and_matches_member_logits(batched):
    ensemble, images = teacher(batched), torch.randn(4, 1, 8, 8)
    for member in range(3):
        assert torch.allclose(client_logits(ensemble, member, images),
                              ensemble.member_logits(images)[member], atol=1e-6)


def test_synthesizer_needs_set_round_with_clear_error():
    with pytest.raises(RuntimeError, match="set_round"):
        synthesizer().begin_iteration()


def test_synthesizer_round_uses_label_pool_and_fixes_batch_within_iteration():
    synth = synthesizer()
    synth.set_round(COUNTS, CLASS_WEIGHTS)
    synth.begin_iteration()
    first = synth.sample(6)
    assert torch.equal(first.images, synth.sample(6).images)  # same batch for the I_d steps
    assert first.labels.shape == (6,)
    synth.begin_iteration()
    assert not torch.equal(first.images, synth.sample(6).images)


def test_distillation_with_synthesizer_reports_terms_and_lowers_kl():
    synth, ensemble = synthesizer(), teacher()
    synth.set_round(COUNTS, CLASS_WEIGHTS)
    student = tiny_model(0)
    metrics = run_distillation(student, ensemble, synth,
                               torch.optim.SGD(student.parameters(), lr=0.5),
                               DistillationSchedule(iterations=4, generator_steps=1,
                                                    student_steps=5, batch_size=6),
                               eval_batch_size=64)
    for key in ("generator-model-discrepancy", "generator-fidelity", "generator-diversity",
                "kd-loss"):
        assert math.isfinite(metrics[key])
    assert metrics["kl-after"] < metrics["kl-before"]


def test_synthesizer_state_round_trip_continues_identically():
    ensemble = teacher()
    original = synthesizer()
    original.set_round(COUNTS, CLASS_WEIGHTS)
    original.begin_iteration()
    original.generator_step(ensemble, tiny_model(0))
    restored = synthesizer(seed=7)  # different initial weights and RNG
    restored.load_state_dict(original.state_dict())
    for synth in (original, restored):
        synth.begin_iteration()
        synth.generator_step(ensemble, tiny_model(0))
    assert torch.equal(original.sample(6).images, restored.sample(6).images)
    assert torch.equal(original.sample(6).labels, restored.sample(6).labels)


def test_student_loss_matches_soft_ce_against_class_ensemble():
    synth, ensemble = synthesizer(), teacher()
    synth.set_round(COUNTS, CLASS_WEIGHTS)
    synth.begin_iteration()
    batch = synth.sample(6)
    logits = tiny_model(0)(batch.images)
    targets = ensemble_soft_targets(ensemble.member_logits(batch.images), synth.class_weights,
                                    batch.labels)
    expected = -(targets * F.log_softmax(logits, dim=1)).mean()
    assert synth.student_loss(logits, ensemble, batch).item() == pytest.approx(expected.item())


def test_student_target_is_the_label_conditioned_ensemble_the_loss_uses():
    synth, ensemble = synthesizer(), teacher()
    synth.set_round(COUNTS, CLASS_WEIGHTS)
    synth.begin_iteration()
    batch = synth.sample(6)
    p_ens = ensemble_soft_targets(ensemble.member_logits(batch.images), CLASS_WEIGHTS,
                                  batch.labels)
    target = synth.student_target(ensemble, batch)
    torch.testing.assert_close(target.exp(), p_ens)
    # not the output-class mixture that the ensemble itself returns
    assert not torch.allclose(torch.log_softmax(ensemble(batch.images), dim=1), target,
                              atol=1e-3)


def test_distillation_metrics_measure_against_the_student_target():
    synth, ensemble, student = synthesizer(), teacher(), tiny_model(0)
    synth.set_round(COUNTS, CLASS_WEIGHTS)
    probe = copy.deepcopy(synth)  # draws the same evaluation batch as the run below
    metrics = run_distillation(student, ensemble, synth,
                               torch.optim.SGD(student.parameters(), lr=0.5),
                               DistillationSchedule(iterations=1, generator_steps=0,
                                                    student_steps=0, batch_size=6),
                               eval_batch_size=32)
    batch = probe.sample(32)
    target = probe.student_target(ensemble, batch).log_softmax(dim=1)
    with torch.no_grad():
        logits = student(batch.images).log_softmax(dim=1)
    expected = F.kl_div(logits, target, reduction="batchmean", log_target=True).item()
    assert metrics["kl-before"] == pytest.approx(expected, rel=1e-5)
    assert metrics["kl-after"] == pytest.approx(expected, rel=1e-5)
    agreement = (logits.argmax(1) == target.argmax(1)).float().mean().item()
    assert metrics["ensemble-agreement"] == pytest.approx(agreement)
