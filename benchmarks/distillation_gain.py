"""What does one round of server-side distillation add to the aggregate, round by round?

Replays a recorded FedAvg trajectory: its run directory holds each round's client models
and aggregate (``server.save_client_models=true``, e.g. made with
``benchmarks/inprocess_run.py``). Each variant is one FedRDSKD (or FedFTG) strategy
object built from the run's config, as the ServerApp builds it, so its generator
persists across rounds as in a real run; in every round it refines *that round's*
aggregate from *that round's* client models, and the script measures on the test set
the aggregate, the class-weighted client ensemble (from the run's own diagnostics), the
distilled model and, with ``--betas``, interpolations ``w_avg + β (w_distilled − w_avg)``.
With ``--client-validation`` it also reports the pooled loss of each β on the round's
clients' own held-out splits (what a client-validated step size would see).

All variants see the same client models, so their per-round differences are paired and
free of trajectory noise; the price is that after round 1 the aggregate is FedAvg's, not
the variant's own. ``--follow`` runs each variant's own trajectory instead, through the
real ServerApp with in-process clients (:func:`fedrdskd.inprocess.run_in_process`),
writing a ``results.json`` per variant that ``fedrdskd-report`` can pair with FedAvg.

    python benchmarks/inprocess_run.py cifar10-0.3-e5 --seed 0 --rounds 10 \\
        --out runs/cifar-fedavg-seed0 strategy=fedavg server.save_client_models=true
    python benchmarks/distillation_gain.py runs/cifar-fedavg-seed0 --variants paper sgd \\
        --betas 0.25 0.5 --out benchmarks/output/gain-cifar-seed0.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord

from fedrdskd.clients.training import evaluate
from fedrdskd.data import load_dataset
from fedrdskd.diagnostics import load_round_models
from fedrdskd.experiment import experiment_from_dict
from fedrdskd.inprocess import partition_of_node
from fedrdskd.partitions import load_client_data
from fedrdskd.models import model_factory
from fedrdskd.kd.interpolation import interpolate_states
from fedrdskd.strategies.registry import build_strategy

PAPER = {"name": "fedrdskd_paper"}
VARIANTS: dict[str, dict[str, Any]] = {
    "paper": PAPER,
    "default": {"name": "fedrdskd"},
    "sgd": {**PAPER, "student_optimizer": "sgd", "student_lr": 0.01},
    "fedftg": {"name": "fedftg", "preset": "fedftg_cpu"},
}
"""name -> strategy options (``name`` picks the strategy; the rest are its arguments on
top of the preset's defaults). Extend with ``--set name key=value ...``."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trajectory", type=Path, help="FedAvg run dir with client_models/")
    parser.add_argument("--rounds", type=int, default=None, help="first N rounds only")
    parser.add_argument("--variants", nargs="*", default=["paper"],
                        help="names from VARIANTS or defined with --set")
    parser.add_argument("--set", nargs="+", action="append", default=[], metavar="ARG",
                        help="NAME key=value ...: define a variant (values parsed as JSON, "
                             "else strings); NAME=BASE inherits BASE's options")
    parser.add_argument("--betas", nargs="*", type=float, default=[],
                        help="also measure these interpolations towards the distilled model")
    parser.add_argument("--client-validation", choices=("round", "others"), default=None,
                        help="pooled held-out loss/accuracy for each beta on the round's "
                             "clients, or on as many other clients (seeded per round)")
    parser.add_argument("--follow", type=Path, default=None, metavar="OUT_ROOT",
                        help="run each variant's own trajectory in-process into OUT_ROOT")
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    return parser.parse_args()


def defined_variants(definitions: list[list[str]]) -> dict[str, dict[str, Any]]:
    """VARIANTS plus those given with ``--set NAME[=BASE] key=value ...``."""
    variants = dict(VARIANTS)
    for name, *pairs in definitions:
        name, _, base = name.partition("=")
        options = dict(variants[base or "paper"])
        for pair in pairs:
            key, _, text = pair.partition("=")
            try:
                options[key] = json.loads(text)
            except json.JSONDecodeError:
                options[key] = text
        variants[name] = options
    return variants


def strategy_config(config: dict, options: dict[str, Any]) -> dict:
    """The trajectory's config with the strategy replaced by ``options`` on its preset."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    preset = options.get("preset", options["name"])
    with initialize_config_module(config_module="fedrdskd.conf", version_base=None):
        composed = compose(config_name="config", overrides=[f"strategy={preset}"])
    strategy = OmegaConf.to_container(composed, resolve=True)["strategy"]
    strategy.update({k: v for k, v in options.items() if k != "preset"})
    return {**config, "strategy": strategy}


class Replay:
    """A recorded trajectory: config, per-round rows, client models, test and client data."""

    def __init__(self, run_dir: Path) -> None:
        payload = json.loads((run_dir / "results.json").read_text())
        self.run_dir = run_dir
        self.config = payload["config"]
        self.rows = {row["round"]: row for row in payload["rounds"]}
        self.experiment = experiment_from_dict(self.config)
        data = self.experiment.client.data
        self.test = load_dataset(data.dataset, data.root, train=False,
                                 cache_dir=data.cache_dir)
        self.model_fn = model_factory(self.experiment.client.model,
                                      self.experiment.client.data.dataset)

    def rounds(self, limit: int | None) -> list[int]:
        available = sorted(int(path.stem.split("-")[1])
                           for path in (self.run_dir / "client_models").glob("round-*.pt"))
        return available[:limit] if limit else available

    def accuracy(self, state: dict[str, torch.Tensor]) -> float:
        model = self.model_fn()
        model.load_state_dict(state)
        return evaluate(model, self.test)[1]

    def validation_partitions(self, members, kind: str, server_round: int) -> list[int]:
        """The round's clients, or as many others drawn by (seed, round)."""
        own = [partition_of_node(member.node_id) for member in members]
        if kind == "round":
            return own
        others = [p for p in range(self.experiment.num_clients) if p not in own]
        generator = torch.Generator().manual_seed(1000 * self.experiment.seed + server_round)
        order = torch.randperm(len(others), generator=generator).tolist()
        return sorted(others[i] for i in order[:len(own)])

    def client_metrics(self, state: dict[str, torch.Tensor],
                       partitions: list[int]) -> tuple[float, float]:
        """Pooled cross-entropy and accuracy of ``state`` on these held-out local splits."""
        model = self.model_fn()
        model.load_state_dict(state)
        loss_sum, correct, count = 0.0, 0.0, 0
        for partition in partitions:
            split = self.client_data(partition).test
            loss, accuracy = evaluate(model, split)
            loss_sum += loss * len(split)
            correct += accuracy * len(split)
            count += len(split)
        return loss_sum / max(count, 1), correct / max(count, 1)

    def client_data(self, partition_id: int):
        client, partition = self.experiment.client, self.experiment.client.partition
        return load_client_data(
            client.data.dataset, client.data.root, partition_id=partition_id,
            num_partitions=self.experiment.num_clients, scheme=partition.scheme,
            alpha=partition.alpha, classes_per_client=partition.classes_per_client,
            min_partition_size=partition.min_partition_size,
            test_fraction=partition.test_fraction, seed=client.seed,
            cache_dir=client.data.cache_dir)


def replay_variant(replay: Replay, name: str, options: dict, args) -> list[dict]:
    """Refine every round's aggregate with one strategy object; one record per round."""
    config = strategy_config(replay.config, options)
    experiment = experiment_from_dict(config)
    strategy_settings = experiment.strategy
    info = replay.test.info
    strategy = build_strategy(strategy_settings.name, strategy_settings.options,
                              model_fn=replay.model_fn, num_classes=info.num_classes,
                              input_shape=info.image_shape, device="cpu",
                              seed=experiment.seed)
    records = []
    for server_round in replay.rounds(args.rounds):
        members, aggregate = load_round_models(
            replay.run_dir / "client_models" / f"round-{server_round:03d}.pt")
        started = time.perf_counter()
        refined, metrics = strategy.refine_global_model(server_round, ArrayRecord(aggregate),
                                                        members)
        seconds = time.perf_counter() - started
        distilled = refined.to_torch_state_dict()
        row = replay.rows[server_round]
        record = {"variant": name, "options": options, "round": server_round,
                  "seed": experiment.seed, "aggregate": row["test_accuracy"],
                  "ensemble": row.get("ensemble_accuracy_class_weighted_probabilities"),
                  "distilled": replay.accuracy(distilled), "server_seconds": seconds,
                  "kl_before": metrics.get("kl-before"), "kl_after": metrics.get("kl-after")}
        for beta in args.betas:
            record[f"beta-{beta:g}"] = replay.accuracy(
                interpolate_states(aggregate, distilled, beta))
        if args.client_validation:
            partitions = replay.validation_partitions(members, args.client_validation,
                                                      server_round)
            measured = {f"{beta:g}": replay.client_metrics(
                interpolate_states(aggregate, distilled, beta), partitions)
                for beta in (0.0, *args.betas, 1.0)}
            record["client_loss"] = {beta: m[0] for beta, m in measured.items()}
            record["client_accuracy"] = {beta: m[1] for beta, m in measured.items()}
        records.append(record)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                          for k, v in record.items() if k != "options"}), flush=True)
    return records


def summarise(records: list[dict]) -> dict[str, float]:
    """Mean gain, gain where the ensemble leads by >= 3 points (and its captured share)."""
    gains = [r["distilled"] - r["aggregate"] for r in records]
    leads = [(r["ensemble"] - r["aggregate"]) if r["ensemble"] is not None else None
             for r in records]
    lead_rounds = [(g, l) for g, l in zip(gains, leads) if l is not None and l >= 0.03]
    other = [g for g, l in zip(gains, leads) if l is None or l < 0.03]
    return {"mean_gain": sum(gains) / len(gains),
            "lead_rounds": len(lead_rounds),
            "captured_share": (sum(g / l for g, l in lead_rounds) / len(lead_rounds)
                               if lead_rounds else float("nan")),
            "gain_without_lead": sum(other) / len(other) if other else float("nan"),
            "server_seconds": sum(r["server_seconds"] for r in records) / len(records)}


def follow(replay: Replay, name: str, options: dict, args) -> None:
    """Run the variant's own trajectory through the real ServerApp, in-process."""
    from fedrdskd.inprocess import run_in_process

    out = args.follow / f"{name}-seed{replay.experiment.seed}"
    config = strategy_config(replay.config, options)
    config["server"] = {**config["server"], "save_client_models": False}
    if args.rounds:
        config["num_rounds"] = args.rounds
    config["output_dir"] = str(out)
    summary = run_in_process(experiment_from_dict(config), out)
    print(f"{name}: final {summary['final_test_accuracy']:.4f}", flush=True)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(2)
    variants = defined_variants(args.set)
    replay = Replay(args.trajectory)
    for name in args.variants:
        if args.follow is not None:
            follow(replay, name, variants[name], args)
            continue
        records = replay_variant(replay, name, variants[name], args)
        summary = summarise(records)
        print(f"SUMMARY {name} seed {replay.experiment.seed}: "
              + ", ".join(f"{k}={v:.4g}" for k, v in summary.items()), flush=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as stream:
                for record in records:
                    stream.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
