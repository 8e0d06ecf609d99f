"""Experiment config: Hydra composition, validation messages, the flat run config.

The real Hydra config (``fedrdskd/conf``) is composed with Hydra's compose API, so a
yaml that stops parsing into an :class:`ExperimentConfig`, or a strategy yaml whose
keys the strategy does not take, fails here rather than after Ray has started.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import fedrdskd.conf
from fedrdskd.cli import check_strategy_options, preflight
from fedrdskd.experiment import (LIST_OPTIONS, ExperimentConfig, experiment_from_dict,
                                 experiment_from_run_config, run_config_list,
                                 select_strategy_options, unflatten_run_config)
from fedrdskd.server_app import build_run_strategy
from fedrdskd.strategies import ClientEnsembleMixin, DistillationMixin
from fedrdskd.strategies.registry import (BASE_STRATEGIES, DISTILLATION_METHODS,
                                          strategy_class)

CONF_DIR = Path(fedrdskd.conf.__file__).parent
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def yaml_names(group: str) -> list[str]:
    """The config group's options (``strategy`` -> fedavg, fedrdskd, ...), from the files."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def hydra_dict(*overrides: str) -> dict:
    """The resolved Hydra config as the CLI passes it to ``experiment_from_dict``."""
    with initialize_config_module("fedrdskd.conf", version_base=None):
        config = compose("config", overrides=list(overrides))
    return OmegaConf.to_container(config, resolve=True)


def without_resolved(experiment: ExperimentConfig) -> ExperimentConfig:
    return dataclasses.replace(experiment, resolved={})


# ---- the real config files ----------------------------------------------------------
def test_default_config_parses_to_the_documented_defaults():
    experiment = experiment_from_dict(hydra_dict("data.root=null"))
    assert experiment.client.data.dataset == "mnist"
    assert experiment.client.model == "lenet5"
    assert experiment.client.partition.scheme == "dirichlet"
    assert experiment.client.partition.alpha == 0.5
    assert experiment.strategy.name == "fedavg" and dict(experiment.strategy.options) == {}
    assert (experiment.num_rounds, experiment.num_clients) == (30, 20)
    assert experiment.fraction_train == 0.5 and experiment.min_train_nodes == 1
    assert experiment.client.data.root is None
    assert experiment.resolved["num_clients"] == 20  # kept for results.json


@pytest.mark.parametrize("group", ["dataset", "model", "partition"])
def test_every_group_yaml_parses(group):
    names = yaml_names(group)
    assert names, f"no yaml files in conf/{group}"
    for name in names:
        experiment = experiment_from_dict(hydra_dict(f"{group}={name}"))
        parsed = {"dataset": experiment.client.data.dataset,
                  "model": experiment.client.model,
                  "partition": experiment.client.partition.scheme}[group]
        assert parsed == name or group == "partition", (group, name, parsed)


strategy_from = build_run_strategy


@pytest.mark.parametrize("yaml_name", yaml_names("strategy"))
def test_every_strategy_yaml_parses_and_builds(yaml_name):
    raw_options = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "strategy"
                                                        / f"{yaml_name}.yaml"))
    experiment = experiment_from_dict(hydra_dict(f"strategy={yaml_name}"))
    assert experiment.strategy.name == raw_options["name"]
    strategy = strategy_from(experiment)
    base = raw_options.get("base", experiment.strategy.name)
    assert isinstance(strategy, BASE_STRATEGIES[base])
    assert isinstance(strategy, ClientEnsembleMixin)
    assert isinstance(strategy, DistillationMixin) == (
        experiment.strategy.name in DISTILLATION_METHODS)
    for key, value in raw_options.items():  # every yaml value reached the strategy
        if key in ("name", "base"):
            continue
        attribute = {"batch_size": "distill_batch_size",
                     "student_optimizer": "student_optimizer_name"}.get(key, key)
        if hasattr(strategy, attribute):
            assert getattr(strategy, attribute) == value, key


@pytest.mark.parametrize("method", sorted(DISTILLATION_METHODS))
@pytest.mark.parametrize("base", sorted(BASE_STRATEGIES))
def test_every_distillation_method_builds_on_every_base(method, base):
    experiment = experiment_from_dict(hydra_dict(f"strategy={method}",
                                                 f"strategy.base={base}"))
    strategy = strategy_from(experiment)
    assert type(strategy) is strategy_class(method, base=base)
    assert isinstance(strategy, BASE_STRATEGIES[base])


def test_bad_strategy_option_is_named_when_built():
    experiment = experiment_from_dict(hydra_dict("strategy=fedrdskd",
                                                 "+strategy.generator_stepz=3"))
    with pytest.raises(ValueError, match="generator_stepz"):
        strategy_from(experiment)


# ---- validation messages ------------------------------------------------------------
@pytest.fixture(scope="module")
def default_raw() -> dict:
    return hydra_dict("data.root=null")


def with_value(raw: dict, dotted_key: str, value) -> dict:
    raw = copy.deepcopy(raw)
    *parents, last = dotted_key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return raw


@pytest.mark.parametrize("key, value, message", [
    ("dataset.name", "imagenet",
     r"dataset\.name='imagenet'.*allowed values are mnist, fashion_mnist, cifar10, svhn"),
    ("model.name", "vgg16", r"model\.name='vgg16'.*allowed values are lenet5, .*resnet18"),
    ("strategy.name", "fedsgd",
     r"strategy\.name='fedsgd'.*allowed values are fedavg, .*fedrdskd, fedftg"),
    ("partition.name", "zipf", r"partition\.name='zipf'.*dirichlet, pathological, iid"),
    ("partition.alpha", 0.0, r"partition\.alpha=0\.0.*\(0\.0, inf\]"),
    ("partition.alpha", -1.0, r"partition\.alpha=-1\.0"),
    ("partition.classes_per_client", 11, r"partition\.classes_per_client=11.*\[1, 10\]"),
    ("fraction_train", 0.0, r"fraction_train=0\.0.*\(0\.0, 1\.0\]"),
    ("fraction_train", 1.5, r"fraction_train=1\.5.*\(0\.0, 1\.0\]"),
    ("fraction_evaluate", -0.1, r"fraction_evaluate=-0\.1"),
    ("num_clients", 0, r"num_clients=0.*\[1, "),
    ("num_rounds", 2.5, r"num_rounds=2\.5.*integer"),
    ("lr", "fast", r"lr='fast'.*must be a number"),
    ("min_train_nodes", 21, r"min_train_nodes=21.*\[1, 20\]"),
    ("round_timeout", 0, r"round_timeout=0"),
    ("seed", -1, r"seed=-1"),
    ("server.ensemble_eval_samples", 0, r"server\.ensemble_eval_samples=0.*\[1, "),
    ("server.ensemble_eval_samples", 2.5, r"server\.ensemble_eval_samples=2\.5.*integer"),
])
def test_bad_values_name_the_key_and_allowed_values(default_raw, key, value, message):
    with pytest.raises(ValueError, match=message):
        experiment_from_dict(with_value(default_raw, key, value))


def test_bad_value_from_the_command_line_is_named():
    with pytest.raises(ValueError, match=r"partition\.alpha=0\b"):
        experiment_from_dict(hydra_dict("partition.alpha=0"))


def test_more_clients_than_samples_fails_in_preflight(fake_mnist_root, tmp_path):
    experiment = experiment_from_dict(hydra_dict(
        f"data.root={fake_mnist_root}", f"data.cache_dir={tmp_path / 'cache'}",
        "num_clients=601"))  # the fake training set has 600 images
    with pytest.raises(ValueError, match=r"num_clients=601.*\[1, 600\]"):
        preflight(experiment, tmp_path)
    assert not (tmp_path / "partition.png").exists()


# ---- flat run config (flwr run) == Hydra dict -------------------------------------------
def test_unflatten_turns_dots_into_nesting_and_kebab_into_snake():
    flat = {"num-rounds": 3, "partition.alpha": 0.1, "strategy.name": "fedrdskd",
            "strategy.ensemble-weighting": "num-examples", "client.send-label-counts": False}
    assert unflatten_run_config(flat) == {
        "num_rounds": 3, "partition": {"alpha": 0.1},
        "strategy": {"name": "fedrdskd", "ensemble_weighting": "num-examples"},
        "client": {"send_label_counts": False}}


def test_pyproject_run_config_equals_hydra_with_the_same_values():
    run_config = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    from_flwr = experiment_from_run_config(run_config)
    from_hydra = experiment_from_dict(hydra_dict(
        "num_rounds=3", "num_clients=10", "fraction_train=0.5", "data.root=null",
        "round_timeout=3600"))
    assert without_resolved(from_flwr) == without_resolved(from_hydra)


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
    run_config = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    flat = dict(_flatten_for_test(run_config))
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


@pytest.mark.parametrize("name", ["fedprox", "fedadam", "fedtrimmedavg", "fedrdskd",
                                  "fedrdskd_paper", "fedftg"])
def test_pyproject_lists_every_option_of_every_strategy_yaml(name):
    run_config = dict(_flatten_for_test(
        tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]))
    options = hydra_dict(f"strategy={name}")["strategy"]
    expected = {f"strategy.{name}.{key.replace('_', '-')}": value
                for key, value in options.items() if key not in ("name", "base")}
    listed = {key: run_config.get(key) for key in expected}
    for key in listed:
        if key.rpartition(".")[2].replace("-", "_") in LIST_OPTIONS:
            listed[key] = run_config_list(key, listed[key])
    assert listed == expected


def test_list_options_come_from_comma_separated_run_config_strings():
    assert run_config_list("validation-betas", "0.5,1") == [0.5, 1.0]
    assert run_config_list("validation-betas", "") == []
    assert run_config_list("validation-betas", [0.25]) == [0.25]
    with pytest.raises(ValueError, match=r"strategy\.validation-betas='half'"):
        run_config_list("validation-betas", "half")
    options = select_strategy_options({"name": "fedrdskd",
                                       "fedrdskd": {"validation-betas": "0.25,1"}})
    assert options["validation-betas"] == [0.25, 1.0]


def _flatten_for_test(table, prefix=""):
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flatten_for_test(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("overrides, message", [
    (("strategy=fedrdskd", "strategy.base=fedfoo"), r"strategy\.base='fedfoo'.*fedprox"),
    (("strategy=fedrdskd", "+strategy.bogus=1"), r"'fedrdskd'.*bogus"),
    (("strategy=fedrdskd", "strategy.generator_steps=-1"), r"generator_steps"),
])
def test_bad_strategy_options_fail_before_the_simulation(overrides, message):
    experiment = experiment_from_dict(hydra_dict(*overrides))
    with pytest.raises(ValueError, match=message):
        check_strategy_options(experiment)


def test_good_strategy_options_pass_the_check():
    check_strategy_options(experiment_from_dict(hydra_dict("strategy=fedftg_cpu")))
