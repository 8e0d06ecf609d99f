"""Why did FedRDSKD collapse to 10 % in round 4 of seed 2? Inspect the teacher, round by round.

Follows one FedRDSKD trajectory in-process (as ``distillation_gain.py --follow`` does) on
MNIST, Dirichlet alpha 0.1, and prints per round the test accuracy of the FedAvg aggregate,
of the class-weighted client ensemble with the members' logits combined and with their
probabilities combined, and of the distilled model. For the last round it prints every
member: test accuracy, largest |logit| on the test images, label counts and its share of
its largest class. Run from the repository root (real MNIST under ``$FEDRDSKD_DATA``)::

    python benchmarks/teacher_collapse.py                        # logit teacher, seed 2
    python benchmarks/teacher_collapse.py --combine probabilities
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distillation_gain import aggregate_accuracy, average, distil, local_round  # noqa: E402

from fedrdskd.data import load_dataset, normalize  # noqa: E402
from fedrdskd.diagnostics import ensemble_test_accuracies  # noqa: E402
from fedrdskd.kd.ensemble import ensemble_weights  # noqa: E402
from fedrdskd.models import build_model  # noqa: E402
from fedrdskd.partitions import load_client_data  # noqa: E402
from fedrdskd.strategies import FedRDSKD  # noqa: E402

# The collapse happened under RDSKD as published (the fedrdskd_paper preset), not under
# FedRDSKD's own defaults.
RDSKD_AS_PUBLISHED = dict(generator_steps=50, student_steps=50, iterations=1, student_lr=1e-3,
                          student_optimizer="adam", strength_decay=0.5, weight_hard_sample=0.0,
                          class_prior="uniform", student_batch_reuse=1,
                          student_uses_generator_batch=False)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--combine", choices=("logits", "probabilities"), default="logits",
                        help="the trajectory's teacher (both ensembles are always printed)")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()



def describe_members(members, model_fn, test) -> None:
    """Each member's test accuracy, largest |logit|, label counts and top-class share."""
    counts = np.stack([m.label_counts for m in members]).astype(float)
    weights = ensemble_weights("class", num_examples=[m.num_examples for m in members],
                               label_counts=counts, num_classes=counts.shape[1])
    images = normalize(test.images[:2000], test.info)
    print("member | test acc. | max |logit| (2000 test images) | label counts | "
          "class weight of its largest class")
    for index, member in enumerate(members):
        model = model_fn()
        model.load_state_dict(member.state_dict)
        with torch.no_grad():
            logits = model.eval()(images)
        accuracy = (logits.argmax(1) == test.labels[:2000]).float().mean().item()
        top = int(np.argmax(counts[index]))
        print(f"{index} | {accuracy:.3f} | {logits.abs().max().item():.1f} | "
              f"{counts[index].astype(int).tolist()} | class {top}: "
              f"{weights[index, top].item():.2f}")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    root = os.environ.get("FEDRDSKD_DATA")
    test = load_dataset("mnist", root, train=False)
    clients = [load_client_data("mnist", root, partition_id=pid, num_partitions=20,
                                scheme="dirichlet", alpha=args.alpha, classes_per_client=2,
                                min_partition_size=10, test_fraction=0.1, seed=args.seed)
               for pid in range(20)]

    def model_fn() -> torch.nn.Module:
        return build_model("lenet5", num_classes=10, image_shape=(1, 28, 28))

    strategy = FedRDSKD(model_fn=model_fn, num_classes=10, input_shape=(1, 28, 28),
                        ensemble_combine=args.combine, seed=args.seed, **RDSKD_AS_PUBLISHED)
    torch.manual_seed(args.seed)
    state = model_fn().state_dict()
    sampler = random.Random(args.seed)
    args.local_epochs = 1
    print(f"MNIST LeNet-5, Dirichlet alpha={args.alpha}, 20 clients, 10/round, 1 local epoch, "
          f"seed {args.seed}, trajectory with the {args.combine} teacher")
    print("round | aggregate | ensemble (logits) | ensemble (probabilities) | distilled")
    for server_round in range(1, args.rounds + 1):
        chosen = sorted(sampler.sample(range(20), 10))
        members = [local_round(state, clients[pid], model_fn, args, server_round, pid)
                   for pid in chosen]
        aggregate = average(members)
        ensembles = ensemble_test_accuracies(model_fn, members, test)
        state, distilled, _ = distil(strategy, server_round, aggregate, members, model_fn,
                                     test)
        print(f"{server_round} | {aggregate_accuracy(aggregate, model_fn, test):.4f} | "
              f"{ensembles['ensemble-accuracy-class-weighted']:.4f} | "
              f"{ensembles['ensemble-accuracy-class-weighted-probabilities']:.4f} | "
              f"{distilled:.4f}", flush=True)
    describe_members(members, model_fn, test)


if __name__ == "__main__":
    main()
