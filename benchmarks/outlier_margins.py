"""How close do honest clients come to the outlier screen's margins? Measure and print it.

The reply screening (:class:`fedrdskd.strategies.outliers.OutlierScreen`) excludes a
reply whose ``num-examples`` is above ``max_num_examples_ratio`` times its round's median,
whose update norm ``||w_k - w_global||`` is above ``max_norm_ratio`` times its round's
median, or whose parameter norm is below its round's median divided by
``max_norm_ratio``. This script measures the honest extremes of those ratios:

- **sizes**, for every recorded setting (MNIST, 20 clients, 10 per round, Dirichlet 0.05 /
  0.1 / 0.5; CIFAR-10, 100 clients, 10 per round, Dirichlet 0.3) and seeds 0-4, from
  the real partitioner: the clients' ``num-examples`` (training split, as the ClientApp
  reports it), sampled as the strategy samples them (seeded by ``(seed, round)``, rounds
  1-100), and the worst case over *any* sample of that size (the largest client with the
  smallest others);
- **norms**, in real 2-round MNIST runs at Dirichlet 0.05 with 5 local epochs (seeds 0
  and 1, FedAvg, in-process clients, about 75 s each on 2 cores), from the saved client
  models (``server.save_client_models``).

Run from the repository root with the real data under ``$FEDRDSKD_DATA``::

    python benchmarks/outlier_margins.py                 # sizes and norms (runs 2 x 2 rounds)
    python benchmarks/outlier_margins.py --skip-norms    # sizes only (seconds)
    python benchmarks/outlier_margins.py --norm-runs DIR ...  # norms of saved runs

Measured on the team's machine (chosen defaults: ``max_num_examples_ratio`` 100,
``max_norm_ratio`` 20)::

    sizes: largest honest num-examples / its round's median (seeds 0-4, rounds 1-100)
      mnist a=0.05: sampled rounds 15.2, any sample 30.6
      mnist a=0.1: sampled rounds 9.3, any sample 9.3
      mnist a=0.5: sampled rounds 2.7, any sample 3.3
      cifar10 a=0.3: sampled rounds 6.3, any sample 12.0
    norms: honest ratios to the round's median (real MNIST, Dirichlet 0.05, 5 epochs)
      largest update norm / median 2.16; smallest parameter norm / median 0.95
      an all-zero model: update norm 3.6-4.9 x median, parameter norm 0

(the same numbers are in :class:`~fedrdskd.strategies.outliers.OutlierScreen`'s docstring).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inprocess_run import composed_config  # noqa: E402

from fedrdskd.bookkeeping import initial_arrays  # noqa: E402
from fedrdskd.data import load_dataset  # noqa: E402
from fedrdskd.diagnostics import load_round_models  # noqa: E402
from fedrdskd.experiment import experiment_from_dict  # noqa: E402
from fedrdskd.inprocess import run_in_process  # noqa: E402
from fedrdskd.partitions import client_split_seed, partition_labels, split_local_test  # noqa: E402
from fedrdskd.sampling import SeededSampling  # noqa: E402
from fedrdskd.strategies.outliers import (  # noqa: E402
    DEFAULT_MAX_NORM_RATIO,
    DEFAULT_MAX_NUM_EXAMPLES_RATIO,
    median_ratios,
    update_norm,
)

SIZE_SETTINGS = {  # name: (dataset, clients, per round, alpha), as experiments/*.sh
    "mnist a=0.05": ("mnist", 20, 10, 0.05),
    "mnist a=0.1": ("mnist", 20, 10, 0.1),
    "mnist a=0.5": ("mnist", 20, 10, 0.5),
    "cifar10 a=0.3": ("cifar10", 100, 10, 0.3),
}
SEEDS = range(5)
ROUNDS = range(1, 101)


def client_sizes(labels: np.ndarray, clients: int, alpha: float, seed: int) -> np.ndarray:
    """Each client's ``num-examples``: its training split of the seeded Dirichlet partition."""
    partitions = partition_labels(labels, clients, "dirichlet", alpha=alpha, seed=seed)
    return np.array([len(split_local_test(part, 0.1, client_split_seed(seed, pid))[0])
                     for pid, part in enumerate(partitions)])


def sampled(clients: int, per_round: int, seed: int, server_round: int) -> list[int]:
    """The partitions the strategy samples in a round (Flower's ``random.sample``, seeded)."""
    sampling = SeededSampling(seed)
    sampling.start_round(server_round)
    with sampling.active():
        return random.sample(list(range(clients)), per_round)


def worst_sample_ratio(sizes: np.ndarray, per_round: int) -> float:
    """The largest client over the median of any sample: it with the smallest others."""
    ordered = np.sort(sizes)
    sample = np.append(ordered[:per_round - 1], ordered[-1])
    return float(median_ratios(sample).max())


def size_ratios() -> None:
    """Print, per recorded setting, the largest honest num-examples over its round's median."""
    print("sizes: largest honest num-examples / its round's median (seeds 0-4, rounds 1-100)")
    for name, (dataset, clients, per_round, alpha) in SIZE_SETTINGS.items():
        labels = load_dataset(dataset, None, train=True).labels.numpy()
        in_rounds, any_sample = 0.0, 0.0
        for seed in SEEDS:
            sizes = client_sizes(labels, clients, alpha, seed)
            for server_round in ROUNDS:
                round_sizes = sizes[sampled(clients, per_round, seed, server_round)]
                in_rounds = max(in_rounds, float(median_ratios(round_sizes).max()))
            any_sample = max(any_sample, worst_sample_ratio(sizes, per_round))
        print(f"  {name}: sampled rounds {in_rounds:.1f}, any sample {any_sample:.1f}")
    print(f"  chosen max_num_examples_ratio: {DEFAULT_MAX_NUM_EXAMPLES_RATIO:g}")


def honest_runs(out: Path) -> list[Path]:
    """Two real 2-round FedAvg runs, MNIST, Dirichlet 0.05, 5 local epochs (saved models)."""
    runs = []
    for seed in (0, 1):
        raw = composed_config("mnist-0.05-e5", [f"seed={seed}", "num_rounds=2",
                                                "strategy=fedavg",
                                                "server.save_client_models=true",
                                                "server.evaluate_ensemble=false"])
        raw["output_dir"] = str(out / f"seed{seed}")
        run_in_process(experiment_from_dict(raw), out / f"seed{seed}")
        runs.append(out / f"seed{seed}")
    return runs


def norm_ratios(runs: list[Path]) -> None:
    """Print the honest extremes of the update-norm and parameter-norm ratios of saved runs."""
    print("norms: honest ratios to the round's median (real MNIST, Dirichlet 0.05, 5 epochs)")
    largest_update, smallest_model, zero_model = 0.0, np.inf, []
    for run in runs:
        seed = json.loads((run / "results.json").read_text())["config"]["seed"]
        raw = composed_config("mnist-0.05-e5", [f"seed={seed}"])
        reference = initial_arrays(experiment_from_dict(raw)).to_torch_state_dict()
        for path in sorted((run / "client_models").glob("round-*.pt")):
            members, aggregate = load_round_models(path)
            updates = [update_norm(m.state_dict, reference) for m in members]
            models = [update_norm(m.state_dict) for m in members]
            largest_update = max(largest_update, float(median_ratios(updates).max()))
            smallest_model = min(smallest_model, float(median_ratios(models).min()))
            zero_model.append(update_norm(reference) / float(np.median(updates)))
            print(f"  {run.name} {path.stem}: update {median_ratios(updates).max():.2f}, "
                  f"parameter {median_ratios(models).min():.2f}")
            reference = aggregate
    print(f"  largest update norm / median {largest_update:.2f}; smallest parameter norm / "
          f"median {smallest_model:.2f}")
    print(f"  an all-zero model: update norm {min(zero_model):.1f}-{max(zero_model):.1f} x "
          "median, parameter norm 0")
    print(f"  chosen max_norm_ratio: {DEFAULT_MAX_NORM_RATIO:g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-norms", action="store_true", help="sizes only")
    parser.add_argument("--norm-runs", type=Path, nargs="*",
                        help="run dirs with client_models/ (default: run them now)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    size_ratios()
    if args.skip_norms:
        return
    if args.norm_runs:
        norm_ratios(args.norm_runs)
        return
    with tempfile.TemporaryDirectory() as out:
        norm_ratios(honest_runs(Path(out)))


if __name__ == "__main__":
    main()
