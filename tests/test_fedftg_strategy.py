"""FedFTG as a Flower Message-API strategy, on mock replies (no Ray), plus one CLI run."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import FedAvg, FedProx
from hydra_config import hydra_dict
from mock_replies import FakeGrid, TinyNet, assert_same_arrays, tiny_model, train_reply

from fedrdskd.strategies import FedFTG, FedFTGMixin
from fedrdskd.strategies.registry import build_strategy, strategy_class

NUM_CLASSES = 3
INPUT_SHAPE = (1, 8, 8)
SMALL = dict(batch_size=16, latent_dim=8, generator_channels=4, seed=0)
COUNTS = [[20, 2, 2], [2, 20, 2], [2, 2, 20]]
FTG_TERMS = ("generator-model-discrepancy", "generator-fidelity", "generator-diversity",
             "generator-total", "kd-loss", "kl-before", "kl-after", "ensemble-agreement",
             "distill-seconds")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _server_identity(server_task_identity):
    """Strategies build messages as a ServerApp would."""


def client_states(seeds=(1, 2, 3)):
    return [tiny_model(seed).state_dict() for seed in seeds]


def make_replies(states, counts=COUNTS, *, without_counts=()):
    return [train_reply(state, node_id=index + 1, num_examples=sum(counts[index]),
                        label_counts=None if index + 1 in without_counts else counts[index])
            for index, state in enumerate(states)]


def fedftg(**kwargs) -> FedFTG:
    settings = dict(model_fn=TinyNet, num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE,
                    **SMALL)
    settings.update(kwargs)
    return FedFTG(**settings)


def run_round(strategy, replies, server_round: int = 1, arrays: ArrayRecord | None = None):
    grid = FakeGrid([m.metadata.src_node_id for m in replies])
    strategy.configure_train(server_round, arrays or ArrayRecord(tiny_model(0).state_dict()),
                             ConfigRecord(), grid)
    for reply in replies:  # the replies answer this round's messages
        reply.metadata.group_id = str(server_round)
    return strategy.aggregate_train(server_round, replies)


def class_ensemble_probabilities(states, images, labels):
    """FedFTG's teacher by hand: p = Σ_k α_{y,k} softmax(T_k(x)), α from COUNTS."""
    counts = torch.tensor(COUNTS, dtype=torch.float32)
    alpha = counts / counts.sum(dim=0, keepdim=True)  # [K, C]
    probabilities = torch.zeros(len(labels), NUM_CLASSES)
    for k, state in enumerate(states):
        model = TinyNet()
        model.load_state_dict(state)
        probabilities += alpha[k, labels].unsqueeze(1) * F.softmax(model.eval()(images), dim=1)
    return probabilities


def kl_to(target_probabilities, arrays: ArrayRecord, images) -> float:
    model = TinyNet()
    model.load_state_dict(arrays.to_torch_state_dict())
    with torch.no_grad():
        student = F.log_softmax(model.eval()(images), dim=1)
    return float(F.kl_div(student, target_probabilities, reduction="batchmean"))


# ---- the strategy -------------------------------------------------------------------------
def test_zero_iterations_equals_fedavg_exactly():
    states = client_states()
    ours, our_metrics = run_round(fedftg(iterations=0), make_replies(states))
    theirs, their_metrics = run_round(FedAvg(), make_replies(states))
    assert_same_arrays(ours, theirs)
    for key in their_metrics:
        assert our_metrics[key] == their_metrics[key], key
    assert not set(FTG_TERMS) & set(our_metrics)


def confident_states(seeds=(1, 2, 3), scale: float = 5.0):
    """Client models with sharper, more distinct outputs than freshly initialised ones."""
    states = client_states(seeds)
    for state in states:
        state["fc.weight"] = state["fc.weight"] * scale
    return states


def test_distillation_moves_global_model_towards_class_ensemble():
    states = confident_states()
    strategy = fedftg(iterations=6, generator_steps=1, student_steps=5, student_lr=0.3,
                      student_loss_reduction="batchmean")
    distilled, metrics = run_round(strategy, make_replies(states))
    averaged, _ = run_round(FedAvg(), make_replies(states))
    for key in FTG_TERMS:
        assert key in metrics, key
    # held out: a fresh batch (fresh latents and labels) never used for training, scored
    # against FedFTG's own target p_ens (as run_distillation's kl-* are)
    batch = strategy.synthesizer.sample(256)
    with torch.no_grad():
        target = class_ensemble_probabilities(states, batch.images, batch.labels)
    before, after = kl_to(target, averaged, batch.images), kl_to(target, distilled,
                                                                  batch.images)
    assert after < 0.6 * before, (before, after)


def test_missing_label_counts_raise_a_clear_error_at_the_first_replies(monkeypatch):
    strategy = fedftg(iterations=1)
    monkeypatch.setattr(strategy, "refine_global_model", lambda *args: pytest.fail(
        "the error must come before aggregation and distillation"))
    with pytest.raises(ValueError) as error:
        run_round(strategy, make_replies(client_states(), without_counts=(1, 2, 3)))
    message = str(error.value)
    assert "no reply of round 1 carries them (nodes 1, 2, 3)" in message
    assert 'content["label-counts"] = ConfigRecord({"label-counts": [n_0, ..., n_{C-1}]})' \
        in message  # the reply format for a ClientApp of one's own
    assert "client.send_label_counts=true" in message
    assert "client.send-label-counts = true" in message


def test_one_reply_without_label_counts_is_left_out_not_an_error(caplog):
    with caplog.at_level(logging.WARNING):
        arrays, metrics = run_round(fedftg(iterations=1, student_steps=1),
                                    make_replies(client_states(), without_counts=(2,)))
    assert arrays is not None and metrics["num-replies"] == 2
    assert metrics["num-excluded"] == 1 and "node 2" in caplog.text


def test_zero_iterations_needs_no_label_counts():
    states = client_states()
    ours, _ = run_round(fedftg(iterations=0), make_replies(states, without_counts=(1, 2, 3)))
    theirs, _ = run_round(FedAvg(), make_replies(states))
    assert_same_arrays(ours, theirs)


def test_invalid_reply_without_counts_is_excluded_not_an_error(caplog):
    states = client_states()
    states[1] = {k: torch.full_like(v, float("nan")) for k, v in states[1].items()}
    replies = make_replies(states, without_counts=(2,))
    with caplog.at_level(logging.WARNING):
        arrays, metrics = run_round(fedftg(iterations=1, student_steps=1), replies)
    assert arrays is not None and metrics["num-replies"] == 2
    assert metrics["num-excluded"] == 1


def test_learning_rates_decay_per_round():
    strategy = fedftg(generator_lr=0.01, student_lr=0.1, lr_decay=0.5, iterations=1,
                      generator_steps=0, student_steps=1)
    run_round(strategy, make_replies(client_states()), server_round=3)
    assert strategy.synthesizer.lr == pytest.approx(0.01 * 0.25)
    optimizer = strategy.student_optimizer(TinyNet(), 3)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.25)


def test_generator_persists_across_rounds():
    strategy = fedftg(iterations=1, student_steps=1)
    run_round(strategy, make_replies(client_states()))
    generator = strategy.synthesizer.generator
    after_round_one = {k: v.clone() for k, v in generator.state_dict().items()}
    run_round(strategy, make_replies(client_states((4, 5, 6))), server_round=2)
    assert strategy.synthesizer.generator is generator
    assert any(not torch.equal(after_round_one[k], v) for k, v in generator.state_dict().items())


def test_distillation_state_round_trip_gives_identical_next_round():
    settings = dict(iterations=2, student_steps=2)
    original = fedftg(**settings)
    arrays, _ = run_round(original, make_replies(client_states()))
    state = original.distillation_state()
    next_replies = lambda: make_replies(client_states((7, 8, 9)))  # noqa: E731
    expected, expected_metrics = run_round(original, next_replies(), 2, arrays)

    restored = fedftg(**settings, seed=123)  # different seed: the state must override it
    restored.load_distillation_state(state)
    got, got_metrics = run_round(restored, next_replies(), 2, arrays)
    assert_same_arrays(got, expected)
    for key in ("generator-total", "kd-loss", "kl-after"):
        assert got_metrics[key] == expected_metrics[key], key

    fresh, _ = run_round(fedftg(**settings, seed=123), next_replies(), 2, arrays)
    assert any(not torch.equal(a, b) for a, b in zip(fresh.to_torch_state_dict().values(),
                                                     expected.to_torch_state_dict().values()))


@pytest.mark.parametrize("key, value, message", [
    ("iterations", -1, "iterations=-1: allowed range is [0, inf]"),
    ("iterations", 1.5, "iterations=1.5: must be an integer"),
    ("batch_size", 1, "batch_size=1: allowed range is [2, inf]"),
    ("lr_decay", 0.0, "lr_decay=0.0: allowed range is (0.0, 1.0]"),
    ("student_lr", 0, "student_lr=0: allowed range is (0.0, 100.0]"),
    ("lambda_dis", -1.0, "lambda_dis=-1.0: allowed range is [0.0, 1000000.0]"),
    ("student_loss_reduction", "sum",
     "student_loss_reduction='sum': allowed values are mean, batchmean"),
    ("ensemble_weighting", "uniform", "ensemble_weighting='uniform': FedFTG's ensemble is"),
])
def test_constructor_validation(key, value, message):
    with pytest.raises(ValueError, match=re.escape(f"Invalid config value {message}")):
        fedftg(**{key: value})


@pytest.mark.parametrize("settings, message", [
    (dict(iterations=0), "equivalent to its base strategy"),
    (dict(generator_steps=0, student_steps=0), "equivalent to its base strategy"),
    (dict(lambda_md=0.0, lambda_cls=0.0, lambda_dis=0.0), "do not train it"),
])
def test_degenerate_settings_warn_at_construction(caplog, settings, message):
    with caplog.at_level(logging.WARNING, logger="flwr"):
        fedftg()
    assert "FedFTG initialized" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="flwr"):
        fedftg(**settings)
    assert message in caplog.text


def test_registry_resolves_fedftg_on_fedavg_and_on_fedprox():
    assert strategy_class("fedftg") is FedFTG
    composed = strategy_class("fedftg", base="fedprox")
    assert issubclass(composed, FedFTGMixin) and issubclass(composed, FedProx)
    strategy = build_strategy("fedftg", {"base": "fedprox", "proximal_mu": 0.1,
                                         "iterations": 1, **SMALL},
                              model_fn=TinyNet, num_classes=NUM_CLASSES,
                              input_shape=INPUT_SHAPE, device="cpu", seed=0)
    arrays, metrics = run_round(strategy, make_replies(client_states()))
    assert arrays is not None and "kd-loss" in metrics


def test_summary_logs_the_settings(caplog):
    with caplog.at_level(logging.INFO):
        fedftg(iterations=7, lr_decay=0.9).summary()
    text = caplog.text
    assert "FedFTG" in text and "7 iterations" in text and "lr decay 0.9" in text


# ---- configs -------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["fedftg", "fedftg_cpu"])
def test_presets_build_with_every_key(preset):
    options = hydra_dict(f"strategy={preset}")["strategy"]
    assert options.pop("name") == "fedftg" and options["base"] == "fedavg"
    strategy = build_strategy("fedftg", options, model_fn=TinyNet, num_classes=NUM_CLASSES,
                              input_shape=INPUT_SHAPE, device="cpu", seed=0)
    assert isinstance(strategy, FedFTG)
    assert strategy.iterations == options["iterations"]


def test_cpu_preset_is_the_released_one_with_a_narrower_generator():
    full = hydra_dict("strategy=fedftg")["strategy"]
    cpu = hydra_dict("strategy=fedftg_cpu")["strategy"]
    assert cpu == {**full, "generator_channels": 32}
    assert (full["iterations"], full["generator_steps"], full["student_steps"],
            full["batch_size"], full["generator_lr"], full["student_lr"],
            full["lr_decay"], full["generator_channels"]) == (10, 1, 5, 50, 0.01, 0.1, 0.998, 64)


# ---- end to end ------------------------------------------------------------------------------
def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("fedrdskd")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fedrdskd.cli"]


@pytest.mark.slow
def test_cli_simulation_with_fedftg_cpu(fake_mnist_root, tmp_path):
    run_dir = tmp_path / "run"
    command = cli_command() + [
        "strategy=fedftg_cpu", "num_rounds=2", "num_clients=3", "fraction_train=1.0",
        "strategy.iterations=2", "strategy.student_steps=2", "strategy.batch_size=8",
        "strategy.generator_channels=4", f"data.root={fake_mnist_root}",
        f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"]
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300,
                               env=environment, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rounds = json.loads((run_dir / "results.json").read_text())["rounds"]
    assert [row["round"] for row in rounds] == [1, 2]
    for row in rounds:
        for key in ("generator_model_discrepancy", "generator_fidelity", "generator_diversity",
                    "kd_loss", "kl_after", "distill_seconds", "server_seconds"):
            assert key in row, key
        assert 0.0 <= row["test_accuracy"] <= 1.0
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
