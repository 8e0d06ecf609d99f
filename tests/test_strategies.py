"""FedRDSKD and the composed strategies on mock replies (no Ray, no Flower runtime).

The strategies are driven the way Flower's ``Strategy.start`` drives them: first
``configure_train`` (which FedOpt-style strategies such as FedAdam need, to remember
the current global model), then ``aggregate_train`` on the replies.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, FedTrimmedAvg

from fedrdskd.kd.distill import DistillationSchedule
from fedrdskd.strategies import FedRDSKD
from fedrdskd.strategies.client_ensemble import client_train_seconds
from fedrdskd.strategies.distillation import member_weights
from fedrdskd.strategies.registry import build_strategy, strategy_class
from fedrdskd.strategies.replies import ModelLayout
from fedrdskd.strategies.outliers import OutlierScreen
from fedrdskd.strategies.screening import screen_replies
from mock_replies import (FakeGrid, TinyNet, assert_same_arrays, tiny_model,
                          train_reply)

NUM_CLASSES = 3
INPUT_SHAPE = (1, 8, 8)
# Small, fast distillation settings for the TinyNet (1x8x8 -> 3 classes).
SMALL = dict(batch_size=32, latent_dim=8, generator_channels=8, seed=0)


@pytest.fixture(autouse=True)
def _server_identity(server_task_identity):
    """Strategies build messages as a ServerApp would."""


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; two threads on a busy 2-core machine
    made these tests ~20x slower (thread spinning), measured."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def client_states(count: int = 3) -> list[dict[str, torch.Tensor]]:
    return [tiny_model(seed).state_dict() for seed in range(1, count + 1)]


def make_replies(states, *, label_counts=True):
    """One reply per state; node ids 1.., sizes 10, 20, ..., distinct train losses."""
    counts = [[5, 3, 2], [1, 15, 4], [20, 0, 10], [6, 6, 8], [2, 2, 36]]
    return [
        train_reply(state, node_id=index + 1, num_examples=10 * (index + 1),
                    label_counts=counts[index % len(counts)] if label_counts else None,
                    train_loss=0.5 + 0.25 * index)
        for index, state in enumerate(states)
    ]


def initial_arrays() -> ArrayRecord:
    return ArrayRecord(tiny_model(0).state_dict())


def fedrdskd(**kwargs) -> FedRDSKD:
    settings = dict(model_fn=TinyNet, num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE,
                    **SMALL)
    settings.update(kwargs)
    return FedRDSKD(**settings)


def grid_for(strategy, replies) -> FakeGrid:
    """The replying nodes, plus idle ones up to what ``configure_train`` waits for.

    Flower's ``configure_train`` sleeps until ``min_available_nodes`` (and the sample
    size) nodes are connected; a FakeGrid with fewer node ids would never return.
    """
    node_ids = [m.metadata.src_node_id for m in replies]
    needed = max(strategy.min_available_nodes, strategy.min_train_nodes, 1)
    idle = (100 + index for index in range(needed))
    while len(node_ids) < needed:
        node_ids.append(next(idle))
    return FakeGrid(node_ids)


def run_round(strategy, replies, server_round: int = 1, arrays: ArrayRecord | None = None):
    """``configure_train`` on the current model (as ``Strategy.start`` does), then aggregate.

    The replies answer the round's messages, so they carry its group id.
    """
    strategy.configure_train(server_round, arrays or initial_arrays(), ConfigRecord(),
                             grid_for(strategy, replies))
    for reply in replies:
        reply.metadata.group_id = str(server_round)
    return strategy.aggregate_train(server_round, replies)


def arrays_differ(left: ArrayRecord, right: ArrayRecord) -> bool:
    left, right = left.to_torch_state_dict(), right.to_torch_state_dict()
    return any(not torch.equal(left[name], right[name]) for name in left)


EXTRA_KEYS = {"num-replies", "num-excluded", "server-seconds", "num-sampled", "num-answered",
              "num-examples-ratio-max", "update-norm-ratio-max", "model-norm-ratio-min"}


# ---- (a) no distillation == FedAvg ------------------------------------------------------
def test_zero_steps_equals_fedavg_exactly():
    states = client_states()
    ours, our_metrics = run_round(fedrdskd(generator_steps=0, student_steps=0),
                                  make_replies(states))
    theirs, their_metrics = run_round(FedAvg(), make_replies(states))
    assert_same_arrays(ours, theirs)
    assert set(our_metrics) == set(their_metrics) | EXTRA_KEYS
    for key in their_metrics:
        assert our_metrics[key] == their_metrics[key], key
    assert our_metrics["num-replies"] == 3 and our_metrics["num-excluded"] == 0
    # train-loss is FedAvg's example-weighted mean: (10*.5 + 20*.75 + 30*1) / 60
    assert our_metrics["train-loss"] == pytest.approx(50 / 60)


# ---- (b) distillation pulls the global model towards the ensemble ---------------------
def uniform_ensemble_logits(states, images):
    """The uniform teacher by hand: log of the mean of the members' probabilities."""
    probabilities = []
    for state in states:
        model = TinyNet()
        model.load_state_dict(state)
        probabilities.append(F.softmax(model.eval()(images), dim=1))
    return torch.log(torch.stack(probabilities).mean(dim=0))


def kl_to(teacher_logits, arrays: ArrayRecord, images) -> float:
    model = TinyNet()
    model.load_state_dict(arrays.to_torch_state_dict())
    with torch.no_grad():
        student = F.log_softmax(model.eval()(images), dim=1)
    return float(F.kl_div(student, F.log_softmax(teacher_logits, dim=1),
                          reduction="batchmean", log_target=True))


def test_distillation_lowers_kl_to_ensemble():
    states = client_states()
    strategy = fedrdskd(generator_steps=5, student_steps=30, student_lr=1e-2,
                        temperature=1.0, ensemble_weighting="uniform")
    distilled, metrics = run_round(strategy, make_replies(states))
    averaged, _ = run_round(FedAvg(), make_replies(states))
    assert metrics["kl-after"] < metrics["kl-before"]
    # held out: a fresh batch from the trained generator, never used for training
    images = strategy.synthesizer.sample(256).images
    with torch.no_grad():
        teacher = uniform_ensemble_logits(states, images)
    before, after = kl_to(teacher, averaged, images), kl_to(teacher, distilled, images)
    assert after < 0.8 * before, (before, after)


# ---- (c) invalid replies are left out ---------------------------------------------------
def test_nan_and_wrong_shape_replies_are_excluded(caplog):
    states = client_states(4)
    states[1]["fc.bias"][1] = float("nan")
    states[3]["fc.weight"] = torch.zeros(4, 2 * 8 * 8)
    replies = make_replies(states)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        ours, metrics = run_round(fedrdskd(generator_steps=0, student_steps=0), replies)
    assert "node 2" in caplog.text and "NaN" in caplog.text
    assert "node 4" in caplog.text and "fc.weight" in caplog.text
    valid = [replies[0], make_replies(client_states(3))[2]]  # nodes 1 and 3, fresh copies
    theirs, their_metrics = run_round(FedAvg(), valid)
    assert_same_arrays(ours, theirs)
    assert metrics["num-replies"] == 2 and metrics["num-excluded"] == 2
    assert metrics["train-loss"] == their_metrics["train-loss"]
    assert all(torch.isfinite(v).all() for v in ours.to_torch_state_dict().values())


def test_excluded_replies_are_not_in_the_ensemble():
    states = client_states(3)
    states[0]["conv.weight"].fill_(float("inf"))
    members = members_of(make_replies(states))
    teacher = fedrdskd(ensemble_weighting="uniform").build_teacher(members)
    assert teacher.num_members == 2
    images = torch.randn(4, *INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(teacher(images),
                                   uniform_ensemble_logits(states[1:], images))


# ---- (d) no valid reply --------------------------------------------------------------
def test_no_valid_reply_leaves_model_unchanged(caplog):
    state = tiny_model(1).state_dict()
    state["fc.bias"].fill_(float("nan"))
    with caplog.at_level(logging.WARNING, logger="flwr"):
        arrays, metrics = run_round(fedrdskd(), make_replies([state]))
    assert arrays is None
    assert metrics["num-replies"] == 0 and metrics["num-excluded"] == 1
    assert "no valid client replies" in caplog.text
    assert "left unchanged" in caplog.text


def test_no_reply_at_all():
    arrays, metrics = fedrdskd().aggregate_train(1, [])
    assert arrays is None and metrics["num-replies"] == 0


# ---- (e) composition with other Flower strategies ----------------------------------------
BASES = {
    "fedprox": (FedProx, dict(proximal_mu=0.1)),
    "fedadam": (FedAdam, dict(eta=0.1)),
    "fedtrimmedavg": (FedTrimmedAvg, dict(beta=0.2)),
}


def composed(base: str, steps: int):
    flower_class, options = BASES[base]
    return build_strategy(
        "fedrdskd", {"base": base, "generator_steps": steps, "student_steps": steps,
                     **SMALL_OPTIONS, **options},
        model_fn=TinyNet, num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE,
        device="cpu", seed=0)


SMALL_OPTIONS = {k: v for k, v in SMALL.items() if k != "seed"}


@pytest.mark.parametrize("base", sorted(BASES))
def test_composed_strategies_reduce_to_flower_without_steps(base):
    flower_class, options = BASES[base]
    cls = strategy_class("fedrdskd", base=base)
    assert issubclass(cls, flower_class)
    assert cls is strategy_class("fedrdskd", base=base)  # composed once, cached
    states = client_states(5)  # FedTrimmedAvg with beta=0.2 trims one per side
    plain, plain_metrics = run_round(flower_class(**options), make_replies(states))
    ours, our_metrics = run_round(composed(base, 0), make_replies(states))
    assert type(composed(base, 0)) is cls
    assert_same_arrays(ours, plain)
    assert {k: our_metrics[k] for k in plain_metrics} == dict(plain_metrics)
    distilled, metrics = run_round(composed(base, 2), make_replies(states))
    assert arrays_differ(distilled, plain)
    assert "kd-loss" in metrics and metrics["num-replies"] == 5


def test_fedprox_composition_sends_proximal_mu():
    strategy = composed("fedprox", 0)
    messages = strategy.configure_train(1, initial_arrays(), ConfigRecord(),
                                        FakeGrid([1, 2]))
    assert all(m.content["config"]["proximal-mu"] == 0.1 for m in messages)


def test_unknown_base_and_bad_option_are_named():
    with pytest.raises(ValueError, match=r"strategy\.base='fedfoo'.*fedavg"):
        strategy_class("fedrdskd", base="fedfoo")
    with pytest.raises(ValueError, match="generator_stepz"):
        build_strategy("fedrdskd", {"generator_stepz": 1}, model_fn=TinyNet,
                       num_classes=NUM_CLASSES, input_shape=INPUT_SHAPE, device="cpu",
                       seed=0)


# ---- (f) ensemble weighting fallback ----------------------------------------------------
def members_of(replies):
    """The client models the screening keeps of round-1 ``replies``."""
    return screen_replies(1, replies, ModelLayout.of(TinyNet()), "num-examples", NUM_CLASSES,
                          outliers=OutlierScreen()).members


def test_class_weighting_without_label_counts_falls_back():
    members = members_of(make_replies(client_states(), label_counts=False))
    weights, used = member_weights("class", members, NUM_CLASSES)
    assert used == "num-examples"
    expected = torch.tensor([10.0, 20.0, 30.0]).div(60).unsqueeze(1).expand(3, NUM_CLASSES)
    torch.testing.assert_close(weights, expected)


def test_class_weighting_with_label_counts():
    members = members_of(make_replies(client_states()))
    weights, used = member_weights("class", members, NUM_CLASSES)
    assert used == "class"
    # counts [[5,3,2],[1,15,4],[20,0,10]]: column sums 26, 18, 16
    expected = torch.tensor([[5 / 26, 3 / 18, 2 / 16], [1 / 26, 15 / 18, 4 / 16],
                             [20 / 26, 0.0, 10 / 16]])
    torch.testing.assert_close(weights, expected)


def test_class_weighted_round_without_label_counts_is_a_num_examples_round(caplog):
    replies = make_replies(client_states(), label_counts=False)
    strategy = fedrdskd(generator_steps=1, student_steps=1)
    with caplog.at_level(logging.INFO, logger="flwr"):
        arrays, metrics = run_round(strategy, replies)
        run_round(strategy, make_replies(client_states(), label_counts=False), 2)
    # one warning per run, naming the setting that says so; each round logs what it used
    assert caplog.text.count("ensemble_weighting='class' needs label counts") == 1
    assert 'ensemble_weighting="num-examples"' in caplog.text
    assert 'content["label-counts"] = ConfigRecord(' in caplog.text
    assert caplog.text.count("distillation (ensemble weighted by num-examples)") == 2
    fallback, fallback_metrics = run_round(
        fedrdskd(generator_steps=1, student_steps=1, ensemble_weighting="num-examples"),
        make_replies(client_states(), label_counts=False))
    assert_same_arrays(arrays, fallback)
    assert metrics["kd-loss"] == fallback_metrics["kd-loss"]
    with_counts, _ = run_round(fedrdskd(generator_steps=1, student_steps=1),
                               make_replies(client_states()))
    assert arrays_differ(with_counts, arrays)  # the weighting does matter


# ---- (g) per-round metrics ------------------------------------------------------------
def test_round_metrics_name_every_term():
    _, metrics = run_round(fedrdskd(generator_steps=2, student_steps=2),
                           make_replies(client_states()))
    assert isinstance(metrics, MetricRecord)
    for term in ("authenticity", "class-diversity", "inter-sample-diversity", "total"):
        assert f"generator-{term}" in metrics
    for key in ("kd-loss", "distill-seconds", "generator-seconds", "student-seconds",
                "ensemble-agreement", "kl-before", "kl-after", "server-seconds",
                "train-loss", "num-replies", "num-excluded"):
        assert key in metrics, key
    assert 0.0 <= metrics["ensemble-agreement"] <= 1.0
    assert 0.0 < metrics["distill-seconds"] <= metrics["server-seconds"]


def test_ensemble_diagnostic_is_reported_separately():
    calls = []

    def evaluate(server_round, members, aggregate):
        calls.append((server_round, [m.node_id for m in members], aggregate))
        return {"ensemble-accuracy": 0.5}

    _, metrics = run_round(fedrdskd(generator_steps=0, student_steps=0,
                                    ensemble_evaluate_fn=evaluate),
                           make_replies(client_states()), server_round=3)
    assert [call[:2] for call in calls] == [(3, [1, 2, 3])]
    assert isinstance(calls[0][2], ArrayRecord)
    assert metrics["ensemble-accuracy"] == 0.5 and "diagnostics-seconds" in metrics


def test_diagnostic_receives_the_aggregate_before_distillation():
    seen = []

    def evaluate(server_round, members, aggregate):
        seen.append(aggregate)
        return {}

    replies = make_replies(client_states())
    distilled, _ = run_round(fedrdskd(generator_steps=1, student_steps=2,
                                      ensemble_evaluate_fn=evaluate), replies)
    plain, _ = run_round(FedAvg(), make_replies(client_states()))
    (aggregate,) = seen
    assert_same_arrays(aggregate, plain)  # FedAvg's aggregate, exactly
    assert arrays_differ(aggregate, distilled)


def test_client_train_seconds_sum_and_max_over_valid_replies():
    states = client_states(4)
    states[3]["fc.bias"][0] = float("nan")  # excluded: its 100 s must not count
    replies = [train_reply(state, node_id=index + 1, num_examples=10,
                           train_seconds=seconds)
               for index, (state, seconds) in enumerate(zip(states, (2.0, 1.5, 5.0, 100.0)))]
    monitored = build_strategy("fedavg", {}, model_fn=TinyNet, num_classes=NUM_CLASSES,
                               input_shape=INPUT_SHAPE, device="cpu", seed=0)
    _, metrics = run_round(monitored, replies)
    assert metrics["num-replies"] == 3
    assert metrics["client-train-seconds-sum"] == pytest.approx(8.5)
    assert metrics["client-train-seconds-max"] == pytest.approx(5.0)
    # Clients that do not time themselves (another ClientApp): no such metrics.
    _, silent = run_round(monitored, make_replies(client_states()))
    assert "client-train-seconds-sum" not in silent
    assert "client-train-seconds-max" not in silent
    # Members without a time are left out of the sum and max, not counted as 0.
    members = members_of(replies[:3])
    members[2].train_seconds = None
    assert client_train_seconds(members) == {"client-train-seconds-sum": 3.5,
                                             "client-train-seconds-max": 2.0}


# ---- (i) checkpointing ------------------------------------------------------------------
def test_distillation_state_round_trip_gives_identical_next_round():
    settings = dict(generator_steps=2, student_steps=2)
    original = fedrdskd(**settings)
    arrays, _ = run_round(original, make_replies(client_states()))
    state = original.distillation_state()
    next_states = [tiny_model(seed).state_dict() for seed in (7, 8, 9)]
    expected, expected_metrics = run_round(original, make_replies(next_states), 2, arrays)

    restored = fedrdskd(**settings, seed=123)  # different seed: state must override it
    restored.load_distillation_state(state)
    got, got_metrics = run_round(restored, make_replies(next_states), 2, arrays)
    assert_same_arrays(got, expected)
    for key in ("generator-total", "kd-loss", "kl-after", "ensemble-agreement"):
        assert got_metrics[key] == expected_metrics[key], key

    fresh, _ = run_round(fedrdskd(**settings, seed=123), make_replies(next_states), 2,
                         arrays)
    assert arrays_differ(fresh, expected)  # without the state the round differs


def student_optimizer_steps(strategy) -> set[float]:
    """The Adam step counts the strategy's next student optimiser starts from."""
    optimizer = strategy.student_optimizer(TinyNet(), server_round=2)
    return {float(state["step"]) for state in optimizer.state.values()}


def test_persistent_student_optimizer_carries_adam_state_across_rounds():
    settings = dict(generator_steps=1, student_steps=3, iterations=1, student_optimizer="adam")
    carried = fedrdskd(**settings, persist_student_optimizer=True)
    arrays, _ = run_round(carried, make_replies(client_states()))
    assert student_optimizer_steps(carried) == {3.0}  # continues after round 1's 3 steps
    fresh = fedrdskd(**settings)
    run_round(fresh, make_replies(client_states()))
    assert student_optimizer_steps(fresh) == set()  # default: a new optimiser every round


def test_persistent_student_optimizer_state_round_trips_through_checkpoints():
    settings = dict(generator_steps=2, student_steps=2, iterations=1, student_optimizer="adam",
                    persist_student_optimizer=True)
    original = fedrdskd(**settings)
    arrays, _ = run_round(original, make_replies(client_states()))
    state = original.distillation_state()
    assert "student_optimizer" in state
    next_states = [tiny_model(seed).state_dict() for seed in (7, 8, 9)]
    expected, _ = run_round(original, make_replies(next_states), 2, arrays)

    restored = fedrdskd(**settings)
    restored.load_distillation_state(state)
    got, _ = run_round(restored, make_replies(next_states), 2, arrays)
    assert_same_arrays(got, expected)
    without_moments = fedrdskd(**settings)
    without_moments.load_distillation_state({"synthesizer": state["synthesizer"]})
    differs, _ = run_round(without_moments, make_replies(next_states), 2, arrays)
    assert arrays_differ(differs, expected)  # the carried moments change round 2


# ---- (h) schedule, (j) validation ----------------------------------------------------------
def test_strength_decay_schedule():
    strategy = fedrdskd(generator_steps=4, student_steps=10, strength_decay=0.5)
    schedules = [strategy.round_schedule(r) for r in (1, 2, 3, 4, 5, 6)]
    # round(steps * 0.5 ** (r - 1)), halves rounded up: 10, 5, 2.5, 1.25, .625, .3125
    assert [s.student_steps for s in schedules] == [10, 5, 3, 1, 1, 0]
    # 4, 2, 1, .5, .25, .125
    assert [s.generator_steps for s in schedules] == [4, 2, 1, 1, 0, 0]
    constant = fedrdskd(generator_steps=3, student_steps=7, strength_decay=1.0)
    assert {(constant.round_schedule(r).generator_steps,
             constant.round_schedule(r).student_steps) for r in (1, 10, 100)} == {(3, 7)}


def test_warmup_iterations_lengthen_round_1_only():
    strategy = fedrdskd(generator_steps=2, student_steps=3, iterations=4, warmup_iterations=6,
                        strength_decay=0.5)
    first, second = strategy.round_schedule(1), strategy.round_schedule(2)
    assert (first.iterations, first.generator_steps, first.student_steps) == (10, 2, 3)
    assert (second.iterations, second.generator_steps, second.student_steps) == (4, 1, 2)
    off = fedrdskd(generator_steps=2, student_steps=3, iterations=4)
    assert off.round_schedule(1) == DistillationSchedule(
        iterations=4, generator_steps=2, student_steps=3, batch_size=off.distill_batch_size)


@pytest.mark.parametrize("server_round, generator, student", [(1, 5, 10), (2, 2, 4)])
def test_warmup_round_runs_that_many_steps(monkeypatch, server_round, generator, student):
    strategy = fedrdskd(generator_steps=1, student_steps=2, iterations=2, warmup_iterations=3)
    calls = count_steps(strategy, monkeypatch)
    run_round(strategy, make_replies(client_states()), server_round)
    assert calls == {"generator": generator, "student": student}


def count_steps(strategy, monkeypatch) -> dict[str, int]:
    """Count the generator updates and student losses the strategy really runs."""
    calls = {"generator": 0, "student": 0}
    synthesizer = strategy.synthesizer
    generator_step, student_loss = synthesizer.generator_step, synthesizer.student_loss

    def counted_generator_step(*args, **kwargs):
        calls["generator"] += 1
        return generator_step(*args, **kwargs)

    def counted_student_loss(*args, **kwargs):
        calls["student"] += 1
        return student_loss(*args, **kwargs)

    monkeypatch.setattr(synthesizer, "generator_step", counted_generator_step)
    monkeypatch.setattr(synthesizer, "student_loss", counted_student_loss)
    return calls


@pytest.mark.parametrize("server_round, generator, student", [
    (1, 6, 4),  # 6, 4
    (2, 3, 2),  # 3, 2
    (3, 2, 1),  # 1.5 -> 2, 1
])
def test_decayed_rounds_run_that_many_steps(monkeypatch, server_round, generator, student):
    strategy = fedrdskd(generator_steps=6, student_steps=4, iterations=1, strength_decay=0.5)
    calls = count_steps(strategy, monkeypatch)
    _, metrics = run_round(strategy, make_replies(client_states()), server_round)
    assert calls == {"generator": generator, "student": student}
    assert "kd-loss" in metrics and "generator-total" in metrics


@pytest.mark.parametrize("settings, server_round", [
    (dict(generator_steps=2, student_steps=2, strength_decay=0.0), 2),
    (dict(generator_steps=6, student_steps=4, strength_decay=0.5), 5),  # .375, .25
])
def test_decayed_to_zero_steps_returns_the_aggregate(monkeypatch, settings, server_round):
    strategy = fedrdskd(**settings)
    calls = count_steps(strategy, monkeypatch)
    ours, metrics = run_round(strategy, make_replies(client_states()), server_round)
    theirs, _ = run_round(FedAvg(), make_replies(client_states()), server_round)
    assert calls == {"generator": 0, "student": 0}
    assert_same_arrays(ours, theirs)
    assert not any(key.startswith("generator-") or key.startswith("kl-")
                   for key in metrics)
    assert "kd-loss" not in metrics and "distill-seconds" not in metrics


@pytest.mark.parametrize("key, value, message", [
    ("generator_steps", -1, r"generator_steps=-1: allowed range is \[0, 1000000\]"),
    ("student_steps", -3, r"student_steps=-3: allowed range is \[0, 1000000\]"),
    ("generator_steps", 2.5, r"generator_steps=2\.5: must be an integer"),
    ("batch_size", 0, r"batch_size=0: allowed range is \[1, 1000000\]"),
    ("batch_size", 15, r"batch_size=15: must be even"),
    ("student_uses_generator_batch", "false",
     r"student_uses_generator_batch='false': must be true or false"),
    ("penalise_hard_sample", 1, r"penalise_hard_sample=1: must be true or false"),
    ("replay_pool_size", 64, r"student_uses_generator_batch=True: needs replay_pool_size=0"),
    ("synthetic_augmentation", "shift",
     r"student_uses_generator_batch=True: needs .* got 0 and 'shift'"),
    ("latent_dim", 0, r"latent_dim=0: allowed range"),
    ("iterations", 0, r"iterations=0: allowed range"),
    ("warmup_iterations", -1, r"warmup_iterations=-1: allowed range is \[0, 1000000\]"),
    ("warmup_iterations", 2.5, r"warmup_iterations=2\.5: must be an integer"),
    ("reference_interval", 0, r"reference_interval=0: allowed range"),
    ("strength_decay", 1.5, r"strength_decay=1\.5: allowed range is \[0\.0, 1\.0\]"),
    ("student_optimizer", "rmsprop",
     r"student_optimizer='rmsprop': allowed values are adam, sgd"),
    ("temperature", 0.0, r"temperature=0\.0: allowed range is \(0\.0, inf\]"),
    ("generator_lr", -1e-3, r"generator_lr=-0\.001: allowed range is \(0\.0"),
    ("student_lr", True, r"student_lr=True: must be a number"),
    ("ensemble_weighting", "median",
     r"ensemble_weighting='median': allowed values are uniform, num-examples, class"),
    ("ensemble_combine", "median",
     r"ensemble_combine='median': allowed values are probabilities, logits"),
    ("class_prior", "zipf", r"class_prior='zipf': allowed values are uniform, label-counts"),
    ("input_shape", (8, 8), r"input_shape=\(8, 8\): must be \(C, H, W\)"),
    ("num_classes", 1, r"num_classes=1: allowed range is \[2, inf\]"),
    ("min_replies", 0, r"min_replies=0: allowed range is \[1, inf\]"),
])
def test_constructor_validation(key, value, message):
    with pytest.raises(ValueError, match=rf"Invalid config value {message}"):
        fedrdskd(**{key: value})


def test_no_distillation_steps_warn_at_construction(caplog):
    with caplog.at_level(logging.WARNING, logger="flwr"):
        fedrdskd(generator_steps=0, student_steps=1)
    assert "equivalent to its base strategy" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="flwr"):
        fedrdskd(generator_steps=0, student_steps=0)
    assert "`generator_steps=0` and `student_steps=0`" in caplog.text


def test_summary_names_the_class_weighting_fallback_and_the_screen(caplog):
    with caplog.at_level(logging.INFO, logger="flwr"):
        fedrdskd().summary()
    assert "class (num-examples in rounds where a client sends no label counts)" in caplog.text
    assert "Outlier screen: num-examples 100x the round's median | norms 20x" in caplog.text
