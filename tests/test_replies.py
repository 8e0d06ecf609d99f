"""One reply at a time: what makes a training reply unusable, and its label counts."""

import numpy as np
import pytest
import torch

from fedrdskd.strategies.replies import ModelLayout, read_label_counts, reply_problem
from mock_replies import TinyNet, error_reply, tiny_model, train_reply

LAYOUT = ModelLayout.of(TinyNet())


def problem_of(reply, server_round: int = 1):
    return reply_problem(reply, LAYOUT, "num-examples", server_round)


def reply_with(state=None, **options):
    options.setdefault("num_examples", 10)
    return train_reply(tiny_model(1).state_dict() if state is None else state, node_id=3,
                       **options)


def test_valid_reply_has_no_problem():
    assert problem_of(reply_with()) is None
    assert problem_of(reply_with(num_examples=10.0)) is None  # a whole float is fine


def test_nan_reply_is_named():
    state = tiny_model(1).state_dict()
    state["fc.bias"][0] = float("nan")
    assert "NaN" in problem_of(reply_with(state))
    state["fc.bias"][0] = float("inf")
    assert "fc.bias" in problem_of(reply_with(state))


def test_wrong_shape_and_missing_array():
    state = tiny_model(1).state_dict()
    state["fc.weight"] = torch.zeros(4, 128)
    problem = problem_of(reply_with(state))
    assert "fc.weight" in problem and "(4, 128)" in problem
    del state["fc.weight"]
    assert "missing ['fc.weight']" in problem_of(reply_with(state))


@pytest.mark.parametrize("dtype", [torch.bool, torch.float16, torch.float64, torch.int64])
def test_arrays_must_have_the_models_dtype(dtype):
    state = {name: value.to(dtype) for name, value in tiny_model(1).state_dict().items()}
    problem = problem_of(reply_with(state))
    assert f"dtype {str(dtype).removeprefix('torch.')}" in problem
    assert "expects float32" in problem


@pytest.mark.parametrize("num_examples", [0, -5, 3.5, float("nan"), float("inf"), [3, 4]])
def test_num_examples_must_be_a_positive_integer(num_examples):
    assert "num-examples" in problem_of(reply_with(num_examples=num_examples))


def test_error_and_another_rounds_reply_are_named():
    assert "carries an error" in problem_of(error_reply(3))
    late = reply_with(server_round=1)
    assert "round '1'" in problem_of(late, server_round=2)
    assert "not to round 2" in problem_of(late, server_round=2)


def test_more_than_one_record_of_a_kind():
    reply = reply_with()
    reply.content["second"] = reply.content["arrays"]
    assert "exactly one ArrayRecord, got 2" in problem_of(reply)


def test_label_counts_optional_and_read():
    counts, problem = read_label_counts(reply_with(), 3)
    assert counts is None and problem is None
    counts, problem = read_label_counts(reply_with(label_counts=[1, 0, 4]), 3)
    np.testing.assert_array_equal(counts, [1, 0, 4])
    assert problem is None and counts.dtype == np.int64


@pytest.mark.parametrize("label_counts, message", [
    ([1, 2], "list of 3 counts"),
    ([1, -2, 0], "whole numbers >= 0"),
    ([1.0, float("nan"), 0.0], "whole numbers >= 0"),
    ([1.5, 2.0, 0.0], "whole numbers >= 0"),
    ([0, 0, 0], "all zero"),
    (["a", "b", "c"], "must be numbers"),
])
def test_malformed_label_counts_are_named(label_counts, message):
    counts, problem = read_label_counts(reply_with(label_counts=label_counts), 3)
    assert counts is None and message in problem


def test_label_counts_that_are_not_a_list():
    reply = reply_with(label_counts=[1, 2, 3])
    reply.content["label-counts"]["label-counts"] = 6
    assert "list of 3 counts" in read_label_counts(reply, 3)[1]
