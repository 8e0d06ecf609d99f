"""The ``fedrdskd-report`` command: ``results.json`` files -> fair comparison tables.

    fedrdskd-report multirun/2025-01-01/12-00-00 --out report --target-accuracy 0.95

writes ``report.md``, ``report.json`` and three plots per table into ``--out``: the
paired comparison with ``--baseline`` (default ``fedavg``) first. Grouping rules (they
keep a comparison fair):

1. Each ``results.json`` is a run; its config is flattened to dotted snake_case keys.
   :data:`DEFAULT_IGNORED_KEYS` (paths, hardware), ``--ignore-key`` keys and ``seed``
   are left out of all comparisons.
2. A *table* is one value of ``dataset.*`` and ``partition.*`` (and ``--split-by``
   keys). Its runs must agree on every other key outside ``strategy.*`` (model, rounds,
   clients, local epochs, lr, ...), else :class:`ConfigMismatchError` names the keys
   and run dirs. Refusing rather than splitting keeps a mixed-up run from silently
   becoming a one-seed row; ``--split-by local_epochs`` asks for the split.
3. A *row* is one value of ``strategy.*``; its runs differ only in the seed and are
   averaged (two with the same seed are refused). Rows sharing a strategy name (an
   ablation) are labelled with the options that set them apart from the strategy's preset
   (``conf/strategy/<name>.yaml``; for an option the preset lacks, from the value most
   rows share): the preset itself keeps the bare name, so ``--baseline fedrdskd`` pairs
   an ablation with it.
4. A *pair* is a row's run and the ``--baseline`` row's run with the same seed; it is
   checked by the same :func:`shared_settings` as a table, and runs whose client
   sampling did not follow the seed are not paired (:mod:`fedrdskd.report_paired`).
"""

from __future__ import annotations

import fnmatch
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.common import log

from fedrdskd.report_runs import SEED_KEY, Run, StrategyRow, Table
from fedrdskd.run_config import preset_options

DEFAULT_IGNORED_KEYS: tuple[str, ...] = (
    "output_dir", "resume_from", "data.root", "data.cache_dir", "data.download",
    "client.num_cpus", "client.num_gpus", "server.device", "server.num_threads",
    "server.eval_batch_size", "server.evaluate_ensemble", "server.ensemble_eval_samples",
    "server.save_client_models", "screening", "connect_timeout", "allow_unseeded_sampling")
"""Config keys that may differ between averaged or compared runs: where data and
outputs live, whether the run was resumed from a checkpoint (it continues the same
experiment), the hardware/threads used (measurement settings, not the method), and the
guards against bad clients and missing nodes (with honest clients they change nothing;
a run whose sampling did not follow the seed is refused by its ``summary.sampling``).
A pattern also matches every key below it (``data`` matches ``data.root``);
shell-style wildcards work (``server.*``)."""

STRATEGY_PREFIX = "strategy."
TABLE_PREFIXES = ("dataset.", "partition.")
STRATEGY_ORDER = ("fedavg", "fedprox", "fedadam", "fedtrimmedavg", "fedftg", "fedrdskd_paper",
                  "fedrdskd")
_MAX_DIRS_SHOWN = 6


PAPER_BEHAVIOUR: dict[str, Any] = {
    "strategy.student_momentum": 0.0, "strategy.student_weight_decay": 0.0,
    "strategy.student_batch_reuse": 1, "strategy.weight_hard_sample": 0.0,
    "strategy.penalise_hard_sample": True, "strategy.class_prior": "uniform",
    "strategy.student_interpolation": 1.0, "strategy.validation_betas": [],
    "strategy.validation_clients": "others", "strategy.validation_timeout": 600.0,
    "strategy.weight_authenticity": 1.0, "strategy.replay_pool_size": 0,
    "strategy.replay_fraction": 0.5, "strategy.synthetic_augmentation": "none",
    "strategy.student_uses_generator_batch": False,
    "strategy.carry_over": 1.0, "strategy.carry_over_decay": 1.0,
    "strategy.warmup_iterations": 0,
}
"""FedRDSKD options added with the package's own mechanisms, at the values that give
RDSKD as published (the ``fedrdskd_paper`` preset): what every FedRDSKD run recorded
before them did."""
ADDED_STRATEGY_KEYS: dict[str, dict[str, Any]] = {
    name: {"strategy.ensemble_combine": "logits",
           "strategy.persist_student_optimizer": False, **PAPER_BEHAVIOUR}
    for name in ("fedrdskd", "fedrdskd_paper")
}
"""Strategy options added after runs were recorded, with the behaviour those runs had
(before ``ensemble_combine`` existed the teacher summed logits; before
``persist_student_optimizer`` the student's Adam started afresh every round; before the
package's mechanisms, :data:`PAPER_BEHAVIOUR`). A run whose config lacks such a key gets
this value, so it is compared and labelled by what it did, not as a different
configuration with a missing key."""


class ConfigMismatchError(ValueError):
    """Runs that would be averaged or compared differ in more than the seed."""


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"a.b": value}`` with snake_case keys (``-`` becomes ``_``)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{str(key).replace('-', '_')}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """All ``results.json`` files at or below ``paths`` (sorted, without repeats).

    A path may be a ``results.json`` file, a run folder, a Hydra multirun folder
    (``multirun/<date>/<time>/<job>/results.json``) or any tree holding runs. Paths
    stay as given (relative ones relative), so reports name run dirs as the user
    does; a file reached twice is listed once.

    Raises
    ------
    FileNotFoundError
        If a path does not exist, or no ``results.json`` is found (naming the paths).
    """
    folders = [Path(path) for path in paths]
    found: dict[Path, Path] = {}
    for path in folders:
        if not path.exists():
            raise FileNotFoundError(f"Run path '{path}' does not exist.")
        candidates = [path] if path.is_file() else sorted(path.rglob("results.json"))
        for candidate in candidates:
            found.setdefault(candidate.resolve(), candidate)
    if not found:
        searched = ", ".join(f"'{path}'" for path in folders)
        raise FileNotFoundError(
            f"No results.json found at or below {searched}. Give run folders written "
            "by `fedrdskd` (or Hydra multirun folders holding them).")
    return sorted(found.values())


def load_run(results_path: Path) -> Run | None:
    """Read one ``results.json``; ``None`` (with a warning) if it has no rounds.

    Raises
    ------
    ValueError
        If the file is not JSON or lacks the ``config``/``rounds`` keys.
    """
    try:
        payload = json.loads(Path(results_path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"'{results_path}' is not valid JSON: {error}") from error
    missing = [key for key in ("config", "rounds") if key not in payload]
    if missing:
        raise ValueError(f"'{results_path}' lacks the key(s) {missing}: expected a "
                         "results.json written by fedrdskd ({config, rounds, summary}).")
    if not payload["rounds"]:
        log(WARNING, "Skipping %s: it records no rounds.", results_path)
        return None
    rounds = sorted(payload["rounds"], key=lambda row: row["round"])
    config = flatten_config(payload["config"])
    for key, value in ADDED_STRATEGY_KEYS.get(str(config.get("strategy.name")), {}).items():
        config.setdefault(key, value)
    return Run(results_path=Path(results_path), config=config,
               rounds=rounds, summary=dict(payload.get("summary") or {}))


def matches(key: str, patterns: Iterable[str]) -> bool:
    """Whether ``key`` equals, lies below (``data`` -> ``data.root``) or globs a pattern."""
    return any(key == pattern or key.startswith(f"{pattern}.")
               or fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _comparable(run: Run, ignore_keys: Sequence[str]) -> dict[str, Any]:
    return {key: value for key, value in run.config.items()
            if key != SEED_KEY and not matches(key, ignore_keys)}


def _differences(configs: list[dict[str, Any]]) -> list[str]:
    """Keys whose values (or presence) differ between ``configs``."""
    keys = sorted(set().union(*configs))
    return [key for key in keys
            if len({_canonical(config.get(key, "<missing>")) for config in configs}) > 1]


def _describe_mismatch(runs: list[Run], configs: list[dict[str, Any]],
                       keys: list[str]) -> str:
    lines = []
    for key in keys:
        by_value: dict[str, list[str]] = {}
        for run, config in zip(runs, configs):
            shown = _canonical(config[key]) if key in config else "<missing>"
            by_value.setdefault(shown, []).append(str(run.run_dir))
        lines.append(f"  {key}: " + "; ".join(
            f"{shown} in {', '.join(dirs[:_MAX_DIRS_SHOWN])}"
            + (f" and {len(dirs) - _MAX_DIRS_SHOWN} more" if len(dirs) > _MAX_DIRS_SHOWN
               else "") for shown, dirs in by_value.items()))
    return "\n".join(lines)


def _title(identity: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in identity.items())


def shared_settings(runs: Sequence[Run], ignore_keys: Sequence[str], *, refusing: str,
                    advice: str, leave_out: Iterable[str] = ()) -> dict[str, Any]:
    """The settings ``runs`` share outside ``strategy.*``, the seed and ``ignore_keys``.

    The one check behind tables and pairs: runs compared with each other must agree
    on everything but the seed and the strategy (partitions, sampling and the initial
    model follow from the rest of the config and the seed).

    Parameters
    ----------
    runs : Sequence[Run]
        The runs to compare.
    ignore_keys : Sequence[str]
        Keys (or patterns, see :func:`matches`) allowed to differ.
    refusing : str
        What is refused, for the message (``"compare the runs of table [...]"``).
    advice : str
        What to do instead, appended to the message; ``{key}`` is replaced by the
        first differing key.
    leave_out : Iterable[str] (default: ())
        Further keys not to compare (a table's identity keys).

    Raises
    ------
    ConfigMismatchError
        Naming each differing key with its values and run dirs.
    """
    leave_out = set(leave_out)
    configs = [{key: value for key, value in _comparable(run, ignore_keys).items()
                if key not in leave_out and not key.startswith(STRATEGY_PREFIX)}
               for run in runs]
    differing = _differences(configs)
    if differing:
        raise ConfigMismatchError(
            f"Refusing to {refusing}: their configs differ in more than the seed and "
            f"the strategy:\n{_describe_mismatch(list(runs), configs, differing)}\n"
            + advice.format(key=differing[0]))
    return configs[0]


def _check_table(identity: dict[str, Any], runs: list[Run],
                 ignore_keys: Sequence[str]) -> dict[str, Any]:
    """Refuse a table whose runs differ outside ``strategy.*``; return the shared settings."""
    return shared_settings(
        runs, ignore_keys, refusing=f"compare the runs of table [{_title(identity)}]",
        advice="Pass --split-by {key} to make one table per value, or --ignore-key "
               "{key} if the difference does not matter (ignored by default: "
               + ", ".join(DEFAULT_IGNORED_KEYS) + ").",
        leave_out=identity)


def _strategy_rows(runs: list[Run], ignore_keys: Sequence[str]) -> list[StrategyRow]:
    """One row per distinct ``strategy.*``; refuse two runs with the same seed in a row."""
    rows: dict[str, StrategyRow] = {}
    for run in runs:
        options = {key[len(STRATEGY_PREFIX):]: value
                   for key, value in _comparable(run, ignore_keys).items()
                   if key.startswith(STRATEGY_PREFIX)}
        name = str(options.get("name") or options.get("_target_") or "unnamed")
        row = rows.setdefault(_canonical(options), StrategyRow(name, name, options))
        twin = next((other for other in row.runs if other.seed == run.seed), None)
        if twin is not None:
            raise ConfigMismatchError(
                f"Runs {twin.run_dir} and {run.run_dir} are the same experiment "
                f"(strategy {name}, seed={run.seed}): averaging them would count one seed "
                "twice. Pass only one of them.")
        row.runs.append(run)
    by_name: dict[str, list[StrategyRow]] = {}
    for row in rows.values():
        by_name.setdefault(row.name, []).append(row)
    for variants in (group for group in by_name.values() if len(group) > 1):
        _label_variants(variants)
    order = {name: index for index, name in enumerate(STRATEGY_ORDER)}
    return sorted(rows.values(), key=lambda row: (order.get(row.name, len(order)), row.label))


def _label_variants(variants: list[StrategyRow]) -> None:
    """Label rows of one strategy by the options that set them apart.

    For each option that differs between them, the reference value is the preset's
    (:func:`fedrdskd.run_config.preset_options`), else the value held by more rows than
    any other; rows at the reference value do not name the option, the others do (with
    no reference, as with two rows of an option the preset lacks, every row names it).
    """
    preset = preset_options(variants[0].name)
    named: dict[int, list[str]] = {id(variant): [] for variant in variants}
    for key in _differences([variant.options for variant in variants]):
        values = [_canonical(variant.options.get(key)) for variant in variants]
        (first, first_count), (_, second_count) = Counter(values).most_common(2)
        common = (_canonical(preset[key]) if key in preset
                  else first if first_count > second_count else None)
        for variant, value in zip(variants, values):
            if value != common:
                named[id(variant)].append(f"{key}={variant.options.get(key)}")
    for variant in variants:
        described = ", ".join(named[id(variant)])
        variant.label = f"{variant.name} ({described})" if described else variant.name


def group_runs(runs: Sequence[Run], *, ignore_keys: Sequence[str] = DEFAULT_IGNORED_KEYS,
               split_by: Sequence[str] = ()) -> list[Table]:
    """Group runs into tables (dataset x partition x ``split_by``) and strategy rows.

    Parameters
    ----------
    runs : Sequence[Run]
        The loaded runs.
    ignore_keys : Sequence[str] (default: DEFAULT_IGNORED_KEYS)
        Config keys (or patterns, see :func:`matches`) allowed to differ anywhere.
    split_by : Sequence[str] (default: ())
        Extra keys whose values make separate tables instead of a refusal.

    Raises
    ------
    ConfigMismatchError
        Runs in one table differ outside ``strategy.*`` and the seed, or one row holds
        two runs with the same seed. The message names the keys and the run dirs.
    """
    tables: dict[str, tuple[dict[str, Any], list[Run]]] = {}
    for run in runs:
        identity = {key: value for key, value in _comparable(run, ignore_keys).items()
                    if key.startswith(TABLE_PREFIXES) or matches(key, split_by)}
        tables.setdefault(_canonical(identity), (identity, []))[1].append(run)
    result = []
    for key in sorted(tables):
        identity, members = tables[key]
        settings = _check_table(identity, members, ignore_keys)
        result.append(Table(identity=identity, settings=settings,
                            rows=_strategy_rows(members, ignore_keys)))
        log(INFO, "Table [%s]: %s", _title(identity), ", ".join(
            f"{row.label} x{len(row.runs)}" for row in result[-1].rows))
    return result


if __name__ == "__main__":  # python -m fedrdskd.report (experiments/reports.sh)
    from fedrdskd.report_cli import main

    raise SystemExit(main())
