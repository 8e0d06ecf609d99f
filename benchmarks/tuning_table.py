"""Summarise tuning runs against FedAvg with the same setting and seed.

Each run folder under ROOT holds a ``results.json`` (``benchmarks/inprocess_run.py --out``);
its name is ``<variant>-s<seed>``. Every run is paired with the FedAvg run of the same
dataset, partition, local epochs and seed: a ``fedavg-s<seed>`` run of the same setting
under ROOT if there is one, else the recorded ``--recorded`` set's
``<dataset>/dirichlet-<alpha>-e<epochs>/fedavg-seed<seed>``. Per variant and setting it
prints, in accuracy points over the rounds both runs have (at most ``--rounds``):

- the paired difference in mean accuracy per seed, their mean and a Student t 95 % interval;
- ``captured``: in rounds where the class-weighted client ensemble (probabilities) leads
  the run's own aggregate by >= 3 points, the share of that lead the distilled model kept;
- ``no lead``: the mean gain over the aggregate in the other rounds;
- the median distillation seconds per round and the median of the clients' longest training.

    python benchmarks/tuning_table.py benchmarks/output/tuning --recorded results
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from fedrdskd.paired import t_interval

LEAD = 0.03


def setting_of(config: dict) -> str:
    """``<dataset>/dirichlet-<alpha>-e<epochs>``, the recorded sets' folder name."""
    return (f"{config['dataset']['name']}/{config['partition']['name']}-"
            f"{config['partition']['alpha']:g}-e{config['local_epochs']}")


def load(path: Path) -> dict:
    """The run folder's ``results.json``."""
    return json.loads((path / "results.json").read_text())


def baseline_for(run: dict, root: Path, recorded: Path) -> dict | None:
    """FedAvg's run of the same setting and seed (see the module's docstring), or None."""
    seed, setting = run["config"]["seed"], setting_of(run["config"])
    for candidate in root.glob(f"*fedavg-s{seed}"):
        other = load(candidate)
        if setting_of(other["config"]) == setting:
            return other
    path = recorded / setting / f"fedavg-seed{seed}"
    return load(path) if (path / "results.json").exists() else None


def lead_and_gain(row: dict) -> tuple[float, float]:
    """The round's ensemble lead over its aggregate and the distillation's gain over it."""
    lead = row["ensemble_accuracy_class_weighted_probabilities"] - row["aggregate_accuracy"]
    return lead, row["test_accuracy"] - row["aggregate_accuracy"]


def lead_shares(rounds: list[dict]) -> tuple[list[float], list[float]]:
    """Captured shares of the ensemble's lead (led rounds) and gains (other rounds)."""
    captured, without = [], []
    for row in rounds:
        lead, gain = lead_and_gain(row)
        (captured if lead >= LEAD else without).append(gain / lead if lead >= LEAD else gain)
    return captured, without


def summarise(variant: str, runs: list[tuple[dict, dict]], rounds: int) -> str:
    """One table row for the variant's ``(run, FedAvg run)`` pairs."""
    differences, captured, without, distill, clients = [], [], [], [], []
    for run, base in runs:
        n = min(rounds, len(run["rounds"]), len(base["rounds"]))
        mine = [row["test_accuracy"] for row in run["rounds"][:n]]
        theirs = [row["test_accuracy"] for row in base["rounds"][:n]]
        differences.append(100 * (sum(mine) - sum(theirs)) / n)
        shares, gains = lead_shares(run["rounds"][:n])
        captured += shares
        without += gains
        distill += [row["distill_seconds"] for row in run["rounds"][:n]]
        clients += [row["client_train_seconds_max"] for row in run["rounds"][:n]]
    interval = t_interval(differences)
    span = f"[{interval.low:+.2f}, {interval.high:+.2f}]" if interval else "n/a"
    seeds = "/".join(f"{d:+.2f}" for d in differences)
    share = f"{100 * statistics.mean(captured):.0f} % ({len(captured)})" if captured else "n/a"
    no_lead = f"{100 * statistics.mean(without):+.2f}" if without else "n/a"
    return (f"| {variant} | {len(runs)} | {seeds} | {statistics.mean(differences):+.2f} | "
            f"{span} | {share} | {no_lead} | {statistics.median(distill):.1f} | "
            f"{statistics.median(clients):.1f} |")


def main() -> None:
    """Print the table for the run folders under ROOT."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--recorded", type=Path, default=Path("results"))
    parser.add_argument("--rounds", type=int, default=10, help="mean over rounds 1..N")
    args = parser.parse_args()
    groups: dict[tuple[str, str], list[tuple[dict, dict]]] = defaultdict(list)
    for folder in sorted(path for path in args.root.iterdir()
                         if (path / "results.json").exists()):
        run = load(folder)
        variant = re.sub(r"-s\d+$", "", folder.name)
        base = baseline_for(run, args.root, args.recorded)
        if variant.endswith("fedavg") or base is None:
            continue
        groups[(setting_of(run["config"]), variant)].append((run, base))
    print(f"Paired against FedAvg, mean accuracy over rounds 1-{args.rounds} (points)\n")
    print("| setting / variant | seeds | per seed | mean | 95 % t interval | captured (led "
          "rounds) | no lead | distill s | client max s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (setting, variant), runs in sorted(groups.items()):
        print(summarise(f"{setting} {variant}", runs, args.rounds))


if __name__ == "__main__":
    main()
