"""Client-validated step size: pooling, node choice, the strategy's use, the client's answer."""

from __future__ import annotations

import logging
import time

import pytest
import torch
from flwr.app import (ArrayRecord, ConfigRecord, Context, Message, MessageType, Metadata,
                      MetricRecord, RecordDict)
from flwr.serverapp.strategy import FedAvg

from fedrdskd.clients.client_app import build_client_app, client_data
from fedrdskd.clients.training import evaluate
from fedrdskd.kd.interpolation import interpolate_states
from fedrdskd.models import build_model
from fedrdskd.protocol import (ACCURACIES_KEY, BETAS_KEY, CANDIDATE_CONFIG_KEY,
                               CANDIDATE_END_KEY, CANDIDATE_REPLY_KEY, CANDIDATE_START_KEY,
                               CANDIDATES_MESSAGE_TYPE, LOSSES_KEY)
from fedrdskd.strategies import FedRDSKD
from fedrdskd.strategies.validation import (StepSizeSelector, candidate_messages,
                                            pooled_scores, validation_nodes)
from mock_replies import FakeGrid, TinyNet, assert_same_arrays, tiny_model, train_reply
from test_client import context, initial_model, settings  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("server_task_identity")
BETAS = (0.0, 0.5, 1.0)


def candidate_reply(node_id: int, losses, accuracies, num_examples) -> Message:
    record = MetricRecord({LOSSES_KEY: list(losses), ACCURACIES_KEY: list(accuracies),
                           "num-examples": num_examples})
    metadata = Metadata(run_id=1, message_id=f"reply-{node_id}", src_node_id=node_id,
                        dst_node_id=1, reply_to_message_id=f"ins-{node_id}", group_id="1",
                        created_at=time.time(), ttl=3600.0,
                        message_type=CANDIDATES_MESSAGE_TYPE)
    return Message(content=RecordDict({CANDIDATE_REPLY_KEY: record}), metadata=metadata)


class AnsweringGrid(FakeGrid):
    """Node ids, and canned candidate-validation replies per node."""

    def __init__(self, node_ids, answers) -> None:
        super().__init__(node_ids)
        self.answers, self.asked = answers, []

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.asked = [m.metadata.dst_node_id for m in messages]
        assert all(m.metadata.message_type == CANDIDATES_MESSAGE_TYPE for m in messages)
        return [self.answers[node] for node in self.asked if node in self.answers]


# ---- pooling ------------------------------------------------------------------------------
def test_scores_are_pooled_by_held_out_size_and_best_is_lowest_loss():
    replies = [candidate_reply(5, (1.0, 0.8, 0.9), (0.5, 0.6, 0.55), 10),
               candidate_reply(6, (2.0, 2.2, 1.9), (0.2, 0.1, 0.3), 30)]
    scores = pooled_scores(replies, BETAS)
    # losses: 0.25 (1.0, 0.8, 0.9) + 0.75 (2.0, 2.2, 1.9) = (1.75, 1.85, 1.65)
    assert scores.losses == pytest.approx((1.75, 1.85, 1.65))
    assert scores.accuracies == pytest.approx((0.275, 0.225, 0.3625))
    assert (scores.num_replies, scores.num_examples) == (2, 40)
    assert scores.best_beta() == 1.0


def test_equal_losses_prefer_the_smaller_step():
    scores = pooled_scores([candidate_reply(5, (1.0, 1.0, 1.0), (0.5, 0.5, 0.5), 10)], BETAS)
    assert scores.best_beta() == 0.0


def test_malformed_and_empty_replies_are_left_out(caplog):
    replies = [candidate_reply(5, (1.0, 0.8), (0.5, 0.6), 10),            # wrong length
               candidate_reply(6, (1.0, float("nan"), 0.1), (0.5,) * 3, 10),
               candidate_reply(7, (1.0, 0.5, 0.9), (0.5,) * 3, 0),       # no held-out data
               candidate_reply(8, (3.0, 2.0, 1.0), (0.1, 0.2, 0.3), 20)]
    with caplog.at_level(logging.WARNING, logger="flwr"):
        scores = pooled_scores(replies, BETAS)
    assert scores.num_replies == 1 and scores.losses == pytest.approx((3.0, 2.0, 1.0))
    assert "node 5" in caplog.text and "node 6" in caplog.text


# ---- who validates ------------------------------------------------------------------------
def test_validation_nodes_others_are_seeded_and_disjoint_from_the_round():
    nodes = list(range(10, 30))
    round_nodes = [10, 11, 12]
    chosen = validation_nodes(nodes, round_nodes, "others", seed=4, server_round=2)
    assert len(chosen) == 3 and not set(chosen) & set(round_nodes)
    assert chosen == validation_nodes(nodes, round_nodes, "others", seed=4, server_round=2)
    assert chosen != validation_nodes(nodes, round_nodes, "others", seed=4, server_round=3)
    assert validation_nodes(nodes, round_nodes, "round", seed=4, server_round=2) == round_nodes


def test_candidate_messages_carry_both_models_and_the_betas():
    start, end = ArrayRecord(tiny_model(1).state_dict()), ArrayRecord(tiny_model(2).state_dict())
    (message,) = candidate_messages(start, end, BETAS, [7], server_round=3)
    assert message.metadata.dst_node_id == 7 and message.metadata.group_id == "3"
    assert message.content[CANDIDATE_CONFIG_KEY][BETAS_KEY] == list(BETAS)
    assert_same_arrays(message.content[CANDIDATE_START_KEY], start)
    assert_same_arrays(message.content[CANDIDATE_END_KEY], end)


def test_selector_settings_are_checked():
    for kwargs, key in ((dict(fixed_beta=1.5), "student_interpolation"),
                        (dict(betas=(0.0,)), "validation_betas"),
                        (dict(betas=(4.5,)), "validation_betas"),
                        (dict(clients="all"), "validation_clients"),
                        (dict(timeout=0), "validation_timeout")):
        settings = dict(fixed_beta=1.0, betas=(0.5,), clients="others", timeout=10, seed=0)
        settings.update(kwargs)
        with pytest.raises(ValueError, match=key):
            StepSizeSelector(**settings)
    extrapolating = StepSizeSelector(fixed_beta=1.0, betas=(2.0, 1.0, 4.0), clients="others",
                                     timeout=10, seed=0)
    assert extrapolating.betas == (0.0, 1.0, 2.0, 4.0)


# ---- the strategy -------------------------------------------------------------------------
SMALL = dict(generator_steps=2, student_steps=3, batch_size=8, latent_dim=4,
             generator_channels=4, student_optimizer="sgd", student_lr=0.05)


def strategy(**kwargs) -> FedRDSKD:
    return FedRDSKD(model_fn=TinyNet, num_classes=3, input_shape=(1, 8, 8), **SMALL, **kwargs)


def replies():
    counts = [[5, 3, 2], [1, 15, 4]]
    return [train_reply(tiny_model(seed).state_dict(), node_id=seed, num_examples=10 * seed,
                        label_counts=counts[seed - 1]) for seed in (1, 2)]


def run_round(chosen, grid):
    chosen.configure_train(1, ArrayRecord(tiny_model(0).state_dict()), ConfigRecord(), grid)
    return chosen.aggregate_train(1, replies())


def test_aggregate_wins_when_clients_say_so():
    answers = {node: candidate_reply(node, (1.0, 1.2, 1.5), (0.5, 0.4, 0.3), 10)
               for node in (3, 4)}
    grid = AnsweringGrid([1, 2, 3, 4], answers)
    arrays, metrics = run_round(strategy(validation_betas=(0.5, 1.0)), grid)
    assert sorted(grid.asked) == [3, 4]  # the two clients that did not train
    plain, _ = FedAvg().aggregate_train(1, replies())
    assert_same_arrays(arrays, plain)  # beta = 0: the aggregate, exactly
    assert metrics["step-size"] == 0.0 and metrics["validation-replies"] == 2
    assert metrics["validation-loss-chosen"] == metrics["validation-loss-aggregate"] == 1.0


def test_chosen_step_is_the_interpolation():
    answers = {node: candidate_reply(node, (1.0, 0.7, 0.9), (0.5, 0.6, 0.55), 10)
               for node in (1, 2)}
    validated = strategy(validation_betas=(0.5, 1.0), validation_clients="round")
    arrays, metrics = run_round(validated, AnsweringGrid([1, 2], answers))
    distilled, _ = run_round(strategy(), FakeGrid([1, 2]))
    plain, _ = FedAvg().aggregate_train(1, replies())
    expected = interpolate_states(plain.to_torch_state_dict(),
                                  distilled.to_torch_state_dict(), 0.5)
    assert metrics["step-size"] == 0.5
    for name, value in arrays.to_torch_state_dict().items():
        torch.testing.assert_close(value, expected[name])


def test_without_answers_the_fixed_step_is_used(caplog):
    validated = strategy(validation_betas=(0.5,), student_interpolation=1.0)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, metrics = run_round(validated, AnsweringGrid([1, 2, 3], {}))
    distilled, _ = run_round(strategy(), FakeGrid([1, 2, 3]))
    assert_same_arrays(arrays, distilled)
    assert metrics["validation-replies"] == 0 and metrics["step-size"] == 1.0
    assert CANDIDATES_MESSAGE_TYPE in caplog.text


def test_when_every_node_trained_others_sends_nothing_and_says_why_once(caplog):
    validated = strategy(validation_betas=(0.5,), student_interpolation=1.0)
    grid = AnsweringGrid([1, 2], {})
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, metrics = run_round(validated, grid)
        run_round(validated, grid)
    distilled, _ = run_round(strategy(), FakeGrid([1, 2]))
    assert grid.asked == []  # send_and_receive never called
    assert_same_arrays(arrays, distilled)
    assert metrics["validation-replies"] == 0 and metrics["step-size"] == 1.0
    assert caplog.text.count("every connected node trained this round") == 1


def test_no_validation_by_default_sends_nothing():
    grid = AnsweringGrid([1, 2, 3], {})
    _, metrics = run_round(strategy(), grid)
    assert grid.asked == [] and "step-size" not in metrics


# ---- the client's answer ------------------------------------------------------------------
def test_client_evaluates_each_candidate_on_its_held_out_split(settings):  # noqa: F811
    start, end = initial_model(0), initial_model(1)
    (message,) = candidate_messages(ArrayRecord(start.state_dict()),
                                    ArrayRecord(end.state_dict()), BETAS, [1], server_round=1)
    message = Message(content=message.content, metadata=Metadata(
        run_id=1, message_id="ins-1", src_node_id=0, dst_node_id=1, reply_to_message_id="",
        group_id="1", created_at=time.time(), ttl=3600.0,
        message_type=CANDIDATES_MESSAGE_TYPE))
    reply = build_client_app(settings)(message, context(0))
    record = reply.content[CANDIDATE_REPLY_KEY]
    held_out = client_data(settings, context(0)).test
    assert record["num-examples"] == len(held_out) == 30
    for index, beta in enumerate(BETAS):
        model = build_model("lenet5", num_classes=10, image_shape=(1, 28, 28))
        model.load_state_dict(interpolate_states(start.state_dict(), end.state_dict(), beta))
        loss, accuracy = evaluate(model, held_out)
        assert record[LOSSES_KEY][index] == pytest.approx(loss)
        assert record[ACCURACIES_KEY][index] == pytest.approx(accuracy)
    assert MessageType.EVALUATE in reply.metadata.message_type
