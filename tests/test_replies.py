"""Screening of client replies: NaN/Inf, wrong shapes, missing metrics, label counts."""

import logging

import numpy as np
import torch

from fedrdskd.strategies.replies import read_label_counts, reply_problem, screen_replies
from mock_replies import tiny_model, train_reply

SHAPES = {k: tuple(v.shape) for k, v in tiny_model(0).state_dict().items()}


def test_valid_reply_has_no_problem():
    reply = train_reply(tiny_model(1).state_dict(), node_id=3, num_examples=10)
    assert reply_problem(reply, SHAPES, "num-examples") is None


def test_nan_reply_is_named():
    state = tiny_model(1).state_dict()
    state["fc.bias"][0] = float("nan")
    reply = train_reply(state, node_id=3, num_examples=10)
    assert "NaN" in reply_problem(reply, SHAPES, "num-examples")
    state["fc.bias"][0] = float("inf")
    assert "fc.bias" in reply_problem(train_reply(state, node_id=3, num_examples=10),
                                      SHAPES, "num-examples")


def test_wrong_shape_and_missing_array():
    state = tiny_model(1).state_dict()
    state["fc.weight"] = torch.zeros(4, 128)
    problem = reply_problem(train_reply(state, node_id=3, num_examples=10), SHAPES,
                            "num-examples")
    assert "fc.weight" in problem and "(4, 128)" in problem
    del state["fc.weight"]
    problem = reply_problem(train_reply(state, node_id=3, num_examples=10), SHAPES,
                            "num-examples")
    assert "missing ['fc.weight']" in problem


def test_non_positive_weight_is_rejected():
    reply = train_reply(tiny_model(1).state_dict(), node_id=3, num_examples=0)
    assert "num-examples" in reply_problem(reply, SHAPES, "num-examples")


def test_screen_keeps_valid_copies_and_warns_naming_node(caplog):
    good = train_reply(tiny_model(1).state_dict(), node_id=7, num_examples=5,
                       label_counts=[1, 0, 4])
    state = tiny_model(2).state_dict()
    state["conv.weight"].fill_(float("nan"))
    bad = train_reply(state, node_id=9, num_examples=5)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        passed, members = screen_replies(4, [good, bad], SHAPES, "num-examples", 3)
    assert passed == [good]
    assert [m.node_id for m in members] == [7]
    assert "node 9" in caplog.text and "Round 4" in caplog.text
    np.testing.assert_array_equal(members[0].label_counts, [1, 0, 4])
    # the copy is independent of the reply (strategies may pop the reply's arrays)
    good.content["arrays"].pop("fc.bias")
    assert "fc.bias" in members[0].state_dict


def test_label_counts_optional_and_validated():
    state = tiny_model(1).state_dict()
    assert read_label_counts(train_reply(state, node_id=1, num_examples=3), 3) is None
    wrong_length = train_reply(state, node_id=1, num_examples=3, label_counts=[1, 2])
    assert read_label_counts(wrong_length, 3) is None
    negative = train_reply(state, node_id=1, num_examples=3, label_counts=[1, -2, 0])
    assert read_label_counts(negative, 3) is None
