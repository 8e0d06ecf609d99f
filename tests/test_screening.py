"""A round's replies through the strategies (mock replies, no Ray): one bad reply is left out.

Every strategy the package builds (the project's ``fedavg``, FedRDSKD, FedFTG) must
aggregate the rest of the round exactly as it would without the bad reply, count the bad
one in ``num-excluded`` and warn naming its node, and never let Flower's ``FedAvg`` raise.
"""

from __future__ import annotations

import logging

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from mock_replies import (FakeGrid, TinyNet, assert_same_arrays, error_reply, reply_metadata,
                          tiny_model, train_reply)

from fedrdskd.strategies import FedFTG, FedRDSKD
from fedrdskd.strategies.registry import build_strategy
from fedrdskd.strategies.outliers import OutlierScreen

NUM_CLASSES = 3
INPUT_SHAPE = (1, 8, 8)
MODEL = dict(model_fn=TinyNet, num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE)
SMALL = dict(batch_size=16, latent_dim=8, generator_channels=4, seed=0)
COUNTS = [[20, 2, 2], [2, 20, 2], [2, 2, 20], [8, 8, 8], [10, 4, 10]]
BAD_NODE = 5


@pytest.fixture(autouse=True)
def _server_identity(server_task_identity):
    """Strategies build messages as a ServerApp would."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


FEW_NODES = dict(min_train_nodes=1, min_available_nodes=1)  # a FakeGrid of 1 node is enough
STRATEGIES = {
    "fedavg": lambda **kw: build_strategy("fedavg", kw, **MODEL, device="cpu", seed=0,
                                          **FEW_NODES),
    "fedrdskd": lambda **kw: FedRDSKD(**MODEL, **SMALL, **FEW_NODES, iterations=1,
                                      generator_steps=1, student_steps=1, **kw),
    "fedftg": lambda **kw: FedFTG(**MODEL, **SMALL, **FEW_NODES, iterations=1,
                                  generator_steps=1, student_steps=1, **kw),
}


def global_model() -> ArrayRecord:
    return ArrayRecord(tiny_model(0).state_dict())


def honest_state(node_id: int) -> dict[str, torch.Tensor]:
    """A client's model: the global model plus a small seeded update."""
    generator = torch.Generator().manual_seed(node_id)
    return {name: value + 0.05 * torch.randn(value.shape, generator=generator)
            for name, value in tiny_model(0).state_dict().items()}


def honest_reply(node_id: int, **options):
    options.setdefault("num_examples", sum(COUNTS[node_id - 1]))
    options.setdefault("label_counts", COUNTS[node_id - 1])
    return train_reply(options.pop("state", None) or honest_state(node_id), node_id=node_id,
                       **options)


def honest_replies(count: int = 4):
    return [honest_reply(node_id) for node_id in range(1, count + 1)]


def run_round(strategy, replies, server_round: int = 1):
    """``configure_train`` (which keeps the global model), then aggregate the replies as sent."""
    node_ids = [reply.metadata.src_node_id for reply in replies]
    strategy.configure_train(server_round, global_model(), ConfigRecord(), FakeGrid(node_ids))
    return strategy.aggregate_train(server_round, replies)


def bad_state(kind: str) -> dict[str, torch.Tensor]:
    state = honest_state(BAD_NODE)
    if kind == "layer of 1e30":
        state["fc.weight"] = torch.full_like(state["fc.weight"], 1e30)
    elif kind == "all-zero model":
        state = {name: torch.zeros_like(value) for name, value in state.items()}
    else:
        state = {name: value.to(getattr(torch, kind)) for name, value in state.items()}
    return state


BAD_REPLIES = {  # kind -> (reply of node 5, words of the warning)
    "extra metric": (lambda: honest_reply(BAD_NODE, extra_metrics={"grad-norm": 0.1}),
                     "grad-norm"),
    "missing train-loss": (lambda: honest_reply(BAD_NODE, extra_metrics={"train-loss": None}),
                           "differ from the round's majority"),
    "other ArrayRecord name": (lambda: honest_reply(BAD_NODE, arrays_key="weights"),
                               "ArrayRecord 'weights'"),
    "other MetricRecord name": (lambda: honest_reply(BAD_NODE, metrics_key="scores"),
                                "MetricRecord 'scores'"),
    "error": (lambda: error_reply(BAD_NODE), "carries an error"),
    "another round": (lambda: honest_reply(BAD_NODE, server_round=7), "round '7'"),
    "bool arrays": (lambda: honest_reply(BAD_NODE, state=bad_state("bool")), "dtype bool"),
    "float16 arrays": (lambda: honest_reply(BAD_NODE, state=bad_state("float16")),
                       "dtype float16"),
    "float64 arrays": (lambda: honest_reply(BAD_NODE, state=bad_state("float64")),
                       "dtype float64"),
    "1e12 examples": (lambda: honest_reply(BAD_NODE, num_examples=10**12),
                      "its num-examples 1e+12"),
    "3.5 examples": (lambda: honest_reply(BAD_NODE, num_examples=3.5), "whole number"),
    "layer of 1e30": (lambda: honest_reply(BAD_NODE, state=bad_state("layer of 1e30")),
                      "its update norm"),
    "all-zero model": (lambda: honest_reply(BAD_NODE, state=bad_state("all-zero model")),
                       "its parameter norm 0"),
}


@pytest.mark.parametrize("first", [False, True], ids=["last", "first"])
@pytest.mark.parametrize("kind", sorted(BAD_REPLIES))
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_one_bad_reply_is_left_out_of_the_round(name, kind, first, caplog):
    make_bad, words = BAD_REPLIES[kind]
    replies = honest_replies() + [make_bad()]
    if first:
        replies = replies[-1:] + replies[:-1]
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, metrics = run_round(STRATEGIES[name](), replies)
    expected, expected_metrics = run_round(STRATEGIES[name](), honest_replies())
    assert_same_arrays(arrays, expected)
    assert metrics["num-replies"] == 4 and metrics["num-excluded"] == 1
    assert metrics["train-loss"] == expected_metrics["train-loss"]
    assert f"excluding the reply of node {BAD_NODE}" in caplog.text
    assert words in caplog.text


def test_the_odd_layout_out_is_the_minority():
    replies = honest_replies(2) + [honest_reply(node_id, extra_metrics={"grad-norm": 0.1})
                                   for node_id in (3, 4, 5)]
    _, metrics = run_round(STRATEGIES["fedavg"](), replies)
    assert metrics["num-replies"] == 3 and metrics["num-excluded"] == 2
    assert "grad-norm" in metrics  # the majority's metric is averaged


@pytest.mark.parametrize("label_counts", [[1, 2], [3, -1, 2], [1.0, float("nan"), 2.0],
                                          "not a list", [0, 0, 0]],
                         ids=["wrong length", "negative", "nan", "not a list", "all zero"])
def test_fedftg_leaves_out_a_reply_with_malformed_label_counts(label_counts, caplog):
    bad = honest_reply(BAD_NODE, label_counts=[1, 1, 1])
    bad.content["label-counts"]["label-counts"] = label_counts
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, metrics = run_round(STRATEGIES["fedftg"](), honest_replies() + [bad])
    expected, _ = run_round(STRATEGIES["fedftg"](), honest_replies())
    assert_same_arrays(arrays, expected)
    assert metrics["num-excluded"] == 1 and "label counts" in caplog.text
    assert f"node {BAD_NODE}" in caplog.text


def test_fedftg_leaves_out_a_reply_without_label_counts(caplog):
    replies = honest_replies() + [honest_reply(BAD_NODE, label_counts=None)]
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, metrics = run_round(STRATEGIES["fedftg"](), replies)
    assert metrics["num-excluded"] == 1
    assert 'sends no label counts' in caplog.text
    assert 'content["label-counts"] = ConfigRecord({"label-counts": [n_0' in caplog.text


@pytest.mark.parametrize("name", ["fedavg", "fedrdskd"])
def test_other_strategies_ignore_malformed_label_counts_with_a_warning(name, caplog):
    bad = honest_reply(BAD_NODE, label_counts=[0, 0, 0])
    with caplog.at_level(logging.WARNING, logger="flwr"):
        _, metrics = run_round(STRATEGIES[name](), honest_replies() + [bad])
    assert metrics["num-replies"] == 5 and metrics["num-excluded"] == 0
    assert f"ignoring the label counts of node {BAD_NODE}" in caplog.text


# ---- the outlier screen --------------------------------------------------------------
def test_honest_round_excludes_nobody_and_reports_its_ratios():
    replies = honest_replies(4) + [honest_reply(5, num_examples=1200)]  # 50x the others
    _, metrics = run_round(STRATEGIES["fedavg"](), replies)
    assert metrics["num-excluded"] == 0
    assert 1.0 <= metrics["num-examples-ratio-max"] < 100
    assert 1.0 <= metrics["update-norm-ratio-max"] < 2
    assert 0.5 < metrics["model-norm-ratio-min"] <= 1.0


def test_thresholds_are_configurable_and_can_be_switched_off():
    replies = honest_replies() + [honest_reply(BAD_NODE, num_examples=10**12)]
    _, metrics = run_round(STRATEGIES["fedavg"](max_num_examples_ratio=None), replies)
    assert metrics["num-excluded"] == 0  # off: the claim takes the round over
    sizes = [honest_reply(node_id, num_examples=size)
             for node_id, size in zip(range(1, 5), (10, 20, 30, 60))]
    _, metrics = run_round(STRATEGIES["fedavg"](max_num_examples_ratio=1.2), sizes)
    assert metrics["num-excluded"] == 1  # node 4: 60 examples, 2.4x the median 25


@pytest.mark.parametrize("key", ["max_num_examples_ratio", "max_norm_ratio"])
@pytest.mark.parametrize("value", [1.0, 0.5, -3, "abc"])
def test_thresholds_are_validated(key, value):
    with pytest.raises(ValueError, match=f"{key}={value!r}"):
        OutlierScreen(**{key: value})


def test_two_replies_never_trip_the_screen():
    replies = honest_replies(1) + [honest_reply(2, num_examples=10**12)]
    _, metrics = run_round(STRATEGIES["fedavg"](), replies)
    assert metrics["num-excluded"] == 0  # the median lies between the two


# ---- evaluation replies -----------------------------------------------------------------
def evaluate_reply(node_id: int, loss: float = 0.5, num_examples: float = 10,
                   extra: dict | None = None, records: int = 1) -> Message:
    metrics = {"eval-loss": loss, "eval-acc": 0.8, "num-examples": num_examples,
               **(extra or {})}
    content = RecordDict({f"metrics{index or ''}": MetricRecord(metrics)
                          for index in range(records)})
    return Message(content=content, metadata=reply_metadata(node_id, 1))


BAD_EVALUATE_REPLIES = {
    "error": lambda: error_reply(9),
    "extra key": lambda: evaluate_reply(9, extra={"grad-norm": 1.0}),
    "nan loss": lambda: evaluate_reply(9, loss=float("nan")),
    "fractional examples": lambda: evaluate_reply(9, num_examples=2.5),
    "two records": lambda: evaluate_reply(9, records=2),
}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("kind", sorted(BAD_EVALUATE_REPLIES))
def test_one_bad_evaluation_reply_is_left_out(name, kind, caplog):
    honest = [evaluate_reply(node, loss=0.1 * node, num_examples=10 * node)
              for node in (1, 2, 3)]
    with caplog.at_level(logging.WARNING, logger="flwr"):
        metrics = STRATEGIES[name]().aggregate_evaluate(
            1, [honest[0], BAD_EVALUATE_REPLIES[kind](), *honest[1:]])
    assert metrics == FedAvg().aggregate_evaluate(1, honest)
    assert metrics["eval-loss"] == pytest.approx((0.1 * 10 + 0.2 * 20 + 0.3 * 30) / 60)
    assert "node 9" in caplog.text


def test_no_usable_evaluation_reply_gives_no_metrics(caplog):
    with caplog.at_level(logging.WARNING, logger="flwr"):
        metrics = STRATEGIES["fedrdskd"]().aggregate_evaluate(1, [error_reply(9)])
    assert metrics is None and "no valid evaluation replies" in caplog.text
