"""The ClientApp's local training, called through ``@app.train`` with real Flower messages.

The data is the fake MNIST of ``conftest.fake_mnist_root`` (600 training images whose
class is a bright block at a label-dependent position), split IID over two clients.
"""

from __future__ import annotations

import time

import pytest
import torch
from flwr.app import (ArrayRecord, ConfigRecord, Context, Message, MessageType, Metadata,
                      MetricRecord, RecordDict)

from fedrdskd.clients.client_app import build_client_app, client_data
from fedrdskd.clients.training import evaluate, proximal_term, train
from fedrdskd.experiment import ClientSettings, DataSettings, PartitionSettings
from fedrdskd.models import build_model
from fedrdskd.protocol import LABEL_COUNTS_KEY, TRAIN_SECONDS_KEY

NUM_PARTITIONS = 2


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The app sets torch's thread count to the client's; restore it afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def settings(fake_mnist_root, tmp_path_factory) -> ClientSettings:
    cache = tmp_path_factory.mktemp("image-cache")
    return ClientSettings(
        data=DataSettings(dataset="mnist", root=str(fake_mnist_root), cache_dir=str(cache)),
        partition=PartitionSettings(scheme="iid", min_partition_size=10, test_fraction=0.1),
        model="lenet5", seed=0, send_label_counts=True, num_threads=1)


def context(partition_id: int = 0, run_config: dict | None = None) -> Context:
    return Context(run_id=1, node_id=partition_id + 1,
                   node_config={"partition-id": partition_id,
                                "num-partitions": NUM_PARTITIONS},
                   state=RecordDict(), run_config=run_config or {})


def initial_model(seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model("lenet5", num_classes=10, image_shape=(1, 28, 28))


def train_message(model: torch.nn.Module, *, proximal_mu: float | None = None,
                  lr: float = 0.05, batch_size: int = 32) -> Message:
    """A training instruction as Flower's FedAvg/FedProx sends it to node 1."""
    config = {"lr": lr, "momentum": 0.9, "weight-decay": 0.0, "local-epochs": 1,
              "batch-size": batch_size, "seed": 0, "server-round": 1}
    if proximal_mu is not None:
        config["proximal-mu"] = proximal_mu
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                          "config": ConfigRecord(config)})
    metadata = Metadata(run_id=1, message_id="ins-1", src_node_id=0, dst_node_id=1,
                        reply_to_message_id="", group_id="1", created_at=time.time(),
                        ttl=3600.0, message_type=MessageType.TRAIN)
    return Message(content=content, metadata=metadata)


def reply_model(reply: Message) -> torch.nn.Module:
    model = initial_model()
    model.load_state_dict(reply.content["arrays"].to_torch_state_dict())
    return model


def distance(left: torch.nn.Module, right: torch.nn.Module) -> float:
    return float(sum((a - b).pow(2).sum() for a, b in
                     zip(left.parameters(), right.parameters(), strict=True)).sqrt())


# ---- the reply of @app.train -----------------------------------------------------------
def test_one_local_epoch_lowers_the_training_loss(settings):
    app = build_client_app(settings)
    start = initial_model()
    # 270 images: batch 8 gives 34 SGD steps in the epoch (batch 32 only 9, too few)
    reply = app(train_message(start, lr=0.02, batch_size=8), context())
    data = client_data(settings, context()).train
    before, _ = evaluate(start, data)
    after, accuracy = evaluate(reply_model(reply), data)
    assert after < 0.5 * before, (before, after)
    assert accuracy > 0.5  # the block position is easy to learn in one epoch
    assert reply.metadata.reply_to_message_id == "ins-1"


def test_reply_carries_num_examples_train_loss_and_label_counts(settings):
    reply = build_client_app(settings)(train_message(initial_model()), context(1))
    data = client_data(settings, context(1))
    metrics = reply.content["metrics"]
    assert isinstance(metrics, MetricRecord)
    assert metrics["num-examples"] == len(data.train) == 270  # 300 images, 10% test
    assert 0.0 < metrics["train-loss"] < 2.5  # ln(10) = 2.30 at chance, falling
    assert 0.0 < metrics[TRAIN_SECONDS_KEY] < 600  # the client's own training time
    counts = reply.content[LABEL_COUNTS_KEY]
    assert isinstance(counts, ConfigRecord)
    assert counts[LABEL_COUNTS_KEY] == [int(n) for n in data.label_counts]
    assert len(counts[LABEL_COUNTS_KEY]) == 10
    assert sum(counts[LABEL_COUNTS_KEY]) == metrics["num-examples"]
    labels = data.train.labels
    assert counts[LABEL_COUNTS_KEY] == torch.bincount(labels, minlength=10).tolist()


def test_label_counts_absent_when_switched_off(settings):
    quiet = ClientSettings(**{**settings.__dict__, "send_label_counts": False})
    reply = build_client_app(quiet)(train_message(initial_model()), context())
    assert LABEL_COUNTS_KEY not in reply.content
    assert set(reply.content.keys()) == {"arrays", "metrics"}


def test_run_config_path_trains_the_same_model(settings, fake_mnist_root):
    """Under ``flwr run`` the app reads its settings from the flat run config."""
    run_config = {"dataset.name": "mnist", "model.name": "lenet5", "seed": 0,
                  "partition.name": "iid", "partition.test-fraction": 0.1,
                  "data.root": "/nonexistent", "data.cache-dir": settings.data.cache_dir,
                  "client.send-label-counts": False, "client.num-cpus": 1}
    node = context(0, run_config)
    node.node_config["data-root"] = str(fake_mnist_root)  # the SuperNode's own copy
    from_run_config = build_client_app()(train_message(initial_model()), node)
    from_settings = build_client_app(settings)(train_message(initial_model()), context())
    assert LABEL_COUNTS_KEY not in from_run_config.content
    left = from_run_config.content["arrays"].to_torch_state_dict()
    right = from_settings.content["arrays"].to_torch_state_dict()
    for name in left:  # same data, seed and shuffling: identical training
        assert torch.equal(left[name], right[name]), name


# ---- FedProx -------------------------------------------------------------------------
def test_proximal_term_by_hand():
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.copy_(torch.tensor([3.0]))
    anchor = [torch.tensor([[1.0, 0.0]]), torch.tensor([1.0])]
    # 0.5 * ((1-1)^2 + (2-0)^2 + (3-1)^2) = 4
    assert proximal_term(model, anchor).item() == pytest.approx(4.0)


def test_proximal_mu_keeps_weights_closer_to_the_global_model(settings):
    app = build_client_app(settings)
    start = initial_model()
    drift = {}
    for mu in (None, 0.0, 1.0):
        reply = app(train_message(start, proximal_mu=mu, lr=0.05), context())
        drift[mu] = distance(reply_model(reply), start)
    assert drift[None] == drift[0.0]  # no proximal-mu in the config = FedAvg
    assert drift[1.0] < 0.8 * drift[0.0], drift


def test_train_with_zero_mu_equals_plain_sgd(settings):
    data = client_data(settings, context()).train
    models = [initial_model(), initial_model()]
    for model, mu in zip(models, (0.0, None), strict=True):
        kwargs = {} if mu is None else {"proximal_mu": mu}
        train(model, data, epochs=1, batch_size=64, lr=0.05,
              generator=torch.Generator().manual_seed(3), **kwargs)
    assert distance(*models) == 0.0
