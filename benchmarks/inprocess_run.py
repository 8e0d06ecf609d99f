"""Run one recorded setting through the real ServerApp with in-process clients (no Ray).

The config is composed by Hydra exactly as ``fedrdskd`` would from the same overrides
(``experiments/*.sh`` use these settings), and :func:`fedrdskd.inprocess.run_in_process`
runs it, so ``results.json`` holds the numbers a CLI run of the same config gives, without
Ray's start-up and per-round overhead. Used to tune on short runs and to record the
client models of a FedAvg trajectory for ``benchmarks/distillation_gain.py``.

    python benchmarks/inprocess_run.py cifar10-0.3-e5 --seed 0 --rounds 10 \
        --out benchmarks/output/trajectories/cifar10-0.3-e5/fedavg-seed0 \
        strategy=fedavg server.save_client_models=true

Arguments after the options are Hydra overrides.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from fedrdskd.cli import check_strategy_options
from fedrdskd.experiment import experiment_from_dict
from fedrdskd.inprocess import run_in_process

SETTINGS: dict[str, list[str]] = {
    "mnist-0.1-e1": ["dataset=mnist", "model=lenet5", "partition=dirichlet",
                     "partition.alpha=0.1", "num_clients=20", "fraction_train=0.5",
                     "num_rounds=30", "local_epochs=1"],
    "mnist-0.05-e5": ["dataset=mnist", "model=lenet5", "partition=dirichlet",
                      "partition.alpha=0.05", "num_clients=20", "fraction_train=0.5",
                      "num_rounds=20", "local_epochs=5"],
    "mnist-0.5-e1": ["dataset=mnist", "model=lenet5", "partition=dirichlet",
                     "partition.alpha=0.5", "num_clients=20", "fraction_train=0.5",
                     "num_rounds=30", "local_epochs=1"],
    "cifar10-0.3-e5": ["dataset=cifar10", "model=cnn", "partition=dirichlet",
                       "partition.alpha=0.3", "num_clients=100", "fraction_train=0.1",
                       "num_rounds=15", "local_epochs=5",
                       "server.ensemble_eval_samples=2000"],
}
"""The recorded settings as Hydra overrides (the same as ``experiments/*.sh``)."""


def composed_config(setting: str, overrides: list[str]) -> dict:
    """The resolved config ``fedrdskd <setting overrides> <overrides>`` would run."""
    with initialize_config_module(config_module="fedrdskd.conf", version_base=None):
        config = compose(config_name="config", overrides=SETTINGS[setting] + overrides)
    return OmegaConf.to_container(config, resolve=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("setting", choices=sorted(SETTINGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=None,
                        help="override the setting's number of rounds")
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--workers", type=int, default=2,
                        help="client processes in parallel (default: 2)")
    args, extra = parser.parse_known_args()
    args.overrides = [item for item in extra if item != "--"]
    overrides = [f"seed={args.seed}", *args.overrides]
    if args.rounds is not None:
        overrides.append(f"num_rounds={args.rounds}")
    raw = composed_config(args.setting, overrides)
    raw["output_dir"] = str(args.out)
    experiment = experiment_from_dict(raw)
    check_strategy_options(experiment)
    started = time.perf_counter()
    summary = run_in_process(experiment, args.out, workers=args.workers)
    print(f"{args.setting} seed {args.seed} {' '.join(args.overrides)}: final "
          f"{summary['final_test_accuracy']:.4f}, best {summary['best_test_accuracy']:.4f}, "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
