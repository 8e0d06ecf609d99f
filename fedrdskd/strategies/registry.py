"""Strategies by name, for the Hydra CLI and ``flwr run``.

A name is either a plain Flower strategy (``fedavg``, ``fedprox``, ``fedadam``,
``fedtrimmedavg``), used with :class:`ClientEnsembleMixin` so that clients are sampled
by seed, invalid replies are screened out and the client ensemble can be evaluated as a
diagnostic, or a distillation method (``fedrdskd``, ``fedrdskd_paper``, ``fedftg``) put
on top of one of those bases (option ``base``, default ``fedavg``). A Hydra config may
instead give ``_target_``, the import path of any strategy class; one without
:class:`ClientEnsembleMixin` gets it in front, as the plain Flower strategies do.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, FedTrimmedAvg, Strategy

from fedrdskd.strategies.client_ensemble import ClientEnsembleMixin

BASE_STRATEGIES: dict[str, type[Strategy]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedtrimmedavg": FedTrimmedAvg,
}
# name -> (mixin for any base, ready-made class on FedAvg)
DISTILLATION_METHODS: dict[str, tuple[str, str]] = {
    "fedrdskd": ("fedrdskd.strategies.fedrdskd:RDSKDMixin",
                 "fedrdskd.strategies.fedrdskd:FedRDSKD"),
    "fedftg": ("fedrdskd.strategies.fedftg:FedFTGMixin",
               "fedrdskd.strategies.fedftg:FedFTG"),
}
# RDSKD as published: the same strategy class, under its own name so that its runs are
# labelled and compared apart from the ``fedrdskd`` preset's (conf/strategy/fedrdskd_paper.yaml).
DISTILLATION_METHODS["fedrdskd_paper"] = DISTILLATION_METHODS["fedrdskd"]
STRATEGY_NAMES = tuple(BASE_STRATEGIES) + tuple(DISTILLATION_METHODS)


def import_object(path: str) -> Any:
    """Import ``"package.module:Name"`` or ``"package.module.Name"``."""
    module_name, _, attribute = path.replace(":", ".").rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def compose(mixin: type, base: type[Strategy], name: str | None = None) -> type[Strategy]:
    """A strategy class with ``mixin`` in front of ``base`` (e.g. RDSKD on FedProx).

    Classes are cached, so composing the same pair twice gives the same class.
    """
    key = (mixin, base)
    if key not in _COMPOSED:
        name = name or f"{mixin.__name__.removesuffix('Mixin')}On{base.__name__}"
        doc = f"{base.__name__} with {mixin.__name__} in front (built by `compose`)."
        _COMPOSED[key] = type(name, (mixin, base), {"__doc__": doc,
                                                   "__module__": __name__})
    return _COMPOSED[key]


_COMPOSED: dict[tuple[type, type], type] = {}


def strategy_class(name: str, *, base: str = "fedavg", target: str | None = None) -> type:
    """Resolve a strategy class from a config's ``name``/``base``/``_target_``."""
    if target:
        target_class = import_object(target)
        if issubclass(target_class, ClientEnsembleMixin):
            return target_class
        return compose(ClientEnsembleMixin, target_class, f"Monitored{target_class.__name__}")
    if base not in BASE_STRATEGIES:
        raise ValueError(f"Invalid config value strategy.base={base!r}: allowed values "
                         f"are {', '.join(BASE_STRATEGIES)}.")
    if name in DISTILLATION_METHODS:
        mixin_path, on_fedavg_path = DISTILLATION_METHODS[name]
        if base == "fedavg":
            return import_object(on_fedavg_path)
        return compose(import_object(mixin_path), BASE_STRATEGIES[base])
    if name in BASE_STRATEGIES:
        base_class = BASE_STRATEGIES[name]
        return compose(ClientEnsembleMixin, base_class, f"Monitored{base_class.__name__}")
    raise ValueError(f"Invalid config value strategy.name={name!r}: allowed values are "
                     f"{', '.join(STRATEGY_NAMES)}.")


def build_strategy(
    name: str,
    options: Mapping[str, Any],
    *,
    target: str | None = None,
    model_fn: Callable,
    num_classes: int,
    input_shape: tuple[int, int, int],
    device: str,
    seed: int,
    ensemble_evaluate_fn: Callable | None = None,
    sampling_seed: int | None = None,
    min_replies: int = 1,
    **base_kwargs: Any,
) -> Strategy:
    """Instantiate a strategy from its name and options.

    Parameters
    ----------
    name : str
        One of :data:`STRATEGY_NAMES` (ignored when ``target`` is given).
    options : Mapping[str, Any]
        The strategy's own keyword arguments; ``base`` picks the base strategy of a
        distillation method.
    target : str | None
        Import path of a strategy class (Hydra's ``_target_``).
    model_fn, num_classes, input_shape, ensemble_evaluate_fn, sampling_seed, min_replies
        Passed to :class:`ClientEnsembleMixin` (every strategy built here has it; it
        checks the model on a batch of ``input_shape`` at construction).
    device, seed
        Passed to the distillation methods.
    **base_kwargs
        Flower strategy arguments (``fraction_train``, ``min_train_nodes`` ...).

    Returns
    -------
    Strategy
        The configured strategy.
    """
    options = dict(options)
    base = options.pop("base", "fedavg")
    cls = strategy_class(name, base=base, target=target)
    kwargs: dict[str, Any] = {**base_kwargs, **options}
    kwargs.update(model_fn=model_fn, num_classes=num_classes, input_shape=input_shape,
                  ensemble_evaluate_fn=ensemble_evaluate_fn, sampling_seed=sampling_seed,
                  min_replies=min_replies)
    from fedrdskd.strategies.distillation import DistillationMixin

    if issubclass(cls, DistillationMixin):
        kwargs.update(device=device, seed=seed)
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ValueError(f"Invalid options for strategy '{name}' ({cls.__name__}): "
                         f"{error}") from error
