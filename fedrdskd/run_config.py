"""The ``flwr run`` run config: flat, dotted, kebab-case keys -> an :class:`ExperimentConfig`.

``[tool.flwr.app.config]`` in ``pyproject.toml`` mirrors the Hydra config
(``fedrdskd/conf``): the top-level keys of ``config.yaml`` and its groups, flattened with
dots and kebab-case, and every strategy preset's options in a section of its own
(``strategy.<preset>.*``, one per file of ``fedrdskd/conf/strategy``), because a
SuperLink refuses run-config keys the table does not list. ``tests/test_experiment.py``
checks the mirror both ways (every key of the Hydra config is listed with its value,
and nothing else is).

``strategy.name`` names a preset, as Hydra's ``strategy=`` does; the run uses that
preset's section and, for a distillation method, that of its ``strategy.base`` (e.g.
FedProx's ``proximal-mu`` under FedRDSKD on FedProx); keys directly under ``strategy.``
apply to any strategy and win. A preset whose strategy has another name (``fedftg_cpu``
is FedFTG) says so in its section's ``name``.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any

from omegaconf import OmegaConf

from fedrdskd.experiment import ExperimentConfig, experiment_from_dict
from fedrdskd.strategies.registry import DISTILLATION_METHODS, STRATEGY_NAMES

STRATEGY_PRESETS = tuple(sorted(
    entry.name.removesuffix(".yaml")
    for entry in resources.files("fedrdskd.conf.strategy").iterdir()
    if entry.name.endswith(".yaml")))
"""The files of ``fedrdskd/conf/strategy`` (Hydra's ``strategy=`` choices)."""


def preset_options(preset: str) -> dict[str, Any]:
    """The options of strategy preset ``preset`` as its Hydra file sets them (``{}`` if none)."""
    if preset not in STRATEGY_PRESETS:
        return {}
    text = (resources.files("fedrdskd.conf.strategy") / f"{preset}.yaml").read_text()
    return dict(OmegaConf.to_container(OmegaConf.create(text)))  # type: ignore[arg-type]


LIST_OPTIONS = ("validation_betas",)
"""Strategy options that are lists; a run config (no lists) gives them as ``"0.5,1"``."""


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
    """The chosen preset's options from a run config's (unflattened) ``strategy`` section.

    Returns
    -------
    dict[str, Any]
        The strategy's ``name`` and options, as the Hydra config has them.

    Raises
    ------
    ValueError
        For a section that names no preset, or a list option that is not numbers.
    """
    sections = {k: v for k, v in strategy.items() if isinstance(v, Mapping)}
    flat = {k: v for k, v in strategy.items() if not isinstance(v, Mapping)}
    allowed = sorted(set(STRATEGY_PRESETS) | set(STRATEGY_NAMES))
    unknown = sorted(set(sections) - set(allowed))
    if unknown:
        raise ValueError(f"Invalid run-config section strategy.{unknown[0]}.*: allowed "
                         f"sections are {', '.join(allowed)}.")
    preset = flat.pop("name", "fedavg")
    name = sections.get(preset, {}).get("name", preset)
    options: dict[str, Any] = {}
    if name in DISTILLATION_METHODS:
        options.update(sections.get(flat.get("base", "fedavg"), {}))
    options.update(sections.get(preset, {}))
    options.update(flat)
    options["name"] = name
    if name not in DISTILLATION_METHODS:
        options.pop("base", None)  # only distillation methods sit on a base strategy
    for key in [key for key in options if key.replace("-", "_") in LIST_OPTIONS]:
        options[key] = run_config_list(key, options[key])
    return options


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
