"""Ensemble weights and the teacher ensemble (batched fast path vs the plain loop)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedrdskd.kd.ensemble import TeacherEnsemble, combine_member_logits, ensemble_weights

CPU = torch.device("cpu")


def tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, 5))


def tiny_bn_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Dropout(0.5), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))


def member_states(model_fn, count: int) -> list[dict[str, torch.Tensor]]:
    """Distinct members; BatchNorm running statistics made non-trivial."""
    states = []
    for seed in range(count):
        torch.manual_seed(seed)
        model = model_fn()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1.0, 1.0)
                module.running_var.uniform_(0.5, 2.0)
        states.append(model.state_dict())
    return states


# ---- weights ------------------------------------------------------------------------
def test_uniform_weights() -> None:
    weights = ensemble_weights("uniform", num_examples=[5, 1, 4, 0], label_counts=None,
                               num_classes=3)
    torch.testing.assert_close(weights, torch.full((4, 3), 0.25))


def test_num_examples_weights() -> None:
    weights = ensemble_weights("num-examples", num_examples=[30, 10, 60], label_counts=None,
                               num_classes=2)
    torch.testing.assert_close(weights, torch.tensor([[0.3, 0.3], [0.1, 0.1], [0.6, 0.6]]))


def test_class_weights_and_missing_class_falls_back_to_uniform() -> None:
    counts = np.array([[3, 0, 0, 2], [1, 5, 0, 2]])
    weights = ensemble_weights("class", num_examples=[5, 8], label_counts=counts, num_classes=4)
    expected = torch.tensor([[0.75, 0.0, 0.5, 0.5], [0.25, 1.0, 0.5, 0.5]])
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(weights.sum(dim=0), torch.ones(4))
    from_tensor = ensemble_weights("class", num_examples=[5, 8],
                                   label_counts=torch.as_tensor(counts), num_classes=4)
    torch.testing.assert_close(from_tensor, expected)


def test_weights_errors() -> None:
    with pytest.raises(ValueError, match="clients must send label counts"):
        ensemble_weights("class", num_examples=[1, 2], label_counts=None, num_classes=3)
    with pytest.raises(ValueError, match="'median'"):
        ensemble_weights("median", num_examples=[1], label_counts=None, num_classes=3)
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        ensemble_weights("class", num_examples=[1, 2], label_counts=np.ones((2, 4)),
                         num_classes=3)
    with pytest.raises(ValueError, match="positive sum"):
        ensemble_weights("num-examples", num_examples=[0, 0], label_counts=None, num_classes=3)


# ---- teacher ------------------------------------------------------------------------
def test_combined_logits_are_per_class_weighted_sum() -> None:
    def linear() -> nn.Module:
        return nn.Linear(1, 2, bias=False)

    states = [{"weight": torch.tensor([[1.0], [2.0]])}, {"weight": torch.tensor([[3.0], [-1.0]])}]
    weights = torch.tensor([[0.25, 1.0], [0.75, 0.0]])
    for batched in (True, False):
        teacher = TeacherEnsemble(linear, states, weights, device=CPU, batched=batched,
                                  combine="logits")
        # x = 2: member logits (2, 4) and (6, -2) -> (0.25*2 + 0.75*6, 1*4 + 0*(-2)).
        torch.testing.assert_close(teacher(torch.tensor([[2.0]])), torch.tensor([[5.0, 4.0]]))
        assert teacher.num_members == 2
        torch.testing.assert_close(teacher.weights, weights)


def test_probability_combination_is_the_renormalised_weighted_mixture() -> None:
    # Two members, two classes; member probabilities by hand:
    # member 0: logits (0, ln 3) -> p = (1/4, 3/4); member 1: logits (ln 4, 0) -> (4/5, 1/5).
    member_logits = torch.tensor([[[0.0, math.log(3.0)]], [[math.log(4.0), 0.0]]])
    weights = torch.tensor([[0.5, 1.0], [0.5, 0.0]])
    # class 0: .5 * 1/4 + .5 * 4/5 = 21/40; class 1: 1 * 3/4 + 0 * 1/5 = 30/40; sum 51/40.
    expected = torch.log(torch.tensor([[21.0 / 51.0, 30.0 / 51.0]]))
    torch.testing.assert_close(combine_member_logits(weights, member_logits), expected)
    torch.testing.assert_close(combine_member_logits(weights, member_logits, "logits"),
                               torch.tensor([[0.5 * math.log(4.0), math.log(3.0)]]))
    with pytest.raises(ValueError, match="ensemble combination must be one of"):
        combine_member_logits(weights, member_logits, "median")


def test_one_overconfident_member_takes_over_logits_but_not_probabilities() -> None:
    # Member 0 saw only class 0 and answers it with logit 100 for every input; member 1
    # is right with ordinary logits. Class weights: member 0 holds 60 % of class 0.
    member_logits = torch.tensor([[[100.0, 0.0, 0.0]] * 2,
                                  [[2.0, 8.0, 0.0], [2.0, 0.0, 8.0]]])
    weights = torch.tensor([[0.6, 0.0, 0.0], [0.4, 1.0, 1.0]])
    by_logits = combine_member_logits(weights, member_logits, "logits").argmax(1)
    by_probabilities = combine_member_logits(weights, member_logits).argmax(1)
    assert by_logits.tolist() == [0, 0]  # 60 > 8: class 0 everywhere
    assert by_probabilities.tolist() == [1, 2]  # 0.6 < 1.0 * ~1: member 1's answers


def test_teacher_uses_its_combination_and_rejects_unknown_ones() -> None:
    states = member_states(tiny_cnn, 2)
    weights = torch.tensor([[0.3] * 5, [0.7] * 5])
    inputs = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    for combine in ("probabilities", "logits"):
        teacher = TeacherEnsemble(tiny_cnn, states, weights, device=CPU, batched=False,
                                  combine=combine)
        expected = combine_member_logits(weights, teacher.member_logits(inputs), combine)
        torch.testing.assert_close(teacher(inputs), expected)
    with pytest.raises(ValueError, match="ensemble combination must be one of"):
        TeacherEnsemble(tiny_cnn, states, weights, device=CPU, combine="mean")


@pytest.mark.parametrize("model_fn", [tiny_cnn, tiny_bn_cnn], ids=["plain", "batchnorm"])
@pytest.mark.parametrize("members", [1, 4])
def test_batched_equals_loop_for_logits_and_input_gradients(model_fn, members: int) -> None:
    states = member_states(model_fn, members)
    weights = torch.softmax(torch.randn(members, 5, generator=torch.Generator().manual_seed(1)),
                            dim=0)
    fast = TeacherEnsemble(model_fn, states, weights, device=CPU, batched=True)
    loop = TeacherEnsemble(model_fn, states, weights, device=CPU, batched=False)
    inputs = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    results = []
    for teacher in (fast, loop):
        leaf = inputs.clone().requires_grad_(True)
        members_out = teacher.member_logits(leaf)
        combined = teacher(leaf)
        (gradient,) = torch.autograd.grad((combined**2).sum() + members_out.sum(), leaf)
        results.append((members_out.detach(), combined.detach(), gradient))
    assert results[0][0].shape == (members, 6, 5)
    for fast_value, loop_value in zip(*results):
        torch.testing.assert_close(fast_value, loop_value, atol=1e-5, rtol=1e-5)
    assert results[1][2].abs().sum() > 0


@pytest.mark.parametrize("batched", [True, False])
def test_one_member_logits_equal_that_members_slice(batched: bool) -> None:
    states = member_states(tiny_bn_cnn, 3)
    teacher = TeacherEnsemble(tiny_bn_cnn, states, torch.full((3, 5), 1 / 3), device=CPU,
                              batched=batched)
    inputs = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    every_member = teacher.member_logits(inputs)
    for index in range(3):
        torch.testing.assert_close(teacher.one_member_logits(index, inputs),
                                   every_member[index], atol=1e-6, rtol=1e-6)
    with pytest.raises(IndexError, match=r"member index 3 is outside \[0, 3\)"):
        teacher.one_member_logits(3, inputs)


@pytest.mark.parametrize("batched", [True, False])
def test_members_frozen_in_eval_mode(batched: bool) -> None:
    states = member_states(tiny_bn_cnn, 2)
    teacher = TeacherEnsemble(tiny_bn_cnn, states, torch.full((2, 5), 0.5), device=CPU,
                              batched=batched, combine="logits")
    inputs = torch.randn(3, 1, 4, 4)
    # Eval mode: dropout off and running statistics used -> equal to the members in eval.
    reference = []
    for state in states:
        model = tiny_bn_cnn()
        model.load_state_dict(state)
        reference.append(model.eval()(inputs))
    torch.testing.assert_close(teacher(inputs), 0.5 * (reference[0] + reference[1]))
    torch.testing.assert_close(teacher(inputs), teacher(inputs))
    # Running statistics are not updated, and no parameter collects a gradient.
    leaf = inputs.clone().requires_grad_(True)
    teacher(leaf).sum().backward()
    tensors = (teacher._stacked.values() if batched
               else [t for m in teacher._members for t in m.state_dict(keep_vars=True).values()])
    assert all(t.grad is None and not t.requires_grad for t in tensors)
    running_mean = (teacher._stacked["1.running_mean"][0] if batched
                    else teacher._members[0][1].running_mean)
    torch.testing.assert_close(running_mean, states[0]["1.running_mean"], rtol=0, atol=0)


def test_teacher_rejects_bad_inputs() -> None:
    states = member_states(tiny_cnn, 2)
    with pytest.raises(ValueError, match=r"shape \[K=2, C\]"):
        TeacherEnsemble(tiny_cnn, states, torch.ones(3, 5), device=CPU)
    with pytest.raises(ValueError, match="at least one member"):
        TeacherEnsemble(tiny_cnn, [], torch.ones(0, 5), device=CPU)
    broken = [states[0], {k: v for k, v in states[1].items() if k != "3.bias"}]
    with pytest.raises(ValueError, match="3.bias"):
        TeacherEnsemble(tiny_cnn, broken, torch.ones(2, 5), device=CPU)
