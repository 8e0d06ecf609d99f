"""The ClientApp: local training and evaluation on one non-IID partition.

The reply contract (what the fedrdskd strategies rely on) and every key of it are in
:mod:`fedrdskd.protocol`: a training reply carries the trained model, its metrics
(``num-examples``, ``train-loss`` and ``train-seconds``, the client's own wall seconds of
local training) and, unless ``client.send_label_counts=false``, the per-class training
label counts (FedRDSKD works without them, FedFTG needs them). Per-round training
settings come from the server in the message's config. A ``query`` message is answered
with the node's partition id (see :mod:`fedrdskd.sampling`). Data and model settings come
from :class:`~fedrdskd.experiment.ClientSettings`: passed in by the simulation, or read
from ``context.run_config`` under ``flwr run``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedrdskd import protocol as wire
from fedrdskd.clients.training import evaluate, train
from fedrdskd.experiment import ClientSettings
from fedrdskd.kd.interpolation import interpolate_states
from fedrdskd.models import model_factory
from fedrdskd.partitions import ClientData, load_client_data
from fedrdskd.run_config import experiment_from_run_config
from fedrdskd.sampling import partition_query_reply


def settings_from_context(context: Context) -> ClientSettings:
    """Client settings of a ``flwr run``: the run config, with node-config overrides.

    A SuperNode may set ``data-root`` in its node config to point at its own copy of
    the data.
    """
    settings = experiment_from_run_config(context.run_config).client
    node_root = context.node_config.get(wire.DATA_ROOT_KEY)
    if node_root:
        data = type(settings.data)(**{**settings.data.__dict__, "root": str(node_root)})
        settings = type(settings)(**{**settings.__dict__, "data": data})
    return settings


def client_data(settings: ClientSettings, context: Context) -> ClientData:
    """The node's partition (memoised per process by :func:`load_client_data`)."""
    partition = settings.partition
    return load_client_data(
        settings.data.dataset, settings.data.root,
        partition_id=partition_of(context),
        num_partitions=int(context.node_config[wire.NUM_PARTITIONS_KEY]),
        scheme=partition.scheme, alpha=partition.alpha,
        classes_per_client=partition.classes_per_client,
        min_partition_size=partition.min_partition_size,
        test_fraction=partition.test_fraction, seed=settings.seed,
        download=settings.data.download, cache_dir=settings.data.cache_dir)


def partition_of(context: Context) -> int:
    """The node's partition id (from its node config)."""
    return int(context.node_config[wire.PARTITION_ID_KEY])


def received_model(settings: ClientSettings, message: Message | None) -> torch.nn.Module:
    """Build the model and load the global weights the server sent (if a message)."""
    model = model_factory(settings.model, settings.data.dataset)()
    if message is not None:
        model.load_state_dict(message.content.array_records[wire.ARRAYS_KEY]
                              .to_torch_state_dict())
    return model


def config_number(config: ConfigRecord, key: str, default: float | None = None) -> float:
    """The number ``key`` of the server's config (``default`` if it is absent).

    Raises
    ------
    ValueError
        Naming the key, if it is missing without a default or not a number.
    """
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"The server's training config has {key}={value!r}: expected a "
                         "number (is the ServerApp this package's?).")
    return float(value)


def shuffle_generator(seed: int, server_round: int, partition_id: int) -> torch.Generator:
    """A generator seeded by (experiment seed, round, partition): reproducible shuffles."""
    state = np.random.SeedSequence([seed, server_round, partition_id]).generate_state(1)
    return torch.Generator().manual_seed(int(state[0]))


def handle_train(message: Message, context: Context, settings: ClientSettings) -> Message:
    """Train the received model locally and reply with weights, metrics, label counts."""
    torch.set_num_threads(settings.num_threads)
    data = client_data(settings, context)
    model = received_model(settings, message)
    config = message.content.config_records[wire.CONFIG_KEY]
    server_round = int(config_number(config, wire.SERVER_ROUND_KEY, 0))
    generator = shuffle_generator(int(config_number(config, wire.SEED_KEY, settings.seed)),
                                  server_round, partition_of(context))
    started = time.perf_counter()
    train_loss = train(
        model, data.train, epochs=int(config_number(config, wire.LOCAL_EPOCHS_KEY)),
        batch_size=int(config_number(config, wire.BATCH_SIZE_KEY)),
        lr=config_number(config, wire.LR_KEY),
        momentum=config_number(config, wire.MOMENTUM_KEY, 0.0),
        weight_decay=config_number(config, wire.WEIGHT_DECAY_KEY, 0.0),
        proximal_mu=config_number(config, wire.PROXIMAL_MU_KEY, 0.0), generator=generator)
    train_seconds = time.perf_counter() - started
    content = RecordDict({
        wire.ARRAYS_KEY: ArrayRecord(model.state_dict()),
        wire.METRICS_KEY: MetricRecord({wire.TRAIN_LOSS_KEY: train_loss,
                                        wire.NUM_EXAMPLES_KEY: len(data.train),
                                        wire.TRAIN_SECONDS_KEY: train_seconds}),
    })
    if settings.send_label_counts:
        counts = [int(n) for n in data.label_counts]
        content[wire.LABEL_COUNTS_KEY] = ConfigRecord({wire.LABEL_COUNTS_KEY: counts})
    return Message(content=content, reply_to=message)


def handle_evaluate(message: Message, context: Context,
                    settings: ClientSettings) -> Message:
    """Evaluate the received model on this client's held-out local test split."""
    torch.set_num_threads(settings.num_threads)
    data = client_data(settings, context)
    model = received_model(settings, message)
    loss, accuracy = evaluate(model, data.test)
    metrics = MetricRecord({wire.EVAL_LOSS_KEY: loss, wire.EVAL_ACCURACY_KEY: accuracy,
                            wire.NUM_EXAMPLES_KEY: len(data.test)})
    return Message(content=RecordDict({wire.METRICS_KEY: metrics}), reply_to=message)


def handle_candidates(message: Message, context: Context,
                      settings: ClientSettings) -> Message:
    """Evaluate the points ``start + β (end − start)`` on the held-out local split.

    Answers a distillation strategy's candidate validation (see
    :mod:`fedrdskd.protocol`): only pooled losses and accuracies leave the client.
    """
    torch.set_num_threads(settings.num_threads)
    data = client_data(settings, context)
    start = message.content.array_records[wire.CANDIDATE_START_KEY].to_torch_state_dict()
    end = message.content.array_records[wire.CANDIDATE_END_KEY].to_torch_state_dict()
    config = message.content.config_records[wire.CANDIDATE_CONFIG_KEY]
    betas = config[wire.BETAS_KEY]
    if not isinstance(betas, list):
        raise ValueError(f"A candidate validation message has {wire.BETAS_KEY}={betas!r}: "
                         "expected a list of numbers.")
    model = received_model(settings, None)
    losses, accuracies = [], []
    for beta in betas:
        model.load_state_dict(interpolate_states(start, end, float(beta)))
        loss, accuracy = evaluate(model, data.test)
        losses.append(loss)
        accuracies.append(accuracy)
    metrics = MetricRecord({wire.LOSSES_KEY: losses, wire.ACCURACIES_KEY: accuracies,
                            wire.NUM_EXAMPLES_KEY: len(data.test)})
    return Message(content=RecordDict({wire.CANDIDATE_REPLY_KEY: metrics}), reply_to=message)


def handle_query(message: Message, context: Context) -> Message:
    """Tell the server this node's partition id (it samples clients by seed with it)."""
    return partition_query_reply(message, partition_of(context))


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

    @app.evaluate(wire.CANDIDATES_ACTION)
    def _candidates(message: Message, context: Context) -> Message:
        return handle_candidates(message, context,
                                 settings or settings_from_context(context))

    @app.query()
    def _query(message: Message, context: Context) -> Message:
        return handle_query(message, context)

    return app


app = build_client_app()
