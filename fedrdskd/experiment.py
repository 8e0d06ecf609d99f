"""One experiment's settings as frozen dataclasses, parsed and validated from a plain dict.

Both entry points end here: the Hydra CLI passes its resolved config as a nested dict,
and ``flwr run .`` passes the app's run config (flat, dotted, kebab-case keys) which
:func:`fedrdskd.run_config.experiment_from_run_config` unflattens. Everything downstream (ServerApp,
ClientApp, strategies, data) receives these dataclasses or plain keyword arguments,
never a Hydra ``DictConfig``. Invalid values raise ``ValueError`` naming the key and
the allowed values *before* Ray starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from types import MappingProxyType
from typing import Any

from fedrdskd.checks import check_choice, check_flag, check_number
from fedrdskd.data import DATASETS
from fedrdskd.models import MODEL_NAMES
from fedrdskd.partitions import PARTITION_SCHEMES
from fedrdskd.strategies.outliers import DEFAULT_MAX_NORM_RATIO, DEFAULT_MAX_NUM_EXAMPLES_RATIO
from fedrdskd.strategies.registry import STRATEGY_NAMES

MAX_ROUND_TIMEOUT = 7 * 24 * 3600.0  # a week; a finite bound catches unit mistakes


@dataclass(frozen=True)
class DataSettings:
    """Where and how a client or the server finds its dataset."""

    dataset: str = "mnist"
    root: str | None = None
    download: bool = True
    cache_dir: str | None = None


@dataclass(frozen=True)
class PartitionSettings:
    """How the training set is split over clients (seeded by the experiment seed)."""

    scheme: str = "dirichlet"
    alpha: float = 0.5
    classes_per_client: int = 2
    min_partition_size: int = 10
    test_fraction: float = 0.1


@dataclass(frozen=True)
class ClientSettings:
    """What every ClientApp needs besides the per-round training config."""

    data: DataSettings
    partition: PartitionSettings
    model: str
    seed: int = 0
    send_label_counts: bool = True
    num_threads: int = 1


@dataclass(frozen=True)
class ServerSettings:
    """Server-side resources and diagnostics."""

    device: str = "cpu"
    num_threads: int = 2
    evaluate_ensemble: bool = True
    eval_batch_size: int = 1000
    ensemble_eval_samples: int | None = None
    save_client_models: bool = False


@dataclass(frozen=True)
class ScreeningSettings:
    """The outlier screen of the clients' replies; ``None`` switches a check off.

    See :class:`~fedrdskd.strategies.outliers.OutlierScreen`.
    """

    max_num_examples_ratio: float | None = DEFAULT_MAX_NUM_EXAMPLES_RATIO
    max_norm_ratio: float | None = DEFAULT_MAX_NORM_RATIO


@dataclass(frozen=True)
class StrategySettings:
    """Which strategy and its own keyword arguments (snake_case)."""

    name: str = "fedavg"
    target: str | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole run: federation size, local training, strategy, data, resources.

    Fault tolerance: before round 1 the ServerApp waits at most ``connect_timeout``
    seconds for ``num_clients`` nodes and at most ``round_timeout`` seconds for their
    partition ids, and stops with a message if some never come, unless
    ``allow_unseeded_sampling`` (then client sampling does not follow the seed). A round
    samples ``max(fraction_train * connected, min_train_nodes)`` clients, waits at most
    ``round_timeout`` seconds for their replies and proceeds (aggregates) when at least
    ``min_train_nodes`` answered, else leaves the global model unchanged for that round.
    ``resume_from`` (a ``checkpoint.pt`` or a run directory holding one) continues an
    interrupted run; see :mod:`fedrdskd.checkpoint`.
    """

    client: ClientSettings
    server: ServerSettings
    strategy: StrategySettings
    screening: ScreeningSettings = ScreeningSettings()
    num_rounds: int = 30
    num_clients: int = 20
    fraction_train: float = 0.5
    fraction_evaluate: float = 0.0
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    client_num_cpus: float = 1.0
    client_num_gpus: float = 0.0
    min_train_nodes: int = 1
    round_timeout: float = 3600.0
    connect_timeout: float = 120.0
    allow_unseeded_sampling: bool = False
    resume_from: str | None = None
    output_dir: str | None = None
    resolved: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def seed(self) -> int:
        """The experiment seed (partitions, sampling, initialisation)."""
        return self.client.seed


def defaults(settings: type) -> dict[str, Any]:
    """The field defaults of a settings dataclass: the one place each default is written.

    A key missing from the parsed dict (an older ``results.json``, a partial dict in a
    test or benchmark) takes this value; ``fedrdskd/conf/config.yaml``,
    ``[tool.flwr.app.config]`` and the README mirror it (checked by the tests).
    """
    return {item.name: item.default for item in fields(settings) if item.default is not MISSING}


def _unset(value: Any) -> bool:
    """Hydra's null, or the empty string a ``flwr run`` config uses for it."""
    return value in (None, "", "null")


def _optional_count(key: str, value: Any) -> int | None:
    return None if _unset(value) else check_number(key, value, 1, 2**31 - 1, integer=True)


def _optional_ratio(key: str, value: Any) -> float | None:
    return None if _unset(value) else check_number(key, value, 1.0, math.inf, low_open=True)


def _optional_path(value: Any) -> str | None:
    return None if _unset(value) else str(value)


def _section(raw: Mapping[str, Any], key: str, settings: type) -> dict[str, Any]:
    """``raw[key]`` over the defaults of ``settings``."""
    return {**defaults(settings), **raw.get(key, {})}


def _parse_partition(raw: Mapping[str, Any], num_classes: int) -> PartitionSettings:
    partition = _section(raw, "partition", PartitionSettings)
    return PartitionSettings(
        scheme=check_choice("partition.name", partition.get("name", partition["scheme"]),
                            PARTITION_SCHEMES),
        alpha=check_number("partition.alpha", partition["alpha"], 0.0, math.inf,
                           low_open=True),
        classes_per_client=check_number("partition.classes_per_client",
                                        partition["classes_per_client"], 1, num_classes,
                                        integer=True),
        min_partition_size=check_number("partition.min_partition_size",
                                        partition["min_partition_size"], 0, math.inf,
                                        integer=True),
        test_fraction=check_number("partition.test_fraction", partition["test_fraction"],
                                   0.0, 0.9),
    )


def _parse_strategy(raw: Mapping[str, Any]) -> StrategySettings:
    strategy = raw.get("strategy", {})
    name = check_choice("strategy.name",
                        strategy.get("name", defaults(StrategySettings)["name"]),
                        STRATEGY_NAMES)
    options = {k: v for k, v in strategy.items() if k not in ("name", "_target_")}
    return StrategySettings(name=name, target=strategy.get("_target_"),
                            options=MappingProxyType(options))


def _parse_client(raw: Mapping[str, Any], dataset: str, num_cpus: float) -> ClientSettings:
    data = _section(raw, "data", DataSettings)
    client = _section(raw, "client", ClientSettings)
    return ClientSettings(
        data=DataSettings(dataset=dataset, root=_optional_path(data["root"]),
                          download=check_flag("data.download", data["download"]),
                          cache_dir=_optional_path(data["cache_dir"])),
        partition=_parse_partition(raw, DATASETS[dataset].num_classes),
        model=check_choice("model.name", raw.get("model", {}).get("name"), MODEL_NAMES),
        seed=check_number("seed", raw.get("seed", defaults(ClientSettings)["seed"]), 0,
                          2**31 - 1, integer=True),
        send_label_counts=check_flag("client.send_label_counts",
                                     client["send_label_counts"]),
        num_threads=max(1, int(math.ceil(num_cpus))),
    )


def _parse_server(raw: Mapping[str, Any]) -> ServerSettings:
    server = _section(raw, "server", ServerSettings)
    return ServerSettings(
        device=str(server["device"]),
        num_threads=check_number("server.num_threads", server["num_threads"], 1, 1024,
                                 integer=True),
        evaluate_ensemble=check_flag("server.evaluate_ensemble", server["evaluate_ensemble"]),
        eval_batch_size=check_number("server.eval_batch_size", server["eval_batch_size"], 1,
                                     2**20, integer=True),
        ensemble_eval_samples=_optional_count("server.ensemble_eval_samples",
                                              server["ensemble_eval_samples"]),
        save_client_models=check_flag("server.save_client_models",
                                      server["save_client_models"]),
    )


def _parse_screening(raw: Mapping[str, Any]) -> ScreeningSettings:
    screening = _section(raw, "screening", ScreeningSettings)
    return ScreeningSettings(
        max_num_examples_ratio=_optional_ratio("screening.max_num_examples_ratio",
                                               screening["max_num_examples_ratio"]),
        max_norm_ratio=_optional_ratio("screening.max_norm_ratio",
                                       screening["max_norm_ratio"]))


def experiment_from_dict(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Parse and validate a nested experiment dict (Hydra's resolved config).

    Parameters
    ----------
    raw : Mapping[str, Any]
        Nested plain dict with the keys of ``fedrdskd/conf/config.yaml``; missing keys
        take the dataclasses' defaults.

    Returns
    -------
    ExperimentConfig
        Validated settings; ``resolved`` keeps ``raw`` for the results file.

    Raises
    ------
    ValueError
        Naming the offending key, its value and the allowed values or range.
    """
    top = {**defaults(ExperimentConfig), **raw}
    client_raw = raw.get("client", {})
    dataset = check_choice("dataset.name", raw.get("dataset", {}).get("name"), tuple(DATASETS))
    num_cpus = check_number("client.num_cpus",
                            client_raw.get("num_cpus", top["client_num_cpus"]), 0.0, 1024,
                            low_open=True)
    num_clients = check_number("num_clients", top["num_clients"], 1, 10**6, integer=True)
    return ExperimentConfig(
        client=_parse_client(raw, dataset, num_cpus),
        server=_parse_server(raw),
        strategy=_parse_strategy(raw),
        screening=_parse_screening(raw),
        num_rounds=check_number("num_rounds", top["num_rounds"], 1, 10**6, integer=True),
        num_clients=num_clients,
        fraction_train=check_number("fraction_train", top["fraction_train"], 0.0, 1.0,
                                    low_open=True),
        fraction_evaluate=check_number("fraction_evaluate", top["fraction_evaluate"], 0.0, 1.0),
        local_epochs=check_number("local_epochs", top["local_epochs"], 1, 10**4, integer=True),
        batch_size=check_number("batch_size", top["batch_size"], 1, 2**20, integer=True),
        lr=check_number("lr", top["lr"], 0.0, 100.0, low_open=True),
        momentum=check_number("momentum", top["momentum"], 0.0, 1.0),
        weight_decay=check_number("weight_decay", top["weight_decay"], 0.0, 1.0),
        client_num_cpus=float(num_cpus),
        client_num_gpus=check_number("client.num_gpus",
                                     client_raw.get("num_gpus", top["client_num_gpus"]),
                                     0.0, 1024),
        min_train_nodes=check_number("min_train_nodes", top["min_train_nodes"], 1,
                                     num_clients, integer=True),
        round_timeout=check_number("round_timeout", top["round_timeout"], 0.0,
                                   MAX_ROUND_TIMEOUT, low_open=True),
        connect_timeout=check_number("connect_timeout", top["connect_timeout"], 0.0,
                                     MAX_ROUND_TIMEOUT, low_open=True),
        allow_unseeded_sampling=check_flag("allow_unseeded_sampling",
                                      top["allow_unseeded_sampling"]),
        resume_from=_optional_path(top["resume_from"]),
        output_dir=_optional_path(top["output_dir"]),
        resolved=MappingProxyType(dict(raw)),
    )
