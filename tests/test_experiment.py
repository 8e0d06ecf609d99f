"""Experiment config: Hydra composition, validation messages, the flat run config.

The real Hydra config (``fedrdskd/conf``) is composed with Hydra's compose API, so a
yaml that stops parsing into an :class:`ExperimentConfig`, or a strategy yaml whose
keys the strategy does not take, fails here rather than after Ray has started.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import itertools
import re
from typing import Any

import numpy as np
import pytest
import yaml
from hydra_config import README, hydra_dict, yaml_names

from fedrdskd.cli import check_strategy_options, preflight
from fedrdskd.experiment import (
    ExperimentConfig,
    experiment_from_dict,
)
from fedrdskd.report import PAPER_BEHAVIOUR
from fedrdskd.server_app import build_run_strategy
from fedrdskd.strategies import ClientEnsembleMixin, DistillationMixin
from fedrdskd.strategies.registry import (
    BASE_STRATEGIES,
    DISTILLATION_METHODS,
    strategy_class,
)


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


def test_config_yaml_and_readme_give_the_dataclass_defaults():
    from_yaml = experiment_from_dict(hydra_dict("data.root=null"))
    from_code = experiment_from_dict({"dataset": {"name": "mnist"}, "model": {"name": "lenet5"}})
    assert without_resolved(from_yaml) == without_resolved(from_code)
    documented = readme_defaults()
    config = hydra_dict("data.root=null", "partition=pathological")  # + classes_per_client
    config["partition"] = {**config["partition"], **hydra_dict()["partition"]}
    for key, value in documented.items():
        node = config
        for part in key.split("."):
            node = node[part]
        assert node == value, (key, node, value)
    assert {"num_rounds", "partition.alpha", "min_train_nodes"} <= set(documented)


def readme_defaults(after: str = "") -> dict[str, Any]:
    """``key -> default`` of README.md's first key table after the text ``after``
    (the table of top-level keys by default)."""
    text = README.read_text()
    text = text[text.index(after):]
    table = text[text.index("| key | default | meaning |"):].splitlines()[2:]
    defaults: dict[str, Any] = {}
    for line in itertools.takewhile(lambda row: row.startswith("|"), table):
        keys, values = line.split("|")[1:3]
        names = re.findall(r"`([^`]+)`", keys)
        items = values.split(",") if len(names) > 1 else [values]
        defaults.update(zip(names, (yaml.safe_load(item) for item in items), strict=True))
    return defaults


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


STORED_AS = {
    "batch_size": lambda strategy: strategy.distill_batch_size,
    "student_optimizer": lambda strategy: strategy.student_optimizer_name,
    "lambda_md": lambda strategy: strategy.lambdas["lambda_md"],
    "lambda_cls": lambda strategy: strategy.lambdas["lambda_cls"],
    "lambda_dis": lambda strategy: strategy.lambdas["lambda_dis"],
    "student_interpolation": lambda strategy: strategy.step_size.fixed_beta,
    "validation_betas": lambda strategy: [beta for beta in strategy.step_size.betas if beta],
    "validation_clients": lambda strategy: strategy.step_size.clients,
    "validation_timeout": lambda strategy: strategy.step_size.timeout,
}
"""Strategy options that a strategy keeps under another name; the rest under their own."""


@pytest.mark.parametrize("yaml_name", yaml_names("strategy"))
def test_every_strategy_yaml_parses_and_builds(yaml_name):
    options = hydra_dict(f"strategy={yaml_name}")["strategy"]
    experiment = experiment_from_dict(hydra_dict(f"strategy={yaml_name}"))
    assert experiment.strategy.name == options.pop("name")
    strategy = strategy_from(experiment)
    assert isinstance(strategy, BASE_STRATEGIES[options.pop("base", experiment.strategy.name)])
    assert isinstance(strategy, ClientEnsembleMixin)
    assert isinstance(strategy, DistillationMixin) == (
        experiment.strategy.name in DISTILLATION_METHODS)
    for key, value in options.items():  # every yaml value reached the strategy
        stored = STORED_AS.get(key, lambda strategy, key=key: getattr(strategy, key))
        assert stored(strategy) == value, key


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
    ("client.send_label_counts", "false", r"client\.send_label_counts='false'.*true or false"),
    ("server.save_client_models", 1, r"server\.save_client_models=1.*true or false"),
    ("data.download", "no", r"data\.download='no'.*true or false"),
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


# ---- the strategy check before the simulation ---------------------------------------
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
    strategy = check_strategy_options(experiment_from_dict(hydra_dict(
        "strategy=fedftg_cpu", "strategy.base=fedprox", "+strategy.proximal_mu=0.3")))
    assert type(strategy) is strategy_class("fedftg", base="fedprox")
    assert (strategy.generator_channels, strategy.proximal_mu) == (32, 0.3)


def test_fedrdskd_paper_preset_is_rdskd_as_published():
    options = hydra_dict("strategy=fedrdskd_paper")["strategy"]
    for key, value in PAPER_BEHAVIOUR.items():  # every later mechanism off
        assert options[key.removeprefix("strategy.")] == value, key
    assert (options["generator_steps"], options["student_steps"]) == (50, 50)
    assert (options["student_optimizer"], options["strength_decay"]) == ("adam", 0.5)


def constructor_defaults(cls: type) -> dict[str, Any]:
    """Keyword defaults of every ``__init__`` along ``cls``'s MRO (the nearest wins)."""
    defaults: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is not None:
            defaults.update({name: parameter.default for name, parameter
                             in inspect.signature(init).parameters.items()
                             if parameter.default is not inspect.Parameter.empty})
    return defaults


def test_fedrdskd_constructor_defaults_are_the_fedrdskd_preset():
    """A user's own Flower app gets the preset's method from ``FedRDSKD(...)``; only the
    client-validated step size stays off (it needs ClientApps that answer it)."""
    options = hydra_dict("strategy=fedrdskd")["strategy"]
    defaults = constructor_defaults(strategy_class("fedrdskd", base="fedavg"))
    differing = {key: (value, defaults[key]) for key, value in options.items()
                 if key not in ("name", "base") and list(np.atleast_1d(value)) !=
                 list(np.atleast_1d(defaults[key]))}
    assert differing == {"validation_betas": ([0.5, 1.0], ())}


def test_readme_documents_every_fedrdskd_option_with_the_preset_value():
    documented = readme_defaults(after="`strategy=fedrdskd` keys")
    options = hydra_dict("strategy=fedrdskd")["strategy"]
    assert {f"strategy.{key}" for key in options if key != "name"} == set(documented)
    for key, value in documented.items():
        value = float(value) if isinstance(value, str) and value[:1].isdigit() else value
        assert value == options[key.removeprefix("strategy.")], key
