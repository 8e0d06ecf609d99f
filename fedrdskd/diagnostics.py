"""Test-set diagnostics of the round's client ensemble (the bound distillation can approach).

The *strategy* stays data-free: the simulation passes this function in as
``ensemble_evaluate_fn``; it is the harness, not the method, that reads the test set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from fedrdskd.clients.training import evaluate
from fedrdskd.data import ImageDataset, batches
from fedrdskd.kd.ensemble import TeacherEnsemble, combine_member_logits, ensemble_weights
from fedrdskd.strategies.replies import ClientModel, stacked_label_counts


def ensemble_test_accuracies(
    model_fn: Callable[[], torch.nn.Module],
    members: Sequence[ClientModel],
    test: ImageDataset,
    *,
    batch_size: int = 1000,
    device: torch.device = torch.device("cpu"),
) -> dict[str, float]:
    """Accuracy of the size-weighted and (if counts were sent) class-weighted ensembles.

    Each weighting is evaluated with the members' logits combined (the keys used since
    the first recorded runs) and with their probabilities combined (the teacher FedRDSKD
    distils from by default, see :func:`fedrdskd.kd.ensemble.combine_member_logits`).

    Returns
    -------
    dict[str, float]
        ``ensemble-accuracy-size-weighted``, ``ensemble-accuracy-size-weighted-probabilities``
        and, when every member sent label counts, ``ensemble-accuracy-class-weighted`` and
        ``ensemble-accuracy-class-weighted-probabilities``; fractions in [0, 1].
    """
    num_classes = test.info.num_classes
    sizes = [m.num_examples for m in members]
    weightings = {"size-weighted": ensemble_weights(
        "num-examples", num_examples=sizes, label_counts=None, num_classes=num_classes)}
    counts = stacked_label_counts(members)
    if counts is not None:
        weightings["class-weighted"] = ensemble_weights(
            "class", num_examples=sizes, label_counts=counts, num_classes=num_classes)
    # The plain per-model loop: on CPU at LeNet scale the vmap path measured ~4x slower
    # for inference (see benchmarks/profile_distillation.py).
    teacher = TeacherEnsemble(model_fn, [m.state_dict for m in members],
                              weightings["size-weighted"], device=device, batched=False)
    weightings = {name: weights.to(device) for name, weights in weightings.items()}
    combinations = {"": "logits", "-probabilities": "probabilities"}
    correct = {name + suffix: 0.0 for name in weightings for suffix in combinations}
    for images, labels in batches(test, batch_size, shuffle=False, generator=None):
        with torch.no_grad():
            member_logits = teacher.member_logits(images.to(device))
        for name, weights in weightings.items():
            for suffix, combine in combinations.items():
                logits = combine_member_logits(weights, member_logits, combine)
                correct[name + suffix] += (logits.argmax(1).cpu() == labels).sum().item()
    return {f"ensemble-accuracy-{name}": hits / len(test) for name, hits in correct.items()}


def diagnostics_subset(test: ImageDataset, num_samples: int | None,
                       seed: int) -> ImageDataset:
    """A fixed random ``num_samples``-image subset of ``test`` (all of it for None).

    Drawn once per run from ``seed``, so every round, and every strategy run with the
    same seed, is measured on the same images. Sampled without replacement; a size at
    or above the test-set size keeps the whole set.
    """
    if num_samples is None or num_samples >= len(test):
        return test
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(test), generator=generator)[:num_samples]
    return test.subset(indices.sort().values)


def save_round_models(path: Path, members: Sequence[ClientModel],
                      aggregate: ArrayRecord | None) -> None:
    """Write the round's client models (and the aggregate before refinement) to ``path``.

    The file holds ``{"members": [{"node_id", "num_examples", "label_counts",
    "state_dict"}, ...], "aggregate": state_dict | None}`` for offline analysis, e.g.
    replaying distillation variants on the same client models
    (``benchmarks/distillation_gain.py``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"members": [{"node_id": m.node_id, "num_examples": m.num_examples,
                             "label_counts": m.label_counts, "state_dict": m.state_dict}
                            for m in members],
                "aggregate": None if aggregate is None else aggregate.to_torch_state_dict()},
               path)


def load_round_models(path: Path) -> tuple[list[ClientModel], dict | None]:
    """Read what :func:`save_round_models` wrote: the members and the aggregate."""
    saved = torch.load(path, weights_only=False)
    members = [ClientModel(node_id=m["node_id"], state_dict=m["state_dict"],
                           num_examples=m["num_examples"], label_counts=m["label_counts"])
               for m in saved["members"]]
    return members, saved["aggregate"]


def make_ensemble_evaluate_fn(
    model_fn: Callable[[], torch.nn.Module],
    test: ImageDataset,
    *,
    batch_size: int = 1000,
    device: torch.device = torch.device("cpu"),
    num_samples: int | None = None,
    seed: int = 0,
    evaluate_ensemble: bool = True,
    save_dir: Path | None = None,
) -> Callable[[int, Sequence[ClientModel], ArrayRecord | None], dict[str, float]]:
    """The round diagnostics of the simulation, for ``ensemble_evaluate_fn``.

    With ``evaluate_ensemble``: :func:`ensemble_test_accuracies` of the round's client
    models, optionally on a fixed subset (``num_samples``, see
    :func:`diagnostics_subset`: with K members they cost K test-set passes per round,
    more than the clients' training for the small CNN on CIFAR-10), and
    ``ensemble-eval-samples``, the number of images measured. ``aggregate-accuracy``:
    the accuracy of the aggregate *before* refinement (server-side distillation) on
    the whole test set, the same images as the global model's ``test-accuracy``, so
    the two give the refinement's gain exactly (0 for strategies that do not refine). With
    ``save_dir``, the round's models go to ``save_dir/round-<r>.pt``
    (:func:`save_round_models`).
    """
    measured = diagnostics_subset(test, num_samples, seed)

    def evaluate_round(server_round: int, members: Sequence[ClientModel],
                       aggregate: ArrayRecord | None = None) -> dict:
        values: dict[str, float] = {}
        if evaluate_ensemble:
            values.update(ensemble_test_accuracies(model_fn, members, measured,
                                                   batch_size=batch_size, device=device))
            values["ensemble-eval-samples"] = len(measured)
        if aggregate is not None:
            model = model_fn()
            model.load_state_dict(aggregate.to_torch_state_dict())
            values["aggregate-accuracy"] = evaluate(model, test, batch_size=batch_size,
                                                    device=device)[1]
        if save_dir is not None:
            save_round_models(Path(save_dir) / f"round-{server_round:03d}.pt", members,
                              aggregate)
        return values

    return evaluate_round
