"""Where the next round's clients start: ``carry_over`` (mock replies, no Ray)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import FedAvg
from hydra_config import hydra_dict
from mock_replies import FakeGrid, assert_same_arrays, tiny_model, train_reply
from test_validation import strategy  # the same small FedRDSKD

from fedrdskd.experiment import experiment_from_dict
from fedrdskd.inprocess import run_in_process
from fedrdskd.kd.interpolation import interpolate_states
from fedrdskd.strategies import FedRDSKD

pytestmark = pytest.mark.usefixtures("server_task_identity")
GRID = FakeGrid([1, 2, 3])


def replies(seeds=(1, 2)):
    return [train_reply(tiny_model(seed).state_dict(), node_id=seed, num_examples=10 * seed,
                        label_counts=[5, 3, 2]) for seed in seeds]


def round_then_next_start(chosen: FedRDSKD, seeds=(1, 2)):
    """The round's returned model, and the model the next round sends to its clients."""
    list(chosen.configure_train(1, ArrayRecord(tiny_model(0).state_dict()), ConfigRecord(),
                                GRID))
    returned, _ = chosen.aggregate_train(1, replies(seeds))
    messages = list(chosen.configure_train(2, returned, ConfigRecord(), GRID))
    return returned, messages[0].content["arrays"]


def aggregate(seeds=(1, 2)) -> ArrayRecord:
    arrays, _ = FedAvg().aggregate_train(1, replies(seeds))
    return arrays


def test_by_default_clients_train_from_the_distilled_model():
    returned, sent = round_then_next_start(strategy())
    assert_same_arrays(sent, returned)
    assert not torch.equal(returned.to_torch_state_dict()["fc.weight"],
                           aggregate().to_torch_state_dict()["fc.weight"])


def test_carry_over_zero_serves_the_distilled_model_and_trains_from_the_aggregate():
    returned, sent = round_then_next_start(strategy(carry_over=0.0))
    assert_same_arrays(sent, aggregate())  # FedAvg's model, exactly
    distilled, _ = round_then_next_start(strategy())
    assert_same_arrays(returned, distilled)  # what the round serves is unchanged


def test_carry_over_between_starts_part_of_the_way():
    returned, sent = round_then_next_start(strategy(carry_over=0.25))
    expected = interpolate_states(aggregate().to_torch_state_dict(),
                                  returned.to_torch_state_dict(), 0.25)
    for name, value in sent.to_torch_state_dict().items():
        torch.testing.assert_close(value, expected[name])


def test_a_round_that_is_not_distilled_trains_from_what_it_returns(caplog):
    chosen = strategy(carry_over=0.0)
    round_then_next_start(chosen)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        returned, sent = round_then_next_start(chosen, seeds=(1,))  # one model: no distillation
    assert "keeps the aggregate" in caplog.text
    assert_same_arrays(sent, returned)


def test_the_start_survives_a_checkpoint():
    chosen = strategy(carry_over=0.0)
    returned, sent = round_then_next_start(chosen)
    resumed = strategy(carry_over=0.0)
    resumed.load_distillation_state(chosen.distillation_state())
    resent = list(resumed.configure_train(2, returned, ConfigRecord(), GRID))
    assert_same_arrays(resent[0].content["arrays"], sent)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_carry_over_outside_zero_one_is_refused_naming_the_key(value):
    with pytest.raises(ValueError, match="carry_over"):
        strategy(carry_over=value)


def test_summary_says_where_clients_train(caplog):
    with caplog.at_level(logging.INFO, logger="flwr"):
        strategy(carry_over=0.0).summary()
    assert "Clients train from: the aggregate" in caplog.text


# ---- the wiring: a real ServerApp with in-process clients -----------------------------------
def test_with_carry_over_zero_the_federation_follows_fedavg(fake_mnist_root, tmp_path):
    """Every round's aggregate is FedAvg's model of that round; the served model differs."""
    def rounds(name: str, *overrides: str) -> list[dict]:
        raw = hydra_dict("dataset=mnist", f"data.root={fake_mnist_root}",
                         f"data.cache_dir={tmp_path / 'cache'}", "num_rounds=2",
                         "num_clients=4", "fraction_train=0.5", "lr=0.05", *overrides)
        raw["output_dir"] = str(tmp_path / name)
        run_in_process(experiment_from_dict(raw), tmp_path / name)
        return json.loads((tmp_path / name / "results.json").read_text())["rounds"]

    fedavg = rounds("fedavg", "strategy=fedavg")
    served = rounds("carry0", "strategy=fedrdskd", "strategy.carry_over=0.0",
                    "strategy.iterations=2", "strategy.validation_betas=[]")
    assert [row["aggregate_accuracy"] for row in served] == [
        row["test_accuracy"] for row in fedavg]
    assert [row["test_accuracy"] for row in served] != [row["test_accuracy"] for row in fedavg]


def test_carry_over_decays_per_round():
    chosen = strategy(carry_over=0.5, carry_over_decay=0.5)
    assert [chosen.round_carry_over(r) for r in (1, 2, 3)] == [0.5, 0.25, 0.125]
    list(chosen.configure_train(3, ArrayRecord(tiny_model(0).state_dict()), ConfigRecord(),
                                GRID))
    returned, _ = chosen.aggregate_train(3, [
        train_reply(tiny_model(seed).state_dict(), node_id=seed, num_examples=10 * seed,
                    label_counts=[5, 3, 2], server_round=3) for seed in (1, 2)])
    sent = list(chosen.configure_train(4, returned, ConfigRecord(), GRID))[0].content["arrays"]
    expected = interpolate_states(aggregate().to_torch_state_dict(),
                                  returned.to_torch_state_dict(), 0.125)
    for name, value in sent.to_torch_state_dict().items():
        torch.testing.assert_close(value, expected[name])
    with pytest.raises(ValueError, match="carry_over_decay"):
        strategy(carry_over_decay=1.5)
