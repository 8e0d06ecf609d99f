"""One experiment's settings as frozen dataclasses, parsed and validated from a plain dict.

Both entry points end here: the Hydra CLI passes its resolved config as a nested dict,
and ``flwr run .`` passes the app's run config (flat, dotted, kebab-case keys) which
:func:`experiment_from_run_config` unflattens. Everything downstream (ServerApp,
ClientApp, strategies, data) receives these dataclasses or plain keyword arguments,
never a Hydra ``DictConfig``. Invalid values raise ``ValueError`` naming the key and
the allowed values *before* Ray starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from fedrdskd.checks import check_choice, check_number
from fedrdskd.data import DATASETS
from fedrdskd.models import MODEL_NAMES
from fedrdskd.partitions import PARTITION_SCHEMES
from fedrdskd.strategies.registry import DISTILLATION_METHODS, STRATEGY_NAMES

MAX_ROUND_TIMEOUT = 7 * 24 * 3600.0  # a week; a finite bound catches unit mistakes


@dataclass(frozen=True)
class DataSettings:
    """Where and how a client or the server finds its dataset."""

    dataset: str = "mnist"
    root: str | None = None
    download: bool = False
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
    seed: int
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
class StrategySettings:
    """Which strategy and its own keyword arguments (snake_case)."""

    name: str = "fedavg"
    target: str | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole run: federation size, local training, strategy, data, resources.

    Fault tolerance: a round samples ``max(fraction_train * connected, min_train_nodes)``
    clients, waits at most ``round_timeout`` seconds for their replies and proceeds
    (aggregates) when at least ``min_train_nodes`` answered, else leaves the global
    model unchanged for that round. ``resume_from`` (a ``checkpoint.pt`` or a run
    directory holding one) continues an interrupted run; see :mod:`fedrdskd.checkpoint`.
    """

    client: ClientSettings
    server: ServerSettings
    strategy: StrategySettings
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
    resume_from: str | None = None
    output_dir: str | None = None
    resolved: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def seed(self) -> int:
        """The experiment seed (partitions, sampling, initialisation)."""
        return self.client.seed


def _unset(value: Any) -> bool:
    """Hydra's null, or the empty string a ``flwr run`` config uses for it."""
    return value in (None, "", "null")


def _optional_count(key: str, value: Any) -> int | None:
    return None if _unset(value) else check_number(key, value, 1, 2**31 - 1, integer=True)


def _optional_path(value: Any) -> str | None:
    return None if _unset(value) else str(value)


def _parse_partition(raw: Mapping[str, Any], num_classes: int) -> PartitionSettings:
    scheme = check_choice("partition.name", raw.get("name", "dirichlet"), PARTITION_SCHEMES)
    return PartitionSettings(
        scheme=scheme,
        alpha=check_number("partition.alpha", raw.get("alpha", 0.5), 0.0, math.inf,
                      low_open=True),
        classes_per_client=check_number("partition.classes_per_client",
                                   raw.get("classes_per_client", 2), 1, num_classes,
                                   integer=True),
        min_partition_size=check_number("partition.min_partition_size",
                                   raw.get("min_partition_size", 10), 0, math.inf,
                                   integer=True),
        test_fraction=check_number("partition.test_fraction", raw.get("test_fraction", 0.1),
                              0.0, 0.9),
    )


def _parse_strategy(raw: Mapping[str, Any]) -> StrategySettings:
    name = check_choice("strategy.name", raw.get("name", "fedavg"), STRATEGY_NAMES)
    options = {k: v for k, v in raw.items() if k not in ("name", "_target_")}
    return StrategySettings(name=name, target=raw.get("_target_"),
                            options=MappingProxyType(options))


def experiment_from_dict(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Parse and validate a nested experiment dict (Hydra's resolved config).

    Parameters
    ----------
    raw : Mapping[str, Any]
        Nested plain dict with the keys of ``fedrdskd/conf/config.yaml``.

    Returns
    -------
    ExperimentConfig
        Validated settings; ``resolved`` keeps ``raw`` for the results file.

    Raises
    ------
    ValueError
        Naming the offending key, its value and the allowed values or range.
    """
    dataset = check_choice("dataset.name", raw.get("dataset", {}).get("name"),
                      tuple(DATASETS))
    num_classes = DATASETS[dataset].num_classes
    data_raw = raw.get("data", {})
    client_raw = raw.get("client", {})
    server_raw = raw.get("server", {})
    client = ClientSettings(
        data=DataSettings(dataset=dataset, root=_optional_path(data_raw.get("root")),
                          download=bool(data_raw.get("download", False)),
                          cache_dir=_optional_path(data_raw.get("cache_dir"))),
        partition=_parse_partition(raw.get("partition", {}), num_classes),
        model=check_choice("model.name", raw.get("model", {}).get("name"), MODEL_NAMES),
        seed=check_number("seed", raw.get("seed", 0), 0, 2**31 - 1, integer=True),
        send_label_counts=bool(client_raw.get("send_label_counts", True)),
        num_threads=max(1, int(math.ceil(check_number(
            "client.num_cpus", client_raw.get("num_cpus", 1), 0.0, 1024, low_open=True)))),
    )
    server = ServerSettings(
        device=str(server_raw.get("device", "cpu")),
        num_threads=check_number("server.num_threads", server_raw.get("num_threads", 2), 1,
                            1024, integer=True),
        evaluate_ensemble=bool(server_raw.get("evaluate_ensemble", True)),
        eval_batch_size=check_number("server.eval_batch_size",
                                server_raw.get("eval_batch_size", 1000), 1, 2**20,
                                integer=True),
        ensemble_eval_samples=_optional_count(
            "server.ensemble_eval_samples", server_raw.get("ensemble_eval_samples")),
        save_client_models=bool(server_raw.get("save_client_models", False)),
    )
    num_clients = check_number("num_clients", raw.get("num_clients", 20), 1, 10**6,
                          integer=True)
    return ExperimentConfig(
        client=client,
        server=server,
        strategy=_parse_strategy(raw.get("strategy", {})),
        num_rounds=check_number("num_rounds", raw.get("num_rounds", 30), 1, 10**6, integer=True),
        num_clients=num_clients,
        fraction_train=check_number("fraction_train", raw.get("fraction_train", 0.5), 0.0, 1.0,
                               low_open=True),
        fraction_evaluate=check_number("fraction_evaluate", raw.get("fraction_evaluate", 0.0),
                                  0.0, 1.0),
        local_epochs=check_number("local_epochs", raw.get("local_epochs", 1), 1, 10**4,
                             integer=True),
        batch_size=check_number("batch_size", raw.get("batch_size", 32), 1, 2**20, integer=True),
        lr=check_number("lr", raw.get("lr", 0.01), 0.0, 100.0, low_open=True),
        momentum=check_number("momentum", raw.get("momentum", 0.9), 0.0, 1.0),
        weight_decay=check_number("weight_decay", raw.get("weight_decay", 0.0), 0.0, 1.0),
        client_num_cpus=float(client_raw.get("num_cpus", 1)),
        client_num_gpus=check_number("client.num_gpus", client_raw.get("num_gpus", 0.0), 0.0,
                                1024),
        min_train_nodes=check_number("min_train_nodes", raw.get("min_train_nodes", 1), 1,
                                num_clients, integer=True),
        round_timeout=check_number("round_timeout", raw.get("round_timeout", 3600.0), 0.0,
                              MAX_ROUND_TIMEOUT, low_open=True),
        resume_from=_optional_path(raw.get("resume_from")),
        output_dir=_optional_path(raw.get("output_dir")),
        resolved=MappingProxyType(dict(raw)),
    )


def unflatten_run_config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """Turn Flower's flat run config (``"partition.alpha"``, kebab-case) into a nested dict.

    Parameters
    ----------
    run_config : Mapping[str, Any]
        ``context.run_config`` from ``[tool.flwr.app.config]`` plus ``--run-config``.

    Returns
    -------
    dict[str, Any]
        The same nesting and snake_case keys as the Hydra config.
    """
    nested: dict[str, Any] = {}
    for flat_key, value in run_config.items():
        parts = [part.replace("-", "_") for part in str(flat_key).split(".")]
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def select_strategy_options(strategy: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen strategy's options from a run config's ``strategy`` section.

    A SuperLink rejects run-config keys that ``[tool.flwr.app.config]`` does not list,
    so that table lists every strategy's options in its own section
    (``strategy.fedrdskd.generator-steps``, ``strategy.fedprox.proximal-mu`` ...).
    The run uses the section of ``strategy.name`` and, for a distillation method, of
    its ``strategy.base`` (e.g. FedProx's ``proximal-mu`` under FedRDSKD on FedProx);
    keys directly under ``strategy.`` apply to any strategy and win.

    Raises
    ------
    ValueError
        For a section that names no strategy.
    """
    sections = {k: v for k, v in strategy.items() if isinstance(v, Mapping)}
    flat = {k: v for k, v in strategy.items() if not isinstance(v, Mapping)}
    unknown = sorted(set(sections) - set(STRATEGY_NAMES))
    if unknown:
        raise ValueError(f"Invalid run-config section strategy.{unknown[0]}.*: allowed "
                         f"sections are {', '.join(STRATEGY_NAMES)}.")
    name = flat.get("name", "fedavg")
    options: dict[str, Any] = {}
    if name in DISTILLATION_METHODS:
        options.update(sections.get(flat.get("base", "fedavg"), {}))
    options.update(sections.get(name, {}))
    options.update(flat)
    if name not in DISTILLATION_METHODS:
        options.pop("base", None)  # only distillation methods sit on a base strategy
    for key in [key for key in options if key.replace("-", "_") in LIST_OPTIONS]:
        options[key] = run_config_list(key, options[key])
    return options


LIST_OPTIONS = ("validation_betas",)
"""Strategy options that are lists; a run config (no lists) gives them as ``"0.5,1"``."""


def run_config_list(key: str, value: Any) -> list[float]:
    """``"0.5,1"`` -> ``[0.5, 1.0]`` (``""`` -> ``[]``); lists pass through.

    Raises
    ------
    ValueError
        Naming the key, if an item is not a number.
    """
    if not isinstance(value, str):
        return list(value)
    try:
        return [float(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"Invalid run-config value strategy.{key}={value!r}: expected "
                         "comma-separated numbers, e.g. \"0.5,1\".") from None


def experiment_from_run_config(run_config: Mapping[str, Any]) -> ExperimentConfig:
    """Parse ``context.run_config`` of a ``flwr run`` into an :class:`ExperimentConfig`."""
    raw = unflatten_run_config(run_config)
    if isinstance(raw.get("strategy"), Mapping):
        raw["strategy"] = select_strategy_options(raw["strategy"])
    return experiment_from_dict(raw)
