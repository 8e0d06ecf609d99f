"""The ``flwr run`` run config: unflattening, preset sections, and the pyproject mirror.

``[tool.flwr.app.config]`` must list exactly the keys of the Hydra config (every
preset's options in its own section) with the Hydra defaults: checked both ways here.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hydra_config import PYPROJECT, hydra_dict, yaml_names

from fedrdskd.experiment import ExperimentConfig, experiment_from_dict
from fedrdskd.run_config import (
    STRATEGY_PRESETS,
    experiment_from_run_config,
    run_config_list,
    select_strategy_options,
    unflatten_run_config,
)

FLWR_RUN_VALUES = {"num-rounds": 3, "num-clients": 10}
"""Where the run config deliberately differs from the Hydra defaults: a quick run on
a local simulation federation of 10 SuperNodes."""


def flatten(table: Mapping[str, Any], prefix: str = "", *,
            kebab: bool = True) -> Iterator[tuple[str, Any]]:
    """``{"a": {"b_c": 1}}`` -> ``("a.b-c", 1)``: the run config's dotted kebab-case keys."""
    for key, value in table.items():
        name = prefix + (key.replace("_", "-") if kebab else key)
        if isinstance(value, Mapping):
            yield from flatten(value, f"{name}.", kebab=kebab)
        else:
            yield name, value


def pyproject_run_config() -> dict[str, Any]:
    table = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    return dict(flatten(table, kebab=False))


def run_config_value(value: Any) -> Any:
    """How a Hydra value is written in a run config (no nulls, no lists)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(f"{item:g}" for item in value)
    return value


def expected_run_config() -> dict[str, Any]:
    """The run config that mirrors the Hydra config (what pyproject.toml must hold)."""
    config = hydra_dict("data.root=null")
    strategy = config.pop("strategy")
    for name in yaml_names("partition"):  # a run may choose any partition scheme
        config["partition"] = {**hydra_dict(f"partition={name}")["partition"],
                               **config["partition"]}
    expected = {**dict(flatten(config)), "output-dir": "", **FLWR_RUN_VALUES,
                "strategy.name": strategy["name"], "strategy.base": "fedavg"}
    for preset in STRATEGY_PRESETS:
        options = hydra_dict(f"strategy={preset}")["strategy"]
        options.pop("base", None)  # strategy.base, above
        if options["name"] == preset:
            del options["name"]
        expected.update(flatten(options, f"strategy.{preset}."))
    return {key: run_config_value(value) for key, value in expected.items()}


def without_resolved(experiment: ExperimentConfig) -> ExperimentConfig:
    return dataclasses.replace(experiment, resolved={})


def test_pyproject_mirrors_the_hydra_config_both_ways():
    listed, expected = pyproject_run_config(), expected_run_config()
    missing = {key: value for key, value in expected.items() if key not in listed}
    extra = {key: value for key, value in listed.items() if key not in expected}
    assert not missing, f"add to [tool.flwr.app.config]: {missing}"
    assert not extra, f"[tool.flwr.app.config] lists keys the Hydra config has not: {extra}"
    differing = {key: (listed[key], value) for key, value in expected.items()
                 if listed[key] != value or type(listed[key]) is not type(value)}
    assert not differing, f"(pyproject, hydra) values differ: {differing}"


@pytest.mark.parametrize("preset", STRATEGY_PRESETS)
def test_every_preset_runs_under_flwr_run_as_under_hydra(preset):
    from_flwr = experiment_from_run_config({**pyproject_run_config(),
                                            "strategy.name": preset})
    from_hydra = experiment_from_dict(hydra_dict(
        f"strategy={preset}", "num_rounds=3", "num_clients=10", "data.root=null"))
    assert without_resolved(from_flwr) == without_resolved(from_hydra)


def test_fedftg_cpu_is_fedftg_with_a_narrower_generator_under_flwr_run():
    experiment = experiment_from_run_config({**pyproject_run_config(),
                                             "strategy.name": "fedftg_cpu"})
    assert experiment.strategy.name == "fedftg"
    assert experiment.strategy.options["generator_channels"] == 32


def test_unflatten_turns_dots_into_nesting_and_kebab_into_snake():
    flat = {"num-rounds": 3, "partition.alpha": 0.1, "strategy.name": "fedrdskd",
            "strategy.ensemble-weighting": "num-examples", "client.send-label-counts": False}
    assert unflatten_run_config(flat) == {
        "num_rounds": 3, "partition": {"alpha": 0.1},
        "strategy": {"name": "fedrdskd", "ensemble_weighting": "num-examples"},
        "client": {"send_label_counts": False}}


def test_run_config_strategy_options_equal_hydra_options():
    values = {"generator_steps": 10, "student_steps": 7, "strength_decay": 1.0,
              "ensemble_weighting": "num-examples", "base": "fedprox"}
    flat = {"dataset.name": "mnist", "model.name": "lenet5", "strategy.name": "fedrdskd",
            **{f"strategy.{key.replace('_', '-')}": value for key, value in values.items()}}
    from_flwr = experiment_from_run_config(flat)
    overrides = [f"strategy.{key}={value}" for key, value in values.items()]
    from_hydra = experiment_from_dict(hydra_dict("strategy=fedrdskd", *overrides))
    assert from_flwr.strategy.name == from_hydra.strategy.name == "fedrdskd"
    for key, value in values.items():
        assert from_flwr.strategy.options[key] == from_hydra.strategy.options[key] == value
    with pytest.raises(ValueError, match=r"strategy\.name='fedx'"):
        experiment_from_run_config({**flat, "strategy.name": "fedx"})


def test_run_config_uses_the_chosen_strategys_section_only():
    flat = pyproject_run_config()
    fedavg = experiment_from_run_config(flat)
    assert fedavg.strategy.name == "fedavg"
    assert "generator_steps" not in fedavg.strategy.options
    rdskd = experiment_from_run_config({**flat, "strategy.name": "fedrdskd",
                                        "strategy.base": "fedprox",
                                        "strategy.fedrdskd.generator-steps": 7})
    assert rdskd.strategy.options["generator_steps"] == 7
    assert rdskd.strategy.options["proximal_mu"] == 0.01  # from the base's section
    assert "iterations" in rdskd.strategy.options and "lambda_md" not in rdskd.strategy.options
    with pytest.raises(ValueError, match=r"strategy\.fedx\.\*"):
        experiment_from_run_config({**flat, "strategy.fedx.steps": 1})


def test_list_options_come_from_comma_separated_run_config_strings():
    assert run_config_list("validation-betas", "0.5,1") == [0.5, 1.0]
    assert run_config_list("validation-betas", "") == []
    assert run_config_list("validation-betas", [0.25]) == [0.25]
    with pytest.raises(ValueError, match=r"strategy\.validation-betas='half'"):
        run_config_list("validation-betas", "half")
    options = select_strategy_options({"name": "fedrdskd",
                                       "fedrdskd": {"validation-betas": "0.25,1"}})
    assert options["validation-betas"] == [0.25, 1.0]
