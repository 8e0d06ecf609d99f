"""How much does one round of server-side distillation add to FedAvg, round by round?

Runs FedAvg in-process (no Ray) on MNIST with LeNet-5 and a Dirichlet split, and at every
round applies each distillation variant to that round's aggregate (the FedAvg trajectory
itself is not changed). It prints, per round, the test accuracy of the aggregate, of the
class- and size-weighted client ensembles, and of each variant's distilled model. A
variant helps in a round when its accuracy is above the aggregate's. Each variant is one
FedRDSKD strategy object, so its generator persists across rounds as in a real run.

With ``--follow`` each variant instead follows its own trajectory, as in a real run: the
distilled model is the next round's global model, the clients train from it, and gains or
losses compound. FedAvg is then one of the trajectories (same clients every round).

Run from the repository root (needs the real MNIST under ``$FEDRDSKD_DATA``)::

    python benchmarks/distillation_gain.py                      # alpha 0.1, 12 rounds
    python benchmarks/distillation_gain.py --alpha 0.5 --rounds 8 --local-epochs 5
    python benchmarks/distillation_gain.py --follow --rounds 10 --variants default "sgd 0.05"
"""

from __future__ import annotations

import argparse
import os
import random
import time

import numpy as np
import torch
from flwr.app import ArrayRecord

from fedrdskd.clients.training import evaluate, train
from fedrdskd.data import load_dataset
from fedrdskd.diagnostics import ensemble_test_accuracies
from fedrdskd.models import build_model
from fedrdskd.partitions import load_client_data
from fedrdskd.strategies import FedRDSKD
from fedrdskd.strategies.replies import ClientModel

# name -> FedRDSKD keyword arguments (on top of the package defaults)
VARIANTS: dict[str, dict] = {
    "20+20 lr1e-3 T10": dict(generator_steps=20, student_steps=20, strength_decay=1.0),
    "50+50 lr1e-3 T10": dict(generator_steps=50, student_steps=50, strength_decay=1.0),
    "20+20 lr1e-4 T10": dict(generator_steps=20, student_steps=20, strength_decay=1.0,
                             student_lr=1e-4),
    "20+20 lr1e-3 T1": dict(generator_steps=20, student_steps=20, strength_decay=1.0,
                            temperature=1.0),
    "20+20 size-weighted": dict(generator_steps=20, student_steps=20, strength_decay=1.0,
                                ensemble_weighting="num-examples"),
    "default (50+50, decay 0.5)": dict(),
    "logit ensemble": dict(ensemble_combine="logits"),
    "decay 0.3": dict(strength_decay=0.3),
    "decay 0.7": dict(strength_decay=0.7),
    "sgd 0.01": dict(student_optimizer="sgd", student_lr=0.01),
    "persistent adam": dict(persist_student_optimizer=True),
    "sgd 0.05": dict(student_optimizer="sgd", student_lr=0.05),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--num-clients", type=int, default=20)
    parser.add_argument("--clients-per-round", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS),
                        help="subset of: " + " | ".join(VARIANTS))
    parser.add_argument("--follow", action="store_true",
                        help="each variant follows its own trajectory (distilled model = "
                             "next global model) instead of refining FedAvg's")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    return parser.parse_args()


def local_round(global_state, client, model_fn, args, server_round, partition_id):
    """One client's local SGD from the global model (as the ClientApp does it)."""
    model = model_fn()
    model.load_state_dict(global_state)
    generator = torch.Generator().manual_seed(args.seed * 100_003 + server_round * 1009
                                              + partition_id)
    train(model, client.train, epochs=args.local_epochs, batch_size=32, lr=0.01,
          momentum=0.9, generator=generator)
    return ClientModel(node_id=partition_id, state_dict=model.state_dict(),
                       num_examples=len(client.train), label_counts=client.label_counts)


def average(members: list[ClientModel]) -> dict[str, torch.Tensor]:
    """FedAvg: the example-weighted mean of the members' parameters."""
    total = sum(m.num_examples for m in members)
    return {name: sum(m.state_dict[name].float() * (m.num_examples / total)
                      for m in members) for name in members[0].state_dict}


def distil(strategy, server_round, global_state, members, model_fn, test):
    """Apply one variant to the round's aggregate: (distilled state, accuracy, seconds)."""
    started = time.perf_counter()
    arrays, _ = strategy.refine_global_model(server_round, ArrayRecord(global_state), members)
    state = arrays.to_torch_state_dict()
    distilled = model_fn()
    distilled.load_state_dict(state)
    return state, evaluate(distilled, test)[1], time.perf_counter() - started


def aggregate_accuracy(global_state, model_fn, test) -> float:
    model = model_fn()
    model.load_state_dict(global_state)
    return evaluate(model, test)[1]


def refine_fedavg(args, clients, test, model_fn, strategies) -> None:
    """Default mode: every variant refines FedAvg's aggregate; FedAvg's path is unchanged."""
    sampler = random.Random(args.seed)
    torch.manual_seed(args.seed)
    global_state = model_fn().state_dict()
    print(" | ".join(["round", "fedavg", "ens-class", "ens-class-probs", "ens-size"]
                     + list(strategies)))
    for server_round in range(1, args.rounds + 1):
        chosen = sorted(sampler.sample(range(args.num_clients), args.clients_per_round))
        members = [local_round(global_state, clients[pid], model_fn, args, server_round, pid)
                   for pid in chosen]
        global_state = average(members)
        ensemble = ensemble_test_accuracies(model_fn, members, test)
        row = [str(server_round), f"{aggregate_accuracy(global_state, model_fn, test):.4f}",
               f"{ensemble['ensemble-accuracy-class-weighted']:.4f}",
               f"{ensemble['ensemble-accuracy-class-weighted-probabilities']:.4f}",
               f"{ensemble['ensemble-accuracy-size-weighted']:.4f}"]
        for strategy in strategies.values():
            _, accuracy, seconds = distil(strategy, server_round, global_state, members,
                                          model_fn, test)
            row.append(f"{accuracy:.4f} ({seconds:.1f}s)")
        print(" | ".join(row), flush=True)


def follow_trajectories(args, clients, test, model_fn, strategies) -> None:
    """``--follow``: FedAvg and every variant each run their own federated trajectory."""
    sampler = random.Random(args.seed)
    torch.manual_seed(args.seed)
    initial = model_fn().state_dict()  # the same initial model for every trajectory
    states = {name: {k: v.clone() for k, v in initial.items()}
              for name in ["fedavg", *strategies]}
    print(" | ".join(["round", *states]))
    for server_round in range(1, args.rounds + 1):
        chosen = sorted(sampler.sample(range(args.num_clients), args.clients_per_round))
        row = [str(server_round)]
        for name in states:
            members = [local_round(states[name], clients[pid], model_fn, args, server_round,
                                   pid) for pid in chosen]
            states[name] = average(members)
            if name == "fedavg":
                row.append(f"{aggregate_accuracy(states[name], model_fn, test):.4f}")
                continue
            states[name], accuracy, seconds = distil(
                strategies[name], server_round, states[name], members, model_fn, test)
            row.append(f"{accuracy:.4f} ({seconds:.1f}s)")
        print(" | ".join(row), flush=True)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    root = os.environ.get("FEDRDSKD_DATA")
    test = load_dataset("mnist", root, train=False)
    clients = [load_client_data("mnist", root, partition_id=pid,
                                num_partitions=args.num_clients, scheme="dirichlet",
                                alpha=args.alpha, classes_per_client=2,
                                min_partition_size=10, test_fraction=0.1, seed=args.seed)
               for pid in range(args.num_clients)]

    def model_fn() -> torch.nn.Module:
        return build_model("lenet5", num_classes=10, image_shape=(1, 28, 28))

    strategies = {name: FedRDSKD(model_fn=model_fn, num_classes=10, input_shape=(1, 28, 28),
                                 batched_ensemble=False, seed=args.seed, **VARIANTS[name])
                  for name in args.variants}
    print(f"MNIST LeNet-5, Dirichlet alpha={args.alpha}, {args.num_clients} clients, "
          f"{args.clients_per_round}/round, {args.local_epochs} local epoch(s), "
          f"seed {args.seed}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'own trajectories' if args.follow else 'refining FedAvg'}")
    run = follow_trajectories if args.follow else refine_fedavg
    run(args, clients, test, model_fn, strategies)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
