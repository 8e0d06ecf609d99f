"""What a distillation strategy checks: at construction, and around each round's distillation."""

from __future__ import annotations

import logging
import re

import pytest
import torch
from flwr.app import ArrayRecord
from test_screening import MODEL, SMALL, STRATEGIES, honest_replies, honest_reply, run_round

from fedrdskd.strategies import FedFTG, FedRDSKD, distillation
from fedrdskd.strategies.registry import build_strategy
from mock_replies import TinyNet, assert_same_arrays


@pytest.fixture(autouse=True)
def _server_identity(server_task_identity):
    """Strategies build messages as a ServerApp would."""


def fedavg_aggregate(replies) -> ArrayRecord:
    arrays, _ = run_round(STRATEGIES["fedavg"](), replies)
    return arrays


def finite(arrays: ArrayRecord) -> bool:
    return all(torch.isfinite(value).all() for value in arrays.to_torch_state_dict().values())


# ---- after distillation ------------------------------------------------------------------
@pytest.mark.parametrize("corruption", ["nan", "exploded"])
@pytest.mark.parametrize("name", ["fedrdskd", "fedftg"])
def test_a_bad_student_falls_back_to_the_aggregate(name, corruption, monkeypatch, caplog):
    real = distillation.run_distillation

    def corrupting(student, teacher, synthesizer, optimizer, schedule):
        metrics = real(student, teacher, synthesizer, optimizer, schedule)
        with torch.no_grad():
            for parameter in student.parameters():
                parameter.mul_(1e3) if corruption == "exploded" else parameter.fill_(
                    float("nan"))
            if corruption == "nan":
                for parameter in synthesizer.generator.parameters():
                    parameter.fill_(float("nan"))
        return metrics

    monkeypatch.setattr(distillation, "run_distillation", corrupting)
    strategy = STRATEGIES[name]()
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, metrics = run_round(strategy, honest_replies())
    assert_same_arrays(arrays, fedavg_aggregate(honest_replies()))
    assert "the round keeps the aggregate" in caplog.text
    if corruption == "nan":
        assert "has NaN or Inf values" in caplog.text
        assert "generator has NaN or Inf weights" in caplog.text
        assert strategy._synthesizer is None  # a fresh generator next round
    else:
        assert metrics["student-norm-ratio"] > distillation.MAX_STUDENT_NORM_RATIO
        assert "parameter norm" in caplog.text


def test_honest_student_norm_stays_near_the_aggregates():
    _, metrics = run_round(STRATEGIES["fedrdskd"](), honest_replies())
    assert 0.5 < metrics["student-norm-ratio"] < 2


def test_fedftg_keeps_a_finite_model_with_a_huge_reply_and_the_screen_off():
    strategy = STRATEGIES["fedftg"](max_norm_ratio=None)
    huge = honest_reply(5)
    huge.content["arrays"]["fc.weight"] = type(huge.content["arrays"]["fc.weight"])(
        torch.full((3, 128), 1e30).numpy())
    for server_round in (1, 2):
        replies = [honest_reply(node_id, server_round=server_round) for node_id in (1, 2, 3, 4)]
        arrays, _ = run_round(strategy, replies + [huge] if server_round == 1 else replies,
                              server_round)
        assert finite(arrays)


@pytest.mark.parametrize("name", ["fedrdskd", "fedftg"])
def test_a_one_model_ensemble_is_not_distilled(name, caplog):
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, metrics = run_round(STRATEGIES[name](), honest_replies(1))
    assert_same_arrays(arrays, fedavg_aggregate(honest_replies(1)))
    assert "the ensemble has 1 client model" in caplog.text
    assert "kd-loss" not in metrics


# ---- at construction ---------------------------------------------------------------------
@pytest.mark.parametrize("cls", [FedRDSKD, FedFTG])
def test_every_missing_required_argument_is_named_at_once(cls):
    with pytest.raises(TypeError, match="'model_fn', 'num_classes', and 'input_shape'"):
        cls(fraction_train=0.5)


@pytest.mark.parametrize("cls", [FedRDSKD, FedFTG])
def test_model_input_and_classes_are_in_the_visible_signature(cls):
    import inspect

    parameters = inspect.signature(cls).parameters
    assert {"model_fn", "num_classes", "input_shape"} <= set(parameters)


@pytest.mark.parametrize("cls", [FedRDSKD, FedFTG])
@pytest.mark.parametrize("changes, message", [
    (dict(input_shape=(1, 9, 9)), re.escape("input_shape=(1, 9, 9): the model of model_fn() "
                                            "fails on a batch of that shape")),
    (dict(input_shape=(3, 8, 8)), re.escape("input_shape=(3, 8, 8): the model of model_fn() "
                                            "fails on a batch of that shape")),
    (dict(input_shape=(8, 8)), r"input_shape=\(8, 8\): must be \(C, H, W\)"),
    (dict(input_shape=(1, 8.5, 8)), r"input_shape\[1\]=8.5: must be an integer"),
    (dict(num_classes=4), r"num_classes=4: .* shape \(2, 3\), not \(2, 4\) logits"),
    (dict(model_fn=lambda: "not a model"), "model_fn=.*must be a function .* returns a "
                                           "fresh torch.nn.Module, it returned str"),
    (dict(device="cuda:7"), "device='cuda:7': torch cannot use this device here"),
])
def test_the_model_is_checked_at_construction(cls, changes, message):
    with pytest.raises(ValueError, match=message):
        cls(**{**MODEL, **SMALL, **changes})


@pytest.mark.parametrize("cls, key", [(FedRDSKD, "generator_steps"), (FedRDSKD, "student_steps"),
                                      (FedRDSKD, "batch_size"), (FedFTG, "iterations"),
                                      (FedFTG, "batch_size"), (FedFTG, "student_steps")])
@pytest.mark.parametrize("value", [2.5, 16.5, "abc"])
def test_counts_must_be_integers_named_by_key(cls, key, value):
    with pytest.raises(ValueError, match=rf"{key}={value!r}: must be an integer"):
        cls(**{**MODEL, **SMALL, key: value})


def test_fedavg_checks_the_model_too():
    with pytest.raises(ValueError, match="num_classes=5"):
        build_strategy("fedavg", {}, model_fn=TinyNet, num_classes=5, input_shape=(1, 8, 8),
                       device="cpu", seed=0)
