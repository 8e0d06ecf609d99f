"""The ClientApp: local training and evaluation on one non-IID partition.

Reply contract of a training round (what the fedrdskd strategies rely on):

- ``"arrays"``: ``ArrayRecord`` with the trained model;
- ``"metrics"``: ``MetricRecord`` with scalar ``num-examples``, ``train-loss`` and
  ``train-seconds`` (wall seconds of the local training, measured by the client);
- ``"label-counts"``: optional ``ConfigRecord`` ``{"label-counts": [n_0, ..., n_C-1]}``
  with the client's per-class training label counts (switch off with
  ``client.send_label_counts=false``; FedRDSKD works without it, FedFTG needs it).

Per-round training settings come from the server in the message's ``"config"``
(``lr``, ``momentum``, ``weight-decay``, ``local-epochs``, ``batch-size``, ``seed``,
``server-round`` and FedProx's ``proximal-mu``). A ``query`` message is answered with
the node's ``partition-id`` (see :mod:`fedrdskd.sampling`). Data and model settings come from
:class:`~fedrdskd.experiment.ClientSettings`: passed in by the simulation, or read
from ``context.run_config`` under ``flwr run``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrdskd.clients.training import evaluate, train
from fedrdskd.data import dataset_info
from fedrdskd.experiment import ClientSettings, experiment_from_run_config
from fedrdskd.kd.interpolation import interpolate_states
from fedrdskd.models import build_model
from fedrdskd.partitions import ClientData, load_client_data
from fedrdskd.protocol import (ACCURACIES_KEY, BETAS_KEY, CANDIDATE_CONFIG_KEY,
                               CANDIDATE_END_KEY, CANDIDATE_REPLY_KEY, CANDIDATE_START_KEY,
                               CANDIDATES_ACTION, LABEL_COUNTS_KEY, LOSSES_KEY,
                               NUM_EXAMPLES_KEY, TRAIN_SECONDS_KEY)
from fedrdskd.sampling import partition_query_reply


def settings_from_context(context: Context) -> ClientSettings:
    """Client settings of a ``flwr run``: the run config, with node-config overrides.

    A SuperNode may set ``data-root`` in its node config to point at its own copy of
    the data.
    """
    settings = experiment_from_run_config(context.run_config).client
    node_root = context.node_config.get("data-root")
    if node_root:
        data = type(settings.data)(**{**settings.data.__dict__, "root": str(node_root)})
        settings = type(settings)(**{**settings.__dict__, "data": data})
    return settings


def client_data(settings: ClientSettings, context: Context) -> ClientData:
    """This node's partition (memoised per process by :func:`load_client_data`)."""
    partition = settings.partition
    return load_client_data(
        settings.data.dataset, settings.data.root,
        partition_id=int(context.node_config["partition-id"]),
        num_partitions=int(context.node_config["num-partitions"]),
        scheme=partition.scheme, alpha=partition.alpha,
        classes_per_client=partition.classes_per_client,
        min_partition_size=partition.min_partition_size,
        test_fraction=partition.test_fraction, seed=settings.seed,
        download=settings.data.download, cache_dir=settings.data.cache_dir)


def received_model(settings: ClientSettings, message: Message | None) -> torch.nn.Module:
    """Build the model and load the global weights the server sent (if a message)."""
    info = dataset_info(settings.data.dataset)
    model = build_model(settings.model, num_classes=info.num_classes,
                        image_shape=info.image_shape)
    if message is not None:
        model.load_state_dict(message.content["arrays"].to_torch_state_dict())
    return model


def shuffle_generator(seed: int, server_round: int, partition_id: int) -> torch.Generator:
    """A generator seeded by (experiment seed, round, partition): reproducible shuffles."""
    state = np.random.SeedSequence([seed, server_round, partition_id]).generate_state(1)
    return torch.Generator().manual_seed(int(state[0]))


def handle_train(message: Message, context: Context, settings: ClientSettings) -> Message:
    """Train the received model locally and reply with weights, metrics, label counts."""
    torch.set_num_threads(settings.num_threads)
    data = client_data(settings, context)
    model = received_model(settings, message)
    config = message.content["config"]
    server_round = int(config.get("server-round", 0))
    generator = shuffle_generator(int(config.get("seed", settings.seed)), server_round,
                                  int(context.node_config["partition-id"]))
    started = time.perf_counter()
    train_loss = train(
        model, data.train, epochs=int(config["local-epochs"]),
        batch_size=int(config["batch-size"]), lr=float(config["lr"]),
        momentum=float(config.get("momentum", 0.0)),
        weight_decay=float(config.get("weight-decay", 0.0)),
        proximal_mu=float(config.get("proximal-mu", 0.0)), generator=generator)
    train_seconds = time.perf_counter() - started
    content = RecordDict({
        "arrays": ArrayRecord(model.state_dict()),
        "metrics": MetricRecord({"train-loss": train_loss,
                                 "num-examples": len(data.train),
                                 TRAIN_SECONDS_KEY: train_seconds}),
    })
    if settings.send_label_counts:
        counts = [int(n) for n in data.label_counts]
        content[LABEL_COUNTS_KEY] = ConfigRecord({LABEL_COUNTS_KEY: counts})
    return Message(content=content, reply_to=message)


def handle_evaluate(message: Message, context: Context,
                    settings: ClientSettings) -> Message:
    """Evaluate the received model on this client's held-out local test split."""
    torch.set_num_threads(settings.num_threads)
    data = client_data(settings, context)
    model = received_model(settings, message)
    loss, accuracy = evaluate(model, data.test)
    metrics = MetricRecord({"eval-loss": loss, "eval-accuracy": accuracy,
                            "num-examples": len(data.test)})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=message)


def handle_candidates(message: Message, context: Context,
                      settings: ClientSettings) -> Message:
    """Evaluate the points ``start + β (end − start)`` on the held-out local split.

    Answers a distillation strategy's candidate validation (see
    :mod:`fedrdskd.protocol`): only pooled losses and accuracies leave the client.
    """
    torch.set_num_threads(settings.num_threads)
    data = client_data(settings, context)
    start = message.content[CANDIDATE_START_KEY].to_torch_state_dict()
    end = message.content[CANDIDATE_END_KEY].to_torch_state_dict()
    betas = [float(beta) for beta in message.content[CANDIDATE_CONFIG_KEY][BETAS_KEY]]
    model = received_model(settings, None)
    losses, accuracies = [], []
    for beta in betas:
        model.load_state_dict(interpolate_states(start, end, beta))
        loss, accuracy = evaluate(model, data.test)
        losses.append(loss)
        accuracies.append(accuracy)
    metrics = MetricRecord({LOSSES_KEY: losses, ACCURACIES_KEY: accuracies,
                            NUM_EXAMPLES_KEY: len(data.test)})
    return Message(content=RecordDict({CANDIDATE_REPLY_KEY: metrics}), reply_to=message)


def handle_query(message: Message, context: Context) -> Message:
    """Tell the server this node's partition id (it samples clients by seed with it)."""
    return partition_query_reply(message, int(context.node_config["partition-id"]))


def build_client_app(settings: ClientSettings | None = None) -> ClientApp:
    """A ClientApp bound to ``settings``, or reading them from the run config if ``None``."""
    app = ClientApp()

    @app.train()
    def _train(message: Message, context: Context) -> Message:
        return handle_train(message, context, settings or settings_from_context(context))

    @app.evaluate()
    def _evaluate(message: Message, context: Context) -> Message:
        return handle_evaluate(message, context,
                               settings or settings_from_context(context))

    @app.evaluate(CANDIDATES_ACTION)
    def _candidates(message: Message, context: Context) -> Message:
        return handle_candidates(message, context,
                                 settings or settings_from_context(context))

    @app.query()
    def _query(message: Message, context: Context) -> Message:
        return handle_query(message, context)

    return app


app = build_client_app()
