"""The client-ensemble test accuracies recorded every round (no Flower runtime)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedrdskd.data import DatasetInfo, ImageDataset
from flwr.app import ArrayRecord

from fedrdskd.diagnostics import (
    diagnostics_subset,
    ensemble_test_accuracies,
    load_round_models,
    make_ensemble_evaluate_fn,
)
from fedrdskd.strategies.replies import ClientModel

# Three classes; an image is the one-hot of its label over 3 channels (1x1 pixels). With
# mean 0 and std 1/255 the normalised image equals the raw 0/1 values.
INFO = DatasetInfo("onehot", 3, (3, 1, 1), (0.0, 0.0, 0.0), (1 / 255,) * 3)
LABELS = torch.tensor([0, 1, 2, 1, 2])


def one_hot_test_set() -> ImageDataset:
    images = torch.nn.functional.one_hot(LABELS, 3).to(torch.uint8).view(5, 3, 1, 1)
    return ImageDataset(images, LABELS, INFO)


def linear_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3, 3))


def member(weight: torch.Tensor, bias: torch.Tensor, counts: list[int]) -> ClientModel:
    state = {"1.weight": weight, "1.bias": bias}
    return ClientModel(node_id=len(counts), state_dict=state, num_examples=sum(counts),
                       label_counts=np.array(counts))


def test_logit_and_probability_ensembles_are_both_recorded():
    test = one_hot_test_set()
    # Member 0 saw only class 0 and says class 0 with logit 100 for everything;
    # member 1 is right with logit 8. Class 0 weights (0.6, 0.4), classes 1-2 (0, 1);
    # sizes 6 and 24 -> size weights (0.2, 0.8).
    members = [member(torch.zeros(3, 3), torch.tensor([100.0, 0.0, 0.0]), [6, 0, 0]),
               member(8.0 * torch.eye(3), torch.zeros(3), [4, 10, 10])]
    accuracies = ensemble_test_accuracies(linear_model, members, test, batch_size=2)
    # Logits: member 0's 100 (x 0.6 or 0.2) beats member 1's 8 -> class 0 everywhere.
    assert accuracies["ensemble-accuracy-class-weighted"] == pytest.approx(1 / 5)
    assert accuracies["ensemble-accuracy-size-weighted"] == pytest.approx(1 / 5)
    # Probabilities: member 0 adds at most its weight, member 1's ~1 wins.
    assert accuracies["ensemble-accuracy-class-weighted-probabilities"] == pytest.approx(1.0)
    assert accuracies["ensemble-accuracy-size-weighted-probabilities"] == pytest.approx(1.0)


def test_without_label_counts_only_size_weighted_ensembles():
    members = [ClientModel(node_id=k, state_dict=linear_model().state_dict(),
                           num_examples=10, label_counts=None) for k in (1, 2)]
    accuracies = ensemble_test_accuracies(linear_model, members, one_hot_test_set())
    assert set(accuracies) == {"ensemble-accuracy-size-weighted",
                               "ensemble-accuracy-size-weighted-probabilities"}


def test_diagnostics_subset_is_fixed_by_the_seed_and_drawn_without_replacement():
    test = ImageDataset(torch.zeros(50, 3, 1, 1, dtype=torch.uint8), torch.arange(50), INFO)
    first = diagnostics_subset(test, 20, seed=3)
    assert len(first) == 20
    assert len(set(first.labels.tolist())) == 20
    assert torch.equal(first.labels, diagnostics_subset(test, 20, seed=3).labels)
    assert not torch.equal(first.labels, diagnostics_subset(test, 20, seed=4).labels)
    assert diagnostics_subset(test, None, seed=3) is test
    assert diagnostics_subset(test, 50, seed=3) is test


def test_evaluate_fn_measures_the_subset_and_reports_its_size():
    test = one_hot_test_set()
    # Member 0 is right on classes 0 and 1 only (its class-2 logit is always 0):
    # accuracy 3/5 on the whole set; on a subset it is that subset's share of 0s and 1s.
    weight = torch.diag(torch.tensor([5.0, 5.0, -5.0]))
    members = [member(weight, torch.zeros(3), [1, 1, 1])]
    evaluate = make_ensemble_evaluate_fn(linear_model, test, num_samples=3, seed=1)
    values = evaluate(1, members)
    subset = diagnostics_subset(test, 3, seed=1)
    expected = float((subset.labels < 2).float().mean())
    assert values["ensemble-eval-samples"] == 3
    assert values["ensemble-accuracy-size-weighted"] == pytest.approx(expected)
    whole = make_ensemble_evaluate_fn(linear_model, test)(1, members)
    assert whole["ensemble-eval-samples"] == 5
    assert whole["ensemble-accuracy-size-weighted"] == pytest.approx(3 / 5)


def test_aggregate_accuracy_is_measured_on_the_whole_test_set(tmp_path):
    test = one_hot_test_set()
    members = [member(8.0 * torch.eye(3), torch.zeros(3), [1, 1, 1])]
    # The aggregate is right on class 0 only (bias): labels 0,1,2,1,2 -> 1/5 correct.
    aggregate = ArrayRecord({"1.weight": torch.zeros(3, 3),
                             "1.bias": torch.tensor([1.0, 0.0, 0.0])})
    evaluate = make_ensemble_evaluate_fn(linear_model, test, num_samples=2, seed=0,
                                         save_dir=tmp_path)
    values = evaluate(4, members, aggregate)
    assert values["aggregate-accuracy"] == pytest.approx(1 / 5)
    assert values["ensemble-eval-samples"] == 2
    assert "aggregate-accuracy" not in evaluate(5, members, None)
    saved, saved_aggregate = load_round_models(tmp_path / "round-004.pt")
    assert [m.num_examples for m in saved] == [3]
    assert torch.equal(saved[0].state_dict["1.weight"], 8.0 * torch.eye(3))
    assert torch.equal(saved_aggregate["1.bias"], torch.tensor([1.0, 0.0, 0.0]))
    assert load_round_models(tmp_path / "round-005.pt")[1] is None


def test_ensemble_can_be_switched_off_while_the_aggregate_is_measured():
    evaluate = make_ensemble_evaluate_fn(linear_model, one_hot_test_set(),
                                         evaluate_ensemble=False)
    aggregate = ArrayRecord(linear_model().state_dict())
    values = evaluate(1, [member(torch.eye(3), torch.zeros(3), [1, 1, 1])], aggregate)
    assert set(values) == {"aggregate-accuracy"}
